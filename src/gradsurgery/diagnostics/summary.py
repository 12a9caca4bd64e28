"""Aggregates of tragic-triad rows over a run: one summary for every loop that records them.

A *row* is the plain dict :meth:`~gradsurgery.diagnostics.monitor.TriadMonitor.record` returns
(``num_pairs``, the :attr:`~.triad.TriadStats.SCALAR_FIELDS`, ``grad_norm_ratio``, per-task
columns) or a curvature row (``{"step", "curvature"}``). :class:`TriadSummary` keeps running sums
of them (no history); :func:`triad_summary` replays rows read back from a log, e.g. a
``triad.jsonl`` written over several resumed sessions, or the diagnostics rows of an RL log. The
monitor, the supervised trainer and the RL loop all summarize through this one class.

Example:
    >>> s = TriadSummary()
    >>> s.add({"num_pairs": 1, "fraction_conflicting": 1.0, "fraction_condition_a": 0.0,
    ...        "fraction_xi_le_one": 1.0, "fraction_both": 0.0, "mean_cosine": -0.5,
    ...        "min_cosine": -0.5, "grad_norm_ratio": 2.0})
    >>> s.add({"step": 0, "curvature": 0.25})
    >>> r = s.result()
    >>> r["steps"], r["mean_fraction_conflicting"], r["min_cosine"], r["mean_curvature"]
    (1, 1.0, -0.5, 0.25)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from gradsurgery.diagnostics.triad import TriadStats

__all__ = ["AVERAGED_FIELDS", "TriadSummary", "summary_key", "triad_summary"]

#: Row fields whose mean over the steps with pairs the summary reports (as ``mean_<field>``, or
#: the field's own name when it already starts with ``mean``); ``min_cosine`` is minimized.
AVERAGED_FIELDS: tuple[str, ...] = (
    *(f for f in TriadStats.SCALAR_FIELDS if f != "min_cosine"),
    "grad_norm_ratio",
)


def summary_key(field: str) -> str:
    """The summary key of an averaged row field: ``mean_<field>`` (``mean_cosine`` stays)."""
    return field if field.startswith("mean") else f"mean_{field}"


class TriadSummary:
    """Running aggregates of triad and curvature rows (see the module docstring).

    Pair statistics are averaged over the steps that had at least two tasks
    (``steps_with_pairs``), each over the steps where it is defined (not ``None``); a mean over no
    steps is ``None``.
    """

    def __init__(self) -> None:
        self.steps = 0
        self.steps_with_pairs = 0
        self._sums = dict.fromkeys(AVERAGED_FIELDS, 0.0)
        self._counts = dict.fromkeys(AVERAGED_FIELDS, 0)
        self._min_cosine = math.inf
        self._steps_any_conflict = 0
        self._steps_condition_a = 0
        self._curv_count = 0
        self._curv_sum = 0.0
        self._curv_min = math.inf
        self._curv_max = -math.inf

    def add(self, row: Mapping[str, Any]) -> None:
        """Count one row: a curvature row (has ``"curvature"``) or a triad row (``"num_pairs"``);
        other rows are ignored."""
        if "curvature" in row:
            self.add_curvature(row["curvature"])
        elif "num_pairs" in row:
            self._add_triad(row)

    def add_curvature(self, value: float | None) -> None:
        """Count one curvature value (``None`` and non-finite values are left out)."""
        if value is None or not math.isfinite(value):
            return
        self._curv_count += 1
        self._curv_sum += value
        self._curv_min = min(self._curv_min, value)
        self._curv_max = max(self._curv_max, value)

    def _add_triad(self, row: Mapping[str, Any]) -> None:
        self.steps += 1
        if row["num_pairs"] == 0:
            return
        self.steps_with_pairs += 1
        for field in AVERAGED_FIELDS:
            value = row.get(field)
            if value is not None:
                self._sums[field] += value
                self._counts[field] += 1
        if row.get("min_cosine") is not None:
            self._min_cosine = min(self._min_cosine, row["min_cosine"])
        self._steps_any_conflict += (row.get("fraction_conflicting") or 0.0) > 0
        self._steps_condition_a += (row.get("fraction_condition_a") or 0.0) > 0

    def result(self) -> dict[str, float | int | None]:
        """The aggregates so far.

        Keys: ``steps``, ``steps_with_pairs``, ``mean_fraction_conflicting``,
        ``mean_fraction_condition_a``, ``mean_fraction_xi_le_one``, ``mean_fraction_both``,
        ``mean_cosine`` (mean of the per-step means), ``mean_grad_norm_ratio``,
        ``fraction_steps_any_conflict``, ``fraction_steps_condition_a`` (steps where Theorem 2 (a)
        held for at least one pair), ``min_cosine``, ``curvature_steps``, ``mean_curvature``,
        ``min_curvature``, ``max_curvature``.
        """
        n = self.steps_with_pairs
        c = self._curv_count
        out: dict[str, float | int | None] = {"steps": self.steps, "steps_with_pairs": n}
        for field in AVERAGED_FIELDS:
            out[summary_key(field)] = _mean(self._sums[field], self._counts[field])
        out["fraction_steps_any_conflict"] = _mean(self._steps_any_conflict, n)
        out["fraction_steps_condition_a"] = _mean(self._steps_condition_a, n)
        out["min_cosine"] = self._min_cosine if math.isfinite(self._min_cosine) else None
        out["curvature_steps"] = c
        out["mean_curvature"] = _mean(self._curv_sum, c)
        out["min_curvature"] = self._curv_min if c else None
        out["max_curvature"] = self._curv_max if c else None
        return out


def _mean(total: float, count: int) -> float | None:
    return total / count if count else None


def triad_summary(rows: Iterable[Mapping[str, Any]]) -> dict[str, float | int | None]:
    """:meth:`TriadSummary.result` of rows read back from a log (all sessions)."""
    summary = TriadSummary()
    for row in rows:
        summary.add(row)
    return summary.result()
