"""Aligned-MTL: align the principal components of the task gradients (Independent Component
Alignment).

Senushkin, Patakin, Kuznetsov, Konushin. "Independent Component Alignment for Multi-Task Learning".
CVPR 2023, Algorithm 1; official code: SamsungLabs/MTL (``code/optim/aligned/solver.py`` and
``balancer.py``, checked), also ported by LibMTL (``Aligned_MTL.py``: ``"min"`` only) and torchjd
(compared in the tests).

Rule. With ``K = J Jᵀ = V Λ Vᵀ`` (eigendecomposition of the Gramian, ``r`` eigenvalues above the
rank tolerance kept), the balance transformation is

    B = √σ · V_r Λ_r^{-1/2} V_rᵀ,

the aligned task gradients are the rows of ``Ĵ = Bᵀ J`` (= ``J`` made orthogonal with equal norms
``√σ`` on its range: ``Ĵ Ĵᵀ = σ P_r``), and the update is ``Δθ = Ĵᵀ p = (B p)ᵀ J``, so the task
weights are ``w = B p``. ``σ`` is set by ``scale_mode``: ``"min"`` the smallest kept eigenvalue
(the paper's choice and default: the aligned gradients are no larger than the smallest principal
component), ``"median"`` their (lower) median, ``"rmse"`` their mean (official code's names).

Choices the paper leaves open, and ours:

* ``p`` (``pref_vector``) defaults to all ones, as the official code and LibMTL (they sum the
  aligned gradients). torchjd averages (``p = 1/m``): its update is ours divided by ``m``.
* Rank tolerance as the official code: eigenvalues ``≤ max(λ) · m · eps`` are dropped (``rtol``
  overrides ``m · eps``; we use the Gramian's dtype's ``eps`` where the official code used
  float32's). Dropped directions get weight 0, so rank-deficient Gramians (duplicate or
  linearly dependent gradients, ``m > d``) work; an all-zero Gramian gives ``w = p``.
* The kept eigenvalues are a mask, not a slice, so the device path (``placement="device"``)
  reads nothing back to the host itself (but ``torch.linalg.eigh`` checks its solver's status,
  one synchronisation on an accelerator, and an accelerator's eigensolver is slow on tiny
  matrices). By default (``"auto"``) the eigendecomposition runs on the host in float64: one
  device-to-host copy of the Gramian and a non-blocking copy of the weights back
  (:mod:`gradsurgery.methods.host`).
* Task-specific parameters: weight 1 by default; ``scale_task_specific=True`` scales task ``i``'s
  head by ``w_i``, the official code's ``scale_decoder_grad`` option.
* Aligned-MTL-UB (the paper's cheaper variant, aligning the gradients of the shared representation)
  is this method with ``MultiTaskBackward.backward(losses, representation=z)``: the Gramian is then
  that of ``∂L_i/∂z`` and ``w`` is pushed back through the trunk once.

Example (orthogonal gradients of norms 1 and 2 become orthogonal gradients of norm 1):
    >>> import torch
    >>> K = torch.tensor([[1.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    >>> aligned_mtl_weights(K, torch.ones(2, dtype=torch.float64))
    tensor([1.0000, 0.5000], dtype=torch.float64)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from gradsurgery.methods.base import Aggregation, GramianWeighting, TaskStep
from gradsurgery.methods.host import HostSolver, Placement, check_placement, placed
from gradsurgery.methods.registry import register
from gradsurgery.methods.upgrad import as_pref_buffer, preference_vector

__all__ = ["AlignedMTL", "aligned_mtl_weights", "balance_transformation"]

ScaleMode = Literal["min", "median", "rmse"]


def balance_transformation(
    gramian: Tensor, scale_mode: ScaleMode = "min", rtol: float | None = None
) -> Tensor:
    """The ``m × m`` matrix ``B = √σ V_r Λ_r^{-1/2} V_rᵀ`` (the identity when ``K = 0``)."""
    if scale_mode not in ("min", "median", "rmse"):
        raise ValueError(f"scale_mode must be 'min', 'median' or 'rmse', got {scale_mode!r}")
    m = gramian.shape[0]
    eigvals, eigvecs = torch.linalg.eigh(gramian)  # ascending
    tol_factor = m * torch.finfo(gramian.dtype).eps if rtol is None else rtol
    keep = (eigvals > eigvals.max() * tol_factor) & (eigvals > 0)
    rank = keep.sum()
    any_kept = rank > 0
    safe = torch.where(keep, eigvals, torch.ones_like(eigvals))
    inv_sqrt = torch.where(keep, safe.rsqrt(), torch.zeros_like(eigvals))
    if scale_mode == "min":
        sigma = torch.where(keep, eigvals, torch.full_like(eigvals, torch.inf)).min()
    elif scale_mode == "rmse":
        sigma = torch.where(keep, eigvals, 0.0).sum() / rank.clamp_min(1)
    else:  # lower median of the kept (= the largest `rank`) eigenvalues, as torch.median
        position = (m - rank + (rank - 1).div(2, rounding_mode="floor")).clamp(0, m - 1)
        sigma = eigvals.gather(0, position.reshape(1)).squeeze(0)
    sigma = torch.where(any_kept, sigma, torch.ones_like(sigma))
    transform = sigma.sqrt() * (eigvecs * inv_sqrt) @ eigvecs.T
    eye = torch.eye(m, dtype=gramian.dtype, device=gramian.device)
    return torch.where(any_kept, transform, eye)


def aligned_mtl_weights(
    gramian: Tensor, pref: Tensor, scale_mode: ScaleMode = "min", rtol: float | None = None
) -> Tensor:
    """Task weights ``w = B p`` of Aligned-MTL (see the module docstring)."""
    return balance_transformation(gramian, scale_mode, rtol) @ pref


@register(
    "aligned_mtl",
    paper="Senushkin et al., Independent Component Alignment for Multi-Task Learning, CVPR 2023",
    rule="B = √λ_min V Λ^{-1/2} Vᵀ from K = VΛVᵀ; Δθ = (B p)ᵀ J (aligned gradients summed)",
)
class AlignedMTL(HostSolver, GramianWeighting):
    """Aligned-MTL on the Gramian. See the module docstring for the rule and the choices.

    Args:
        scale_mode: ``"min"`` (paper), ``"median"`` or ``"rmse"`` (mean eigenvalue).
        pref_vector: ``(num_tasks,)`` weights ``p`` of the aligned gradients (None: all ones).
        rtol: relative eigenvalue tolerance (None: ``m · eps`` of the Gramian's dtype).
        scale_task_specific: scale each task's own parameters' gradient by its weight ``w_i``.
        placement: ``"auto"`` (host, float64), ``"host"`` or ``"device"``.
    """

    pref_vector: Tensor | None

    def __init__(
        self,
        scale_mode: ScaleMode = "min",
        pref_vector: Tensor | Sequence[float] | None = None,
        rtol: float | None = None,
        scale_task_specific: bool = False,
        placement: Placement = "auto",
    ) -> None:
        super().__init__()
        self.placement = check_placement(placement)
        if scale_mode not in ("min", "median", "rmse"):
            raise ValueError(f"scale_mode must be 'min', 'median' or 'rmse', got {scale_mode!r}")
        self.scale_mode: ScaleMode = scale_mode
        self.register_buffer("pref_vector", as_pref_buffer(pref_vector))
        self.rtol = rtol
        self.scale_task_specific = scale_task_specific

    def gramian_weights(self, gramian: Tensor, step: TaskStep) -> Tensor:
        p = preference_vector(self.pref_vector, step, gramian, default=1.0)
        return placed(
            self.placement,
            lambda k, q: aligned_mtl_weights(k, q, self.scale_mode, self.rtol),
            gramian,
            p,
        )

    def forward(self, step: TaskStep) -> Aggregation:
        if step.gramian is None:
            raise ValueError("AlignedMTL needs the Gramian of the task gradients")
        w = self.gramian_weights(step.gramian, step)
        specific = w if self.scale_task_specific else torch.ones_like(step.losses)
        return Aggregation(weights=w, task_specific_weights=specific)

    def extra_repr(self) -> str:
        return f"scale_mode={self.scale_mode!r}, scale_task_specific={self.scale_task_specific}"
