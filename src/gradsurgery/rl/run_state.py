"""The RL run loop's own state (:class:`RunState`, saved and restored as a whole) and the
running records between two log rows (:class:`LogAccumulator`, :class:`Throughput`)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gradsurgery.rl.evaluation import EvalSeries
from gradsurgery.rl.presets import Budget
from gradsurgery.rl.update_metrics import MetricSums
from gradsurgery.runtime.values import finite_or_none

__all__ = ["LogAccumulator", "RunState", "Throughput", "next_multiple"]


class LogAccumulator:
    """Means of the update statistics and training-episode outcomes between two log rows."""

    def __init__(self, num_tasks: int) -> None:
        self.num_tasks = num_tasks
        self.reset()

    def reset(self) -> None:
        self.updates = MetricSums()
        self.ep_return = np.zeros(self.num_tasks)
        self.ep_success = np.zeros(self.num_tasks)
        self.ep_count = np.zeros(self.num_tasks)

    def add_update(self, info: Mapping[str, Any]) -> None:
        """Add an update's statistics (kept on the device until :meth:`row`)."""
        self.updates.add(info)

    def add_episodes(self, mask: np.ndarray, returns: np.ndarray, success: np.ndarray) -> None:
        self.ep_return[mask] += returns[mask]
        self.ep_success[mask] += success[mask]
        self.ep_count[mask] += 1

    def row(self, tasks: tuple[str, ...]) -> dict[str, Any]:
        sums, counts = self.updates.sums_and_counts()
        out: dict[str, Any] = {k: finite_or_none(sums[k] / counts[k]) for k in sums}
        seen = self.ep_count > 0
        if seen.any():
            out["train_return"] = finite_or_none(
                float((self.ep_return[seen] / self.ep_count[seen]).mean())
            )
            out["train_success"] = float((self.ep_success[seen] / self.ep_count[seen]).mean())
            out["train_episodes"] = int(self.ep_count.sum())
        return out

    def state(self) -> dict[str, Any]:
        sums, counts = self.updates.sums_and_counts()
        return {
            "sums": sums,
            "counts": counts,
            "ep_return": self.ep_return.tolist(),
            "ep_success": self.ep_success.tolist(),
            "ep_count": self.ep_count.tolist(),
        }

    def load(self, state: Mapping[str, Any]) -> None:
        self.updates.load(state["sums"], state["counts"])
        self.ep_return = np.array(state["ep_return"], dtype=np.float64)
        self.ep_success = np.array(state["ep_success"], dtype=np.float64)
        self.ep_count = np.array(state["ep_count"], dtype=np.float64)


def next_multiple(step: int, every: int) -> int:
    """The first multiple of ``every`` after ``step``."""
    return (step // every + 1) * every


@dataclass
class RunState:
    """The run loop's own state; a checkpoint saves it as a whole (its ``"run"`` entry:
    :meth:`to_state`) and a resume restores it as a whole (:meth:`from_state`). Next to it a
    checkpoint holds the agent, the replay buffer, the environments' goal generators and the
    generators: with those, everything a resumed run needs to continue exactly.

    Attributes:
        series: the evaluations so far.
        accumulator: the update statistics and episode outcomes since the last log row.
        step: vector steps done (one transition of every task each).
        updates: agent updates done.
        episodes: training episodes finished (all tasks together).
        next_eval: the step at or after which the next evaluation is due (at an episode boundary).
        next_ckpt: the same for the next checkpoint.
        next_log: the step at or after which the next training log row is written.
        refill_until: no updates before this step (after a resume from a checkpoint without replay
            data: the emptied buffer is refilled for ``warmup_steps`` steps first).
        at_boundary: every environment's episode ended at ``step`` (the final checkpoint need not
            be at a boundary).
        resumed_from: the steps at which the run was resumed, in order.
        wall_s: wall-clock seconds of all sessions, up to the last checkpoint or result.
    """

    series: EvalSeries
    accumulator: LogAccumulator
    step: int = 0
    updates: int = 0
    episodes: int = 0
    next_eval: int = 0
    next_ckpt: int = 0
    next_log: int = 0
    refill_until: int = 0
    at_boundary: bool = True
    resumed_from: list[int] = field(default_factory=list)
    wall_s: float = 0.0

    _COUNTERS = ("step", "updates", "episodes", "next_eval", "next_ckpt", "next_log",
                 "refill_until")  # fmt: skip

    @classmethod
    def start(cls, tasks: tuple[str, ...], budget: Budget) -> RunState:
        """The state of a fresh run: nothing done, the first evaluation, checkpoint and log row
        due after one interval each."""
        return cls(
            EvalSeries(tasks),
            LogAccumulator(len(tasks)),
            next_eval=budget.eval_every,
            next_ckpt=budget.checkpoint_every,
            next_log=budget.log_every,
        )

    def to_state(self) -> dict[str, Any]:
        """Plain values (for a checkpoint)."""
        return {
            **{k: int(getattr(self, k)) for k in self._COUNTERS},
            "at_boundary": self.at_boundary,
            "resumed_from": list(self.resumed_from),
            "wall_s": float(self.wall_s),
            "series": self.series.to_list(),
            "accumulator": self.accumulator.state(),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], tasks: tuple[str, ...]) -> RunState:
        """The inverse of :meth:`to_state` (a run of ``tasks``)."""
        accumulator = LogAccumulator(len(tasks))
        accumulator.load(state["accumulator"])
        return cls(
            EvalSeries.from_list(tasks, state["series"]),
            accumulator,
            **{k: int(state[k]) for k in cls._COUNTERS},
            at_boundary=bool(state["at_boundary"]),
            resumed_from=[int(s) for s in state["resumed_from"]],
            wall_s=float(state["wall_s"]),
        )


class Throughput:
    """Environment steps and updates per second over a window (from one log row to the next)."""

    def __init__(self, num_tasks: int) -> None:
        self.num_tasks = num_tasks
        self.since, self.steps, self.updates = time.perf_counter(), 0, 0
        self.rates = {"env_steps_per_s": 0.0, "updates_per_s": 0.0}

    def read(self) -> dict[str, float]:
        """The rates of the window (kept in ``rates``); a new window starts."""
        now = time.perf_counter()
        seconds = max(now - self.since, 1e-9)
        self.rates = {
            "env_steps_per_s": self.steps * self.num_tasks / seconds,
            "updates_per_s": self.updates / seconds,
        }
        self.since, self.steps, self.updates = now, 0, 0
        return self.rates
