"""Tragic-triad statistics of MT-SAC's critic and actor updates, every ``N`` updates.

Why does a multi-task RL run struggle? PCGrad's answer is the *tragic triad* of its task
gradients; Kurin et al. ask whether it is there at all. :class:`UpdateDiagnostics` attaches a
:class:`~gradsurgery.diagnostics.monitor.TriadMonitor` to the critic's and the actor's
:class:`~gradsurgery.backward.MultiTaskBackward` of an agent, so that on every ``every``-th update
(updates ``0, N, 2N, ...``) the Gramian of the per-task gradients of the shared parameters is
summarized: the fraction of task pairs that conflict (``cos φ_ij < 0``), the mean and minimum
cosine, the Theorem 2 fractions, each task's loss and gradient norm, and
``grad_norm_ratio = max_i ‖g_i‖ / min_i ‖g_i‖`` (the magnitude side of the triad).

Cost: methods that already compute the Gramian (PCGrad, MGDA, ...) pay nothing more; unitary
scalarization computes per-task gradients on the diagnosed updates only (the task-partitioned
engine: about 1.2× one update), and its update there is the same sum taken in another order, so a
diagnosed ``sum`` run is not bit-identical to an undiagnosed one.

The runner writes each row to ``log.jsonl`` as ``{"kind": "diagnostics", "loss": "critic" |
"actor", "step": <env step per task>, "update": <update index>, ...}`` (resume truncates it with
the rest of the log) and :func:`summarize_diagnostics` averages them for ``result.json`` with the
supervised trainer's summary (:func:`~gradsurgery.diagnostics.triad_summary`), per loss.

Example:
    >>> import torch
    >>> from gradsurgery.backward import MultiTaskBackward
    >>> class Agent:  # any object with MultiTaskBackward objects in ``backward``
    ...     def __init__(self):
    ...         self.w = torch.nn.Linear(2, 1)
    ...         self.backward = {"critic": MultiTaskBackward(self.w, "sum", num_tasks=2)}
    >>> agent = Agent()
    >>> diag = UpdateDiagnostics(agent, ["a", "b"], every=2, losses=("critic",))
    >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> rows = []
    >>> for update in range(3):
    ...     _ = agent.backward["critic"].backward(list(agent.w(x).squeeze(1) ** 2))
    ...     rows += diag.collect(step=10 + update)
    >>> [(r["loss"], r["step"], r["update"]) for r in rows]
    [('critic', 10, 0), ('critic', 12, 2)]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from gradsurgery.diagnostics.monitor import TriadMonitor
from gradsurgery.diagnostics.summary import AVERAGED_FIELDS, summary_key, triad_summary

__all__ = ["SUMMARY_FIELDS", "UpdateDiagnostics", "summarize_diagnostics"]

#: Row fields summarized by :func:`summarize_diagnostics` (``min_cosine``: the minimum).
SUMMARY_FIELDS: tuple[str, ...] = (*AVERAGED_FIELDS, "min_cosine")


class UpdateDiagnostics:
    """Attach triad monitors to an agent's multi-task backward passes and collect their rows.

    Args:
        agent: an object whose ``backward`` maps loss names to
            :class:`~gradsurgery.backward.MultiTaskBackward` (``MTSAC``).
        task_names: the tasks, in task-id order.
        every: diagnose updates ``0, every, 2 every, ...`` (counted by each backward object).
        losses: which of the agent's losses to diagnose.
    """

    def __init__(
        self,
        agent: Any,
        task_names: Sequence[str],
        every: int,
        losses: Sequence[str] = ("critic", "actor"),
    ) -> None:
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"diagnose every must be a positive integer, got {every!r}")
        backward = getattr(agent, "backward", None)
        if not isinstance(backward, dict):
            raise TypeError("gradient diagnostics need an agent with a `backward` dict (MTSAC)")
        missing = [name for name in losses if name not in backward]
        if missing:
            raise ValueError(
                f"the agent has no {missing} loss to diagnose; it has {list(backward)}"
            )
        self.monitors: dict[str, TriadMonitor] = {}
        for name in losses:
            monitor = TriadMonitor(task_names=list(task_names), every=every)
            backward[name].monitor = monitor
            self.monitors[name] = monitor

    def collect(self, step: int) -> list[dict[str, Any]]:
        """The rows recorded since the last call (at most one per loss), tagged with ``step``."""
        rows = []
        for name, monitor in self.monitors.items():
            row = monitor.last_row
            if row is None:
                continue
            monitor.last_row = None
            out = {"kind": "diagnostics", "loss": name, "step": int(step), "update": row["step"]}
            out.update({k: v for k, v in row.items() if k != "step"})
            rows.append(out)
        return rows


def summarize_diagnostics(rows: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per loss: the number of diagnosed updates and the
    :func:`~gradsurgery.diagnostics.triad_summary` of their rows restricted to
    :data:`SUMMARY_FIELDS` (``mean_<field>``; ``min_cosine``: the minimum): means over the
    diagnosed updates with at least two tasks, undefined values (None) skipped."""
    by_loss: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("kind") == "diagnostics":
            by_loss.setdefault(str(row["loss"]), []).append(row)
    out: dict[str, dict[str, Any]] = {}
    for loss, loss_rows in by_loss.items():
        summary = triad_summary(loss_rows)
        out[loss] = {"updates_diagnosed": summary["steps"]}
        out[loss].update({summary_key(f): summary[summary_key(f)] for f in AVERAGED_FIELDS})
        out[loss]["min_cosine"] = summary["min_cosine"]
    return out
