"""What a run reports while it trains: progress bar, JSON Lines log, TensorBoard, peak memory.

* :class:`Progress` — on a terminal, one self-overwriting line on stderr (a bar, done/total, the
  rate, elapsed time and ETA, the caller's postfix); when stderr is not a terminal (a log file, a
  pipe, a batch job), the same measures as a plain line at the start, every ``every`` seconds
  (30 by default) and at the end. ``enabled=False`` shows nothing. Its measures come from the
  progress itself, not from the caller: elapsed time since this session started (a resumed run
  counts from its resume); the rate, ``units/s``, over a moving window of the last ``window``
  seconds (30), so a rate is current and a resumed run's earlier steps do not count; the ETA the
  steps left at that rate. A measure is shown as ``…`` until it can be measured (during the first
  second, and before a first unit is done). Extra labelled rates are multiples of the rate
  (``rates={"env-steps": 10}``). Example (redirected stderr)::

      mt10 sac: 2,000/100,000 steps (2.0%) | 66.7 steps/s, 667 env-steps/s | elapsed 0:30 | ETA 24:30
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
import math
import os
import resource
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import torch

from gradsurgery.runtime.checkpoint import atomic_write_text

__all__ = ["JsonlLog", "PeakMemory", "Progress", "tensorboard_writer"]


class Progress:
    """Progress over ``total`` units starting at ``initial`` (see the module docstring).

    ``enabled``: None or True — a self-overwriting bar when ``stream`` (stderr) is a terminal, a
    plain line every ``every`` seconds otherwise; False — nothing. ``unit`` names what is counted
    (``"steps"``, ``"runs"``); ``rates`` adds derived rates, ``{label: units per counted unit}``
    (``{"env-steps": 10}`` shows env-steps/s of ten environments). ``window``: seconds of the
    moving window of the rate; ``refresh``: the bar's least redraw interval; ``clock``: a monotonic
    clock in seconds (tests pass a fake one).
    """

    def __init__(
        self,
        total: int,
        *,
        initial: int = 0,
        desc: str = "",
        enabled: bool | None = None,
        unit: str = "steps",
        rates: Mapping[str, float] | None = None,
        every: float = 30.0,
        window: float = 30.0,
        refresh: float = 0.5,
        stream: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.terminal = _isatty(self.stream)
        self.enabled = enabled is not False
        self.total, self.n, self.desc, self.unit = total, initial, desc, unit
        self.rates = dict(rates or {})
        self.every, self.window, self.refresh = every, window, refresh
        self._clock = clock
        self._t0 = clock()
        self._n0 = initial
        self._samples: deque[tuple[float, int]] = deque([(self._t0, initial)])
        self._last_draw = -math.inf
        self._last_line_n = initial
        self._postfix = ""
        if self.enabled and not self.terminal:
            self._emit(self._t0)

    # ------------------------------------------------------------------ measures
    def elapsed(self, now: float | None = None) -> float:
        """Seconds since this progress started (this session: a resumed run starts again)."""
        return (self._clock() if now is None else now) - self._t0

    def rate(self, now: float | None = None) -> float | None:
        """Units per second over the moving window (the session while it is shorter); None while
        not measurable: under a second, or no unit done yet in a window not yet full."""
        now = self._clock() if now is None else now
        t_a, n_a = self._samples[0]
        span = now - t_a
        if span < _MIN_SPAN or (self.n == n_a and span < self.window):
            return None
        return (self.n - n_a) / span

    def average_rate(self, now: float | None = None) -> float | None:
        """Units per second since the session started (None while not measurable)."""
        span = self.elapsed(now)
        if span < _MIN_SPAN or self.n == self._n0:
            return None
        return (self.n - self._n0) / span

    def eta(self, now: float | None = None) -> float | None:
        """Seconds left at the window's rate (None while it is not measurable or zero)."""
        r = self.rate(now)
        if not r:
            return None
        return max(self.total - self.n, 0) / r

    def _sample(self, now: float) -> None:
        if now - self._samples[-1][0] >= min(1.0, self.window / 30.0):
            self._samples.append((now, self.n))
        while len(self._samples) > 1 and self._samples[1][0] <= now - self.window:
            self._samples.popleft()

    # ------------------------------------------------------------------ text
    def format(self, now: float | None = None) -> str:
        """The progress as one line (what the bar and the periodic line show)."""
        now = self._clock() if now is None else now
        pct = 100.0 * self.n / max(self.total, 1)
        head = f"{self.desc}: " if self.desc else ""
        parts = [f"{head}{self.n:,}/{self.total:,} {self.unit} ({pct:.1f}%)"]
        r = self.rate(now)
        rates = [f"{_fmt_rate(r)} {self.unit}/s"]
        rates += [
            f"{_fmt_rate(None if r is None else r * k)} {label}/s"
            for label, k in self.rates.items()
        ]
        parts.append(", ".join(rates))
        parts.append(f"elapsed {_fmt_duration(self.elapsed(now))}")
        parts.append(f"ETA {_fmt_duration(self.eta(now))}")
        if self._postfix:
            parts.append(self._postfix)
        return " | ".join(parts)

    def _bar(self, now: float) -> str:
        width = 20
        filled = min(width, int(width * self.n / max(self.total, 1)))
        line = f"[{'#' * filled}{'.' * (width - filled)}] {self.format(now)}"
        columns = shutil.get_terminal_size((120, 24)).columns
        return line[: max(columns - 1, 20)]

    def _emit(self, now: float) -> None:
        if self.terminal:
            self.stream.write(f"\r{self._bar(now)}\x1b[K")
        else:
            self.stream.write(self.format(now) + "\n")
            self._last_line_n = self.n
        self.stream.flush()
        self._last_draw = now

    # ------------------------------------------------------------------ use
    def update(self, n: int = 1, postfix: str | None = None) -> None:
        """``n`` more units done; ``postfix``: text shown after the measures (kept until replaced)."""
        self.n += n
        if postfix is not None:
            self._postfix = postfix
        now = self._clock()
        self._sample(now)
        if not self.enabled:
            return
        interval = self.refresh if self.terminal else self.every
        if now - self._last_draw >= interval or (self.terminal and self.n >= self.total):
            self._emit(now)

    def write(self, text: str) -> None:
        """A line of text above the bar (or among the periodic lines)."""
        if not self.enabled:
            return
        if self.terminal:
            self.stream.write("\r\x1b[K" + text + "\n")
            self._emit(self._clock())
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def close(self) -> None:
        """Clear the bar; as a plain line, the last state when it changed since the last line."""
        if self.enabled:
            if self.terminal:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
            elif self.n != self._last_line_n:
                self._emit(self._clock())
        self.enabled = False


_MIN_SPAN = 1.0
"""Seconds of progress below which a rate is not shown ("…")."""


def _isatty(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _fmt_rate(r: float | None) -> str:
    if r is None:
        return "…"
    if r >= 100:
        return f"{r:,.0f}"
    return f"{r:.1f}" if r >= 1 else f"{r:.3g}"


def _fmt_duration(seconds: float | None) -> str:
    """``m:ss`` or ``h:mm:ss``; ``…`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "…"
    total = round(seconds)
    h, rest = divmod(total, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


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
