"""DualProj: project the mean gradient onto the dual cone of the task gradients.

Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", 2024 (arXiv:2406.16232), where
it is a baseline; the same projection is Equation 11 of GEM (Lopez-Paz & Ranzato, "Gradient Episodic
Memory for Continual Learning", NeurIPS 2017). Reference implementation: torchjd's ``DualProj``.

Rule. ``Δθ = π_J(Σ_i p_i g_i)``, the Euclidean projection of the weighted mean onto
``{x : J x ≥ 0}`` (``p = 1/m`` by default). On the Gramian: ``Δθ = wᵀJ`` with

    w = argmin_v ½ vᵀ K v   subject to   v ≥ p,          K = J Jᵀ,

one quadratic program (:mod:`gradsurgery.methods.nonneg_qp`). ``K w ≥ 0`` (no task conflicts with
the update, up to the ``reg_eps`` ridge), and ``w = p`` when the mean already conflicts with no task
(``K p ≥ 0``). UPGrad (:mod:`gradsurgery.methods.upgrad`) projects each ``g_i`` before averaging
instead.

Choices (as UPGrad's, the placement on the host included): trace normalization and ``reg_eps = 1e-4`` ridge as torchjd; ``norm_eps``
defaults to 0 (torchjd: an absolute 1e-4 on the trace, see UPGrad); ``pref_vector`` over all tasks,
rescaled over the present ones; task-specific parameters get weight 1.

Example (g1 = (1, 0), g2 = (-2, 1); the mean (-1/2, 1/2) conflicts with g1):
    >>> import torch
    >>> from gradsurgery.methods.base import TaskStep
    >>> K = torch.tensor([[1.0, -2.0], [-2.0, 5.0]], dtype=torch.float64)
    >>> step = TaskStep(torch.ones(2, dtype=torch.float64), torch.arange(2), 2, 0, gramian=K)
    >>> DualProj(reg_eps=0.0)(step).weights   # g1 + g2/2 = (0, 1/2): orthogonal to g1
    tensor([1.0000, 0.5000], dtype=torch.float64)
"""

from __future__ import annotations

from torch import Tensor

from gradsurgery.methods.nonneg_qp import dual_cone_weights
from gradsurgery.methods.registry import register
from gradsurgery.methods.upgrad import DualConeWeighting

__all__ = ["DualProj"]


@register(
    "dualproj",
    paper="Quinton & Rey, Jacobian Descent for Multi-Objective Optimization, 2024 (GEM projection)",
    rule="project the mean gradient onto the dual cone {x: Jx ≥ 0}: w = argmin ½vᵀKv s.t. v ≥ p",
)
class DualProj(DualConeWeighting):
    """DualProj on the Gramian. See the module docstring for the rule and the choices.

    Args:
        pref_vector: ``(num_tasks,)`` weights ``p`` of the combination to project (None: ``1/m``).
        norm_eps: a Gramian with trace ``≤ norm_eps`` is treated as zero (torchjd: 1e-4).
        reg_eps: ridge added to the trace-normalized Gramian (torchjd: 1e-4).
        max_iter: cap on the QP solver's pivoting rounds (None: ``4m + 20``).
    """

    def _weights(self, gramian: Tensor, p: Tensor) -> Tensor:
        return dual_cone_weights(
            gramian, p, norm_eps=self.norm_eps, reg_eps=self.reg_eps, max_iter=self.max_iter
        )

    def extra_repr(self) -> str:
        return f"norm_eps={self.norm_eps}, reg_eps={self.reg_eps}"
