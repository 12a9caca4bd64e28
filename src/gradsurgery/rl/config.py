"""``SACConfig``: every setting of the multi-task SAC agent, with the published defaults.

Defaults follow the multi-task SAC protocol behind most published Meta-World MT10/MT50 numbers
(Yu et al. 2019; the ``mtrl`` code of Sodhani et al. 2021): actor and twin critics are 3×400 MLPs,
Adam 3e-4, γ = 0.99, τ = 0.005, initial temperature 1, target entropy ``-|A|``, 128 transitions per
task per update, one temperature per task ("disentangled" α).

The fields that regularize the unitary scalarization as Kurin et al. (NeurIPS 2022) do
(``actor_weight_decay``, ``reward_normalization``, a shared temperature, ``q_target_clip``) are
off by default; their recipe, with the values they chose per method, belongs to the preset layer:
:data:`gradsurgery.rl.presets.KURIN` and :func:`gradsurgery.rl.presets.kurin_config`.

Example:
    >>> cfg = SACConfig(method="pcgrad", architecture="multihead")
    >>> cfg.batch_size_per_task, cfg.hidden_sizes
    (128, (400, 400, 400))
    >>> SACConfig.from_dict(cfg.to_dict()) == cfg
    True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

import torch

from gradsurgery.rl.architectures import architecture_info

__all__ = ["COMPONENTS", "Component", "SACConfig"]

Component = Literal["actor", "critic", "alpha"]
COMPONENTS: tuple[str, ...] = ("actor", "critic", "alpha")


@dataclass(frozen=True)
class SACConfig:
    """Settings of :class:`~gradsurgery.rl.sac.MTSAC`.

    Attributes:
        hidden_sizes: widths of the actor's and each critic's hidden layers (``mlp``,
            ``multihead``; the torso of ``care`` and ``film``).
        lr: Adam learning rate of the actor and the critics.
        alpha_lr: Adam learning rate of the temperature (None: ``lr``).
        gamma: discount γ.
        tau: soft target update rate τ (``θ' ← τ θ + (1 − τ) θ'`` after every update).
        init_temperature: initial α.
        target_entropy: the entropy target (None: ``-action_dim``).
        per_task_alpha: one temperature per task ("disentangled", the MT-SAC default) or one
            shared by all tasks (Kurin et al.).
        batch_size_per_task: transitions of each task in one update (128: 1280 for MT10).
        actor_weight_decay: L2 penalty of the actor's Adam (``torch.optim.Adam(weight_decay=)``,
            coupled, as in Kurin et al.'s code). 0 turns it off.
        reward_normalization: divide each sampled reward by its task's running standard deviation
            of rewards (Kurin et al.; see :mod:`gradsurgery.rl.reward_normalization`).
        q_target_clip: clip TD targets at ``r_max / σ / (1 − γ)`` with ``r_max`` the task's largest
            reward so far and ``σ`` its reward std (1 without reward normalization).
        architecture: a registered architecture
            (:func:`~gradsurgery.rl.architectures.architecture_names`): ``"mlp"`` (one-hot input),
            ``"multihead"``, ``"softmod"`` (soft modularization), ``"care"`` or ``"film"``.
        architecture_kwargs: extra keyword arguments of the architecture's class
            (see :mod:`gradsurgery.rl.networks`).
        method: a registered multi-task method (``"sum"`` is the unitary scalarization).
        method_kwargs: its keyword arguments.
        apply_method_to: which of the three SAC losses the method combines; the others use the
            unitary sum. With ``per_task_alpha`` the temperatures share no parameter, so the
            temperature step is always the plain sum.
        task_loss_scale: ``"mean"`` (task loss ``L_i`` = mean over task ``i``'s samples divided by
            the number of tasks, so that ``Σ_i L_i`` is the batch mean single-network MT-SAC code
            minimizes and Kurin et al.'s weight-decay values keep their meaning) or ``"sum"``
            (``L_i`` = mean over task ``i``'s samples).
        task_reweighting: ``"none"`` or ``"softmax_neg_log_alpha"``: soft modularization's
            per-task loss weights ``m · softmax(−log α)_i`` (Yang et al. 2020), applied to the actor
            and critic losses (requires ``per_task_alpha``).
        log_std_bounds: the actor's log-std range; the raw output is squashed into it with
            ``tanh`` (as ``mtrl`` does: ``lo + (hi − lo)(tanh(x) + 1)/2``).
        max_grad_norm: clip each component's gradient norm before its step (None: off;
            soft modularization's code clips at 1).
        strategy: how ``MultiTaskBackward.backward_partitioned`` vectorizes (``"auto"``,
            ``"vmap"``, ``"loop"``).
        check_finite: the NaN/inf check of each loss's task losses and gradients
            (``MultiTaskBackward(check_finite=)``): ``"lazy"`` (default: read one update later,
            no host synchronisation in the update), ``True`` (eager, one synchronisation per loss)
            or ``False``.
        fused_adam: the optimizers run as one fused kernel (``torch.optim.Adam(fused=True)``)
            instead of several ops per parameter tensor; False: the default implementation.
        compile: compile each loss's forward and backward with ``torch.compile``
            (``MultiTaskBackward(compile=True)``: the vectorized per-task gradients of a method
            that needs them, the plain loss of the sum): compiled once per loss at the first
            updates, then a few fused kernels instead of hundreds of small ones.
        task_names: the tasks' names in task-id order (CARE looks up their description
            embeddings; also used in messages).
        log_per_task: add per-task entries (``alpha/3``, ``critic_loss/3``, ...) to
            :meth:`MTSAC.update`'s result.
        seed: seed of the agent's own generators (reparameterization noise, exploration); None
            draws one from torch's global RNG.
        device: where the networks and the update run.
        dtype: ``"float32"`` or ``"float64"``.
    """

    hidden_sizes: tuple[int, ...] = (400, 400, 400)
    lr: float = 3e-4
    alpha_lr: float | None = None
    gamma: float = 0.99
    tau: float = 0.005
    init_temperature: float = 1.0
    target_entropy: float | None = None
    per_task_alpha: bool = True
    batch_size_per_task: int = 128
    actor_weight_decay: float = 0.0
    reward_normalization: bool = False
    q_target_clip: bool = False
    architecture: str = "mlp"
    architecture_kwargs: dict[str, Any] = field(default_factory=dict)
    method: str = "sum"
    method_kwargs: dict[str, Any] = field(default_factory=dict)
    apply_method_to: tuple[str, ...] = COMPONENTS
    task_loss_scale: Literal["mean", "sum"] = "mean"
    task_reweighting: Literal["none", "softmax_neg_log_alpha"] = "none"
    log_std_bounds: tuple[float, float] = (-20.0, 2.0)
    max_grad_norm: float | None = None
    strategy: Literal["auto", "vmap", "loop"] = "auto"
    check_finite: bool | Literal["lazy"] = "lazy"
    fused_adam: bool = True
    compile: bool = False
    task_names: tuple[str, ...] | None = None
    log_per_task: bool = False
    seed: int | None = None
    device: str = "cpu"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        # Normalize sequences given as lists (from JSON or a CLI) to tuples.
        for name in ("hidden_sizes", "apply_method_to", "log_std_bounds", "task_names"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))
        self._check_model_and_rates()
        self._check_options()

    def _check_model_and_rates(self) -> None:
        architecture_info(self.architecture)  # a ValueError naming the registered ones
        bad = [c for c in self.apply_method_to if c not in COMPONENTS]
        if bad:
            raise ValueError(f"apply_method_to: unknown components {bad}; choose from {COMPONENTS}")
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"gamma must lie in (0, 1], got {self.gamma}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau must lie in (0, 1], got {self.tau}")
        if self.init_temperature <= 0:
            raise ValueError(f"init_temperature must be positive, got {self.init_temperature}")
        if self.batch_size_per_task < 1:
            raise ValueError(f"batch_size_per_task must be >= 1, got {self.batch_size_per_task}")
        if self.actor_weight_decay < 0:
            raise ValueError("actor_weight_decay must be >= 0")

    def _check_options(self) -> None:
        if self.task_loss_scale not in ("mean", "sum"):
            raise ValueError(
                f"task_loss_scale must be 'mean' or 'sum', got {self.task_loss_scale!r}"
            )
        if self.task_reweighting not in ("none", "softmax_neg_log_alpha"):
            raise ValueError(f"unknown task_reweighting {self.task_reweighting!r}")
        if self.task_reweighting != "none" and not self.per_task_alpha:
            raise ValueError("task_reweighting='softmax_neg_log_alpha' needs per_task_alpha=True")
        lo, hi = self.log_std_bounds
        if not lo < hi:
            raise ValueError(f"log_std_bounds must be increasing, got {self.log_std_bounds}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ValueError("max_grad_norm must be positive (or None)")
        if self.check_finite not in (True, False, "lazy"):
            raise ValueError(
                f"check_finite must be True, False or 'lazy', got {self.check_finite!r}"
            )

    # ------------------------------------------------------------------ helpers
    @property
    def torch_dtype(self) -> torch.dtype:
        return torch.float32 if self.dtype == "float32" else torch.float64

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    def resolved_target_entropy(self, action_dim: int) -> float:
        return float(-action_dim) if self.target_entropy is None else float(self.target_entropy)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict (tuples become lists)."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SACConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown SACConfig fields: {unknown}")
        return cls(**data)

    def replace(self, **changes: Any) -> SACConfig:
        return replace(self, **changes)
