"""One task's environment: Meta-World env, time limit, terminate-on-success switch, goal
selection and the task wrapper that names the task in every failure.

During training each reset picks one of the task's goals uniformly at random (as Meta-World's
``RandomTaskSelectWrapper``) from a generator owned by the environment; during evaluation the
``k``-th evaluation episode of a task uses goal ``k mod num_goals``. The wrapper classes are
defined on first use, so that importing this module needs no gymnasium.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from gradsurgery.rl.envs.errors import EnvCrashedError
from gradsurgery.rl.envs.protocol import EnvProtocol
from gradsurgery.rl.envs.suites import require_metaworld

__all__ = ["goal_select_class", "make_task_env", "task_env_class"]


@functools.cache
def goal_select_class() -> type:
    """The goal-selection wrapper class (defined on first use: gymnasium is imported then)."""
    import gymnasium as gym

    class GoalSelect(gym.Wrapper):
        """Sets the task's goal before each reset: uniformly at random from an own generator
        (training) or goal ``k mod n`` at the ``k``-th reset (evaluation, ``mode="cycle"``)."""

        def __init__(self, env: Any, goals: list[Any], seed: int) -> None:
            super().__init__(env)
            self.goals = list(goals)
            self.rng = np.random.Generator(np.random.PCG64(seed))
            self.mode = "random"
            self.cursor = 0

        def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
            if self.mode == "random":
                k = int(self.rng.integers(len(self.goals))) if len(self.goals) > 1 else 0
            else:
                k = self.cursor % len(self.goals)
                self.cursor += 1
            raw: Any = self.env.unwrapped
            raw.set_task(self.goals[k])
            return self.env.reset(seed=seed, options=options)

    return GoalSelect


@functools.cache
def task_env_class() -> type:
    """The task wrapper class (defined on first use: gymnasium is imported then)."""
    import gymnasium as gym

    class TaskEnv(gym.Wrapper):
        """Knows its task; turns any exception into an :class:`EnvCrashedError` naming it."""

        def __init__(self, env: Any, task_index: int, task_name: str, goal_select: Any) -> None:
            super().__init__(env)
            self.task_index = task_index
            self.task_name = task_name
            self.goal_select = goal_select
            self.pending_env_state: dict[str, Any] | None = None

        def _fail(self, op: str, e: BaseException) -> EnvCrashedError:
            return EnvCrashedError(
                f"Meta-World environment {self.task_name} (task {self.task_index}) failed in "
                f"{op}: {type(e).__name__}: {e}",
                self.task_index,
                self.task_name,
            )

        def step(self, action: Any) -> Any:
            try:
                return self.env.step(action)
            except EnvCrashedError:
                raise
            except Exception as e:
                raise self._fail("step()", e) from e

        def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
            try:
                return self.env.reset(seed=seed, options=options)
            except EnvCrashedError:
                raise
            except Exception as e:
                raise self._fail("reset()", e) from e

        def begin_eval(self, terminate_on_success: bool) -> None:
            self.goal_select.mode, self.goal_select.cursor = "cycle", 0
            self.env.get_wrapper_attr("toggle_terminate_on_success")(bool(terminate_on_success))

        def end_eval(self) -> None:
            self.goal_select.mode = "random"
            self.env.get_wrapper_attr("toggle_terminate_on_success")(False)

        def get_env_state(self) -> dict[str, Any]:
            gs = self.goal_select
            return {
                "task_name": self.task_name,
                "goal_rng": gs.rng.bit_generator.state,
                "mode": gs.mode,
                "cursor": gs.cursor,
            }

        def apply_pending_env_state(self) -> None:
            state, self.pending_env_state = self.pending_env_state, None
            if state is None:
                raise RuntimeError("no pending environment state")
            if state["task_name"] != self.task_name:
                raise ValueError(
                    f"environment state of {state['task_name']} given to {self.task_name}"
                )
            gs = self.goal_select
            gs.rng.bit_generator.state = state["goal_rng"]
            gs.mode, gs.cursor = state["mode"], int(state["cursor"])

    return TaskEnv


def make_task_env(
    task_index: int,
    task_name: str,
    goals: list[Any],
    protocol: EnvProtocol,
    seed: int,
    raw_env: Any = None,
) -> Any:
    """One task's environment: Meta-World env → time limit → terminate-on-success switch (off
    while training) → goal selection → task wrapper. ``seed`` seeds the goal choice; ``raw_env``
    an already constructed Meta-World env of the task (with the protocol's reward version)."""
    require_metaworld()
    import gymnasium as gym
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS
    from metaworld.wrappers import AutoTerminateOnSuccessWrapper

    env = raw_env
    if env is None:
        env = ALL_V3_ENVIRONMENTS[task_name](
            reward_function_version=protocol.reward_function_version
        )
    env.set_task(goals[0])  # Meta-World envs refuse reset() before a task is set
    env = gym.wrappers.TimeLimit(env, protocol.max_episode_steps)
    env = AutoTerminateOnSuccessWrapper(env)
    env.toggle_terminate_on_success(False)
    goal_select = goal_select_class()(env, goals, seed)
    return task_env_class()(goal_select, task_index, task_name, goal_select)
