"""MoDo: multi-objective gradient with double sampling, single-sample form on the Gramian.

Chen, Fernando, Ying, Chen, "Three-Way Trade-Off in Multi-Objective Learning: Optimization,
Generalization and Conflict-Avoidance", NeurIPS 2023 (JMLR 2024). Checked against LibMTL's
``LibMTL/weighting/MoDo.py`` (which says it is modified from the official code,
``heshandevaka/Trade-Off-MOL``; the official code itself was not checked here).

Rule (the paper's, as LibMTL implements it). With the task gradients of three independent samples
``J₁, J₂, J₃`` (``m × d``) and weights ``λ`` on the probability simplex ``Δ`` (``λ₀ = 1/m``),

    λ_{t+1} = Π_Δ(λ_t − γ (J₁ J₂ᵀ λ_t + ρ λ_t)),      Δθ = λ_{t+1}ᵀ J₃,

``Π_Δ`` the Euclidean projection onto ``Δ`` (LibMTL: the sort-based one; ours:
:func:`~gradsurgery.methods.simplex.project_simplex`). ``J₁ J₂ᵀ λ`` is an unbiased estimate of the
gradient ``∇_λ ½‖E[J]ᵀλ‖²`` because the two samples are independent: that is the "double sampling".

Adaptation (not in the paper): our engine computes one set of task gradients per step, so we use
the same sample for all three: ``J₁ = J₂ = J₃ = J`` and ``J₁ J₂ᵀ = K``, the Gramian. The λ step is
then a projected gradient step on ``½ λᵀKλ + ½ρ‖λ‖²`` with the (biased) single-sample ``K``, which is
what the double sampling exists to avoid; for the paper's estimator, feed the method independent
batches yourself. With three samples LibMTL also divides the heads' accumulated gradients by 3 (the
mean of the three samples); with one sample each head gets its own gradient (weight 1).

Choices the paper leaves open, and ours:

* ``γ = 0.001`` and ``ρ = 0.1``: LibMTL's defaults (``MoDo_gamma``, ``MoDo_rho``); the paper's own
  values per experiment were not checked here. ``γ`` is constant (no decay), as in LibMTL.
* Tasks absent from a step: their ``λ`` is left as it is; the present tasks' ``λ`` is renormalised
  onto their simplex, updated, and written back scaled to its previous total, so ``λ`` stays on
  ``Δ`` over all tasks. With every task present this is exactly the rule above.
* ``λ`` is kept in float64 (``m`` numbers) and is the method's state (``state_dict``).
* Scaling: ``γ K λ`` is not scale-free, so there is no scaling law (``scale_degree = None``).
* Cost: one matrix-vector product and one projection on the device; no host synchronisation.

Example (K = I, γ = 0.5, ρ = 0: λ = (0.8, 0.2) → Π(0.4, 0.1) = (0.65, 0.35)):
    >>> import torch
    >>> from gradsurgery.methods.base import TaskStep
    >>> modo = MoDo(gamma=0.5, rho=0.0, num_tasks=2)
    >>> _ = modo.lambd.copy_(torch.tensor([0.8, 0.2]))
    >>> K = torch.eye(2, dtype=torch.float64)
    >>> modo(TaskStep(torch.ones(2), torch.arange(2), 2, 0, gramian=K)).weights
    tensor([0.6500, 0.3500], dtype=torch.float64)
"""

from __future__ import annotations

import torch
from torch import Tensor

from gradsurgery.methods.base import GramianWeighting, TaskStep
from gradsurgery.methods.registry import register
from gradsurgery.methods.simplex import project_simplex
from gradsurgery.methods.task_state import TaskStateMixin, per_task

__all__ = ["MoDo", "restrict_simplex"]


def restrict_simplex(lambd: Tensor, tasks: Tensor) -> tuple[Tensor, Tensor]:
    """The present tasks' ``λ`` renormalised onto their simplex (uniform when they carry no mass),
    and that mass (to write the updated ``λ`` back with)."""
    sub = lambd[tasks]
    mass = sub.sum()
    uniform = torch.full_like(sub, 1.0 / sub.shape[0])
    safe = torch.where(mass > 0, mass, torch.ones_like(mass))
    return torch.where(mass > 0, sub / safe, uniform), torch.where(mass > 0, mass, 1.0)


@register(
    "modo",
    paper="Chen et al., Three-Way Trade-Off in Multi-Objective Learning (MoDo), NeurIPS 2023",
    rule="λ ← Π_Δ(λ − γ(J₁J₂ᵀλ + ρλ)), Δθ = λᵀJ₃; one sample per step here: J₁ = J₂ = J₃, K λ",
)
class MoDo(TaskStateMixin, GramianWeighting):
    """MoDo with one gradient sample per step (see the module docstring).

    Args:
        gamma: ``γ``, the step size of ``λ`` (LibMTL: 0.001); positive.
        rho: ``ρ``, the ℓ2 regularisation of ``λ``'s update (LibMTL: 0.1); non-negative.
        num_tasks: the number of tasks (None: taken from the first step).
    """

    scale_degree = None  # the λ step γKλ is not scale-free
    _task_state_names = ("lambd",)

    def __init__(self, gamma: float = 0.001, rho: float = 0.1, num_tasks: int | None = None):
        super().__init__()
        if gamma <= 0:
            raise ValueError(f"gamma must be positive, got {gamma}")
        if rho < 0:
            raise ValueError(f"rho must be non-negative, got {rho}")
        self.gamma = float(gamma)
        self.rho = float(rho)
        self._init_task_state(num_tasks)

    def _allocate(self, num_tasks: int, device: torch.device | None) -> None:
        self.lambd = per_task(num_tasks, device, 1.0 / num_tasks, dtype=torch.float64)

    @torch.no_grad()
    def gramian_weights(self, gramian: Tensor, step: TaskStep) -> Tensor:
        self._bind_to_step(step)
        assert self.lambd is not None
        if self.lambd.device != gramian.device:
            self.to(gramian.device)
        k = gramian.to(torch.float64)
        lam, mass = restrict_simplex(self.lambd, step.tasks)
        lam = project_simplex(lam - self.gamma * (k @ lam + self.rho * lam))
        self.lambd[step.tasks] = lam * mass
        return lam.to(gramian.dtype)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, rho={self.rho}"
