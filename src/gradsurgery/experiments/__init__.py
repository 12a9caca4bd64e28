"""Supervised multi-task experiments: a resumable trainer and the ``compare`` command.

* :class:`Trainer` / :class:`TrainConfig` — train any model with any registered method; per-task
  evaluation, JSONL/TensorBoard logs, tragic-triad diagnostics, deterministic resume from atomic
  checkpoints (:mod:`.trainer`, :mod:`gradsurgery.runtime`).
* :func:`benchmark_setup` — a benchmark's models, losses and default budget (:mod:`.benchmarks`).
* :class:`RunSpec` / :func:`train_benchmark` — one (benchmark, method, seed) run (:mod:`.runner`).
* :func:`run_comparison` — every method × seed (and single-task baselines) in parallel, resumable,
  then :func:`write_report`: Markdown/JSON/CSV tables of mean ± std and 95 % t-intervals, Δm%,
  time per step, peak memory, learning curves, diagnostics (:mod:`.compare`, :mod:`.report`).
"""

from gradsurgery.experiments.benchmarks import (
    BenchmarkSetup,
    Budget,
    benchmark_setup,
    build_model,
    load_splits,
    resolve_benchmark,
    setup_names,
    task_loss,
)
from gradsurgery.experiments.compare import CompareConfig, resolve_methods, run_comparison
from gradsurgery.experiments.report import write_report
from gradsurgery.experiments.runner import RunSpec, execute_run, train_benchmark
from gradsurgery.experiments.trainer import StopTraining, TrainConfig, Trainer, TrainResult

__all__ = [
    "BenchmarkSetup",
    "Budget",
    "CompareConfig",
    "RunSpec",
    "StopTraining",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "benchmark_setup",
    "build_model",
    "execute_run",
    "load_splits",
    "resolve_benchmark",
    "resolve_methods",
    "run_comparison",
    "setup_names",
    "task_loss",
    "train_benchmark",
    "write_report",
]
