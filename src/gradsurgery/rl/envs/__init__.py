"""Meta-World multi-task environments: one gymnasium environment per task, stepped as a vector.

:func:`make_metaworld_envs` builds a :class:`MetaWorldVectorEnv` for a suite — ``"MT10"``,
``"MT25"``, ``"MT50"``, ``"MT1:reach-v3"`` (one task with goal variation) or any list of task
names — under an :class:`EnvProtocol` (episode length, number of goals, reward version), with
gymnasium's ``SyncVectorEnv`` (all tasks in this process) or ``AsyncVectorEnv`` (one worker process
per task).

Task ids instead of one-hot observations. Slot ``i`` of the vector is always task ``i``
(``envs.task_ids[i] == i``, named ``envs.tasks[i]``). Observations are Meta-World's own 39-d vectors
(Meta-World's ``use_one_hot=False`` default); the runner passes ``task_ids`` next to them and the
agent turns ids into a one-hot vector or a task embedding itself. The replay buffer therefore
stores 39 numbers per observation whatever the number of tasks, and a task-conditioned network can
use the id directly.

Goals. Every Meta-World v3 task has a set of goals (object and target positions). They are drawn
as Meta-World draws them (:func:`sample_goals`): for the named suites one NumPy stream seeded with
the goal seed runs over the suite's tasks in order, so ``num_goals=50`` gives exactly the goals of
``metaworld.MT10(seed=s)`` / ``gym.make_vec("Meta-World/MT10", seed=s)``; for ``MT1`` and custom
lists task ``i`` gets its own stream seeded ``s + i`` (``metaworld.MT1(name, seed=s + i)``;
Meta-World's own ``custom-mt-envs`` does the same but treats seed 0 as "unseeded"). With
``num_goals=1`` every task keeps one fixed goal (Meta-World's ``num_goals`` option). During
training each reset picks one of the task's goals uniformly at random (as Meta-World's
``RandomTaskSelectWrapper``) from a generator owned by the environment; during evaluation
(:meth:`MetaWorldVectorEnv.begin_eval`) the ``k``-th evaluation episode of a task uses goal
``k mod num_goals``, so 50 episodes visit each of the 50 goals once (Meta-World's documented MT
evaluation) and every evaluation of a run sees the same goals.

Determinism. With its goal fixed, a Meta-World v3 environment is deterministic: reset puts the
arm and objects at positions given by the goal vector and ``step`` draws no random numbers. The only
environment randomness is the goal choice at reset, whose generator state
:meth:`MetaWorldVectorEnv.get_state` returns. Training episodes all have the protocol's length
(Meta-World never terminates a training episode; ``truncated`` comes from the time limit), so all
tasks reach an episode boundary together every ``max_episode_steps`` vector steps; at a boundary
the state of every environment is its goal generator, and resuming there reproduces the run
exactly. The MuJoCo state inside an episode (positions, velocities, the solver's warm start) is
not saved: runs resume at episode boundaries only.

Failures. An exception inside an environment — in this process or in an async worker — reaches
the caller as :class:`EnvCrashedError` naming the task (``"pick-place-v3 (task 2) failed in
step(): ..."``); a worker process that dies without a Python exception (a segfault, ``os._exit``,
the out-of-memory killer) is reported the same way with its exit code, instead of a hang or a bare
``EOFError``. In async mode ``step_timeout`` seconds without an answer raises an
:class:`EnvCrashedError` naming the tasks that did not answer.

Modules: :mod:`~gradsurgery.rl.envs.suites` (suites and task names),
:mod:`~gradsurgery.rl.envs.protocol` (:class:`EnvProtocol`), :mod:`~gradsurgery.rl.envs.goals`
(goal sets, the only code that reads Meta-World's private goal attributes),
:mod:`~gradsurgery.rl.envs.wrappers` (one task's environment), :mod:`~gradsurgery.rl.envs.vector`
(the vector env), :mod:`~gradsurgery.rl.envs.errors` (:class:`EnvCrashedError`); every name is
importable from this package.

Requires ``pip install "gradsurgery[rl]"`` (Meta-World 3.1 with MuJoCo 3.3 wheels; CPU only).
Building costs about 1 s per task on one core (MuJoCo model compilation) plus, for 50 goals,
50 resets per task to draw the goals (the sync vector draws them with the very envs it then steps;
goal sets are cached per process); a step costs about 1.5–2 ms per task.

Example:
    >>> envs = make_metaworld_envs("MT1:reach-v3", EnvProtocol(num_goals=1), seed=0)  # doctest: +SKIP
    >>> obs = envs.reset()  # doctest: +SKIP
    >>> out = envs.step(np.zeros((envs.num_tasks, envs.action_dim)))  # doctest: +SKIP
    >>> obs.shape, out.success.shape, envs.tasks  # doctest: +SKIP
    ((1, 39), (1,), ('reach-v3',))
"""

from gradsurgery.rl.envs.errors import EnvCrashedError
from gradsurgery.rl.envs.goals import sample_goals
from gradsurgery.rl.envs.protocol import ACTION_DIM, MAX_EPISODE_STEPS, OBS_DIM, EnvProtocol
from gradsurgery.rl.envs.suites import (
    NAMED_SUITES,
    SuiteSpec,
    all_task_names,
    require_metaworld,
    resolve_suite,
)
from gradsurgery.rl.envs.vector import MetaWorldVectorEnv, VecStep, make_metaworld_envs
from gradsurgery.rl.envs.wrappers import make_task_env

__all__ = [
    "ACTION_DIM",
    "MAX_EPISODE_STEPS",
    "NAMED_SUITES",
    "OBS_DIM",
    "EnvCrashedError",
    "EnvProtocol",
    "MetaWorldVectorEnv",
    "SuiteSpec",
    "VecStep",
    "all_task_names",
    "make_metaworld_envs",
    "make_task_env",
    "require_metaworld",
    "resolve_suite",
    "sample_goals",
]
