"""What one RL run is: its settings (:class:`RLRunConfig`), its resolved preset, the fingerprint a
checkpoint must match to be continued, and what the run returns (:class:`RLRunResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gradsurgery.rl.envs import SuiteSpec, resolve_suite
from gradsurgery.rl.evaluation import EvalSeries
from gradsurgery.rl.presets import ResolvedPreset, resolve_preset

__all__ = [
    "RLRunConfig",
    "RLRunResult",
    "default_out_dir",
    "preset_for_run",
    "run_fingerprint",
    "run_record",
]


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


def run_fingerprint(spec: SuiteSpec, preset: ResolvedPreset, cfg: RLRunConfig) -> dict[str, Any]:
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


def run_record(cfg: RLRunConfig) -> dict[str, Any]:
    """The run settings as JSON values (paths as strings), for ``config.json``."""
    out = {}
    for k, v in cfg.__dict__.items():
        out[k] = str(v) if isinstance(v, Path) else v
    return out
