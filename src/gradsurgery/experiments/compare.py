"""Compare methods on one benchmark: same data, model, budget and seeds; parallel and resumable.

:func:`run_comparison` plans one run per (method, seed) — plus, with
``single_task_baselines=True``, one per (task, seed) training that task alone (the reference of
Δm%) — runs them in ``jobs`` processes, and writes the report (:mod:`.report`). Layout under
``out``::

    compare.json                      the comparison's settings, machine and timing
    runs/<method>/seed<k>/            one run (see :mod:`.runner`): result.json when done
    runs/single-task/<task>/seed<k>/
    report.md, report.json, report.csv, learning_curves.png, train_loss.png

Resuming: a run whose ``result.json`` exists is not redone; an unfinished one resumes from its
newest checkpoint. Running the same command again therefore only does what is missing (adding a
method or a seed adds only its runs). Runs already in ``out`` that were made with other settings
(budget, model, method options) are refused with an error naming the difference, rather than mixed
into one table.

Parallelism: ``jobs`` worker processes (default ``min(cores, runs)``), each limited to
``threads`` torch threads (default ``max(1, cores // jobs)``; on a machine busy with other work,
fewer threads than cores avoids OpenMP threads spinning against each other, which can make small
models several times slower). A resumed run keeps the thread count of its first session (see
:func:`~gradsurgery.experiments.runner.execute_run`). Workers are started with ``spawn`` (safe
with OpenMP and CUDA); ``jobs=1`` runs everything in this process. Every worker imports the
``imports`` modules first, so methods registered by user code are known there too. Workers die
with this process (``kill -9`` included): on Linux through ``prctl(PR_SET_PDEATHSIG)``, elsewhere
(and as a second guard) a thread that exits the worker once its parent has gone; they ignore
Ctrl-C, which this process handles by stopping them (the runs continue on the next run of the
command).

One process at a time: ``out`` is locked (``out/.lock``, :class:`~gradsurgery.runtime.lock.
DirectoryLock`) for the comparison's lifetime, and each run directory while a process trains it; a
second comparison in the same ``out`` is refused with a message naming the first one's PID.

Data: the benchmark's splits are loaded once before any run starts, so missing or malformed data
(a wrong ``data_root``) raises the loader's error (:class:`DataError`) before anything is written.

Method names are resolved by the method registry (:func:`gradsurgery.methods.registry.resolve_method`:
any case, its aliases such as ``nashmtl`` for ``nash_mtl``, and composed names ``uw+pcgrad``: a
loss weighting under a gradient method, see :mod:`gradsurgery.methods.composed`); an unknown name
raises ``KeyError`` with a "did you mean" and the registered names, a refused composition
(``pcgrad+mgda``) ``ValueError`` saying why. A composed method's run directory is named as it is
(``uw+pcgrad/seed0``).
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import importlib
import json
import multiprocessing
import os
import platform
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gradsurgery.experiments.benchmarks import benchmark_setup, resolve_benchmark
from gradsurgery.experiments.runner import RunSpec, check_data, execute_run
from gradsurgery.runtime.checkpoint import atomic_write_json
from gradsurgery.runtime.lock import DirectoryLock
from gradsurgery.runtime.runlog import Progress, cpu_count

__all__ = [
    "DEFAULT_METHODS",
    "CompareConfig",
    "CompareOutcome",
    "DataError",
    "plan_runs",
    "resolve_methods",
    "run_comparison",
]

DEFAULT_METHODS: tuple[str, ...] = (
    "sum", "pcgrad", "mgda", "imtl", "cagrad", "nash_mtl", "rlw", "uw", "famo",
)  # fmt: skip
"""The README's comparison (methods not registered in this installation are skipped)."""


class DataError(ValueError):
    """The benchmark's data cannot be loaded (missing or malformed files under ``data_root``)."""


@dataclass
class CompareConfig:
    """Settings of a comparison (see the module docstring); budget fields None: benchmark default."""

    benchmark: str = "multidigits"
    methods: Sequence[str] = DEFAULT_METHODS
    seeds: Sequence[int] = (0, 1, 2)
    single_task_baselines: bool = False
    model: str | None = None
    epochs: int | None = None
    steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    eval_every: int | None = None
    method_kwargs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    diagnostics: bool = False
    representation: bool = False
    device: str = "cpu"
    data_root: str | None = None
    out: Path = Path("runs/compare/multidigits")
    jobs: int | None = None
    threads: int | None = None
    imports: Sequence[str] = ()
    progress: bool | None = False
    verbose: bool = True
    skip_unregistered: bool = False


@dataclass
class CompareOutcome:
    """What :func:`run_comparison` did: per-run statuses and the report files."""

    statuses: list[dict[str, Any]]
    report: dict[str, Path]
    wall_s: float

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [s for s in self.statuses if s["status"] == "failed"]


def resolve_methods(names: Sequence[str], *, skip_unregistered: bool = False) -> list[str]:
    """Registered names for ``names`` (see the module docstring); duplicates removed."""
    from gradsurgery.methods import method_names
    from gradsurgery.methods.registry import resolve_method, suggest_methods

    out: list[str] = []
    unknown: list[str] = []
    for raw in names:
        if not raw.strip():
            continue
        try:
            hit = resolve_method(raw)
        except KeyError:
            unknown.append(raw.strip())
            continue
        if hit not in out:
            out.append(hit)
    known = ", ".join(method_names())
    if unknown and not skip_unregistered:
        close = list(dict.fromkeys(s for u in unknown for s in suggest_methods(u)))
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise KeyError(f"unknown method(s) {', '.join(unknown)}{hint}; registered methods: {known}")
    if not out:
        raise KeyError(f"no method to run; registered methods: {known}")
    return out


def import_plugins(modules: Sequence[str]) -> None:
    """Import user modules (they may register methods)."""
    for module in modules:
        importlib.import_module(module)


def plan_runs(cfg: CompareConfig, methods: Sequence[str]) -> list[RunSpec]:
    """Every run of the comparison: for each seed, the single-task baselines then each method."""
    benchmark = resolve_benchmark(cfg.benchmark)
    common: dict[str, Any] = {
        "benchmark": benchmark,
        "model": cfg.model,
        "epochs": cfg.epochs,
        "steps": cfg.steps,
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "eval_every": cfg.eval_every,
        "device": cfg.device,
        "data_root": cfg.data_root,
    }
    tasks: tuple[str, ...] = ()
    if cfg.single_task_baselines:
        from gradsurgery.data import benchmark_spec

        tasks = benchmark_spec(benchmark).task_names
    runs: list[RunSpec] = []
    for seed in cfg.seeds:
        for task in tasks:
            runs.append(RunSpec(method="sum", seed=seed, task=task, **common))
        for method in methods:
            runs.append(
                RunSpec(
                    method=method,
                    seed=seed,
                    method_kwargs=dict(cfg.method_kwargs.get(method, {})),
                    diagnostics=cfg.diagnostics,
                    representation=cfg.representation,
                    **common,
                )
            )
    return runs


def check_existing(out: Path, runs: Sequence[RunSpec]) -> None:
    """Refuse to reuse run directories made with other settings (ValueError naming them)."""
    problems = []
    for run in runs:
        meta_path = out / "runs" / run.relative_dir() / "run.json"
        if not meta_path.exists():
            continue
        try:
            old = json.loads(meta_path.read_text(encoding="utf-8")).get("spec", {})
        except (OSError, json.JSONDecodeError):
            continue
        new = run.identity()
        diffs = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in new if old.get(k) != new.get(k)]
        if diffs:
            problems.append(f"{run.label} ({', '.join(diffs)})")
    if problems:
        raise ValueError(
            f"{out} already holds runs made with other settings: {'; '.join(problems[:5])}"
            f"{' ...' if len(problems) > 5 else ''}. Use another --out, or delete those runs."
        )


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent(parent: int, poll_s: float = 0.5) -> None:
    """End this process as soon as ``parent`` is gone (see the module docstring)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # no libc to load: the watchdog below still works
            pass
    if os.getppid() != parent:  # it died before the line above
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="gradsurgery-parent-watch", daemon=True).start()


def _worker_init(threads: int, imports: Sequence[str], parent: int | None = None) -> None:
    if parent is not None:
        _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent stops the workers
    torch.set_num_threads(threads)
    import_plugins(imports)


def _worker_run(spec: dict[str, Any], run_dir: str, threads: int) -> dict[str, Any]:
    return execute_run(RunSpec(**spec), run_dir, threads=threads, progress=False)


def _summary_line(status: dict[str, Any]) -> str:
    run = status["run"]
    who = f"single-task[{run['task']}]" if run.get("task") else run["method"]
    head = f"{who} seed {run['seed']}"
    if status["status"] == "failed":
        return f"{head}: FAILED {status['error']}"
    res = status["result"]
    scores = []
    for task, metrics in (res.get("final_metrics") or {}).items():
        first = next(iter(metrics.items()), None)
        if first is not None and first[1] is not None:
            scores.append(f"{task} {first[1]:.4f}")
    shown = ", ".join(scores[:4]) + (" ..." if len(scores) > 4 else "")
    verb = "already done" if status["status"] == "skipped" else f"{status['seconds']:.1f} s"
    if status.get("resumed_from_step") is not None:
        verb += f", resumed from step {status['resumed_from_step']}"
    return f"{head}: {shown} ({res['time_per_step_ms']:.1f} ms/step; {verb})"


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def run_comparison(cfg: CompareConfig) -> CompareOutcome:
    """Run (or finish) every run of the comparison, then write the report.

    Raises:
        KeyError, ValueError: unknown method or model, other settings in ``out``.
        DataError: the benchmark's data cannot be loaded (nothing is written).
        DirectoryLockedError: another process is running a comparison in ``out``.
    """
    start = time.perf_counter()
    import_plugins(cfg.imports)
    setup = benchmark_setup(cfg.benchmark)
    if cfg.model is not None and cfg.model not in setup.models:
        raise KeyError(
            f"{setup.name} has no model {cfg.model!r}; models: {', '.join(setup.models)}"
        )
    methods = resolve_methods(cfg.methods, skip_unregistered=cfg.skip_unregistered)
    if not cfg.seeds:
        raise ValueError("no seeds given")
    runs = plan_runs(cfg, methods)
    out = Path(cfg.out)
    check_existing(out, runs)
    cores = cpu_count()
    jobs = max(1, min(cfg.jobs or cores, len(runs)))
    threads = cfg.threads if cfg.threads is not None else max(1, cores // jobs)
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    try:  # once, before any run: kept for the runs of this process when they run here
        check_data(setup.name, cfg.data_root, keep=jobs == 1)
    except Exception as e:
        where = f" from {cfg.data_root}" if cfg.data_root is not None else ""
        raise DataError(f"cannot load {setup.name}{where}: {e}") from e
    with DirectoryLock(out, what="compare"):
        meta = _meta(cfg, setup, methods, jobs, threads, cores)
        return _run_locked(cfg, runs, out, meta, start)


def _meta(
    cfg: CompareConfig, setup: Any, methods: list[str], jobs: int, threads: int, cores: int
) -> dict[str, Any]:
    return {
        "benchmark": setup.name,
        "model": cfg.model or setup.default_model,
        "eval_split": setup.eval_split,
        "methods": methods,
        "seeds": list(cfg.seeds),
        "single_task_baselines": cfg.single_task_baselines,
        "method_kwargs": {k: dict(v) for k, v in cfg.method_kwargs.items()},
        "budget_overrides": {
            k: getattr(cfg, k) for k in ("epochs", "steps", "batch_size", "lr", "eval_every")
        },
        "default_budget": {k: v for k, v in setup.budget.__dict__.items() if v is not None},
        "diagnostics": cfg.diagnostics,
        "representation": cfg.representation,
        "device": cfg.device,
        "jobs": jobs,
        "threads_per_job": threads,
        "cores": cores,
        "load_average_start": _load_average(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


def _run_locked(
    cfg: CompareConfig, runs: list[RunSpec], out: Path, meta: dict[str, Any], start: float
) -> CompareOutcome:
    from gradsurgery.experiments.report import write_report

    jobs, threads = meta["jobs"], meta["threads_per_job"]
    atomic_write_json(out / "compare.json", {**meta, "status": "running"})
    log = print if cfg.verbose else (lambda *a, **k: None)
    log(
        f"{meta['benchmark']}: {len(meta['methods'])} method(s) × {len(cfg.seeds)} seed(s)"
        f"{' + single-task baselines' if cfg.single_task_baselines else ''} = {len(runs)} runs; "
        f"{jobs} job(s) × {threads} thread(s); out {out}"
    )

    statuses: list[dict[str, Any]] = []
    total = len(runs)

    # With several jobs the runs' own bars are off: one bar (or periodic line) over the runs.
    runs_bar = Progress(total, desc=meta["benchmark"], unit="runs",
                        enabled=None if jobs > 1 and cfg.verbose else False)  # fmt: skip

    def note(status: dict[str, Any]) -> None:
        statuses.append(status)
        line = f"[{len(statuses)}/{total}] {_summary_line(status)}"
        if runs_bar.enabled and runs_bar.terminal:
            runs_bar.write(line)  # above the bar, on the same terminal
        else:
            log(line, flush=True)
        runs_bar.update(1)

    dirs = [str(out / "runs" / r.relative_dir()) for r in runs]
    try:
        if jobs == 1:
            for run, d in zip(runs, dirs, strict=True):
                note(execute_run(run, d, threads=threads, progress=cfg.progress))
        else:
            _run_parallel(cfg, runs, dirs, jobs, threads, note)
    except KeyboardInterrupt:
        atomic_write_json(out / "compare.json", {**meta, "status": "interrupted"})
        raise
    finally:
        runs_bar.close()

    wall = time.perf_counter() - start
    meta.update(
        status="finished",
        wall_s=round(wall, 2),
        load_average_end=_load_average(),
        runs_done=sum(s["status"] == "done" for s in statuses),
        runs_skipped=sum(s["status"] == "skipped" for s in statuses),
        runs_failed=sum(s["status"] == "failed" for s in statuses),
    )
    atomic_write_json(out / "compare.json", meta)
    report = write_report(out, runs, meta)
    log(f"wrote {', '.join(str(p) for p in report.values())} ({wall:.1f} s)")
    return CompareOutcome(statuses, report, wall)


def _run_parallel(
    cfg: CompareConfig,
    runs: list[RunSpec],
    dirs: list[str],
    jobs: int,
    threads: int,
    note: Any,
) -> None:
    """The runs in ``jobs`` worker processes; on an exception (Ctrl-C) the workers are stopped."""
    pool = cf.ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_init,
        initargs=(threads, tuple(cfg.imports), os.getpid()),
    )
    try:
        futures = {
            pool.submit(_worker_run, run.to_dict(), d, threads): run
            for run, d in zip(runs, dirs, strict=True)
        }
        for fut in cf.as_completed(futures):
            run = futures[fut]
            try:
                note(fut.result())
            except Exception as e:  # a worker died (killed, out of memory)
                error = f"{type(e).__name__}: {e}"
                note({"run": run.to_dict(), "status": "failed", "error": error, "seconds": 0.0})
    except BaseException:
        _stop_workers(pool)
        raise
    pool.shutdown(wait=True)


def _stop_workers(pool: cf.ProcessPoolExecutor) -> None:
    """Terminate the pool's workers now (checkpoints are written atomically: nothing is torn)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(5)
