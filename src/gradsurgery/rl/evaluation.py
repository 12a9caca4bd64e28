"""Evaluation of a multi-task policy on Meta-World: success rate and return per task, over time.

:func:`evaluate` runs the deterministic policy (``agent.act(..., deterministic=True)``) for
``episodes`` episodes of every task, as Meta-World's multi-task evaluation does
(``metaworld.evaluation.evaluation``, and the procedure its documentation describes):

* all tasks run side by side in the vector env; a task that has finished its episodes keeps
  running (its extra episodes are ignored) until every task has finished;
* episode ``k`` of a task uses goal ``k mod num_goals`` (the env's evaluation mode), so 50
  episodes visit each of Meta-World's 50 goals once, and every evaluation of a run sees the same
  goals (Meta-World's shipped helper, used on ``gym.make_vec`` envs, draws goals at random with
  replacement instead; its documentation describes one episode per goal);
* an episode is a success when ``info["success"]`` was 1 at any step (protocol
  ``success="any_step"``; ``"final_step"`` looks at the last step only); with
  ``eval_terminate_on_success`` the episode ends at the first success, as in Meta-World's helper
  (its return then stops there too);
* per task: success rate = successes / episodes and the mean undiscounted return; the run's score
  is the mean over tasks of the per-task success rates.

An evaluation neither draws random numbers nor touches the training goal generators, so a run's
training trajectory does not depend on when (or whether) it evaluates.

:class:`EvalSeries` holds a run's evaluations and reports both numbers the papers report: the
**final** one (the last evaluation) and the **best mean over the series** (the maximum over
evaluations of the mean success across tasks — the old MT10/MT50 papers' number; it is biased
upwards by the maximum over noisy evaluations, which is why Meta-World's protocol reports the final
one). :func:`plot_learning_curves` draws the series: one PNG per task and a grid with the mean.

Example (hand-made series):
    >>> s = EvalSeries(("reach-v3", "push-v3"))
    >>> s.append(EvalResult(1000, ("reach-v3", "push-v3"), np.array([0.5, 0.0]), np.array([10.0, 1.0]), 2))
    >>> s.append(EvalResult(2000, ("reach-v3", "push-v3"), np.array([1.0, 0.5]), np.array([20.0, 2.0]), 2))
    >>> s.append(EvalResult(3000, ("reach-v3", "push-v3"), np.array([1.0, 0.0]), np.array([30.0, 1.0]), 2))
    >>> summary = s.summary()
    >>> summary["final_mean_success"], summary["best_mean_success"], summary["best_step"]
    (0.5, 0.75, 2000)
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from gradsurgery.runtime.values import finite_or_none

__all__ = ["EvalResult", "EvalSeries", "PolicyLike", "evaluate", "plot_learning_curves"]


class PolicyLike(Protocol):
    def act(
        self, obs: Any, task_ids: Any, deterministic: bool = False, generator: Any = None
    ) -> Any: ...


@dataclass(frozen=True)
class EvalResult:
    """One evaluation: per-task success rate and mean return after ``step`` steps per task."""

    step: int
    tasks: tuple[str, ...]
    success: np.ndarray  # (num_tasks,) success rate in [0, 1]
    returns: np.ndarray  # (num_tasks,) mean undiscounted return
    episodes: int  # per task
    lengths: np.ndarray | None = None  # (num_tasks,) mean episode length
    wall_s: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "success", np.asarray(self.success, dtype=np.float64))
        object.__setattr__(self, "returns", np.asarray(self.returns, dtype=np.float64))
        if self.lengths is not None:
            object.__setattr__(self, "lengths", np.asarray(self.lengths, dtype=np.float64))
        m = len(self.tasks)
        if self.success.shape != (m,) or self.returns.shape != (m,):
            raise ValueError(f"success and returns must have shape ({m},)")

    @property
    def mean_success(self) -> float:
        return float(self.success.mean())

    @property
    def mean_return(self) -> float:
        return float(self.returns.mean())

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "step": int(self.step),
            "mean_success": self.mean_success,
            "mean_return": finite_or_none(self.mean_return),
            "episodes": int(self.episodes),
            "wall_s": float(self.wall_s),
            "success": {t: float(v) for t, v in zip(self.tasks, self.success, strict=True)},
            "return": {t: finite_or_none(v) for t, v in zip(self.tasks, self.returns, strict=True)},
        }
        if self.lengths is not None:
            out["length"] = {t: float(v) for t, v in zip(self.tasks, self.lengths, strict=True)}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalResult:
        tasks = tuple(data["success"])
        lengths = data.get("length")
        return cls(
            step=int(data["step"]),
            tasks=tasks,
            success=np.array([data["success"][t] for t in tasks], dtype=np.float64),
            returns=np.array(
                [math.nan if data["return"][t] is None else data["return"][t] for t in tasks]
            ),
            episodes=int(data["episodes"]),
            lengths=None if lengths is None else np.array([lengths[t] for t in tasks]),
            wall_s=float(data.get("wall_s", 0.0)),
        )


def evaluate(
    policy: PolicyLike,
    envs: Any,
    episodes: int,
    *,
    terminate_on_success: bool = True,
    success: str = "any_step",
    step: int = 0,
) -> EvalResult:
    """Run ``episodes`` deterministic episodes of every task (see the module docstring).

    Args:
        policy: anything with ``act(obs, task_ids, deterministic=True)`` → ``(num_tasks, A)``.
        envs: a :class:`~gradsurgery.rl.envs.MetaWorldVectorEnv` (or an object with its API:
            ``task_ids``, ``tasks``, ``begin_eval``, ``end_eval``, ``reset``, ``step``). Its
            episodes in progress are abandoned: reset it (training mode) afterwards.
        episodes: episodes per task.
        terminate_on_success: end an episode at its first success.
        success: ``"any_step"`` or ``"final_step"``.
        step: the training step to record.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if success not in ("any_step", "final_step"):
        raise ValueError(f"success must be 'any_step' or 'final_step', got {success!r}")
    start = time.perf_counter()
    m = len(envs.tasks)
    task_ids = np.asarray(envs.task_ids)
    done_count = np.zeros(m, dtype=np.int64)
    successes = np.zeros(m, dtype=np.float64)
    return_sum = np.zeros(m, dtype=np.float64)
    length_sum = np.zeros(m, dtype=np.float64)
    ep_return = np.zeros(m, dtype=np.float64)
    ep_length = np.zeros(m, dtype=np.int64)
    ep_success = np.zeros(m, dtype=np.bool_)
    envs.begin_eval(terminate_on_success)
    try:
        obs = envs.reset()
        while (done_count < episodes).any():
            actions = _to_numpy(policy.act(obs, task_ids, deterministic=True))
            out = envs.step(actions)
            ep_return += out.reward
            ep_length += 1
            ep_success = ep_success | out.success if success == "any_step" else out.success.copy()
            done = out.terminated | out.truncated
            obs = out.obs
            if done.any():
                record = done & (done_count < episodes)
                successes[record] += ep_success[record]
                return_sum[record] += ep_return[record]
                length_sum[record] += ep_length[record]
                done_count[record] += 1
                ep_return[done], ep_length[done], ep_success[done] = 0.0, 0, False
                if (done_count < episodes).any():
                    fresh = envs.reset(mask=done)
                    obs = obs.copy()
                    obs[done] = fresh[done]
    finally:
        envs.end_eval()
    return EvalResult(
        step=int(step),
        tasks=tuple(envs.tasks),
        success=successes / episodes,
        returns=return_sum / episodes,
        episodes=int(episodes),
        lengths=length_sum / episodes,
        wall_s=time.perf_counter() - start,
    )


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


# ------------------------------------------------------------------------------ series
@dataclass
class EvalSeries:
    """The evaluations of one run, in order; ``final`` and ``best`` as the papers report them."""

    tasks: tuple[str, ...]
    results: list[EvalResult] = field(default_factory=list)

    def append(self, result: EvalResult) -> None:
        if tuple(result.tasks) != tuple(self.tasks):
            raise ValueError(
                f"evaluation of tasks {result.tasks} added to a series of {self.tasks}"
            )
        if self.results and result.step < self.results[-1].step:
            raise ValueError(
                f"evaluation at step {result.step} after one at step {self.results[-1].step}"
            )
        self.results.append(result)

    def __len__(self) -> int:
        return len(self.results)

    @property
    def steps(self) -> np.ndarray:
        return np.array([r.step for r in self.results], dtype=np.int64)

    def success_matrix(self) -> np.ndarray:
        """``(num_evaluations, num_tasks)`` success rates."""
        return (
            np.stack([r.success for r in self.results])
            if self.results
            else np.zeros((0, len(self.tasks)))
        )

    def return_matrix(self) -> np.ndarray:
        return (
            np.stack([r.returns for r in self.results])
            if self.results
            else np.zeros((0, len(self.tasks)))
        )

    def final(self) -> EvalResult | None:
        """The last evaluation."""
        return self.results[-1] if self.results else None

    def best(self) -> EvalResult | None:
        """The evaluation with the highest mean success over tasks (the earliest on ties)."""
        if not self.results:
            return None
        means = self.success_matrix().mean(axis=1)
        return self.results[int(np.argmax(means))]

    def summary(self) -> dict[str, Any]:
        """Final and best-over-series numbers (mean over tasks and per task)."""
        final, best = self.final(), self.best()
        if final is None or best is None:
            return {"num_evaluations": 0}
        return {
            "num_evaluations": len(self.results),
            "final_step": int(final.step),
            "final_mean_success": final.mean_success,
            "final_mean_return": finite_or_none(final.mean_return),
            "final_success": {t: float(v) for t, v in zip(self.tasks, final.success, strict=True)},
            "best_mean_success": best.mean_success,
            "best_step": int(best.step),
            "best_success": {t: float(v) for t, v in zip(self.tasks, best.success, strict=True)},
        }

    def to_list(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.results]

    @classmethod
    def from_list(cls, tasks: Sequence[str], rows: Sequence[dict[str, Any]]) -> EvalSeries:
        series = cls(tuple(tasks))
        for row in rows:
            series.append(EvalResult.from_dict(row))
        return series


# ------------------------------------------------------------------------------ plots
def _safe_name(task: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in task)


def plot_learning_curves(series: EvalSeries, out_dir: str | Path, *, title: str = "") -> list[Path]:
    """Write ``curves/<task>.png`` (success rate and return against steps per task) for every task
    and ``learning_curves.png`` (a grid: the mean over tasks first, then each task). Returns the
    paths written (none for an empty series)."""
    if not series.results:
        return []
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    (out / "curves").mkdir(parents=True, exist_ok=True)
    steps = series.steps
    succ, rets = series.success_matrix(), series.return_matrix()
    written: list[Path] = []

    def draw(ax: Any, s: np.ndarray, r: np.ndarray | None, name: str) -> None:
        ax.plot(steps, s, marker="o", ms=3, color="tab:blue")
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("steps per task", fontsize=8)
        ax.set_ylabel("success rate", fontsize=8, color="tab:blue")
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if r is not None and np.isfinite(r).any():
            ax2 = ax.twinx()
            ax2.plot(steps, r, color="tab:orange", alpha=0.7, lw=1)
            ax2.set_ylabel("return", fontsize=8, color="tab:orange")
            ax2.tick_params(labelsize=7)

    for k, task in enumerate(series.tasks):
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        draw(ax, succ[:, k], rets[:, k], task)
        fig.tight_layout()
        path = out / "curves" / f"{_safe_name(task)}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

    panels = len(series.tasks) + 1
    cols = min(5, panels)
    rows = math.ceil(panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.5 * rows), squeeze=False)
    draw(axes[0][0], succ.mean(axis=1), None, "mean over tasks")
    for k, task in enumerate(series.tasks):
        ax = axes[(k + 1) // cols][(k + 1) % cols]
        draw(ax, succ[:, k], None, task)
    for k in range(panels, rows * cols):
        axes[k // cols][k % cols].axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = out / "learning_curves.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    written.append(path)
    return written
