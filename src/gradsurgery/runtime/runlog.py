"""What a run reports while it trains: progress bar, JSON Lines log, TensorBoard, peak memory.

* :class:`Progress` — a ``tqdm`` bar when tqdm is installed, else one self-overwriting line on
  stderr; shown only when stderr is a terminal (``enabled=None``) or when forced.
* :class:`JsonlLog` — one JSON object per line, flushed as written. On resume,
  :meth:`JsonlLog.truncate_after` first drops the rows written after the checkpoint (the killed
  run's tail, which the resumed run writes again), so the log reads like an uninterrupted run's.
* :func:`tensorboard_writer` — a ``SummaryWriter`` when TensorBoard is installed (None otherwise);
  on resume it purges the events after the checkpoint's step.
* :class:`PeakMemory` — peak memory of the training steps.

  - CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` at the start: the
    peak of tensor memory, the number usually reported.
  - CPU (Linux): the process's peak resident set size during training minus its resident set
    size when the measurement started, in MiB. The peak (``VmHWM`` in ``/proc/self/status``) is
    reset to the current size at the start by writing ``5`` to ``/proc/self/clear_refs``: the extra
    memory the training steps needed (activations, per-task gradients, optimizer state, buffers)
    over what was already resident (Python, torch, the dataset, the model). It counts memory the
    allocator keeps after use, so it is an upper bound on tensor memory, with a resolution of a
    few pages; runs of one comparison are measured alike. Where ``clear_refs`` is unavailable
    (macOS, restricted containers) the process's lifetime peak (``ru_maxrss``) is reported instead
    and the measure is named ``cpu_lifetime_peak_rss``.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import IO, Any

import torch

from gradsurgery.runtime.checkpoint import atomic_write_text

__all__ = ["JsonlLog", "PeakMemory", "Progress", "tensorboard_writer"]


class Progress:
    """A progress bar over ``total`` steps starting at ``initial`` (see the module docstring)."""

    def __init__(
        self, total: int, *, initial: int = 0, desc: str = "", enabled: bool | None = None
    ) -> None:
        if enabled is None:
            enabled = sys.stderr.isatty()
        self.enabled = enabled
        self.total, self.n, self.desc = total, initial, desc
        self._bar: Any = None
        self._last = 0.0
        self._postfix = ""
        if not enabled:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            tqdm = None
        if tqdm is not None:
            self._bar = tqdm(
                total=total, initial=initial, desc=desc, dynamic_ncols=True, leave=False
            )

    def update(self, n: int = 1, postfix: str | None = None) -> None:
        self.n += n
        if not self.enabled:
            return
        if postfix is not None:
            self._postfix = postfix
        if self._bar is not None:
            self._bar.update(n)
            if postfix is not None:
                self._bar.set_postfix_str(postfix, refresh=False)
            return
        now = time.monotonic()
        if now - self._last >= 0.5 or self.n >= self.total:
            self._last = now
            pct = 100.0 * self.n / max(self.total, 1)
            sys.stderr.write(
                f"\r{self.desc} {self.n}/{self.total} ({pct:5.1f}%) {self._postfix}\x1b[K"
            )
            sys.stderr.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.enabled:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
        self.enabled = False


class JsonlLog:
    """Append-only JSON Lines file (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] | None = None

    def truncate_after(self, step: int, key: str = "step") -> None:
        """Atomically rewrite the file keeping rows with ``row[key] <= step`` (and unreadable
        trailing lines dropped: a line cut by a kill)."""
        self.close()
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if int(row.get(key, 0)) <= step:
                kept.append(line)
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def write(self, row: dict[str, Any]) -> None:
        if self._file is None:
            self._file = self.path.open("a", encoding="utf-8")
        self._file.write(json.dumps(row, allow_nan=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    @staticmethod
    def read(path: str | Path) -> list[dict[str, Any]]:
        """Every readable row of a JSON Lines file (a cut last line is skipped)."""
        rows: list[dict[str, Any]] = []
        p = Path(path)
        if not p.exists():
            return rows
        for line in p.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return rows


def tensorboard_writer(log_dir: str | Path, purge_step: int | None = None) -> Any:
    """A ``torch.utils.tensorboard.SummaryWriter``, or None when TensorBoard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakMemory:
    """Peak memory of a training run in MiB (see the module docstring for the measure)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.measure = ""
        self.started = False
        self._base_kib = 0

    def start(self) -> None:
        self.started = True
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.measure = "cuda_max_memory_allocated"
            return
        reset = False
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
                f.write("5")
            reset = True
        except OSError:
            pass
        rss = _status_kib("VmRSS")
        if reset and rss is not None and _status_kib("VmHWM") is not None:
            self.measure = "cpu_peak_rss_increase"
            self._base_kib = rss
        else:
            self.measure = "cpu_lifetime_peak_rss"
            self._base_kib = 0

    def peak_mib(self) -> float:
        if not self.started:
            return 0.0
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        if self.measure == "cpu_peak_rss_increase":
            hwm = _status_kib("VmHWM")
            if hwm is not None:
                return max(0, hwm - self._base_kib) / 1024.0
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if sys.platform == "darwin":  # bytes there
            kib //= 1024
        return kib / 1024.0


def cpu_count() -> int:
    """CPUs this process may use (affinity-aware where the OS tells)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
