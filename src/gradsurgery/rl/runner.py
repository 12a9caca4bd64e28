"""Train a multi-task SAC agent on Meta-World under a protocol preset; resumable.

:func:`train_rl` runs one (suite, method, preset, seed):

1. Builds the vector env (:func:`~gradsurgery.rl.envs.make_metaworld_envs`, one env per task),
   the agent (:class:`~gradsurgery.rl.sac.MTSAC` with the preset's ``SACConfig``) and its replay
   buffer (``replay_size`` transitions split evenly over the tasks).
2. Collects: for the first ``warmup_steps`` steps uniformly random actions without updates, then
   the stochastic policy with **one update per vector step** (a batch of ``batch_size_per_task``
   transitions of every task). A step is one transition of every task; budgets count steps per
   task. An *epoch*, for the methods whose state advances per epoch (DWA), is one episode of the
   vector env (``max_episode_steps`` steps: Meta-World's training episodes all end together): at
   every episode boundary where the agent updated, after the update, the runner calls the agent's
   ``end_epoch()`` (``MTSAC.end_epoch``: each of its methods'
   :meth:`~gradsurgery.methods.base.Method.end_epoch`). An agent without ``end_epoch`` whose
   methods need it (``agent.backward``'s) is refused.
3. Evaluates (:func:`~gradsurgery.rl.evaluation.evaluate`) at the first episode boundary at or
   after every ``eval_every`` steps and once at the end, and writes ``result.json`` (the resolved
   preset, final and best-over-series success, per task), ``log.jsonl`` (training rows every
   ``log_every`` steps with losses, temperatures, env steps/s and updates/s; one row per
   evaluation; with ``diagnose_every``, gradient-conflict rows of the critic and the actor:
   :mod:`~gradsurgery.rl.gradient_diagnostics`), TensorBoard events (when TensorBoard is
   installed), ``learning_curves.png`` and ``curves/<task>.png``.
4. Checkpoints atomically (:class:`~gradsurgery.runtime.resumable.Resumable`, the newest two
   kept) at the first episode boundary at or after every ``checkpoint_every`` steps and at the end.

The loop (:func:`train_rl`) drives an :class:`RLRun`, whose counters, schedule, evaluation series
and accumulated statistics are one :class:`RunState`::

    run.resume()
    while run.state.step < steps:
        learn = run.learning()
        run.collect(learn)          # one transition of every task into the replay buffer
        if learn:
            run.update()            # one update per step
        run.maybe_log()
        run.maybe_evaluate()        # at an episode boundary, when due
        if run.maybe_checkpoint():  # at an episode boundary, when due; True: a requested stop
            break
        run.start_new_episodes()
    if run.status == "complete":
        run.finish()                # the last evaluation and checkpoint
    run.close()                     # (in a ``finally``)
    run.write_result(final=True)    # result.json, the learning curves
    return run.result()

Resume. Running the same command again continues from the newest checkpoint (``resume=False``
starts over and deletes the old checkpoints); a checkpoint of another run configuration, format
or kind of device is refused (:class:`ResumeError`, listing the differences). A checkpoint holds
the :class:`RunState` (the counters, the schedule, the evaluation series, the accumulated
statistics, the log position), the agent (networks, targets, optimizers, the multi-task methods'
state, temperatures, reward statistics, its generators), the replay buffer (optional:
``save_replay``), the runner's generators (warm-up actions, replay sampling), the global
Python/NumPy/torch generators and every environment's goal generator. Checkpoints are written at
episode boundaries, where an environment's whole state is its goal generator (Meta-World v3
dynamics are deterministic given the goal), so a resumed run continues **exactly** as an
uninterrupted one would: same actions, same updates, same numbers, the same checkpoint schedule
(on the same device and library versions). What is not exact:

* without the replay buffer in the checkpoint (``save_replay=False``) the buffer restarts empty
  and the run first collects ``warmup_steps`` steps with the current policy (no updates);
* the final checkpoint is written at the last step, which need not be an episode boundary:
  extending a finished run (a larger ``steps``) starts fresh episodes there;
* timings (steps/s) and TensorBoard wall times are those of the resumed process.

Example (a stub agent: any object with ``act``, ``update``, ``state_dict``, ``load_state_dict``
works; the real one is ``MTSAC``):
    >>> result = train_rl(RLRunConfig("MT1:reach-v3", preset="smoke", steps=60,
    ...                               budget={"eval_every": 30}, out_dir=tmp))  # doctest: +SKIP
    >>> result.summary["final_mean_success"]  # doctest: +SKIP
    0.0
"""

from __future__ import annotations

import functools
import importlib.metadata
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from gradsurgery.methods.base import refuse_without_epoch_boundaries
from gradsurgery.rl.envs import (
    MetaWorldVectorEnv,
    make_metaworld_envs,
    resolve_suite,
)
from gradsurgery.rl.evaluation import EvalSeries, evaluate, plot_learning_curves
from gradsurgery.rl.gradient_diagnostics import UpdateDiagnostics, summarize_diagnostics
from gradsurgery.rl.presets import ResolvedPreset
from gradsurgery.rl.run_config import (
    RLRunConfig,
    RLRunResult,
    default_out_dir,
    preset_for_run,
    run_fingerprint,
    run_record,
)
from gradsurgery.rl.run_state import RunState, Throughput, next_multiple
from gradsurgery.runtime.checkpoint import atomic_write_json
from gradsurgery.runtime.lock import DirectoryLock
from gradsurgery.runtime.resumable import Resumable, ResumeError
from gradsurgery.runtime.runlog import JsonlLog, Progress, tensorboard_writer
from gradsurgery.runtime.seeding import (
    capture_rng_state,
    derive_seed,
    restore_rng_state,
    seed_everything,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_KIND",
    "RLRun",
    "RLRunConfig",
    "RLRunResult",
    "ResumeError",
    "RunState",
    "default_out_dir",
    "preset_for_run",
    "train_rl",
]

#: The checkpoints' kind and layout number (:mod:`gradsurgery.runtime.resumable`). Format 2: the
#: loop's counters and records under ``"run"`` (:meth:`RunState.to_state`).
CHECKPOINT_KIND = "gradsurgery.rl.runner"
CHECKPOINT_FORMAT = 2


@functools.cache
def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in ("gradsurgery", "metaworld", "mujoco", "gymnasium", "torch", "numpy"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _default_agent_factory(config: Any, obs_dim: int, action_dim: int, num_tasks: int) -> Any:
    from gradsurgery.rl.sac import MTSAC

    return MTSAC(config, obs_dim, action_dim, num_tasks)


def _make_replay(agent: Any, preset: ResolvedPreset, obs_dim: int, action_dim: int) -> Any:
    capacity = preset.replay_capacity_per_task
    if hasattr(agent, "make_replay"):
        return agent.make_replay(capacity)
    from gradsurgery.rl.replay import MultiTaskReplay

    return MultiTaskReplay(preset.num_tasks, capacity, obs_dim, action_dim, preset.agent.device)


def train_rl(
    cfg: RLRunConfig,
    *,
    agent_factory: Callable[[Any, int, int, int], Any] | None = None,
    envs: MetaWorldVectorEnv | None = None,
) -> RLRunResult:
    """Run (or resume) one training run; see the module docstring.

    Args:
        cfg: the run.
        agent_factory: ``(SACConfig, obs_dim, action_dim, num_tasks) → agent`` (default
            ``MTSAC``). The agent needs ``act(obs, task_ids, deterministic=False)``,
            ``update(batch) → dict``, ``state_dict()``/``load_state_dict()``, and optionally
            ``make_replay(capacity_per_task)`` and ``end_epoch()`` (called at every episode
            boundary after the update; an agent without it whose ``backward`` engines hold a
            method that needs epoch boundaries is refused with ``ValueError``).
        envs: an already built vector env for ``cfg.suite`` (it is not closed here); default:
            built from the preset's protocol.
    """
    threads_before = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(int(cfg.threads))
    try:
        return _train_rl(cfg, agent_factory, envs)
    finally:
        torch.set_num_threads(threads_before)


def _train_rl(
    cfg: RLRunConfig,
    agent_factory: Callable[[Any, int, int, int], Any] | None,
    envs: MetaWorldVectorEnv | None,
) -> RLRunResult:
    """The run loop. A step is one transition of every task; at an episode boundary (every
    environment's episode ended) an evaluation and a checkpoint when due, or a requested stop."""
    run = RLRun(cfg, agent_factory=agent_factory, envs=envs)
    try:
        run.resume()
        while run.state.step < run.budget.steps:
            learn = run.learning()  # the warm-up (and a refill after a resume) is over
            run.collect(learn)  # with overlap, the update's gradient step runs meanwhile
            if learn:
                run.update()
            run.maybe_log()
            run.maybe_evaluate()
            if run.maybe_checkpoint():  # the requested stop
                break
            run.start_new_episodes()
        if run.status == "complete":
            run.finish()
    finally:
        run.close()
    run.write_result(final=True)
    return run.result()


class RLRun:
    """One training run of :func:`train_rl`: its environments, agent, replay buffer, generators,
    log and :class:`RunState`, with one method per part of the loop.

    Constructing it locks the run directory (:class:`~gradsurgery.runtime.lock.DirectoryLock`: a
    second process on the same directory is refused naming the first one's PID; :meth:`close`
    releases it), reads and checks the checkpoint to continue (a refused one raises
    :class:`ResumeError` before anything is written or built), deletes the old outputs with
    ``resume=False``, seeds the global generators, writes ``config.json`` and builds the
    environments, the agent and the replay buffer. Then :meth:`resume` (restore the checkpoint,
    if any; open the log, TensorBoard and the progress bar); per step :meth:`learning`,
    :meth:`collect`, :meth:`update`, :meth:`maybe_log`, :meth:`maybe_evaluate`,
    :meth:`maybe_checkpoint` and :meth:`start_new_episodes`; at the end of the budget
    :meth:`finish`; always :meth:`close`; then :meth:`result`.
    """

    def __init__(
        self,
        cfg: RLRunConfig,
        *,
        agent_factory: Callable[[Any, int, int, int], Any] | None = None,
        envs: MetaWorldVectorEnv | None = None,
    ) -> None:
        self._clock = time.perf_counter()  # wall time up to here is in state.wall_s
        self.cfg = cfg
        self.spec = spec = resolve_suite(cfg.suite)
        self.preset = preset = preset_for_run(cfg, spec)
        self.budget, self.protocol = preset.budget, preset.protocol
        self.out = Path(cfg.out_dir) if cfg.out_dir is not None else default_out_dir(cfg, spec)
        self.out.mkdir(parents=True, exist_ok=True)
        # one process per run directory (a second one is refused naming the first one's PID)
        self._lock = DirectoryLock(self.out, what="RL run").acquire()
        try:
            self._open(agent_factory, envs)
        except BaseException:
            self._lock.release()
            raise

    def _open(
        self,
        agent_factory: Callable[[Any, int, int, int], Any] | None,
        envs: MetaWorldVectorEnv | None,
    ) -> None:
        cfg, spec, preset = self.cfg, self.spec, self.preset
        self.device = torch.device(preset.agent.device)
        self.checkpoints = Resumable(
            self.out / "checkpoints",
            kind=CHECKPOINT_KIND,
            format=CHECKPOINT_FORMAT,
            fingerprint=run_fingerprint(spec, preset, cfg),
            keep=cfg.keep_checkpoints,
            device=self.device,
            start_over="start over (resume=False / --fresh)",
        )
        if not cfg.resume:
            self._delete_outputs()
        # read (on the CPU) and checked before anything is written or built
        self._found = self.checkpoints.load() if cfg.resume else None
        seed_everything(cfg.seed)
        atomic_write_json(self.out / "config.json", self._config_record())

        self.status: Literal["complete", "stopped"] = "complete"
        self.log = JsonlLog(self.out / "log.jsonl")
        self.writer: Any = None  # opened by resume()
        self.progress = Progress(self.budget.steps, enabled=False)  # replaced by resume()
        self.own_envs = envs is None
        if envs is None:
            envs = make_metaworld_envs(spec, self.protocol, seed=cfg.seed, strategy=cfg.strategy)
        elif tuple(envs.tasks) != spec.tasks:
            raise ValueError(f"envs are for {envs.tasks}, the run for {spec.tasks}")
        self.envs = envs
        try:
            self._build(agent_factory)
        except BaseException:
            self.close()
            raise

    def _build(self, agent_factory: Callable[[Any, int, int, int], Any] | None) -> None:
        cfg, envs, m = self.cfg, self.envs, self.envs.num_tasks
        self.num_tasks, self.task_ids = m, envs.task_ids
        factory = agent_factory or _default_agent_factory
        self.agent = factory(self.preset.agent, envs.obs_dim, envs.action_dim, m)
        self._end_epoch: Callable[[], None] | None = getattr(self.agent, "end_epoch", None)
        if self._end_epoch is None:
            for engine in getattr(self.agent, "backward", {}).values():
                refuse_without_epoch_boundaries(engine.method, "an agent without end_epoch()")
        self.diagnostics = (
            UpdateDiagnostics(self.agent, self.spec.tasks, cfg.diagnose_every)
            if cfg.diagnose_every is not None
            else None
        )
        self.replay = _make_replay(self.agent, self.preset, envs.obs_dim, envs.action_dim)
        self.warmup_rng = np.random.Generator(
            np.random.PCG64(derive_seed(cfg.seed, "warmup-actions"))
        )
        self.sample_gen = torch.Generator(device=self.device).manual_seed(
            derive_seed(cfg.seed, "replay-sample") % 2**63
        )
        self.state = RunState.start(self.spec.tasks, self.budget)
        self.throughput = Throughput(m)
        self.obs: np.ndarray = np.zeros((m, envs.obs_dim), dtype=np.float32)
        self.ep_return = np.zeros(m)
        self.ep_success = np.zeros(m, dtype=np.bool_)
        self.done = np.zeros(m, dtype=np.bool_)
        self._resumed_at: tuple[int, int] | None = None  # (step, evaluations) of the checkpoint
        self._plot_title = (
            f"{self.spec.name} {self.preset.agent.method} ({self.preset.name}, seed {cfg.seed})"
        )

    def _delete_outputs(self) -> None:
        self.checkpoints.clear()
        for name in ("log.jsonl", "result.json"):
            (self.out / name).unlink(missing_ok=True)
        shutil.rmtree(self.out / "tensorboard", ignore_errors=True)

    def _config_record(self) -> dict[str, Any]:
        return {
            "run": run_record(self.cfg),
            "suite": self.spec.name,
            "tasks": list(self.spec.tasks),
            "preset": self.preset.to_dict(),
            "versions": _versions(),
        }

    # ------------------------------------------------------------------ resume and save
    def resume(self) -> None:
        """Continue from the checkpoint found at construction (the log cut back to its step), or
        start the log afresh; open TensorBoard and the progress bar; reset the environments."""
        if self._found is None:
            self.log.truncate_after(-1)
        else:
            payload, path = self._found
            self.load_state_dict(payload)
            self.log.truncate_after(self.state.step)
            print(f"resuming {self.out} from step {self.state.step:,} of {self.budget.steps:,} "
                  f"({path.name})")  # fmt: skip
        step = self.state.step
        if self.cfg.tensorboard:
            self.writer = tensorboard_writer(self.out / "tensorboard", purge_step=step or None)
        desc = f"{self.spec.slug} {self.preset.agent.method}"
        self.progress = Progress(self.budget.steps, initial=step, desc=desc,
                                 enabled=self.cfg.progress,
                                 rates={"env-steps": self.num_tasks})  # fmt: skip
        self.obs = self.envs.reset()
        self.throughput = Throughput(self.num_tasks)

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint payload: the run state, the agent, the replay buffer (its data with
        ``save_replay``), the environments' goal generators and every generator."""
        return {
            "run": self.state.to_state(),
            "agent": self.agent.state_dict(),
            "replay": self.replay.state_dict(include_data=self.cfg.save_replay),
            "envs": self.envs.get_state(),
            "rng": {
                "global": capture_rng_state(),
                "warmup": self.warmup_rng.bit_generator.state,
                "sample": self.sample_gen.get_state(),
            },
        }

    def load_state_dict(self, payload: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (a resume: the step joins ``resumed_from``; without replay
        data the buffer is refilled for ``warmup_steps`` steps before updates resume)."""
        self.agent.load_state_dict(payload["agent"])
        self.replay.load_state_dict(payload["replay"])
        self.envs.set_state(payload["envs"])
        restore_rng_state(payload["rng"]["global"])
        self.warmup_rng.bit_generator.state = payload["rng"]["warmup"]
        self.sample_gen.set_state(payload["rng"]["sample"])
        self.state = state = RunState.from_state(payload["run"], self.spec.tasks)
        state.resumed_from.append(state.step)
        if not payload["replay"].get("has_data", True):
            state.refill_until = state.step + self.budget.warmup_steps
        self._resumed_at = (state.step, len(state.series))

    def _tick(self) -> float:
        """Add the wall time since the last tick to ``state.wall_s`` and return it."""
        now = time.perf_counter()
        self.state.wall_s += now - self._clock
        self._clock = now
        return self.state.wall_s

    def save(self) -> Path:
        """Write a checkpoint of the run as it is now."""
        self._tick()
        return self.checkpoints.save(self.state_dict(), self.state.step)

    # ------------------------------------------------------------------ one step
    def learning(self) -> bool:
        """Whether this step updates the agent: after the warm-up and any refill."""
        s = self.state
        return s.step >= self.budget.warmup_steps and s.step >= s.refill_until

    def collect(self, learn: bool) -> None:
        """One step of every environment: uniformly random actions during the warm-up, then the
        stochastic policy; the transitions go into the replay buffer and finished episodes'
        outcomes into the accumulator. With ``overlap`` and ``learn`` the update's gradient step
        runs while the environments step (so it samples the replay before this step's data)."""
        s = self.state
        if s.step < self.budget.warmup_steps:
            shape = (self.num_tasks, self.envs.action_dim)
            actions = self.warmup_rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)
        else:
            actions = np.asarray(self.agent.act(self.obs, self.task_ids), dtype=np.float32)
        self.envs.step_async(actions)
        if learn and self.cfg.overlap:
            self._gradient_step()
        result = self.envs.step_wait()
        self.replay.add(self.task_ids, self.obs, actions, result.reward, result.obs,
                        result.terminated)  # fmt: skip
        self.ep_return += result.reward
        self.ep_success |= result.success
        s.step += 1
        self.throughput.steps += 1
        self.obs = result.obs
        self.done = done = result.terminated | result.truncated
        s.at_boundary = bool(done.all())
        if done.any():
            self.state.accumulator.add_episodes(done, self.ep_return,
                                                self.ep_success.astype(np.float64))  # fmt: skip
            s.episodes += int(done.sum())
            self.ep_return[done], self.ep_success[done] = 0.0, False

    def _gradient_step(self) -> None:
        batch = self.replay.sample(self.preset.agent.batch_size_per_task, self.sample_gen)
        self.state.accumulator.add_update(self.agent.update(batch))

    def update(self) -> None:
        """The step's update (already run during :meth:`collect` with ``overlap``): one batch of
        ``batch_size_per_task`` transitions of every task; at an episode boundary the agent's
        ``end_epoch()`` (the methods' epoch, see the module docstring); then the gradient
        diagnostics when due."""
        if not self.cfg.overlap:
            self._gradient_step()
        self.state.updates += 1
        self.throughput.updates += 1
        if self.state.at_boundary and self._end_epoch is not None:
            self._end_epoch()
        if self.diagnostics is None:
            return
        for row in self.diagnostics.collect(self.state.step):
            self.log.write(row)
            for k in ("fraction_conflicting", "mean_cosine", "grad_norm_ratio"):
                if row[k] is not None:
                    self._scalar(f"diagnostics/{row['loss']}/{k}", row[k])

    def _scalar(self, tag: str, value: float) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, self.state.step)

    def maybe_log(self) -> None:
        """A training row (means since the last row, rates) when due; the progress bar."""
        s = self.state
        if s.step >= s.next_log:
            row = {"kind": "train", "step": s.step, "env_steps": s.step * self.num_tasks,
                   "updates": s.updates, "episodes": s.episodes, **self.throughput.read(),
                   **s.accumulator.row(self.spec.tasks)}  # fmt: skip
            self.log.write(row)
            for k, v in row.items():
                if k not in ("kind", "step") and isinstance(v, (int, float)):
                    self._scalar(f"train/{k}", v)
            s.accumulator.reset()
            s.next_log = next_multiple(s.step, self.budget.log_every)
        self.progress.update(1, postfix=self._postfix() if s.step % 50 == 0 else None)

    def _postfix(self) -> str:
        return _postfix(self.state.series)

    def maybe_evaluate(self) -> None:
        """At an episode boundary before the end, when due: an evaluation and ``result.json``."""
        s = self.state
        if s.at_boundary and s.step >= s.next_eval and s.step < self.budget.steps:
            self.evaluate()
            s.next_eval = next_multiple(s.step, self.budget.eval_every)
            self.write_result(final=False)

    def maybe_checkpoint(self) -> bool:
        """At an episode boundary before the end: a checkpoint when one is due or a stop was
        asked for (``stop_after_steps``). Returns whether to stop here."""
        s = self.state
        if not s.at_boundary or s.step >= self.budget.steps:
            return False
        stop = self.cfg.stop_after_steps is not None and s.step >= self.cfg.stop_after_steps
        if s.step >= s.next_ckpt or stop:
            s.next_ckpt = max(s.next_ckpt, next_multiple(s.step, self.budget.checkpoint_every))
            self.save()
            if self.cfg.plots:
                plot_learning_curves(s.series, self.out, title=self._plot_title)
        if stop:
            self.status = "stopped"
        return stop

    def start_new_episodes(self) -> None:
        """Reset the environments whose episodes ended (after any checkpoint of this step)."""
        if self.done.any():
            fresh = self.envs.reset(mask=self.done)
            self.obs = self.obs.copy()
            self.obs[self.done] = fresh[self.done]

    def evaluate(self) -> None:
        """Evaluate the policy now (:func:`~gradsurgery.rl.evaluation.evaluate`) and log it."""
        s, tasks = self.state, self.spec.tasks
        result = evaluate(
            self.agent,
            self.envs,
            self.budget.eval_episodes,
            terminate_on_success=self.protocol.eval_terminate_on_success,
            success=self.protocol.success,
            step=s.step,
        )
        s.series.append(result)
        self.log.write({"kind": "eval", "env_steps": s.step * self.num_tasks, **result.to_dict()})
        self._scalar("eval/mean_success", result.mean_success)
        self._scalar("eval/mean_return", result.mean_return)
        for t, success, ret in zip(tasks, result.success, result.returns, strict=True):
            self._scalar(f"eval_success/{t}", float(success))
            self._scalar(f"eval_return/{t}", float(ret))
        self.progress.update(0, postfix=self._postfix())

    # ------------------------------------------------------------------ the end
    def finish(self) -> None:
        """The budget is spent: a last evaluation (unless one was made at this step) and a last
        checkpoint (unless the run was resumed at this very point)."""
        s, budget = self.state, self.budget
        if not len(s.series) or s.series.results[-1].step != s.step:
            self.evaluate()
        # so that extending the run (a larger `steps`) does not repeat them at once
        s.next_eval = max(s.next_eval, next_multiple(s.step, budget.eval_every))
        s.next_ckpt = max(s.next_ckpt, next_multiple(s.step, budget.checkpoint_every))
        if self._resumed_at != (s.step, len(s.series)):
            self.save()

    def close(self) -> None:
        """Close the progress bar, the log, TensorBoard and the environments built here; release
        the run directory."""
        self.progress.close()
        self.log.close()
        if self.writer is not None:
            self.writer.close()
        if self.own_envs:
            self.envs.close()
        self._lock.release()

    def _summary(self) -> dict[str, Any]:
        summary = self.state.series.summary()
        summary["report"] = self.preset.report
        summary["report_value"] = summary.get(self.preset.report)
        return summary

    def diagnostics_summary(self) -> dict[str, Any] | None:
        """The gradient-conflict summary of the logged diagnostics (None without them)."""
        if self.diagnostics is None:
            return None
        return summarize_diagnostics(JsonlLog.read(self.log.path))

    def write_result(self, final: bool) -> None:
        """Write ``result.json`` (status ``"running"`` until ``final``); when final, also the
        learning curves."""
        s, preset, cfg = self.state, self.preset, self.cfg
        atomic_write_json(
            self.out / "result.json",
            {
                "status": self.status if final else "running",
                "suite": self.spec.name,
                "tasks": list(self.spec.tasks),
                "method": preset.agent.method,
                "seed": cfg.seed,
                "preset": preset.to_dict(),
                "steps": s.step,
                "env_steps": s.step * self.num_tasks,
                "updates": s.updates,
                "summary": self._summary(),
                "evaluations": s.series.to_list(),
                "diagnostics": self.diagnostics_summary(),
                "resumed_from": s.resumed_from,
                "wall_s": self._tick(),
                "device": str(self.device),
                "strategy": cfg.strategy,
                "versions": _versions(),
                "note": "steps are per task (one transition of every task per step); v3 "
                "environments (Meta-World 3.1); compare only results of the same preset",
            },
        )
        if cfg.plots and final:
            plot_learning_curves(s.series, self.out, title=self._plot_title)

    def result(self) -> RLRunResult:
        """The :class:`RLRunResult` of the run so far."""
        s = self.state
        return RLRunResult(
            out_dir=self.out,
            status=self.status,
            preset=self.preset,
            tasks=self.spec.tasks,
            series=s.series,
            summary=self._summary(),
            steps=s.step,
            updates=s.updates,
            resumed_from=s.resumed_from,
            wall_s=self._tick(),
            agent=self.agent,
            diagnostics=self.diagnostics_summary(),
        )


def _postfix(series: EvalSeries) -> str:
    """The bar's text after its own measured rates: the last evaluation's mean success."""
    final = series.final()
    return "" if final is None else f"success {final.mean_success:.2f}"
