"""A step-by-step record of the tragic-triad statistics (:mod:`gradsurgery.diagnostics.triad`).

:class:`TriadMonitor` turns each recorded step's Gramian into one *row*, a plain dict of JSON
values: the per-task losses and gradient norms, the :class:`~.triad.TriadStats` summaries,
``grad_norm_ratio``, optionally the method's weights and the full cosine matrix, and, in rows of
their own, the multi-task curvature measured by a :class:`~.triad.CurvatureProbe`. It keeps running
aggregates of them (:meth:`TriadMonitor.summary`, :class:`~.summary.TriadSummary`) and hands each
row to its *sinks*, any objects with ``write(row)`` and ``close()`` (:class:`RowSink`); it does no
file I/O itself. The writers (JSON Lines, CSV, TensorBoard) are in :mod:`gradsurgery.runtime.sinks`,
and :func:`gradsurgery.runtime.sinks.triad_monitor` builds a monitor that writes files::

    from gradsurgery.runtime.sinks import triad_monitor
    monitor = triad_monitor("triad.jsonl", task_names=names, csv_path="triad.csv")

Example:
    >>> import torch
    >>> from gradsurgery.diagnostics import TriadMonitor
    >>> g = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
    >>> rows = []
    >>> class ListSink:
    ...     def write(self, row): rows.append(row)
    ...     def close(self): pass
    >>> with TriadMonitor(task_names=["seg", "depth"], sinks=[ListSink()]) as mon:
    ...     row = mon.record(0, g @ g.T, torch.tensor([0.5, 2.0]), torch.tensor([0, 1]))
    >>> row["fraction_conflicting"], row["loss/depth"], rows == [row]
    (1.0, 2.0, True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch import Tensor

from gradsurgery.diagnostics.summary import TriadSummary
from gradsurgery.diagnostics.triad import TriadStats, triad_stats

__all__ = ["PER_TASK_COLUMNS", "TRIAD_COLUMNS", "RowSink", "TriadMonitor"]

#: The scalar columns of a triad row (after ``"step"``).
TRIAD_COLUMNS: tuple[str, ...] = (
    "num_tasks",
    "num_pairs",
    *TriadStats.SCALAR_FIELDS,
    "grad_norm_ratio",
)
#: The per-task column kinds of a triad row: ``"<kind>/<task name>"``.
PER_TASK_COLUMNS: tuple[str, ...] = ("loss", "grad_norm", "weight")


class RowSink(Protocol):
    """Where a :class:`TriadMonitor` sends its rows (e.g. :mod:`gradsurgery.runtime.sinks`)."""

    def write(self, row: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def _finite_or_none(x: float) -> float | None:
    """Rows hold JSON values: undefined and non-finite values are ``None``."""
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


def _grad_norm_ratio(norms: Sequence[float]) -> float | None:
    """``max_i ‖g_i‖ / min_i ‖g_i‖`` over the nonzero finite norms (None with fewer than two)."""
    positive = [v for v in norms if v > 0 and math.isfinite(v)]
    if len(positive) < 2:
        return None
    return _finite_or_none(max(positive) / min(positive))


class TriadMonitor:
    """Records tragic-triad statistics of the Gramian, one row per recorded step.

    Args:
        task_names: name of each task index; columns are ``loss/<name>`` etc. Without names, the
            task index is the name.
        every: record only steps with ``step % every == 0``.
        full_matrices: also put the ``(m, m)`` cosine matrix (``"cosine"``, rows and columns in the
            order of ``"tasks"``) in the rows.
        sinks: where every row goes as it is recorded (:class:`RowSink`; closed by :meth:`close`).

    Values that are undefined or non-finite (``mean_cosine`` with one task, a NaN loss) are
    ``None`` in the rows. To write files, give sinks from :mod:`gradsurgery.runtime.sinks` or build
    the monitor with :func:`gradsurgery.runtime.sinks.triad_monitor`.
    """

    def __init__(
        self,
        *,
        task_names: Sequence[str] | None = None,
        every: int = 1,
        full_matrices: bool = False,
        sinks: Sequence[RowSink] = (),
    ) -> None:
        if every < 1:
            raise ValueError(f"every must be a positive integer, got {every}")
        self.task_names = list(task_names) if task_names is not None else None
        self.every = int(every)
        self.full_matrices = full_matrices
        self.sinks: list[RowSink] = list(sinks)
        #: the last row :meth:`record` returned (None before the first); a caller that logs the
        #: rows elsewhere may read it and set it back to None.
        self.last_row: dict[str, Any] | None = None
        self._summary = TriadSummary()  # running sums: no history is kept

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
        """Compute :func:`~.triad.triad_stats` of ``gramian`` and record one row.

        Args:
            step: the training step; skipped unless ``step % every == 0``.
            gramian: ``(m, m)`` Gramian of the present tasks' gradients.
            losses: ``(m,)`` losses of the present tasks.
            tasks: ``(m,)`` long tensor: the task index of each row of ``gramian``.
            weights: optional ``(m,)`` weights the method gave the present tasks.

        Returns:
            The row (a dict of JSON values, also sent to every sink), or ``None`` when the step
            was skipped. Synchronizes with the device once (one transfer of all the small tensors).
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
        row = self._row(step, stats.num_pairs, host, with_weights=weights is not None)
        self._summary.add(row)
        self._emit(row)
        self.last_row = row
        return row

    def _row(
        self, step: int, num_pairs: int, host: list[list[float]], *, with_weights: bool
    ) -> dict[str, Any]:
        """The row of one step from the host lists of :meth:`record`."""
        loss_l, task_l, norm_l, scalar_l = host[:4]
        m = len(loss_l)
        names = [self._name(int(t)) for t in task_l]
        row: dict[str, Any] = {"step": int(step), "num_tasks": m, "num_pairs": num_pairs}
        for field, value in zip(TriadStats.SCALAR_FIELDS, scalar_l, strict=True):
            row[field] = _finite_or_none(value)
        row["grad_norm_ratio"] = _grad_norm_ratio(norm_l)
        per_task = [("loss", loss_l), ("grad_norm", norm_l)]
        if with_weights:
            per_task.append(("weight", host[4]))
        for kind, values in per_task:
            for name, value in zip(names, values, strict=True):
                row[f"{kind}/{name}"] = _finite_or_none(value)
        if self.full_matrices:
            cos = host[-1]
            row["tasks"] = names
            row["cosine"] = [
                [_finite_or_none(c) for c in cos[r * m : (r + 1) * m]] for r in range(m)
            ]
        return row

    def record_curvature(self, step: int, value: float) -> dict[str, Any]:
        """Record a ``{"step": step, "curvature": value}`` row (not filtered by ``every``)."""
        value = float(value)
        row: dict[str, Any] = {"step": int(step), "curvature": _finite_or_none(value)}
        self._summary.add_curvature(value)
        self._emit(row)
        return row

    def _emit(self, row: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink.write(row)

    def summary(self) -> dict[str, float | int | None]:
        """Aggregates over all recorded steps (:meth:`~.summary.TriadSummary.result`)."""
        return self._summary.result()

    def close(self) -> None:
        """Close the sinks (idempotent when theirs is)."""
        for sink in self.sinks:
            sink.close()

    def __enter__(self) -> TriadMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
