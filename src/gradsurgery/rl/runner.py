"""Train a multi-task SAC agent on Meta-World under a protocol preset; resumable.

:func:`train_rl` runs one (suite, method, preset, seed):

1. Builds the vector env (:func:`~gradsurgery.rl.envs.make_metaworld_envs`, one env per task),
   the agent (:class:`~gradsurgery.rl.sac.MTSAC` with the preset's ``SACConfig``) and its replay
   buffer (``replay_size`` transitions split evenly over the tasks).
2. Collects: for the first ``warmup_steps`` steps uniformly random actions without updates, then
   the stochastic policy with **one update per vector step** (a batch of ``batch_size_per_task``
   transitions of every task). A step is one transition of every task; budgets count steps per
   task.
3. Evaluates (:func:`~gradsurgery.rl.evaluation.evaluate`) at the first episode boundary at or
   after every ``eval_every`` steps and once at the end, and writes ``result.json`` (the resolved
   preset, final and best-over-series success, per task), ``log.jsonl`` (training rows every
   ``log_every`` steps with losses, temperatures, env steps/s and updates/s; one row per
   evaluation; with ``diagnose_every``, gradient-conflict rows of the critic and the actor:
   :mod:`~gradsurgery.rl.gradient_diagnostics`), TensorBoard events (when TensorBoard is
   installed), ``learning_curves.png`` and ``curves/<task>.png``.
4. Checkpoints atomically (:mod:`gradsurgery.runtime.checkpoint`, the newest two kept) at the
   first episode boundary at or after every ``checkpoint_every`` steps and at the end.

Resume. Running the same command again continues from the newest checkpoint (``resume=False``
starts over and deletes the old checkpoints). A checkpoint holds the agent (networks, targets,
optimizers, the multi-task methods' state, temperatures, reward statistics, its generators), the
replay buffer (optional: ``save_replay``), the runner's generators (warm-up actions, replay
sampling), the global Python/NumPy/torch generators, every environment's goal generator, the
counters, the evaluation series and the log position. Checkpoints are written at episode
boundaries, where an environment's whole state is its goal generator (Meta-World v3 dynamics are
deterministic given the goal), so a resumed run continues **exactly** as an uninterrupted one
would: same actions, same updates, same numbers (on the same device and library versions). What
is not exact:

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from gradsurgery.rl.envs import (
    MetaWorldVectorEnv,
    SuiteSpec,
    make_metaworld_envs,
    resolve_suite,
)
from gradsurgery.rl.evaluation import EvalSeries, evaluate, plot_learning_curves
from gradsurgery.rl.gradient_diagnostics import UpdateDiagnostics, summarize_diagnostics
from gradsurgery.rl.presets import ResolvedPreset, resolve_preset
from gradsurgery.rl.update_metrics import MetricSums
from gradsurgery.runtime.checkpoint import CheckpointManager, atomic_write_json
from gradsurgery.runtime.runlog import JsonlLog, Progress, tensorboard_writer
from gradsurgery.runtime.seeding import (
    capture_rng_state,
    derive_seed,
    restore_rng_state,
    seed_everything,
)
from gradsurgery.runtime.values import differences, finite_or_none

__all__ = [
    "CHECKPOINT_FORMAT",
    "RLRunConfig",
    "RLRunResult",
    "ResumeError",
    "default_out_dir",
    "train_rl",
]

CHECKPOINT_FORMAT = 1


class ResumeError(RuntimeError):
    """The checkpoint in the output directory belongs to a different run."""


@dataclass
class RLRunConfig:
    """One run. ``agent``/``budget``/``protocol`` override the preset's fields (see
    :func:`~gradsurgery.rl.presets.resolve_preset`).

    Attributes:
        suite: ``"MT10"``, ``"MT50"``, ``"MT1:reach-v3"``, ``"reach-v3,push-v3"``, ...
        method: a registered multi-task method (``"sum"``: plain MT-SAC).
        preset: a preset name (:func:`~gradsurgery.rl.presets.preset_names`).
        seed: the run's seed (agent init and noise, warm-up actions, sampling, goal choice; with
            a preset whose ``goal_seed`` is None also the goal sets).
        out_dir: where everything goes (default :func:`default_out_dir`).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"``; environments always run on CPU.
        steps: override of the budget's steps per task.
        strategy: ``"sync"`` (tasks stepped in this process) or ``"async"`` (a process per task).
        save_replay: put the replay buffer in checkpoints (exact resume; large at full size:
            about 0.34 GB per million transitions).
        resume: continue from a checkpoint in ``out_dir`` (False: start over, deleting it).
        stop_after_steps: checkpoint and stop at the first episode boundary at or after this many
            steps (for time-limited jobs: rerun to continue).
        progress: show a progress bar (None: when stderr is a terminal).
        threads: ``torch.set_num_threads`` for this process (None: leave it). Small networks on
            a CPU shared with other work often run fastest with 1 thread.
        diagnose_every: every this many updates, log the tragic-triad statistics of the critic's
            and the actor's task gradients (:mod:`~gradsurgery.rl.gradient_diagnostics`; needs an
            agent with ``backward``, i.e. ``MTSAC``); None: never.
        overlap: run each step's update while the environments step (``strategy="async"``:
            the workers simulate while this process updates; on a GPU the update's kernels run
            meanwhile too). The update of step ``t`` then samples the replay as it was before
            step ``t``'s transitions were added (one step older than without overlap): a
            different, equally valid run, reproducible and resumable like any other.
    """

    suite: str
    method: str = "sum"
    preset: str = "metaworld-v3-cpu"
    seed: int = 0
    out_dir: str | Path | None = None
    device: str = "cpu"
    steps: int | None = None
    strategy: Literal["sync", "async"] = "sync"
    save_replay: bool = True
    method_kwargs: dict[str, Any] = field(default_factory=dict)
    agent: dict[str, Any] = field(default_factory=dict)
    budget: dict[str, Any] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)
    regularized: bool = False
    resume: bool = True
    stop_after_steps: int | None = None
    progress: bool | None = None
    threads: int | None = None
    tensorboard: bool = True
    plots: bool = True
    keep_checkpoints: int = 2
    diagnose_every: int | None = None
    overlap: bool = False


@dataclass
class RLRunResult:
    """What :func:`train_rl` returns (also written to ``out_dir/result.json``)."""

    out_dir: Path
    status: Literal["complete", "stopped"]
    preset: ResolvedPreset
    tasks: tuple[str, ...]
    series: EvalSeries
    summary: dict[str, Any]
    steps: int
    updates: int
    resumed_from: list[int]
    wall_s: float
    agent: Any = None
    diagnostics: dict[str, Any] | None = None

    @property
    def env_steps(self) -> int:
        return self.steps * len(self.tasks)


def default_out_dir(cfg: RLRunConfig, spec: SuiteSpec | None = None) -> Path:
    """``runs/rl/<suite>_<method>_<preset>_seed<seed>`` (``+reg`` with ``regularized``)."""
    spec = spec or resolve_suite(cfg.suite)
    method = cfg.method.lower() + ("+reg" if cfg.regularized else "")
    return Path("runs") / "rl" / f"{spec.slug}_{method}_{cfg.preset}_seed{cfg.seed}"


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


def _fingerprint(spec: SuiteSpec, preset: ResolvedPreset, cfg: RLRunConfig) -> dict[str, Any]:
    """What must match for a checkpoint to be continued. The step budget and how the update is
    executed may change: the device, the finite check, fused Adam, compilation (they change the
    result by rounding at most)."""
    agent = preset.to_dict()["agent"]
    for key in ("device", "check_finite", "fused_adam", "compile"):
        agent.pop(key, None)
    budget = preset.budget.to_dict()
    budget.pop("steps")
    extra = {"overlap": True} if cfg.overlap else {}  # changes which data each update sees
    return {
        **extra,
        "tasks": list(spec.tasks),
        "suite": spec.name,
        "preset": preset.name,
        "protocol": preset.protocol.to_dict(),
        "agent": agent,
        "budget": budget,
        "replay_capacity_per_task": preset.replay_capacity_per_task,
        "seed": int(cfg.seed),
        "regularized": bool(cfg.regularized),
    }


class _Accumulator:
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


def _next_multiple(step: int, every: int) -> int:
    return (step // every + 1) * every


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
            ``make_replay(capacity_per_task)``.
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


def preset_for_run(cfg: RLRunConfig, spec: SuiteSpec) -> ResolvedPreset:
    """The preset of a run, with the run's overrides applied (raises on a bad override)."""
    return resolve_preset(
        cfg.preset,
        num_tasks=spec.num_tasks,
        method=cfg.method,
        method_kwargs=cfg.method_kwargs,
        seed=cfg.seed,
        device=cfg.device,
        steps=cfg.steps,
        budget=cfg.budget,
        agent=cfg.agent,
        protocol=cfg.protocol,
        task_names=spec.tasks,
        regularized=cfg.regularized,
    )


def _train_rl(
    cfg: RLRunConfig,
    agent_factory: Callable[[Any, int, int, int], Any] | None,
    envs: MetaWorldVectorEnv | None,
) -> RLRunResult:
    start_wall = time.perf_counter()
    spec = resolve_suite(cfg.suite)
    preset = preset_for_run(cfg, spec)
    budget, protocol = preset.budget, preset.protocol
    out = Path(cfg.out_dir) if cfg.out_dir is not None else default_out_dir(cfg, spec)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_dir = out / "checkpoints"
    if not cfg.resume:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        for name in ("log.jsonl", "result.json"):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / "tensorboard", ignore_errors=True)
    manager = CheckpointManager(ckpt_dir, keep=cfg.keep_checkpoints)
    fingerprint = _fingerprint(spec, preset, cfg)
    device = torch.device(preset.agent.device)
    # CPU first: RNG states must stay CPU tensors; the agent and replay copy to their device.
    loaded = manager.load_latest(map_location="cpu") if cfg.resume else None
    ckpt: dict[str, Any] | None = None
    if loaded is not None:
        ckpt = loaded[0]
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise ResumeError(
                f"{loaded[1]} has checkpoint format {ckpt.get('format')}, expected {CHECKPOINT_FORMAT}"
            )
        problems = differences(
            ckpt["fingerprint"], fingerprint, template="{key}: checkpoint {old!r}, now {new!r}"
        )
        if problems:
            raise ResumeError(
                f"{out} holds a checkpoint of a different run ({'; '.join(problems)}); use another "
                "output directory, or start over (resume=False / --fresh)"
            )
        if torch.device(ckpt["device"]).type != device.type:
            raise ResumeError(
                f"the checkpoint was written on {ckpt['device']}; resume on the same kind of device "
                f"(now {device}) or start over"
            )

    seed_everything(cfg.seed)
    atomic_write_json(
        out / "config.json",
        {
            "run": _run_dict(cfg),
            "suite": spec.name,
            "tasks": list(spec.tasks),
            "preset": preset.to_dict(),
            "versions": _versions(),
        },
    )

    own_envs = envs is None
    if envs is None:
        envs = make_metaworld_envs(spec, protocol, seed=cfg.seed, strategy=cfg.strategy)
    elif tuple(envs.tasks) != spec.tasks:
        raise ValueError(f"envs are for {envs.tasks}, the run for {spec.tasks}")
    m, obs_dim, action_dim = envs.num_tasks, envs.obs_dim, envs.action_dim
    task_ids = envs.task_ids
    factory = agent_factory or _default_agent_factory
    agent = factory(preset.agent, obs_dim, action_dim, m)
    diagnostics = (
        UpdateDiagnostics(agent, spec.tasks, cfg.diagnose_every)
        if cfg.diagnose_every is not None
        else None
    )
    replay = _make_replay(agent, preset, obs_dim, action_dim)
    warmup_rng = np.random.Generator(np.random.PCG64(derive_seed(cfg.seed, "warmup-actions")))
    sample_gen = torch.Generator(device=device).manual_seed(
        derive_seed(cfg.seed, "replay-sample") % 2**63
    )
    series = EvalSeries(spec.tasks)
    acc = _Accumulator(m)

    step = updates = episodes = 0
    next_eval, next_ckpt, next_log = budget.eval_every, budget.checkpoint_every, budget.log_every
    refill_until = 0
    resumed_from: list[int] = []
    prior_wall = 0.0
    log = JsonlLog(out / "log.jsonl")
    if ckpt is not None:
        agent.load_state_dict(ckpt["agent"])
        replay.load_state_dict(ckpt["replay"])
        envs.set_state(ckpt["envs"])
        restore_rng_state(ckpt["rng"]["global"])
        warmup_rng.bit_generator.state = ckpt["rng"]["warmup"]
        sample_gen.set_state(ckpt["rng"]["sample"])
        series = EvalSeries.from_list(spec.tasks, ckpt["series"])
        acc.load(ckpt["accumulator"])
        step, updates, episodes = int(ckpt["step"]), int(ckpt["updates"]), int(ckpt["episodes"])
        next_eval, next_ckpt, next_log = (
            int(ckpt[k]) for k in ("next_eval", "next_ckpt", "next_log")
        )
        resumed_from = [*list(ckpt["resumed_from"]), step]
        prior_wall = float(ckpt["wall_s"])
        if not ckpt["replay"].get("has_data", True):
            refill_until = step + budget.warmup_steps
        log.truncate_after(step)
        print(f"resuming {out} from step {step:,} of {budget.steps:,} ({loaded[1].name})")
    else:
        log.truncate_after(-1)

    writer = (
        tensorboard_writer(out / "tensorboard", purge_step=step or None)
        if cfg.tensorboard
        else None
    )
    progress = Progress(budget.steps, initial=step, desc=f"{spec.slug} {preset.agent.method}",
                        enabled=cfg.progress)  # fmt: skip
    status: Literal["complete", "stopped"] = "complete"
    plot_title = f"{spec.name} {preset.agent.method} ({preset.name}, seed {cfg.seed})"
    obs = envs.reset()
    ep_return = np.zeros(m)
    ep_success = np.zeros(m, dtype=np.bool_)
    at_boundary = True
    t_window, steps_window, updates_window = time.perf_counter(), 0, 0
    rates = {"env_steps_per_s": 0.0, "updates_per_s": 0.0}

    def run_eval() -> None:
        result = evaluate(
            agent,
            envs,
            budget.eval_episodes,
            terminate_on_success=protocol.eval_terminate_on_success,
            success=protocol.success,
            step=step,
        )
        series.append(result)
        row = {"kind": "eval", "env_steps": step * m, **result.to_dict()}
        log.write(row)
        if writer is not None:
            writer.add_scalar("eval/mean_success", result.mean_success, step)
            writer.add_scalar("eval/mean_return", result.mean_return, step)
            for t, s, r in zip(spec.tasks, result.success, result.returns, strict=True):
                writer.add_scalar(f"eval_success/{t}", float(s), step)
                writer.add_scalar(f"eval_return/{t}", float(r), step)
        progress.update(0, postfix=_postfix(rates, series))

    def save(boundary: bool) -> None:
        state = {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": fingerprint,
            "device": str(device),
            "step": step,
            "updates": updates,
            "episodes": episodes,
            "next_eval": next_eval,
            "next_ckpt": next_ckpt,
            "next_log": next_log,
            "at_boundary": boundary,
            "agent": agent.state_dict(),
            "replay": replay.state_dict(include_data=cfg.save_replay),
            "envs": envs.get_state(),
            "rng": {
                "global": capture_rng_state(),
                "warmup": warmup_rng.bit_generator.state,
                "sample": sample_gen.get_state(),
            },
            "series": series.to_list(),
            "accumulator": acc.state(),
            "resumed_from": resumed_from,
            "wall_s": prior_wall + time.perf_counter() - start_wall,
        }
        manager.save(state, step)

    def diagnostics_summary() -> dict[str, Any] | None:
        return summarize_diagnostics(JsonlLog.read(log.path)) if diagnostics is not None else None

    def write_result(final: bool) -> dict[str, Any]:
        summary = series.summary()
        summary["report"] = preset.report
        summary["report_value"] = summary.get(preset.report)
        wall = prior_wall + time.perf_counter() - start_wall
        atomic_write_json(
            out / "result.json",
            {
                "status": status if final else "running",
                "suite": spec.name,
                "tasks": list(spec.tasks),
                "method": preset.agent.method,
                "seed": cfg.seed,
                "preset": preset.to_dict(),
                "steps": step,
                "env_steps": step * m,
                "updates": updates,
                "summary": summary,
                "evaluations": series.to_list(),
                "diagnostics": diagnostics_summary(),
                "resumed_from": resumed_from,
                "wall_s": wall,
                "device": str(device),
                "strategy": cfg.strategy,
                "versions": _versions(),
                "note": "steps are per task (one transition of every task per step); v3 "
                "environments (Meta-World 3.1); compare only results of the same preset",
            },
        )
        if cfg.plots and final:
            plot_learning_curves(series, out, title=plot_title)
        return summary

    batch_per_task = preset.agent.batch_size_per_task
    try:
        while step < budget.steps:
            # Step index `step` (0-based): random actions during the warm-up, then the policy;
            # an update after every step from the warm-up's end (and after a refill, see above).
            if step < budget.warmup_steps:
                actions = warmup_rng.uniform(-1.0, 1.0, size=(m, action_dim)).astype(np.float32)
            else:
                actions = np.asarray(agent.act(obs, task_ids), dtype=np.float32)
            learn = step >= budget.warmup_steps and step >= refill_until
            envs.step_async(actions)
            if cfg.overlap and learn:  # update while the environments step
                acc.add_update(agent.update(replay.sample(batch_per_task, sample_gen)))
            result = envs.step_wait()
            replay.add(task_ids, obs, actions, result.reward, result.obs, result.terminated)
            ep_return += result.reward
            ep_success |= result.success
            step += 1
            steps_window += 1
            if learn:
                if not cfg.overlap:
                    acc.add_update(agent.update(replay.sample(batch_per_task, sample_gen)))
                updates += 1
                updates_window += 1
                if diagnostics is not None:
                    for row in diagnostics.collect(step):
                        log.write(row)
                        if writer is not None:
                            for k in ("fraction_conflicting", "mean_cosine", "grad_norm_ratio"):
                                if row[k] is not None:
                                    writer.add_scalar(
                                        f"diagnostics/{row['loss']}/{k}", row[k], step
                                    )
            done = result.terminated | result.truncated
            obs = result.obs
            at_boundary = bool(done.all())
            if done.any():
                acc.add_episodes(done, ep_return, ep_success.astype(np.float64))
                episodes += int(done.sum())
                ep_return[done], ep_success[done] = 0.0, False
            if step >= next_log:
                now = time.perf_counter()
                rates = {
                    "env_steps_per_s": steps_window * m / max(now - t_window, 1e-9),
                    "updates_per_s": updates_window / max(now - t_window, 1e-9),
                }
                t_window, steps_window, updates_window = now, 0, 0
                row = {"kind": "train", "step": step, "env_steps": step * m, "updates": updates,
                       "episodes": episodes, **rates, **acc.row(spec.tasks)}  # fmt: skip
                log.write(row)
                if writer is not None:
                    for k, v in row.items():
                        if k not in ("kind", "step") and isinstance(v, (int, float)):
                            writer.add_scalar(f"train/{k}", v, step)
                acc.reset()
                next_log = _next_multiple(step, budget.log_every)
            progress.update(1, postfix=_postfix(rates, series) if step % 50 == 0 else None)
            if at_boundary:
                if step >= next_eval and step < budget.steps:
                    run_eval()
                    next_eval = _next_multiple(step, budget.eval_every)
                    write_result(final=False)
                stop = cfg.stop_after_steps is not None and step >= cfg.stop_after_steps
                if (step >= next_ckpt or stop) and step < budget.steps:
                    save(boundary=True)
                    next_ckpt = _next_multiple(step, budget.checkpoint_every)
                    if cfg.plots:
                        plot_learning_curves(series, out, title=plot_title)
                if stop and step < budget.steps:
                    status = "stopped"
                    break
            if done.any():
                fresh = envs.reset(mask=done)
                obs = obs.copy()
                obs[done] = fresh[done]
        if status == "complete":
            if not len(series) or series.results[-1].step != step:
                run_eval()
            # so that extending the run (a larger `steps`) does not repeat them at once
            next_eval = max(next_eval, _next_multiple(step, budget.eval_every))
            next_ckpt = max(next_ckpt, _next_multiple(step, budget.checkpoint_every))
            if ckpt is None or step != int(ckpt["step"]) or len(series) != len(ckpt["series"]):
                save(boundary=at_boundary)
    finally:
        progress.close()
        log.close()
        if writer is not None:
            writer.close()
        if own_envs:
            envs.close()
    summary = write_result(final=True)
    return RLRunResult(
        out_dir=out,
        status=status,
        preset=preset,
        tasks=spec.tasks,
        series=series,
        summary=summary,
        steps=step,
        updates=updates,
        resumed_from=resumed_from,
        wall_s=prior_wall + time.perf_counter() - start_wall,
        agent=agent,
        diagnostics=diagnostics_summary(),
    )


def _postfix(rates: Mapping[str, float], series: EvalSeries) -> str:
    text = f"{rates['env_steps_per_s']:.0f} env-steps/s {rates['updates_per_s']:.1f} upd/s"
    final = series.final()
    if final is not None:
        text += f" success {final.mean_success:.2f}"
    return text


def _run_dict(cfg: RLRunConfig) -> dict[str, Any]:
    out = {}
    for k, v in cfg.__dict__.items():
        out[k] = str(v) if isinstance(v, Path) else v
    return out
