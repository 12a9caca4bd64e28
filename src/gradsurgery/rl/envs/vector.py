"""Tasks stepped together as one gymnasium vector env: :class:`MetaWorldVectorEnv` and
:func:`make_metaworld_envs`.

``strategy="sync"`` (gymnasium's ``SyncVectorEnv``: all tasks in this process) or ``"async"``
(``AsyncVectorEnv``: one worker process per task). An exception inside an environment, in this
process or in an async worker, reaches the caller as :class:`EnvCrashedError` naming the task; a
worker process that dies without a Python exception (a segfault, ``os._exit``, the out-of-memory
killer) is reported the same way with its exit code, instead of a hang or a bare ``EOFError``; in
async mode ``step_timeout`` seconds without an answer raises an :class:`EnvCrashedError` naming the
tasks that did not answer.
"""

from __future__ import annotations

import functools
import multiprocessing
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np

from gradsurgery.rl.envs.errors import EnvCrashedError
from gradsurgery.rl.envs.goals import goals_cached, sample_goals
from gradsurgery.rl.envs.protocol import EnvProtocol
from gradsurgery.rl.envs.suites import SuiteSpec, require_metaworld, resolve_suite
from gradsurgery.rl.envs.wrappers import make_task_env
from gradsurgery.runtime.seeding import derive_seed

__all__ = ["MetaWorldVectorEnv", "VecStep", "make_metaworld_envs"]


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
        self._pending_actions: np.ndarray | None = None
        # gymnasium's SyncVectorEnv or AsyncVectorEnv: the two differ in step_async/step_wait and
        # in the internals a failure report reads (processes, pipes, state), hence Any.
        self.vector: Any
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
        if self._pending_actions is not None:
            raise RuntimeError("step_async called twice without step_wait")
        actions = np.asarray(actions, dtype=np.float32).reshape(self.num_tasks, self.action_dim)
        self._pending_actions = actions
        if self.strategy == "async":
            self._guard("step()", lambda: self.vector.step_async(actions))

    def step_wait(self) -> VecStep:
        """The step sent by :meth:`step_async`."""
        actions = self._pending_actions
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
    if strategy == "sync" and not goals_cached(spec, protocol.num_goals, goal_seed):
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
