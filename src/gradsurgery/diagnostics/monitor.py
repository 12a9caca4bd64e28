"""A step-by-step log of the tragic-triad statistics (:mod:`gradsurgery.diagnostics.triad`).

:class:`TriadMonitor` writes one row per recorded step to JSON Lines (and optionally CSV and
TensorBoard): the per-task losses and gradient norms, the :class:`~.triad.TriadStats` summaries,
optionally the method's weights and the full cosine matrix, and, in rows of their own, the
multi-task curvature measured by a :class:`~.triad.CurvatureProbe`. Rows are flushed as they are
written, so a run that is killed keeps everything recorded so far.

Example:
    >>> import torch
    >>> from gradsurgery.diagnostics import TriadMonitor
    >>> g = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
    >>> with TriadMonitor(task_names=["seg", "depth"]) as mon:
    ...     row = mon.record(0, g @ g.T, torch.tensor([0.5, 2.0]), torch.tensor([0, 1]))
    >>> row["fraction_conflicting"], row["loss/depth"]
    (1.0, 2.0)
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import torch
from torch import Tensor

from gradsurgery.diagnostics.triad import TriadStats, triad_stats

__all__ = ["TriadMonitor"]

_STAT_COLUMNS: tuple[str, ...] = ("num_tasks", "num_pairs", *TriadStats.SCALAR_FIELDS)
_PER_TASK: tuple[str, ...] = ("loss", "grad_norm", "weight")


def _finite_or_none(x: float) -> float | None:
    """JSON has no NaN or infinity: undefined and non-finite values are written as ``null``."""
    return x if math.isfinite(x) else None


def _host_lists(tensors: Sequence[Tensor]) -> list[list[float]]:
    """``t.tolist()`` of flattened tensors with one transfer per device (one sync on one GPU)."""
    out: list[list[float]] = [[] for _ in tensors]
    by_device: dict[torch.device, list[int]] = {}
    for k, t in enumerate(tensors):
        by_device.setdefault(t.device, []).append(k)
    for device, ks in by_device.items():
        dtype = torch.float32 if device.type == "mps" else torch.float64
        flat = torch.cat([tensors[k].detach().reshape(-1).to(dtype) for k in ks]).tolist()
        start = 0
        for k in ks:
            n = tensors[k].numel()
            out[k] = flat[start : start + n]
            start += n
    return out


class TriadMonitor:
    """Records tragic-triad statistics of the Gramian, one row per recorded step.

    Args:
        path: JSON Lines file (one object per line); ``None`` for no file (``summary`` only).
        task_names: name of each task index; columns are ``loss/<name>`` etc. Without names, the
            task index is the name.
        every: record only steps with ``step % every == 0``.
        csv_path: optional CSV file with the rows' scalar columns; the header is written once.
            Its task columns are all of ``task_names`` or, without names, the tasks of the first
            recorded row; cells of tasks absent from a step are empty.
        tensorboard_dir: optional TensorBoard log directory (needs ``pip install tensorboard``).
        full_matrices: also write the ``(m, m)`` cosine matrix (``"cosine"``, rows and columns in
            the order of ``"tasks"``) to JSONL.

    Files are opened for writing (truncated) at construction; parent directories are created.
    Values that are undefined or non-finite (``mean_cosine`` with one task, a NaN loss) are written
    as JSON ``null`` / an empty CSV cell / skipped in TensorBoard.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        task_names: Sequence[str] | None = None,
        every: int = 1,
        csv_path: str | Path | None = None,
        tensorboard_dir: str | Path | None = None,
        full_matrices: bool = False,
    ) -> None:
        if every < 1:
            raise ValueError(f"every must be a positive integer, got {every}")
        self.task_names = list(task_names) if task_names is not None else None
        self.every = int(every)
        self.full_matrices = full_matrices
        #: the last row :meth:`record` wrote (None before the first); a caller that logs the
        #: rows elsewhere may read it and set it back to None.
        self.last_row: dict[str, Any] | None = None

        self._tb: Any = None
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ImportError(
                    "TriadMonitor(tensorboard_dir=...) needs TensorBoard; install it with "
                    "`pip install tensorboard` (or `pip install gradsurgery[tensorboard]`)"
                ) from e
            self._tb = SummaryWriter(log_dir=str(tensorboard_dir))

        self._jsonl: IO[str] | None = self._open(path)
        self._csv_file: IO[str] | None = self._open(csv_path)
        self._csv: csv.DictWriter | None = None
        self._csv_pending: list[dict[str, Any]] = []
        self._csv_dropped_warned = False

        # Running sums for summary(): no history is kept.
        self._steps = 0
        self._steps_with_pairs = 0
        self._sums = dict.fromkeys(TriadStats.SCALAR_FIELDS, 0.0)
        self._min_cosine = math.inf
        self._steps_any_conflict = 0
        self._steps_condition_a = 0
        self._curv_count = 0
        self._curv_sum = 0.0
        self._curv_min = math.inf
        self._curv_max = -math.inf

    @staticmethod
    def _open(path: str | Path | None) -> IO[str] | None:
        if path is None:
            return None
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.open("w", newline="", encoding="utf-8")

    def _name(self, task: int) -> str:
        if self.task_names is None:
            return str(task)
        if not 0 <= task < len(self.task_names):
            raise ValueError(
                f"task index {task} out of range for {len(self.task_names)} task names"
            )
        return self.task_names[task]

    def record(
        self,
        step: int,
        gramian: Tensor,
        losses: Tensor,
        tasks: Tensor,
        weights: Tensor | None = None,
    ) -> dict[str, Any] | None:
        """Compute :func:`~.triad.triad_stats` of ``gramian`` and write one row.

        Args:
            step: the training step; skipped unless ``step % every == 0``.
            gramian: ``(m, m)`` Gramian of the present tasks' gradients.
            losses: ``(m,)`` losses of the present tasks.
            tasks: ``(m,)`` long tensor: the task index of each row of ``gramian``.
            weights: optional ``(m,)`` weights the method gave the present tasks.

        Returns:
            The row written (a dict of JSON values), or ``None`` when the step was skipped.
            Synchronizes with the device once (one transfer of all the small tensors).
        """
        if step % self.every != 0:
            return None
        m = gramian.shape[0]
        for name, t in (("losses", losses), ("tasks", tasks), ("weights", weights)):
            if t is not None and t.shape != (m,):
                raise ValueError(
                    f"{name} must have shape ({m},) for an {m}x{m} Gramian, got {tuple(t.shape)}"
                )
        stats = triad_stats(gramian)
        parts = [losses, tasks, stats.grad_norms, stats.scalar_tensor()]
        if weights is not None:
            parts.append(weights)
        if self.full_matrices:
            parts.append(stats.cosine)
        host = _host_lists(parts)
        loss_l, task_l, norm_l, scalar_l = host[:4]
        names = [self._name(int(t)) for t in task_l]

        row: dict[str, Any] = {"step": int(step), "num_tasks": m, "num_pairs": stats.num_pairs}
        for field, value in zip(TriadStats.SCALAR_FIELDS, scalar_l, strict=True):
            row[field] = _finite_or_none(value)
        for name, value in zip(names, loss_l, strict=True):
            row[f"loss/{name}"] = _finite_or_none(value)
        for name, value in zip(names, norm_l, strict=True):
            row[f"grad_norm/{name}"] = _finite_or_none(value)
        if weights is not None:
            for name, value in zip(names, host[4], strict=True):
                row[f"weight/{name}"] = _finite_or_none(value)
        if self.full_matrices:
            cos = host[-1]
            row["tasks"] = names
            row["cosine"] = [
                [_finite_or_none(c) for c in cos[r * m : (r + 1) * m]] for r in range(m)
            ]

        self._accumulate(row)
        self._write(row, task_names=names)
        self.last_row = row
        return row

    def record_curvature(self, step: int, value: float) -> None:
        """Write a ``{"step": step, "curvature": value}`` row (not filtered by ``every``)."""
        value = float(value)
        row: dict[str, Any] = {"step": int(step), "curvature": _finite_or_none(value)}
        if math.isfinite(value):
            self._curv_count += 1
            self._curv_sum += value
            self._curv_min = min(self._curv_min, value)
            self._curv_max = max(self._curv_max, value)
        self._write(row, task_names=None)

    def _accumulate(self, row: dict[str, Any]) -> None:
        self._steps += 1
        if row["num_pairs"] == 0:
            return
        self._steps_with_pairs += 1
        for field in TriadStats.SCALAR_FIELDS:
            if row[field] is not None and field != "min_cosine":
                self._sums[field] += row[field]
        if row["min_cosine"] is not None:
            self._min_cosine = min(self._min_cosine, row["min_cosine"])
        self._steps_any_conflict += (row["fraction_conflicting"] or 0.0) > 0
        self._steps_condition_a += (row["fraction_condition_a"] or 0.0) > 0

    def summary(self) -> dict[str, float | int | None]:
        """Aggregates over all recorded steps.

        Pair statistics are averaged over the recorded steps that had at least two tasks
        (``steps_with_pairs``); a mean over no steps is ``None``. Keys: ``steps``,
        ``steps_with_pairs``, ``mean_fraction_conflicting``, ``mean_fraction_condition_a``,
        ``mean_fraction_xi_le_one``, ``mean_fraction_both``, ``fraction_steps_any_conflict``,
        ``fraction_steps_condition_a`` (steps where Theorem 2 (a) held for at least one pair),
        ``mean_cosine`` (mean of the per-step means), ``min_cosine``, ``curvature_steps``,
        ``mean_curvature``, ``min_curvature``, ``max_curvature``.
        """
        n = self._steps_with_pairs

        def mean(total: float, count: int) -> float | None:
            return total / count if count else None

        c = self._curv_count
        return {
            "steps": self._steps,
            "steps_with_pairs": n,
            "mean_fraction_conflicting": mean(self._sums["fraction_conflicting"], n),
            "mean_fraction_condition_a": mean(self._sums["fraction_condition_a"], n),
            "mean_fraction_xi_le_one": mean(self._sums["fraction_xi_le_one"], n),
            "mean_fraction_both": mean(self._sums["fraction_both"], n),
            "fraction_steps_any_conflict": mean(self._steps_any_conflict, n),
            "fraction_steps_condition_a": mean(self._steps_condition_a, n),
            "mean_cosine": mean(self._sums["mean_cosine"], n),
            "min_cosine": self._min_cosine if n else None,
            "curvature_steps": c,
            "mean_curvature": mean(self._curv_sum, c),
            "min_curvature": self._curv_min if c else None,
            "max_curvature": self._curv_max if c else None,
        }

    def _write(self, row: dict[str, Any], task_names: list[str] | None) -> None:
        if self._jsonl is not None:
            self._jsonl.write(json.dumps(row, allow_nan=False) + "\n")
            self._jsonl.flush()
        if self._csv_file is not None:
            self._write_csv(row, task_names)
        if self._tb is not None:
            step = row["step"]
            for key, value in row.items():
                if key != "step" and isinstance(value, int | float):
                    prefix = "" if "/" in key else "triad/"
                    self._tb.add_scalar(prefix + key, value, global_step=step)
            self._tb.flush()

    def _write_csv(self, row: dict[str, Any], task_names: list[str] | None) -> None:
        assert self._csv_file is not None
        if self._csv is None:
            columns = self.task_names if self.task_names is not None else task_names
            if columns is None:  # a curvature row before any triad row, and no task names yet
                self._csv_pending.append(row)
                return
            fields = ["step", *_STAT_COLUMNS]
            fields += [f"{kind}/{name}" for kind in _PER_TASK for name in columns]
            fields.append("curvature")
            self._csv = csv.DictWriter(self._csv_file, fieldnames=fields, extrasaction="ignore")
            self._csv.writeheader()
            for pending in self._csv_pending:
                self._csv.writerow(pending)
            self._csv_pending.clear()
        flat = {k: v for k, v in row.items() if not isinstance(v, list)}
        dropped = set(flat) - set(self._csv.fieldnames)
        if dropped and not self._csv_dropped_warned:
            warnings.warn(
                f"TriadMonitor: CSV columns {sorted(dropped)} were not in the header (fixed by the "
                "first row); pass task_names=... to get a column for every task",
                stacklevel=3,
            )
            self._csv_dropped_warned = True
        self._csv.writerow(flat)
        self._csv_file.flush()

    def close(self) -> None:
        """Flush and close the files (idempotent)."""
        if self._csv_file is not None and self._csv is None and self._csv_pending:
            fields = ["step", "curvature"]
            self._csv = csv.DictWriter(self._csv_file, fieldnames=fields, extrasaction="ignore")
            self._csv.writeheader()
            self._csv.writerows(self._csv_pending)
            self._csv_pending.clear()
        for f in (self._jsonl, self._csv_file):
            if f is not None:
                f.close()
        self._jsonl = self._csv_file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> TriadMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
