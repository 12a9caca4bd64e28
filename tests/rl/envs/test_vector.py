"""Meta-World vector envs: real steps (MT1, MT10), goal state, crashed workers."""

from __future__ import annotations

import functools
import multiprocessing
import os
import pickle

import numpy as np
import pytest

pytest.importorskip("metaworld")
gym = pytest.importorskip("gymnasium")

from gradsurgery.rl.envs import (  # noqa: E402
    EnvCrashedError,
    EnvProtocol,
    MetaWorldVectorEnv,
    make_metaworld_envs,
    resolve_suite,
    sample_goals,
)
from gradsurgery.rl.envs.wrappers import task_env_class  # noqa: E402


def test_mt1_steps_goal_state_and_eval_mode() -> None:
    protocol = EnvProtocol(max_episode_steps=5, num_goals=3, reward_function_version="v2")
    goals = sample_goals(resolve_suite("reach-v3"), 3, 11)[0]
    with make_metaworld_envs("MT1:reach-v3", protocol, seed=11) as envs:
        assert (envs.num_tasks, envs.obs_dim, envs.action_dim) == (1, 39, 4)
        assert envs.tasks == ("reach-v3",) and envs.task_ids.tolist() == [0]
        first = envs.reset()
        assert first.shape == (1, 39) and np.isfinite(first).all()
        for t in range(5):
            out = envs.step(np.zeros((1, 4)))
            assert out.truncated.tolist() == [t == 4] and not out.terminated.any()
            assert out.obs.shape == (1, 39) and out.success.dtype == np.bool_
        state = envs.get_state()  # at the episode boundary, before the next goal is drawn
        after = [envs.reset() for _ in range(3)]
        envs.set_state(state)
        again = [envs.reset() for _ in range(3)]
        for a, b in zip(after, again, strict=True):
            np.testing.assert_array_equal(a, b)
        # evaluation mode: the k-th reset uses goal k (reach's observation ends with the goal)
        envs.begin_eval(terminate_on_success=True)
        for k in range(4):
            obs = envs.reset()
            target = pickle.loads(goals[k % 3].data)["rand_vec"][-3:]
            np.testing.assert_allclose(obs[0, 36:39], target)
        envs.end_eval()
        # evaluation left the training goal generator alone
        envs.set_state(state)
        np.testing.assert_array_equal(envs.reset(), after[0])


def test_mt10_real_steps() -> None:
    """The ten MT10 tasks step together (one goal each, to keep the build short)."""
    protocol = EnvProtocol(max_episode_steps=3, num_goals=1)
    with make_metaworld_envs("MT10", protocol, seed=0) as envs:
        assert envs.tasks == resolve_suite("MT10").tasks
        obs = envs.reset()
        assert obs.shape == (10, 39)
        rng = np.random.default_rng(0)
        for _ in range(3):
            out = envs.step(rng.uniform(-1, 1, (10, 4)))
        assert out.reward.shape == (10,) and np.isfinite(out.reward).all()
        assert out.truncated.all()
        # different tasks, different scenes
        assert len({tuple(np.round(o[4:7], 4)) for o in out.obs}) > 5


# ------------------------------------------------------------------------------ failures
class _Boom(gym.Env):
    """Steps fine until step ``at``; then raises, or kills its process (``hard``)."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (39,), dtype=np.float64)
    action_space = gym.spaces.Box(-1.0, 1.0, (4,), dtype=np.float32)

    def __init__(self, at: int | None, hard: bool) -> None:
        self.at, self.hard, self.t = at, hard, 0

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return np.zeros(39), {}

    def step(self, action):
        self.t += 1
        if self.at is not None and self.t >= self.at:
            if self.hard:
                os._exit(3)
            raise ValueError("simulated MuJoCo instability")
        return np.zeros(39), 0.0, False, False, {"success": 0.0}


def _task_env(index: int, name: str, at: int | None = None, hard: bool = False):
    return task_env_class()(_Boom(at, hard), index, name, None)


def _failing_vector(strategy: str, hard: bool = False) -> MetaWorldVectorEnv:
    fns = [
        functools.partial(_task_env, 0, "reach-v3"),
        functools.partial(_task_env, 1, "push-v3", 2, hard),
        functools.partial(_task_env, 2, "door-open-v3"),
    ]
    context = "fork" if strategy == "async" else None
    return MetaWorldVectorEnv(
        fns, ["reach-v3", "push-v3", "door-open-v3"], strategy=strategy, context=context
    )


needs_fork = pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs the fork start method"
)


@pytest.mark.filterwarnings("ignore::UserWarning")  # gymnasium logs the worker's traceback
@pytest.mark.parametrize("strategy", ["sync", pytest.param("async", marks=needs_fork)])
def test_a_failing_environment_is_reported_with_its_task(strategy: str) -> None:
    envs = _failing_vector(strategy)
    try:
        envs.reset()
        envs.step(np.zeros((3, 4)))
        with pytest.raises(
            EnvCrashedError, match=r"push-v3 \(task 1\).*step\(\).*instability"
        ) as info:
            envs.step(np.zeros((3, 4)))
        assert (info.value.task_index, info.value.task_name) == (1, "push-v3")
        with pytest.raises(RuntimeError, match="unusable"):
            envs.step(np.zeros((3, 4)))
    finally:
        envs.close()


@needs_fork
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_dead_worker_process_is_reported_not_a_hang() -> None:
    envs = _failing_vector("async", hard=True)
    try:
        envs.reset()
        envs.step(np.zeros((3, 4)))
        with pytest.raises(EnvCrashedError, match=r"push-v3 \(task 1, exit code 3\) died") as info:
            envs.step(np.zeros((3, 4)))
        assert info.value.task_name == "push-v3"
    finally:
        envs.close()
