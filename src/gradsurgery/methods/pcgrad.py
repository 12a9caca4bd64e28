"""PCGrad: projecting conflicting gradients (gradient surgery).

Yu, Kumar, Gupta, Levine, Hausman, Finn. "Gradient Surgery for Multi-Task Learning". NeurIPS 2020,
Algorithm 1.

Rule. With task gradients ``g_1..g_m`` of the shared parameters, for each task ``i``:
``g_i^PC ← g_i``; for each ``j ≠ i`` in a fresh uniformly random order,

    if g_i^PC · g_j < 0:   g_i^PC ← g_i^PC − (g_i^PC · g_j / ‖g_j‖²) g_j

(the dot product uses the *current* ``g_i^PC``, the projection the *original* ``g_j``). The update is
``Δθ = Σ_i g_i^PC`` (reduction ``"sum"``, the paper's) or its mean (``"mean"``, as Nash-MTL's and CAGrad's NYUv2 ports can).

Computed on the Gramian. Every ``g_i^PC`` stays a linear combination ``Σ_j C_ij g_j`` of the original
gradients, and ``g_i^PC · g_j = Σ_k C_ik K_kj`` with ``K = J Jᵀ``. So the whole algorithm runs on the
``m × m`` matrices ``K`` and ``C`` (``O(m³)`` work, ``O(m²)`` memory, no host synchronisation: the
conflict test is a ``torch.where``), and the update is ``wᵀ J`` with ``w_j = Σ_i C_ij``. The ``m``
per-task orders are processed in lock-step: step ``s`` projects every task ``i`` on its ``s``-th
partner at once, which is exactly the sequential algorithm because task ``i``'s coefficients depend
only on its own order.

Choices the paper leaves open, and ours:

* A zero gradient ``g_j`` (``‖g_j‖ = 0``) never conflicts (``g_i · g_j = 0``), so it is never
  projected on; the division is guarded all the same.
* Task-specific parameters are not projected: each gets its own task's gradient (scaled by ``1/m``
  with ``reduction="mean"``, so that heads and trunk see the same loss scale).
* Ablations of §5.2: ``variant="direction"`` keeps PCGrad's direction with the original update's
  norm ``‖Σ_i g_i‖``; ``variant="magnitude"`` keeps the original direction ``Σ_i g_i`` with PCGrad's
  norm. Both norms come from the Gramian: ``‖wᵀ J‖² = wᵀ K w``.
* The random orders come from the method's own generators (seeded by ``seed``, or from torch's
  global seed ``torch.initial_seed()`` when ``seed`` is None, read without drawing from the
  global stream): the CPU one when the weights are computed on the host, one
  per device otherwise, so that the draw happens where the Gramian lives; their state is part of
  ``state_dict``.

Where it runs (``placement``, :mod:`gradsurgery.methods.host`). The lock-step loop is ``m − 1``
iterations of a handful of tiny ops: on an accelerator that is ``O(m)`` kernel launches (about 10
per iteration), so by default the weights are computed on the host in float64 NumPy (one
device-to-host copy of the ``m × m`` Gramian, which is the step's one host synchronisation, and a
non-blocking copy of the ``m`` weights back; 0.07 ms at ``m = 10`` and 0.45 ms at ``m = 50`` on a
2-core CPU). ``placement="device"`` keeps it on the device (no synchronisation; the path taken
automatically while a CUDA graph is captured or ``torch.compile`` traces).

Example (the two-task case by hand: g1 = (1, 0), g2 = (-1, 1) conflict, g1·g2 = -1):
    >>> import torch
    >>> from gradsurgery.methods.pcgrad import pcgrad_coefficients
    >>> K = torch.tensor([[1.0, -1.0], [-1.0, 2.0]])
    >>> orders = torch.tensor([[1], [0]])
    >>> pcgrad_coefficients(K, orders)   # g1' = g1 + g2/2 = (0.5, 0.5); g2' = g2 + g1 = (0, 1)
    tensor([[1.0000, 0.5000],
            [1.0000, 1.0000]])
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from gradsurgery.methods.base import GramianWeighting, TaskStep
from gradsurgery.methods.generators import DeviceGenerators
from gradsurgery.methods.host import (
    HostSolver,
    Placement,
    check_placement,
    from_host,
    on_host,
    solve_on_host,
)
from gradsurgery.methods.registry import register

__all__ = ["PCGrad", "pcgrad_coefficients", "pcgrad_coefficients_numpy", "random_partner_orders"]

Reduction = Literal["sum", "mean"]
Variant = Literal["full", "direction", "magnitude"]


def random_partner_orders(
    m: int, generator: torch.Generator | None = None, device: torch.device | None = None
) -> Tensor:
    """``(m, m-1)`` long tensor: row ``i`` is a uniformly random permutation of ``{j ≠ i}``."""
    keys = torch.rand(m, m, generator=generator, device=device)
    keys.fill_diagonal_(2.0)  # larger than any uniform draw: task i sorts last in its own row
    return keys.argsort(dim=1)[:, : m - 1]


def pcgrad_coefficients(gramian: Tensor, orders: Tensor) -> Tensor:
    """The matrix ``C`` with ``g_i^PC = Σ_j C_ij g_j``, given the Gramian and each task's order.

    Args:
        gramian: ``(m, m)`` symmetric matrix of inner products ``g_i · g_j``.
        orders: ``(m, m-1)`` long tensor; row ``i`` lists the tasks ``j ≠ i`` in projection order.
    """
    m = gramian.shape[0]
    if gramian.shape != (m, m):
        raise ValueError(f"the Gramian must be square, got {tuple(gramian.shape)}")
    if orders.shape != (m, max(m - 1, 0)):
        raise ValueError(f"orders must have shape ({m}, {m - 1}), got {tuple(orders.shape)}")
    orders = orders.to(gramian.device)
    coef = torch.eye(m, dtype=gramian.dtype, device=gramian.device)
    rows = torch.arange(m, device=gramian.device)
    sq_norms = gramian.diagonal().clamp_min(torch.finfo(gramian.dtype).tiny)
    for s in range(m - 1):
        partner = orders[:, s]
        dots = (coef * gramian[partner]).sum(dim=1)  # g_i^PC · g_{partner(i)}, all i at once
        shift = torch.where(dots < 0, dots / sq_norms[partner], torch.zeros_like(dots))
        coef[rows, partner] -= shift
    return coef


def pcgrad_coefficients_numpy(gramian: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """:func:`pcgrad_coefficients` in NumPy (same lock-step algorithm, same arguments), for the
    host: four NumPy calls per step of the ``m − 1`` steps."""
    m = gramian.shape[0]
    coef = np.eye(m, dtype=gramian.dtype)
    if m < 2:
        return coef
    rows = np.arange(m)
    partner_rows = gramian[orders]  # (m, m-1, m): the row of K of each task's s-th partner
    sq_norms = np.maximum(np.diagonal(gramian), np.finfo(gramian.dtype).tiny)
    inv_sq = 1.0 / sq_norms[orders]
    for s in range(m - 1):
        dots = np.einsum("ij,ij->i", coef, partner_rows[:, s])  # g_i^PC · g_{partner(i)}
        np.minimum(dots, 0.0, out=dots)  # only conflicts are projected
        dots *= inv_sq[:, s]
        coef[rows, orders[:, s]] -= dots
    return coef


@register(
    "pcgrad",
    paper="Yu et al., Gradient Surgery for Multi-Task Learning, NeurIPS 2020",
    rule="project g_i onto the normal plane of each conflicting g_j (random order); Δθ = Σ_i g_i^PC",
)
class PCGrad(HostSolver, GramianWeighting):
    """PCGrad (Algorithm 1) computed on the Gramian. See the module docstring for the rule.

    Args:
        reduction: ``"sum"`` (the paper) or ``"mean"`` of the projected gradients.
        variant: ``"full"`` PCGrad, or the §5.2 ablations ``"direction"`` / ``"magnitude"``.
        seed: seed of the generator that draws the random orders (None: ``torch.initial_seed()``, read without drawing from the global stream).
        placement: ``"auto"`` (host, float64), ``"host"`` or ``"device"`` (see the module
            docstring).
    """

    #: the random partner orders are drawn by task position
    permutation_equivariant = False

    def __init__(
        self,
        reduction: Reduction = "sum",
        variant: Variant = "full",
        seed: int | None = None,
        placement: Placement = "auto",
    ) -> None:
        super().__init__()
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        if variant not in ("full", "direction", "magnitude"):
            raise ValueError(f"variant must be 'full', 'direction' or 'magnitude', got {variant!r}")
        self.reduction = reduction
        self.variant = variant
        self.generators = DeviceGenerators(seed)
        self.placement = check_placement(placement)

    def gramian_weights(self, gramian: Tensor, step: TaskStep) -> Tensor:
        m = gramian.shape[0]
        if on_host(self.placement, gramian):
            return from_host(solve_on_host(self._host_weights, gramian), gramian)
        device = gramian.device
        orders = random_partner_orders(m, self.generators.get(device), device)
        return self._reduce(gramian, pcgrad_coefficients(gramian, orders).sum(dim=0))

    def _host_weights(self, gramian: Tensor) -> Tensor:
        m = gramian.shape[0]
        # The same draw as random_partner_orders (the same generator stream), sorted by NumPy:
        # the keys are continuous, so the permutations are the same.
        keys = torch.rand(m, m, generator=self.generators.get("cpu")).numpy()
        np.fill_diagonal(keys, 2.0)
        orders = np.argsort(keys, axis=1)[:, : m - 1]
        coef = pcgrad_coefficients_numpy(gramian.numpy(), orders)
        return self._reduce(gramian, torch.from_numpy(coef.sum(axis=0)))

    def _reduce(self, gramian: Tensor, w: Tensor) -> Tensor:
        """Apply the reduction and the §5.2 variant to the summed coefficients ``w``."""
        m = gramian.shape[0]
        if self.reduction == "mean":
            w = w / m
        if self.variant == "full":
            return w
        base = torch.full_like(w, 1.0 if self.reduction == "sum" else 1.0 / m)
        norm_pc = _norm_of_combination(gramian, w)
        norm_base = _norm_of_combination(gramian, base)
        tiny = torch.finfo(gramian.dtype).tiny
        if self.variant == "direction":
            return w * (norm_base / norm_pc.clamp_min(tiny))
        return base * (norm_pc / norm_base.clamp_min(tiny))

    def task_specific_weights(self, step: TaskStep) -> Tensor:
        scale = 1.0 if self.reduction == "sum" else 1.0 / step.m
        return torch.full_like(step.losses, scale)

    def get_extra_state(self) -> dict[str, Any]:
        return {"generators": self.generators.state()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.generators.load(state["generators"])

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, variant={self.variant!r}"


def _norm_of_combination(gramian: Tensor, w: Tensor) -> Tensor:
    """``‖wᵀ J‖ = sqrt(wᵀ K w)``, clamped at 0 against rounding."""
    return (w @ gramian @ w).clamp_min(0).sqrt()
