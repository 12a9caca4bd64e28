"""Goal sets of Meta-World tasks, drawn exactly as Meta-World draws them.

Every Meta-World v3 task has a set of goals (object and target positions). For the named suites
one NumPy stream seeded with the goal seed runs over the suite's tasks in order, so
``num_goals=50`` gives exactly the goals of ``metaworld.MT10(seed=s)`` /
``gym.make_vec("Meta-World/MT10", seed=s)``; for ``MT1`` and custom lists task ``i`` gets its own
stream seeded ``s + i`` (``metaworld.MT1(name, seed=s + i)``; Meta-World's own ``custom-mt-envs``
does the same but treats seed 0 as "unseeded"). Drawing goes through Meta-World's private
attributes (``_freeze_rand_vec``, ``_set_task_inner``, ``_last_rand_vec``): this module is the only
place that touches them.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import Any

import numpy as np

from gradsurgery.rl.envs.suites import SuiteSpec, require_metaworld

__all__ = ["goals_cached", "sample_goals"]

_GOAL_CACHE: dict[tuple[Any, ...], list[list[Any]]] = {}


def _draw_rand_vecs(task: str, num_goals: int, env: Any = None) -> list[np.ndarray]:
    """``num_goals`` goal vectors of ``task`` from NumPy's global stream, as Meta-World draws them
    (an env with unfrozen goals, reset once per goal). ``env``: a fresh env of the task to draw
    with and keep (its next ``set_task`` freezes the goal again; Meta-World's reset starts with
    ``mj_resetData``, so the draws leave no trace in later episodes); default: a temporary one."""
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS, MT50_V3_ARGS_KWARGS

    kwargs = dict(MT50_V3_ARGS_KWARGS[task]["kwargs"])
    kwargs.pop("task_id", None)
    own = env is None
    if own:
        env = ALL_V3_ENVIRONMENTS[task]()
    try:
        env._freeze_rand_vec = False
        env._set_task_called = True
        env._set_task_inner(**kwargs)
        vecs = []
        for _ in range(num_goals):
            env.reset()
            vecs.append(np.array(env._last_rand_vec, dtype=np.float64))
    finally:
        if own:
            env.close()
    if len(np.unique(np.stack(vecs), axis=0)) != num_goals:  # Meta-World asserts the same
        raise RuntimeError(f"{task}: drew duplicate goals; choose another goal seed")
    return vecs


def _encode_goal(task: str, rand_vec: np.ndarray) -> Any:
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS, MT50_V3_ARGS_KWARGS
    from metaworld.types import Task

    data = dict(MT50_V3_ARGS_KWARGS[task]["kwargs"])
    data.pop("task_id", None)
    data.update(rand_vec=rand_vec, env_cls=ALL_V3_ENVIRONMENTS[task], partially_observable=False)
    return Task(env_name=task, data=pickle.dumps(data))


def _cache_key(spec: SuiteSpec, num_goals: int, seed: int) -> tuple[Any, ...]:
    return (spec.tasks, spec.goal_stream, int(num_goals), int(seed))


def goals_cached(spec: SuiteSpec, num_goals: int, seed: int) -> bool:
    """Whether :func:`sample_goals` has these goals already (in this process)."""
    return _cache_key(spec, num_goals, seed) in _GOAL_CACHE


def sample_goals(
    spec: SuiteSpec, num_goals: int, seed: int, *, envs: Sequence[Any] | None = None
) -> list[list[Any]]:
    """Per task, ``num_goals`` Meta-World ``Task`` objects (a goal vector each).

    ``spec.goal_stream == "suite"``: NumPy's global generator is seeded once with ``seed`` and
    task after task draws its goals (Meta-World's ``_make_tasks``: with ``num_goals=50`` these are
    ``metaworld.MT10(seed=seed).train_tasks``). ``"per_task"``: task ``i`` draws from a stream
    seeded ``seed + i`` (``metaworld.MT1(name, seed=seed + i)``). The global NumPy state is
    restored afterwards. Results are cached per process. ``envs``: fresh raw envs of the tasks to
    draw with (and then use), instead of temporary ones.
    """
    require_metaworld()
    key = _cache_key(spec, num_goals, seed)
    if key not in _GOAL_CACHE:
        saved = np.random.get_state()
        try:
            out = []
            for i, task in enumerate(spec.tasks):
                if spec.goal_stream == "per_task" or i == 0:
                    np.random.seed((seed + i) if spec.goal_stream == "per_task" else seed)
                env = None if envs is None else envs[i]
                vecs = _draw_rand_vecs(task, num_goals, env)
                out.append([_encode_goal(task, v) for v in vecs])
        finally:
            np.random.set_state(saved)
        _GOAL_CACHE[key] = out
    return [list(goals) for goals in _GOAL_CACHE[key]]
