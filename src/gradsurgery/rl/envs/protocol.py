"""The environment protocol: episode length, goals per task, reward version, evaluation rules."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

__all__ = ["ACTION_DIM", "MAX_EPISODE_STEPS", "OBS_DIM", "EnvProtocol"]

MAX_EPISODE_STEPS = 500  # Meta-World v3's max_path_length: an env refuses to step past it
OBS_DIM = 39
ACTION_DIM = 4


@dataclass(frozen=True)
class EnvProtocol:
    """How the environments behave and how evaluation episodes are run and scored.

    Attributes:
        max_episode_steps: episode length (time limit; at most 500, Meta-World v3's horizon).
        num_goals: goals per task (1..50). 50 = Meta-World v3's MT benchmarks; 1 = one fixed goal.
        goal_seed: seed of the goal sets; ``None`` uses the run's seed (as
            ``gym.make_vec("Meta-World/MT10", seed=seed)``), an integer fixes the goals across seeds.
        reward_function_version: Meta-World's ``"v2"`` (default) or the original ``"v1"`` shaping.
        eval_terminate_on_success: evaluation episodes end at the first success (Meta-World's
            evaluation); otherwise they run the full length.
        success: how an episode counts as a success: ``"any_step"`` (the success flag was 1 at some
            step: Meta-World's definition and the old papers') or ``"final_step"``.
    """

    max_episode_steps: int = 500
    num_goals: int = 50
    goal_seed: int | None = None
    reward_function_version: Literal["v1", "v2"] = "v2"
    eval_terminate_on_success: bool = True
    success: Literal["any_step", "final_step"] = "any_step"

    def __post_init__(self) -> None:
        if not 1 <= self.max_episode_steps <= MAX_EPISODE_STEPS:
            raise ValueError(
                f"max_episode_steps must be in 1..{MAX_EPISODE_STEPS} (Meta-World v3 envs refuse "
                f"to step past {MAX_EPISODE_STEPS}), got {self.max_episode_steps}"
            )
        if not 1 <= self.num_goals <= 50:
            raise ValueError(f"num_goals must be in 1..50, got {self.num_goals}")
        if self.reward_function_version not in ("v1", "v2"):
            raise ValueError(
                f"reward_function_version must be 'v1' or 'v2', got {self.reward_function_version!r}"
            )
        if self.success not in ("any_step", "final_step"):
            raise ValueError(f"success must be 'any_step' or 'final_step', got {self.success!r}")
        if self.success == "final_step" and self.eval_terminate_on_success:
            raise ValueError("success='final_step' needs eval_terminate_on_success=False")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
