"""MoCo: multi-objective gradient correction by tracking per-task gradient estimates.

Fernando, Shen, Liu, Chaudhury, Murugesan, Chen, "Mitigating Gradient Bias in Multi-objective
Learning: A Provably Convergent Approach", ICLR 2023. Checked against LibMTL's
``LibMTL/weighting/MoCo.py`` ("implemented based on the author's sharing code") and the authors'
repository ``heshandevaka/MoCo`` (its ``LibMTL/build/lib/LibMTL/weighting/Tracking.py``, a build
copy, possibly not their final version); the paper's text itself was not checked here.

Rule. Per task a tracked estimate ``y_i ∈ ℝ^d`` of its gradient (``Y = 0`` at first, ``m × d``), and
weights ``λ ∈ Δ`` (``λ₀ = 1/m``). At step ``k = 1, 2, …`` with task gradients ``g_i``:

    y_i ← y_i − β_k (y_i − g_i),                  β_k = β / k^{σ_β},
    λ   ← Π_Δ(λ − γ_k (Y Yᵀ + ρ I) λ),             γ_k = γ / k^{σ_γ},
    Δθ  = Yᵀ λ,

``Π_Δ`` the Euclidean projection onto the simplex (the authors' code, sort-based; ours:
:func:`~gradsurgery.methods.simplex.project_simplex`). The update is a combination of the tracked
estimates, not of this step's gradients, so the method needs the Jacobian and keeps ``Y``
(``m × d``, the size of ``m`` copies of the shared parameters) as state: it cannot be written on the
Gramian (``Y`` mixes gradients of past steps, whose inner products with this step's are unknown).

Choices the paper leaves open, and ours (every one an argument):

* ``β = 0.5, σ_β = 0.5, γ = 0.1, σ_γ = 0.5, ρ = 0``: LibMTL's defaults (``MoCo_beta``,
  ``MoCo_beta_sigma``, ``MoCo_gamma``, ``MoCo_gamma_sigma``, ``MoCo_rho``). The authors' ``Tracking``
  has ``β = 0.1`` and its λ step ``δ · 2 YYᵀλ`` with ``δ = 0.1`` (``γ = 0.2`` here) and no ``ρ``.
  The paper's own values were not checked.
* ``lambda_map``: ``"projection"`` (default: ``Π_Δ``, as the authors' code) or ``"softmax"``
  (LibMTL: ``λ ← softmax(λ − γ_k(YYᵀ + ρI)λ)``, which keeps every weight positive).
* ``normalize``: LibMTL first replaces each gradient by ``L_i g_i / (‖g_i‖ + 1e-8)`` (loss-scaled
  unit gradients); the authors' ``Tracking`` does not. Default False; True is LibMTL's variant.
* The paper also projects ``y_i`` onto a ball (a bound on the gradients, for the analysis); neither
  code does, nor do we.
* Task-specific parameters get their own gradient (weight 1), as in both codes.
* Tasks absent from a step: their ``y_i`` and ``λ_i`` are left as they are; the present tasks' ``λ``
  is renormalised onto their simplex, updated, and written back scaled to its previous total. ``k``
  counts steps, not per-task updates.
* State (``state_dict``): ``Y`` (all ``M`` tasks, allocated at the first step, in the gradients'
  dtype, at least float32), ``λ`` (float64) and ``k``. No host synchronisation; a fixed number of
  kernels per step.
* Claims: no scaling law (``γ_k YYᵀλ`` is not scale-free), and with one task the update is
  ``y``, a running average of past gradients, not this step's gradient (``single_task = None``).

Example (one task, β = ½, σ_β = 0: y = ½ g, then ½ y + ½ g' with λ = 1):
    >>> import torch
    >>> from gradsurgery.jacobian import TaskJacobian
    >>> from gradsurgery.methods.base import TaskStep
    >>> moco = MoCo(beta=0.5, beta_sigma=0.0)
    >>> def step(g):
    ...     j = TaskJacobian([torch.tensor([g])])
    ...     return moco(TaskStep(torch.ones(1), torch.arange(1), 1, 0, jacobian=j)).update[0]
    >>> step([2.0, 0.0]), step([0.0, 4.0])
    (tensor([1., 0.]), tensor([0.5000, 2.0000]))
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from gradsurgery.jacobian import TaskJacobian
from gradsurgery.methods.base import JacobianAggregator, TaskStep
from gradsurgery.methods.modo import restrict_simplex
from gradsurgery.methods.registry import register
from gradsurgery.methods.simplex import project_simplex
from gradsurgery.methods.task_state import TaskStateMixin, per_task

__all__ = ["MoCo"]

LambdaMap = Literal["projection", "softmax"]


@register(
    "moco",
    paper="Fernando et al., Mitigating Gradient Bias in Multi-objective Learning: A Provably "
    "Convergent Approach (MoCo), ICLR 2023",
    rule="y_i ← y_i − β_k(y_i − g_i); λ ← Π_Δ(λ − γ_k(YYᵀ + ρI)λ); Δθ = Yᵀλ",
)
class MoCo(TaskStateMixin, JacobianAggregator):
    """MoCo (see the module docstring).

    Args:
        beta, beta_sigma: ``β`` and ``σ_β`` of the tracking step ``β / k^{σ_β}`` (LibMTL: 0.5, 0.5).
        gamma, gamma_sigma: ``γ`` and ``σ_γ`` of the λ step ``γ / k^{σ_γ}`` (LibMTL: 0.1, 0.5).
        rho: ``ρ ≥ 0``, the ℓ2 regularisation of λ's update (LibMTL: 0).
        lambda_map: ``"projection"`` (authors) or ``"softmax"`` (LibMTL).
        normalize: replace ``g_i`` by ``L_i g_i / (‖g_i‖ + 1e-8)`` first (LibMTL).
        num_tasks: the number of tasks (None: taken from the first step).
    """

    scale_degree = None
    single_task = None
    _task_state_names = ("lambd",)

    def __init__(
        self,
        beta: float = 0.5,
        beta_sigma: float = 0.5,
        gamma: float = 0.1,
        gamma_sigma: float = 0.5,
        rho: float = 0.0,
        lambda_map: LambdaMap = "projection",
        normalize: bool = False,
        num_tasks: int | None = None,
    ) -> None:
        super().__init__()
        if not 0 < beta <= 1:
            raise ValueError(f"beta must be in (0, 1], got {beta}")
        if gamma <= 0:
            raise ValueError(f"gamma must be positive, got {gamma}")
        if beta_sigma < 0 or gamma_sigma < 0:
            raise ValueError("beta_sigma and gamma_sigma must be non-negative")
        if rho < 0:
            raise ValueError(f"rho must be non-negative, got {rho}")
        if lambda_map not in ("projection", "softmax"):
            raise ValueError(f"lambda_map must be 'projection' or 'softmax', got {lambda_map!r}")
        self.beta, self.beta_sigma = float(beta), float(beta_sigma)
        self.gamma, self.gamma_sigma = float(gamma), float(gamma_sigma)
        self.rho = float(rho)
        self.lambda_map: LambdaMap = lambda_map
        self.normalize = bool(normalize)
        self.y: Tensor | None
        self.register_buffer("y", None)
        self.steps: Tensor
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # k
        self._init_task_state(num_tasks)

    def _allocate(self, num_tasks: int, device: torch.device | None) -> None:
        self.lambd = per_task(num_tasks, device, 1.0 / num_tasks, dtype=torch.float64)

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        saved = state_dict.get(prefix + "y")
        if isinstance(saved, Tensor) and (self.y is None or self.y.shape != saved.shape):
            self.y = torch.empty_like(saved)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def aggregate(self, jacobian: TaskJacobian, step: TaskStep) -> list[Tensor]:
        self._bind_to_step(step)
        assert self.lambd is not None and self.num_tasks is not None
        g = jacobian.matrix()
        dtype = torch.promote_types(g.dtype, torch.float32)
        if self.lambd.device != g.device:
            self.to(g.device)
        if self.y is None or self.y.shape[1] != g.shape[1]:
            self.y = torch.zeros(self.num_tasks, g.shape[1], dtype=dtype, device=g.device)
        elif self.y.dtype != dtype:
            self.y = self.y.to(dtype)
        g = g.to(dtype)
        if self.normalize:
            losses = step.losses.detach().to(dtype).unsqueeze(1)
            g = g / (g.norm(dim=1, keepdim=True) + 1e-8) * losses
        self.steps += 1
        k = self.steps.to(torch.float64)
        y = self.y[step.tasks]
        y = y - (self.beta * k.pow(-self.beta_sigma)).to(dtype) * (y - g)
        self.y[step.tasks] = y
        lam, mass = restrict_simplex(self.lambd, step.tasks)
        yy = (y @ y.T).to(torch.float64)
        v = lam - self.gamma * k.pow(-self.gamma_sigma) * (yy @ lam + self.rho * lam)
        lam = project_simplex(v) if self.lambda_map == "projection" else torch.softmax(v, dim=0)
        self.lambd[step.tasks] = lam * mass
        return jacobian.split(lam.to(dtype) @ y)

    def extra_repr(self) -> str:
        return (
            f"beta={self.beta}, gamma={self.gamma}, rho={self.rho}, "
            f"lambda_map={self.lambda_map!r}, normalize={self.normalize}"
        )
