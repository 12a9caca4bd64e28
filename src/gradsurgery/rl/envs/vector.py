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

from __future__ import annotations

import difflib
import functools
import multiprocessing
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, NamedTuple

import numpy as np

from gradsurgery.runtime.seeding import derive_seed

__all__ = [
    "NAMED_SUITES",
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

#: Suites whose goals come from one stream over the suite (``metaworld.MT10(seed)`` etc.).
NAMED_SUITES: tuple[str, ...] = ("MT10", "MT25", "MT50")

MAX_EPISODE_STEPS = 500  # Meta-World v3's max_path_length: an env refuses to step past it
OBS_DIM = 39
ACTION_DIM = 4


def require_metaworld() -> Any:
    """Import Meta-World, with an install hint when it is missing."""
    try:
        import metaworld
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Meta-World is not installed: pip install 'gradsurgery[rl]' "
            "(metaworld>=3.1,<3.2 with MuJoCo 3.3 wheels; it also needs 'packaging')"
        ) from e
    return metaworld


# ------------------------------------------------------------------------------ errors
class EnvCrashedError(RuntimeError):
    """An environment raised or its worker process died; the message names the task.

    ``task_index`` and ``task_name`` are set when one task is at fault (``None`` otherwise).
    The one-argument constructor form ``EnvCrashedError(other_instance)`` (how gymnasium's async
    vector env re-raises a worker's exception) copies the other instance's fields.
    """

    def __init__(
        self, message: Any = "", task_index: int | None = None, task_name: str | None = None
    ) -> None:
        if isinstance(message, EnvCrashedError):
            task_index, task_name, message = message.task_index, message.task_name, message.message
        self.message = str(message)
        self.task_index = task_index
        self.task_name = task_name
        super().__init__(self.message, task_index, task_name)

    def __str__(self) -> str:
        return self.message


# ------------------------------------------------------------------------------ suites
def all_task_names() -> tuple[str, ...]:
    """The 50 Meta-World v3 task names (MT50 order: alphabetical)."""
    require_metaworld()
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    return tuple(ALL_V3_ENVIRONMENTS)


def _suite_tasks(name: str) -> tuple[str, ...]:
    require_metaworld()
    from metaworld import env_dict

    return tuple(
        {"MT10": env_dict.MT10_V3, "MT25": env_dict.MT25_V3, "MT50": env_dict.MT50_V3}[name]
    )


@dataclass(frozen=True)
class SuiteSpec:
    """Which tasks, in which order, and how their goals are drawn (see :func:`sample_goals`).

    ``name`` is ``"MT10"``/``"MT25"``/``"MT50"``, ``"MT1:<task>"`` or ``"custom"``;
    ``goal_stream`` is ``"suite"`` (one stream over the tasks) or ``"per_task"``.
    """

    name: str
    tasks: tuple[str, ...]
    goal_stream: Literal["suite", "per_task"]

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    @property
    def slug(self) -> str:
        """A file-name-friendly label (``MT10``, ``MT1-reach-v3``, ``custom3``)."""
        if self.name.startswith("MT1:"):
            return "MT1-" + self.tasks[0]
        if self.name == "custom":
            return f"custom{len(self.tasks)}"
        return self.name


def _canonical_task(name: str, known: Sequence[str]) -> str:
    text = name.strip().lower()
    if text in known:
        return text
    if f"{text}-v3" in known:
        return f"{text}-v3"
    close = difflib.get_close_matches(text, known, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ValueError(
        f"unknown Meta-World task {name!r}{hint} (the v3 tasks are listed by "
        "gradsurgery.rl.envs.all_task_names())"
    )


def resolve_suite(suite: str, tasks: Sequence[str] | None = None) -> SuiteSpec:
    """Parse a suite: ``"MT10"``, ``"MT25"``, ``"MT50"``, ``"MT1:reach-v3"`` (or ``"MT1"`` with
    ``tasks=["reach-v3"]``, or just ``"reach-v3"``), ``"custom"`` with ``tasks``, or
    comma-separated task names (``"reach-v3,push-v3"``). Task names may omit ``-v3``."""
    known = all_task_names()
    text = suite.strip()
    upper = text.upper()
    if upper in NAMED_SUITES:
        if tasks:
            raise ValueError(f"{upper} has a fixed task list; do not pass tasks with it")
        return SuiteSpec(upper, _suite_tasks(upper), "suite")
    head, sep, rest = text.partition(":")
    if head.upper() == "MT1":
        names = [rest] if sep else list(tasks or [])
        if len(names) != 1 or not names[0].strip():
            raise ValueError("MT1 needs exactly one task: 'MT1:reach-v3' or tasks=['reach-v3']")
        task = _canonical_task(names[0], known)
        return SuiteSpec(f"MT1:{task}", (task,), "per_task")
    if text.lower() == "custom":
        names = list(tasks or [])
    else:
        if tasks:
            raise ValueError(f"pass either a suite name or tasks, not both ({suite!r}, {tasks!r})")
        names = [t for t in text.split(",") if t.strip()]
    if not names:
        raise ValueError(f"no tasks in suite {suite!r}")
    canonical = tuple(_canonical_task(t, known) for t in names)
    if len(set(canonical)) != len(canonical):
        raise ValueError(f"a task appears twice in {canonical}")
    if len(canonical) == 1:
        return SuiteSpec(f"MT1:{canonical[0]}", canonical, "per_task")
    return SuiteSpec("custom", canonical, "per_task")


# ------------------------------------------------------------------------------ protocol
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


# ------------------------------------------------------------------------------ goals
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
    key = (spec.tasks, spec.goal_stream, int(num_goals), int(seed))
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


# ------------------------------------------------------------------------------ one env
@functools.cache
def _wrapper_classes() -> tuple[type, type]:
    """The two wrappers (defined on first use, so that importing this module needs no gymnasium)."""
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
            self.env.unwrapped.set_task(self.goals[k])
            return self.env.reset(seed=seed, options=options)

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

    return GoalSelect, TaskEnv


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

    goal_select_cls, task_env_cls = _wrapper_classes()
    env = raw_env
    if env is None:
        env = ALL_V3_ENVIRONMENTS[task_name](
            reward_function_version=protocol.reward_function_version
        )
    env.set_task(goals[0])  # Meta-World envs refuse reset() before a task is set
    env = gym.wrappers.TimeLimit(env, protocol.max_episode_steps)
    env = AutoTerminateOnSuccessWrapper(env)
    env.toggle_terminate_on_success(False)
    goal_select = goal_select_cls(env, goals, seed)
    return task_env_cls(goal_select, task_index, task_name, goal_select)


# ------------------------------------------------------------------------------ vector
class VecStep(NamedTuple):
    """One vector step. ``obs`` holds each env's observation after the step (for an env whose
    episode just ended: its last observation; reset it with :meth:`MetaWorldVectorEnv.reset`)."""

    obs: np.ndarray  # (num_tasks, 39) float64
    reward: np.ndarray  # (num_tasks,) float64
    terminated: np.ndarray  # (num_tasks,) bool — only with terminate-on-success (evaluation)
    truncated: np.ndarray  # (num_tasks,) bool — time limit
    success: np.ndarray  # (num_tasks,) bool — Meta-World's info["success"] at this step


class MetaWorldVectorEnv:
    """Tasks stepped together; slot ``i`` is task ``tasks[i]`` (see the module docstring).

    Built by :func:`make_metaworld_envs`; the constructor takes ready environment factories, which
    is how tests inject a failing environment. Autoreset is disabled: the caller resets the envs
    whose episode ended (``reset(mask)``), which is what lets a run checkpoint the goal
    generators before the next episode's goals are drawn.
    """

    def __init__(
        self,
        env_fns: Sequence[Callable[[], Any]],
        tasks: Sequence[str],
        *,
        strategy: Literal["sync", "async"] = "sync",
        context: str | None = None,
        step_timeout: float | None = None,
        suite: SuiteSpec | None = None,
        protocol: EnvProtocol | None = None,
    ) -> None:
        import gymnasium as gym

        if len(env_fns) != len(tasks):
            raise ValueError(f"{len(env_fns)} env factories for {len(tasks)} tasks")
        if strategy not in ("sync", "async"):
            raise ValueError(f"strategy must be 'sync' or 'async', got {strategy!r}")
        self.tasks = tuple(tasks)
        self.num_tasks = len(self.tasks)
        self.task_ids = np.arange(self.num_tasks, dtype=np.int64)
        self.strategy = strategy
        self.step_timeout = step_timeout
        self.suite = suite
        self.protocol = protocol
        self._closed = False
        self._broken = False
        mode = gym.vector.AutoresetMode.DISABLED
        if strategy == "sync":
            self.vector = gym.vector.SyncVectorEnv(list(env_fns), autoreset_mode=mode)
        else:
            # Two-step construction keeps a handle on the worker processes when __init__ fails
            # (a worker whose env factory raised dies before answering gymnasium's space check).
            self.vector = gym.vector.AsyncVectorEnv.__new__(gym.vector.AsyncVectorEnv)
            try:
                self.vector.__init__(list(env_fns), autoreset_mode=mode, context=context)
            except Exception as e:
                self._broken = True
                translated = self._translate(e, "construction")
                for p in getattr(self.vector, "processes", []):
                    if p.is_alive():
                        p.terminate()
                self._closed = True
                raise translated from e
        self.obs_dim = int(np.prod(self.vector.single_observation_space.shape))
        self.action_dim = int(np.prod(self.vector.single_action_space.shape))

    # -- failure reporting ---------------------------------------------------------------------
    def _dead_workers(self) -> list[tuple[int, int | None]]:
        procs = getattr(self.vector, "processes", None)
        if not procs:
            return []
        deadline = time.monotonic() + 2.0  # a worker that closed its pipe may still be exiting
        while True:
            dead = [i for i, p in enumerate(procs) if not p.is_alive()]
            if dead or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        for i in dead:
            procs[i].join(timeout=0.5)  # collect the exit code
        return [(i, procs[i].exitcode) for i in dead]

    def _translate(self, e: BaseException, op: str) -> BaseException:
        if isinstance(e, EnvCrashedError):
            return e
        if len(e.args) == 1 and isinstance(e.args[0], EnvCrashedError):
            return EnvCrashedError(e.args[0])
        if isinstance(e, multiprocessing.TimeoutError):
            pipes = getattr(self.vector, "parent_pipes", [])
            silent = [i for i, p in enumerate(pipes) if p is not None and not p.poll()]
            names = ", ".join(f"{self.tasks[i]} (task {i})" for i in silent) or "unknown tasks"
            return EnvCrashedError(
                f"Meta-World environment(s) {names} did not answer {op} within "
                f"{self.step_timeout} s",
                silent[0] if len(silent) == 1 else None,
                self.tasks[silent[0]] if len(silent) == 1 else None,
            )
        dead = self._dead_workers()
        if dead:
            what = ", ".join(f"{self.tasks[i]} (task {i}, exit code {code})" for i, code in dead)
            return EnvCrashedError(
                f"Meta-World worker process(es) for {what} died during {op} "
                f"({type(e).__name__}: {e}); the worker's own traceback, if any, is on stderr",
                dead[0][0] if len(dead) == 1 else None,
                self.tasks[dead[0][0]] if len(dead) == 1 else None,
            )
        return e

    def _guard(self, op: str, fn: Callable[[], Any]) -> Any:
        if self._closed:
            raise RuntimeError("the Meta-World vector env is closed")
        if self._broken:
            raise RuntimeError("the Meta-World vector env is unusable after a failure: close it")
        try:
            return fn()
        except Exception as e:
            self._broken = True
            translated = self._translate(e, op)
            if translated is e:
                raise
            raise translated from e

    # -- gym-like API --------------------------------------------------------------------------
    def reset(self, mask: np.ndarray | None = None) -> np.ndarray:
        """Reset every env (``mask=None``) or those where ``mask`` is true; the observations of
        all envs (the others' current ones)."""
        options = None
        if mask is not None:
            mask = np.asarray(mask, dtype=np.bool_)
            if mask.all():
                mask = None
            elif not mask.any():
                raise ValueError("reset mask selects no environment")
            else:
                options = {"reset_mask": mask}
        obs, _ = self._guard("reset()", lambda: self.vector.reset(options=options))
        return np.asarray(obs)

    def step(self, actions: np.ndarray) -> VecStep:
        self.step_async(actions)
        return self.step_wait()

    def step_async(self, actions: np.ndarray) -> None:
        """Send the actions; with ``strategy="async"`` the workers step while the caller does
        something else (an update), until :meth:`step_wait`. Sync: the step runs in
        :meth:`step_wait`."""
        if getattr(self, "_pending_actions", None) is not None:
            raise RuntimeError("step_async called twice without step_wait")
        actions = np.asarray(actions, dtype=np.float32).reshape(self.num_tasks, self.action_dim)
        self._pending_actions = actions
        if self.strategy == "async":
            self._guard("step()", lambda: self.vector.step_async(actions))

    def step_wait(self) -> VecStep:
        """The step sent by :meth:`step_async`."""
        actions = getattr(self, "_pending_actions", None)
        if actions is None:
            raise RuntimeError("step_wait called without step_async")
        self._pending_actions = None

        def run() -> Any:
            if self.strategy == "async":
                return self.vector.step_wait(timeout=self.step_timeout)
            return self.vector.step(actions)

        obs, reward, terminated, truncated, info = self._guard("step()", run)
        success = np.asarray(info.get("success", np.zeros(self.num_tasks)), dtype=np.float64)
        return VecStep(
            np.asarray(obs),
            np.asarray(reward, dtype=np.float64),
            np.asarray(terminated, dtype=np.bool_),
            np.asarray(truncated, dtype=np.bool_),
            success > 0.5,
        )

    def call(self, name: str, *args: Any) -> tuple[Any, ...]:
        return tuple(self._guard(f"{name}()", lambda: self.vector.call(name, *args)))

    def begin_eval(self, terminate_on_success: bool) -> None:
        """Evaluation mode: goals in order (``k``-th reset → goal ``k mod n``), optional
        termination at the first success. The training goal generators are left untouched."""
        self.call("begin_eval", bool(terminate_on_success))

    def end_eval(self) -> None:
        """Back to training mode (random goals, no termination). Reset before stepping again."""
        self.call("end_eval")

    def get_state(self) -> list[dict[str, Any]]:
        """Per env: its goal generator's state and mode (plain ints and strings)."""
        return list(self.call("get_env_state"))

    def set_state(self, states: Sequence[dict[str, Any]]) -> None:
        if len(states) != self.num_tasks:
            raise ValueError(f"{len(states)} env states for {self.num_tasks} envs")
        self._guard("set_attr()", lambda: self.vector.set_attr("pending_env_state", list(states)))
        self.call("apply_pending_env_state")

    def close(self) -> None:
        """Close the envs; after a failure the async workers are terminated rather than asked."""
        if self._closed or not hasattr(self, "vector"):
            return
        self._closed = True
        if self.strategy == "async" and self._broken:
            from gymnasium.vector.async_vector_env import AsyncState

            self.vector._state = AsyncState.DEFAULT  # a pending call will never be answered
            self.vector.close(terminate=True)
        else:
            self.vector.close()

    def __enter__(self) -> MetaWorldVectorEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MetaWorldVectorEnv({self.num_tasks} tasks, {self.strategy})"


def make_metaworld_envs(
    suite: str | SuiteSpec,
    protocol: EnvProtocol | None = None,
    *,
    seed: int = 0,
    strategy: Literal["sync", "async"] = "sync",
    context: str | None = None,
    step_timeout: float | None = 600.0,
) -> MetaWorldVectorEnv:
    """Build the vector env of a suite under a protocol (see the module docstring).

    Goals are drawn with ``protocol.goal_seed`` (or ``seed`` when it is ``None``); env ``i``'s goal
    choice is seeded from ``(seed, i)``. ``strategy="async"`` runs each task in its own process
    (``context``: multiprocessing start method, default the platform's); ``step_timeout`` (async
    only) bounds how long a step may take before the silent tasks are reported.
    """
    require_metaworld()
    spec = suite if isinstance(suite, SuiteSpec) else resolve_suite(suite)
    protocol = protocol or EnvProtocol()
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    goal_seed = seed if protocol.goal_seed is None else protocol.goal_seed
    raw: list[Any] = [None] * spec.num_tasks
    key = (spec.tasks, spec.goal_stream, int(protocol.num_goals), int(goal_seed))
    if strategy == "sync" and key not in _GOAL_CACHE:
        # Draw the goals with the envs this process will step (one MuJoCo build per task, not two).
        version = protocol.reward_function_version
        raw = [ALL_V3_ENVIRONMENTS[t](reward_function_version=version) for t in spec.tasks]
    goals = sample_goals(spec, protocol.num_goals, goal_seed, envs=None if raw[0] is None else raw)
    fns = [
        functools.partial(
            make_task_env, i, task, goals[i], protocol, derive_seed(seed, "goal-select", i), raw[i]
        )
        for i, task in enumerate(spec.tasks)
    ]
    return MetaWorldVectorEnv(
        fns,
        spec.tasks,
        strategy=strategy,
        context=context,
        step_timeout=step_timeout,
        suite=spec,
        protocol=protocol,
    )
