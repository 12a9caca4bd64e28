"""Named protocol presets for multi-task RL on Meta-World: environment protocol + agent + budget.

A result is only comparable with results of the same protocol, so every run records the preset it
used (name and every resolved value; :meth:`ResolvedPreset.to_dict`). A preset fixes three things:

* the environment protocol (:class:`~gradsurgery.rl.envs.EnvProtocol`): episode length, goals per
  task, reward version, how evaluation episodes end and count;
* the agent (:class:`~gradsurgery.rl.config.SACConfig` fields: network sizes, batch size, ...);
* the budget (:class:`Budget`): steps, warm-up, evaluation schedule, replay size, checkpoints.

Steps are counted **per task**: one step = one vector step = one transition of every task, and the
runner makes one update per step after the warm-up. A budget of 2M steps on MT10 is 20M environment
transitions (what Meta-World's reference runner calls ``total_steps=20_000_000``).

The presets:

``metaworld-v3`` — the current Meta-World protocol (v3 environments, Meta-World 3.1): 50 goals per
    task, one drawn at random at every reset (goals seeded by the run's seed, as
    ``gym.make_vec("Meta-World/MT10", seed=seed)``), 500-step episodes, reward v2. Evaluation is
    Meta-World's multi-task evaluation: deterministic policy, 50 episodes per task, the ``k``-th on
    goal ``k`` (each training goal once), the episode ending at the first success, success = the
    success flag was 1 at some step; the score is the mean success rate over tasks. Agent and budget
    follow the published MT-SAC setting and Meta-World's reference runner (metaworld-algorithms:
    2M steps per task, 4,000 warm-up steps, replay of 1M transitions in total, batch 128 per task,
    evaluation every 400 episodes ≈ 20,000 steps per task on MT10). A GPU job.
``mtrl-compat`` — the old papers' protocol (PCGrad, CARE, soft modularization ... reported on
    Meta-World v1 through the ``mtrl`` code base): one fixed goal per task (the same for every seed:
    goal seed 0), 150-step episodes, success = success at any step of the episode, evaluated every
    10,000 steps; mtrl's 1,500 warm-up steps. Reward v2: the papers trained on v1's reward
    shaping, but the v1 shaping that v3 environments still carry is degenerate for some tasks
    (``reach-v3`` pays 0 at every step of a random 150-step episode), so the preset keeps v2
    (``protocol={"reward_function_version": "v1"}`` selects it anyway). Because goal and
    dynamics are deterministic and the evaluation policy is deterministic, one evaluation episode
    per task decides its success. Report ``best_mean_success`` (the best mean over the evaluation
    series) to compare with those papers. **These are Meta-World v3 environments, not v1**: the
    robot, objects, observation (39-d) and success thresholds changed between versions, so numbers
    are comparable in spirit, not equal to the published v1 numbers. A GPU job.
``metaworld-v3-cpu``, ``mtrl-compat-cpu`` — the same protocols with a budget a laptop CPU finishes
    in about an hour on MT10 (2×256 networks, 32 transitions per task per update, 50,000 steps per
    task; 5 evaluation episodes for v3, i.e. the first 5 of the 50 goals of each task). They show
    a learning signal, not converged numbers.
``smoke`` — ``mtrl-compat`` environments with a tiny network and budget: checks the pipeline in a
    minute; learns nothing.

A preset is resolved for a run (:func:`resolve_preset`) with the method, device, seed and any
override: ``steps`` (the budget), ``budget`` fields, ``agent`` fields (any ``SACConfig`` field),
``protocol`` fields. Overrides are recorded with the result.

A :class:`Recipe` is agent settings layered over any preset, with per-method values:
:data:`KURIN` (``resolve_preset(..., regularized=True)``) is Kurin et al.'s regularized unitary
scalarization (NeurIPS 2022): one shared temperature, per-task reward normalization at sampling
time, actor weight decay 3e-4 — 1e-4 for PCGrad and GradDrop, as in their configurations — and a
4× replay buffer; Q-target clipping stays off (they used it in some runs only; pass
``agent={"q_target_clip": True}``). :func:`kurin_config` gives that agent without a preset.

Example:
    >>> p = resolve_preset("metaworld-v3", num_tasks=10, method="pcgrad", steps=1000, seed=1)
    >>> p.budget.steps, p.agent.hidden_sizes, p.agent.method, p.protocol.max_episode_steps
    (1000, (400, 400, 400), 'pcgrad', 500)
    >>> p.replay_capacity_per_task
    100000
    >>> KURIN.settings("pcgrad")["actor_weight_decay"], kurin_config("sum").actor_weight_decay
    (0.0001, 0.0003)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from types import MappingProxyType
from typing import Any

from gradsurgery.rl.config import SACConfig
from gradsurgery.rl.envs import EnvProtocol

__all__ = [
    "KURIN",
    "PRESETS",
    "Budget",
    "Preset",
    "Recipe",
    "ResolvedPreset",
    "get_preset",
    "kurin_config",
    "preset_names",
    "resolve_preset",
]


@dataclass(frozen=True)
class Budget:
    """How long a run is and how often it evaluates and saves; all counts are steps per task.

    Attributes:
        steps: total steps per task (vector steps).
        warmup_steps: steps with uniformly random actions before the first update.
        eval_every: steps between evaluations (an evaluation runs at the first episode boundary at
            or after each multiple; a final one runs at the end).
        eval_episodes: evaluation episodes per task.
        replay_size: replay capacity in transitions over all tasks (split evenly per task).
        checkpoint_every: steps between checkpoints (at the first episode boundary at or after each
            multiple; a final one is written at the end).
        log_every: steps between training-log rows.
    """

    steps: int
    warmup_steps: int
    eval_every: int
    eval_episodes: int
    replay_size: int
    checkpoint_every: int
    log_every: int = 1000

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"budget {f.name} must be an int, got {value!r}")
            minimum = 0 if f.name == "warmup_steps" else 1
            if value < minimum:
                raise ValueError(f"budget {f.name} must be >= {minimum}, got {value}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Preset:
    """A named protocol: environment protocol, agent settings (``SACConfig`` fields) and budget."""

    name: str
    description: str
    protocol: EnvProtocol
    agent: Mapping[str, Any]
    budget: Budget
    report: str  # which number to report: "best_mean_success" or "final_mean_success"
    full_size: bool  # the published network/batch sizes (a GPU job at full budget)
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "agent", MappingProxyType(dict(self.agent)))
        if self.report not in ("best_mean_success", "final_mean_success"):
            raise ValueError(f"unknown report {self.report!r}")


_FULL_AGENT: dict[str, Any] = {
    "hidden_sizes": (400, 400, 400),
    "lr": 3e-4,
    "gamma": 0.99,
    "tau": 0.005,
    "init_temperature": 1.0,
    "per_task_alpha": True,
    "batch_size_per_task": 128,
}
_CPU_AGENT: dict[str, Any] = {**_FULL_AGENT, "hidden_sizes": (256, 256), "batch_size_per_task": 32}
# Budget fields shared by the presets of one size (the rest: warm-up, evaluation schedule).
_FULL_RUN: dict[str, int] = {
    "steps": 2_000_000,
    "replay_size": 1_000_000,
    "checkpoint_every": 100_000,
    "log_every": 1_000,
}
_CPU_RUN: dict[str, int] = {
    "steps": 50_000,
    "warmup_steps": 1_500,
    "replay_size": 500_000,
    "checkpoint_every": 10_000,
    "log_every": 500,
}

_V3 = EnvProtocol(
    max_episode_steps=500,
    num_goals=50,
    goal_seed=None,
    reward_function_version="v2",
    eval_terminate_on_success=True,
    success="any_step",
)
_MTRL = EnvProtocol(
    max_episode_steps=150,
    num_goals=1,
    goal_seed=0,
    reward_function_version="v2",
    eval_terminate_on_success=False,
    success="any_step",
)

PRESETS: Mapping[str, Preset] = MappingProxyType(
    {
        p.name: p
        for p in [
            Preset(
                "metaworld-v3",
                "Meta-World v3 protocol: 50 goals resampled per reset, 500-step episodes, reward "
                "v2, Meta-World's evaluation (50 episodes per task, one per goal); published "
                "MT-SAC agent; 2M steps per task",
                _V3,
                _FULL_AGENT,
                Budget(**_FULL_RUN, warmup_steps=4_000, eval_every=20_000, eval_episodes=50),
                report="final_mean_success",
                full_size=True,
                source="Meta-World 3.1 docs (evaluation), metaworld-algorithms MTSAC MT10 example",
            ),
            Preset(
                "mtrl-compat",
                "old papers' protocol on v3 envs: one fixed goal per task, 150-step episodes, "
                "reward v2, success at any step, best mean over evaluations; published MT-SAC "
                "agent; 2M steps per task (v3 envs are not v1: not equal to published numbers)",
                _MTRL,
                _FULL_AGENT,
                Budget(**_FULL_RUN, warmup_steps=1_500, eval_every=10_000, eval_episodes=1),
                report="best_mean_success",
                full_size=True,
                source="mtrl (Sodhani et al. 2021) metaworld experiment config; Yu et al. 2020",
            ),
            Preset(
                "metaworld-v3-cpu",
                "metaworld-v3 protocol, reduced for a CPU: 2x256 networks, 32 transitions per "
                "task per update, 50k steps per task, 5 evaluation episodes per task",
                _V3,
                _CPU_AGENT,
                Budget(**_CPU_RUN, eval_every=10_000, eval_episodes=5),
                report="final_mean_success",
                full_size=False,
            ),
            Preset(
                "mtrl-compat-cpu",
                "mtrl-compat protocol, reduced for a CPU: 2x256 networks, 32 transitions per task "
                "per update, 50k steps per task",
                _MTRL,
                _CPU_AGENT,
                Budget(**_CPU_RUN, eval_every=5_000, eval_episodes=1),
                report="best_mean_success",
                full_size=False,
            ),
            Preset(
                "smoke",
                "pipeline check: mtrl-compat environments, 2x64 networks, 600 steps; learns "
                "nothing",
                _MTRL,
                {**_FULL_AGENT, "hidden_sizes": (64, 64), "batch_size_per_task": 16},
                Budget(
                    steps=600,
                    warmup_steps=150,
                    eval_every=300,
                    eval_episodes=1,
                    replay_size=20_000,
                    checkpoint_every=300,
                    log_every=100,
                ),
                report="final_mean_success",
                full_size=False,
            ),
        ]
    }
)


def preset_names() -> list[str]:
    return list(PRESETS)


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}") from None


def _check_keys(what: str, given: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise ValueError(f"unknown {what} field(s) {unknown}; known: {', '.join(sorted(allowed))}")


@dataclass(frozen=True)
class Recipe:
    """Agent settings (``SACConfig`` fields) layered over a preset's, some of them per method.

    Attributes:
        name: a label.
        agent: the settings for every method.
        per_method: overrides of ``agent`` for some methods (registry names, lower case).
        replay_factor: the preset's replay size is multiplied by it.
        source: where the values come from.
    """

    name: str
    agent: Mapping[str, Any]
    per_method: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    replay_factor: int = 1
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "agent", MappingProxyType(dict(self.agent)))
        per_method = {k.lower(): MappingProxyType(dict(v)) for k, v in self.per_method.items()}
        object.__setattr__(self, "per_method", MappingProxyType(per_method))
        known = {f.name for f in fields(SACConfig)}
        for what, settings in [("agent", self.agent), *self.per_method.items()]:
            _check_keys(f"recipe {self.name} {what} (SACConfig)", settings, known)

    def settings(self, method: str) -> dict[str, Any]:
        """The ``SACConfig`` fields this recipe sets for ``method``."""
        return {**self.agent, **self.per_method.get(method.lower(), {})}


#: Kurin et al. (NeurIPS 2022)'s regularized MT-SAC (see the module docstring).
KURIN = Recipe(
    "kurin",
    agent={"per_task_alpha": False, "reward_normalization": True, "actor_weight_decay": 3e-4},
    per_method={"pcgrad": {"actor_weight_decay": 1e-4}, "graddrop": {"actor_weight_decay": 1e-4}},
    replay_factor=4,
    source="Kurin, De Palma, Kostrikov, Whiteson, Kumar: In Defense of the Unitary "
    "Scalarization for Deep Multi-Task Learning, NeurIPS 2022 (their MT10 configurations)",
)


def kurin_config(method: str = "sum", **overrides: Any) -> SACConfig:
    """The ``SACConfig`` of :data:`KURIN` for ``method`` (the preset's other fields at their
    defaults), then ``overrides``. The 4× replay buffer is the preset's (``regularized=True``)."""
    return SACConfig(**{"method": method, **KURIN.settings(method), **overrides})


@dataclass(frozen=True)
class ResolvedPreset:
    """A preset made concrete for one run (``agent`` is a ``SACConfig``)."""

    name: str
    protocol: EnvProtocol
    agent: SACConfig
    budget: Budget
    num_tasks: int
    report: str
    full_size: bool
    overrides: Mapping[str, Any] = field(default_factory=dict)
    regularized: bool = False

    @property
    def replay_capacity_per_task(self) -> int:
        return max(1, self.budget.replay_size // self.num_tasks)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable: what a result records about how it was produced."""
        return {
            "name": self.name,
            "protocol": self.protocol.to_dict(),
            "agent": self.agent.to_dict(),
            "budget": self.budget.to_dict(),
            "num_tasks": self.num_tasks,
            "replay_capacity_per_task": self.replay_capacity_per_task,
            "report": self.report,
            "full_size": self.full_size,
            "regularized": self.regularized,
            "overrides": _jsonable(dict(self.overrides)),
        }


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def resolve_preset(
    name: str | Preset,
    *,
    num_tasks: int,
    method: str | None = None,
    method_kwargs: Mapping[str, Any] | None = None,
    seed: int | None = None,
    device: str | None = None,
    steps: int | None = None,
    budget: Mapping[str, Any] | None = None,
    agent: Mapping[str, Any] | None = None,
    protocol: Mapping[str, Any] | None = None,
    task_names: tuple[str, ...] | None = None,
    regularized: bool = False,
) -> ResolvedPreset:
    """Make a preset concrete for a run.

    Args:
        name: a preset name (:func:`preset_names`) or a :class:`Preset`.
        num_tasks: tasks of the suite (the replay size is split per task).
        method, method_kwargs: the multi-task method (``SACConfig.method``) and its arguments.
        seed: the run's seed; the agent's own generators get it (``SACConfig.seed``).
        device: where the agent runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``; ``"auto"`` = CUDA when
            available).
        steps: override of ``budget.steps``; ``eval_every``, ``checkpoint_every`` and
            ``log_every`` are capped at it and ``warmup_steps`` at a quarter of it, so that a short
            run still learns, evaluates and saves (explicit ``budget`` values win).
        budget, agent, protocol: overrides of :class:`Budget`, ``SACConfig`` and
            :class:`~gradsurgery.rl.envs.EnvProtocol` fields.
        task_names: the suite's task names (``SACConfig.task_names``, used by CARE).
        regularized: layer :data:`KURIN` over the preset (Kurin et al.'s recipe for the method:
            shared temperature, reward normalization, actor weight decay; a 4× replay buffer).
    """
    preset = name if isinstance(name, Preset) else get_preset(name)
    budget = dict(budget or {})
    agent = dict(agent or {})
    protocol = dict(protocol or {})
    _check_keys("budget", budget, {f.name for f in fields(Budget)})
    _check_keys("protocol", protocol, {f.name for f in fields(EnvProtocol)})
    _check_keys("agent (SACConfig)", agent, {f.name for f in fields(SACConfig)})
    overrides: dict[str, Any] = {}
    if steps is not None:
        overrides["steps"] = steps
    if budget:
        overrides["budget"] = dict(budget)
    if agent:
        overrides["agent"] = dict(agent)
    if protocol:
        overrides["protocol"] = dict(protocol)

    b = preset.budget
    if steps is not None:
        n = int(steps)
        b = dataclasses.replace(
            b,
            steps=n,
            eval_every=min(b.eval_every, n),
            checkpoint_every=min(b.checkpoint_every, n),
            log_every=min(b.log_every, n),
            warmup_steps=min(b.warmup_steps, n // 4),
        )
    b = dataclasses.replace(b, **budget)
    if regularized:
        b = dataclasses.replace(b, replay_size=KURIN.replay_factor * b.replay_size)
    proto = dataclasses.replace(preset.protocol, **protocol)

    settings: dict[str, Any] = dict(preset.agent)
    if regularized:
        settings.update(KURIN.settings(method or settings.get("method", "sum")))
    if method is not None:
        settings["method"] = method.lower()
    if method_kwargs:
        settings["method_kwargs"] = dict(method_kwargs)
    if seed is not None:
        settings["seed"] = int(seed)
    if device is not None:
        settings["device"] = resolve_device(device)
    if task_names is not None:
        settings["task_names"] = tuple(task_names)
    settings.update(agent)
    config = SACConfig(**settings)
    return ResolvedPreset(
        name=preset.name,
        protocol=proto,
        agent=config,
        budget=b,
        num_tasks=int(num_tasks),
        report=preset.report,
        full_size=preset.full_size,
        overrides=overrides,
        regularized=regularized,
    )


def resolve_device(device: str) -> str:
    """``"auto"`` → ``"cuda"`` when available, else ``"cpu"``; a CUDA device that is not there is
    an error (rather than a silent CPU run)."""
    import torch

    text = str(device).strip().lower()
    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if text.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    torch.device(text)  # validates the spelling
    return text
