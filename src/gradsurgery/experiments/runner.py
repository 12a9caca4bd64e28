"""One run of a comparison: a benchmark, a method (or a single-task baseline), a seed, a directory.

:class:`RunSpec` says what to train; :func:`train_benchmark` trains it (loading data, seeding,
building the model, then :class:`~gradsurgery.experiments.trainer.Trainer`); :func:`execute_run`
does that inside a run directory so that the run can be skipped when done and resumed when not:

    <run dir>/run.json       the RunSpec and the thread count of its first session
    <run dir>/checkpoints/   the trainer's checkpoints (resume points; once done, the final one)
    <run dir>/train.jsonl    per-step and per-evaluation log (triad.jsonl with diagnostics)
    <run dir>/result.json    written atomically when the run has finished: the "done" marker
    <run dir>/error.txt      the traceback of the last failed session (removed on success)
    <run dir>/.lock          locked while a process trains the run (a second one is refused)

A session that continues a checkpoint says so: its status has ``resumed_from_step``.

A single-task baseline (``task`` set) trains one model on that task alone (its own data only, for
task-partitioned benchmarks) with unitary scalarization.
"""

from __future__ import annotations

import json
import platform
import re
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from gradsurgery.data import MultiTaskDataset
from gradsurgery.experiments.benchmarks import (
    benchmark_setup,
    build_model,
    load_splits,
    with_budget,
)
from gradsurgery.experiments.data import restrict_tasks
from gradsurgery.experiments.trainer import TrainConfig, Trainer, TrainResult
from gradsurgery.runtime.checkpoint import atomic_write_json, atomic_write_text
from gradsurgery.runtime.lock import DirectoryLock, DirectoryLockedError
from gradsurgery.runtime.seeding import seed_everything

__all__ = [
    "SINGLE_TASK",
    "RunSpec",
    "check_data",
    "execute_run",
    "read_result",
    "train_benchmark",
]

SINGLE_TASK = "single-task"
"""The method label of single-task baselines."""


@dataclass(frozen=True)
class RunSpec:
    """What one run trains. Budget fields left None take the benchmark's defaults."""

    benchmark: str
    method: str
    seed: int
    task: str | None = None
    model: str | None = None
    method_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int | None = None
    steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    eval_every: int | None = None
    diagnostics: bool = False
    representation: bool = False
    device: str = "cpu"
    data_root: str | None = None

    @property
    def single_task(self) -> bool:
        return self.task is not None

    @property
    def label(self) -> str:
        who = f"{SINGLE_TASK}[{self.task}]" if self.single_task else self.method
        return f"{who} seed {self.seed}"

    def relative_dir(self) -> Path:
        if self.single_task:
            return Path(SINGLE_TASK) / _safe(str(self.task)) / f"seed{self.seed}"
        return Path(_safe(self.method)) / f"seed{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def identity(self) -> dict[str, Any]:
        """The fields that decide the result (not where the data lives)."""
        d = json.loads(json.dumps(self.to_dict(), default=str))
        d.pop("data_root", None)
        return d


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=+" else "_" for c in name)


_DATA_CACHE: dict[tuple[str, str | None], tuple[MultiTaskDataset, MultiTaskDataset]] = {}


def _datasets(spec: RunSpec) -> tuple[MultiTaskDataset, MultiTaskDataset]:
    """The benchmark's (train, eval) sets, cached per process (runs of one worker share them)."""
    key = (spec.benchmark, spec.data_root)
    if key not in _DATA_CACHE:
        _DATA_CACHE[key] = load_splits(benchmark_setup(spec.benchmark), spec.data_root)
    return _DATA_CACHE[key]


def check_data(benchmark: str, data_root: str | None, *, keep: bool = True) -> None:
    """Load the benchmark's splits once (kept for this process's runs when ``keep``), so that
    missing or malformed data fails before any run starts; raises the loader's error."""
    key = (benchmark, data_root)
    if key in _DATA_CACHE:
        return
    splits = load_splits(benchmark_setup(benchmark), data_root)
    if keep:
        _DATA_CACHE[key] = splits


def train_config(spec: RunSpec) -> TrainConfig:
    """The :class:`TrainConfig` of a run: the benchmark's budget with the spec's overrides."""
    setup = benchmark_setup(spec.benchmark)
    budget = with_budget(setup, batch_size=spec.batch_size, lr=spec.lr, eval_every=spec.eval_every)
    epochs, steps = budget.epochs, budget.steps
    if spec.steps is not None:  # an explicit budget replaces the default one entirely
        epochs, steps = None, spec.steps
    elif spec.epochs is not None:
        epochs, steps = spec.epochs, None
    return TrainConfig(
        method="sum" if spec.single_task else spec.method,
        method_kwargs={} if spec.single_task else dict(spec.method_kwargs),
        seed=spec.seed,
        epochs=epochs,
        steps=steps,
        batch_size=budget.batch_size,
        lr=budget.lr,
        optimizer=budget.optimizer,
        weight_decay=budget.weight_decay,
        scheduler=budget.scheduler,
        eval_every=budget.eval_every,
        eval_batch_size=budget.eval_batch_size,
        diagnostics=spec.diagnostics and not spec.single_task,
        representation=spec.representation and not spec.single_task,
        device=spec.device,
    )


def train_benchmark(
    spec: RunSpec,
    out_dir: str | Path | None = None,
    *,
    progress: bool | None = False,
    callbacks: Sequence[Callable[[Trainer, int], None]] = (),
) -> TrainResult:
    """Train one run (resuming from ``out_dir``'s checkpoint when there is one)."""
    return build_trainer(spec, out_dir, progress=progress, callbacks=callbacks).fit()


def build_trainer(
    spec: RunSpec,
    out_dir: str | Path | None = None,
    *,
    progress: bool | None = False,
    callbacks: Sequence[Callable[[Trainer, int], None]] = (),
) -> Trainer:
    """The :class:`Trainer` of one run, not started (:func:`train_benchmark` fits it)."""
    setup = benchmark_setup(spec.benchmark)
    train, test = _datasets(spec)
    if spec.task is not None:
        if spec.task not in train.spec.task_names:
            raise KeyError(f"{spec.benchmark} has no task {spec.task!r}: {train.spec.task_names}")
        k = train.spec.task_names.index(spec.task)
        train, test = restrict_tasks(train, [k]), restrict_tasks(test, [k])
    config = train_config(spec)
    config.progress = progress
    seed_everything(spec.seed)
    model = build_model(setup, train.spec, spec.model)
    return Trainer(model, train, test, config, out_dir, callbacks=callbacks)


def _prune_checkpoints(directory: Path) -> None:
    """A finished run needs no resume point: keep only its final checkpoint (the trained model)."""
    from gradsurgery.runtime.checkpoint import CheckpointManager

    for old in CheckpointManager(directory).checkpoints()[:-1]:
        old.unlink(missing_ok=True)


def read_result(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's ``result.json`` (None when it has not finished or the file is unreadable)."""
    path = Path(run_dir) / "result.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def execute_run(
    spec: RunSpec,
    run_dir: str | Path,
    *,
    threads: int | None = None,
    progress: bool | None = False,
) -> dict[str, Any]:
    """Train ``spec`` in ``run_dir`` unless it is done; returns a status dict.

    Status: ``{"status": "done" | "skipped" | "failed", "run": spec dict, "result": ...,
    "error": str, "seconds": float}``. A session keeps the thread count of the run's first
    session (recorded in ``run.json``) so that a resumed run computes exactly what it would have.
    """
    run_dir = Path(run_dir)
    start = time.perf_counter()
    status: dict[str, Any] = {"run": spec.to_dict(), "dir": str(run_dir)}
    done = read_result(run_dir)
    if done is not None:
        return {**status, "status": "skipped", "result": done, "seconds": 0.0}
    lock = DirectoryLock(run_dir, what="run")
    try:
        lock.acquire()
    except DirectoryLockedError as e:
        return {**status, "status": "failed", "error": str(e), "seconds": 0.0}
    try:
        return _execute_locked(spec, run_dir, status, start, threads, progress)
    finally:
        lock.release()


def _execute_locked(
    spec: RunSpec,
    run_dir: Path,
    status: dict[str, Any],
    start: float,
    threads: int | None,
    progress: bool | None,
) -> dict[str, Any]:
    done = read_result(run_dir)  # again: finished by another process before the lock was ours
    if done is not None:
        return {**status, "status": "skipped", "result": done, "seconds": 0.0}
    meta_path = run_dir / "run.json"
    meta: dict[str, Any] = {}
    if meta_path.exists():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    recorded = meta.get("threads")
    if recorded is None:
        recorded = threads if threads is not None else torch.get_num_threads()
        meta = {"spec": spec.identity(), "threads": recorded}
        atomic_write_json(meta_path, meta)
    torch.set_num_threads(int(recorded))
    trainer: Trainer | None = None
    try:
        trainer = build_trainer(spec, run_dir, progress=progress)
        result = trainer.fit()
    except Exception as e:
        atomic_write_text(run_dir / "error.txt", traceback.format_exc())
        return {
            **status,
            "status": "failed",
            "error": f"{type(e).__name__}: {e}",
            "seconds": time.perf_counter() - start,
        }
    payload = {
        "run": spec.to_dict(),
        "threads": int(recorded),
        "torch": torch.__version__,
        "machine": platform.machine(),
        **result.to_dict(),
    }
    atomic_write_json(run_dir / "result.json", payload)
    (run_dir / "error.txt").unlink(missing_ok=True)
    _prune_checkpoints(run_dir / "checkpoints")
    resumed = _checkpoint_step(trainer.resumed_from)
    if resumed is not None:
        status["resumed_from_step"] = resumed
    return {**status, "status": "done", "result": payload, "seconds": time.perf_counter() - start}


def _checkpoint_step(path: Path | None) -> int | None:
    match = re.match(r"step-(\d+)\.ckpt$", path.name) if path is not None else None
    return int(match.group(1)) if match else None
