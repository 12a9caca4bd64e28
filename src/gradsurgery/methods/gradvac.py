"""GradVac: Gradient Vaccine, steering task-gradient similarities towards their running average.

Wang, Tsvetkov, Firat, Cao. "Gradient Vaccine: Investigating and Improving Multi-task Optimization
in Massively Multilingual Models". ICLR 2021, Algorithm 1 and Eq. 3. Ports: LibMTL (``GradVac``),
SamsungLabs/MTL, torchjd (``GradVac``).

Rule. Each ordered pair of tasks keeps a target cosine similarity ``φ̂_ij``, an exponential moving
average of the similarities observed (``φ̂_ij = 0`` at the start). Each step, for each task ``i``:
``g_i' ← g_i``; for each ``j ≠ i`` in a fresh uniformly random order,

    φ_ij = cos(g_i', g_j)
    if φ_ij < φ̂_ij:
        g_i' ← g_i' + ‖g_i'‖ (φ̂_ij √(1−φ_ij²) − φ_ij √(1−φ̂_ij²)) / (‖g_j‖ √(1−φ̂_ij²)) · g_j
    φ̂_ij ← (1 − β) φ̂_ij + β φ_ij

and ``Δθ = Σ_i g_i'``. The correction sets ``cos(g_i', g_j)`` exactly to ``φ̂_ij``. With ``φ̂ = 0``
and ``β = 0`` it is PCGrad's projection: GradVac generalizes PCGrad from "no negative similarity" to
"no similarity below its usual level".

Computed on the Gramian, like :mod:`gradsurgery.methods.pcgrad`: every ``g_i'`` stays a combination
``Σ_k C_ik g_k`` of the original gradients, so ``g_i' · g_j = (C K)_ij`` and
``‖g_i'‖² = (C K Cᵀ)_ii``. The ``m`` random orders run in lock-step (step ``s`` treats every task's
``s``-th partner at once); ``C K`` is updated with the row of ``K`` of each partner. ``O(m³)`` work,
no host synchronisation; the update is ``wᵀ J`` with ``w_k = Σ_i C_ik``.

Choices the paper leaves open, and ours:

* Which similarity enters the EMA: the one measured just before the correction, ``cos(g_i', g_j)``
  with ``g_i'`` as modified by the partners before ``j`` (the paper's Algorithm 1, LibMTL and
  torchjd alike). The paper updates the EMA for every visited pair (``ema_update="every_pair"``,
  the default). ``ema_update="on_correction"`` updates it only when a correction was applied,
  which keeps ``φ̂`` from rising while similarities stay above it: that is what the version of
  LibMTL's ``LibMTL/weighting/GradVac.py`` we read (commit 13f5fc7, via code search) does — the EMA
  assignment sits inside ``if rho_ijk < rho_T`` — and SamsungLabs/MTL's port of it; newer LibMTL is
  reported to update every pair, which we have not seen. The default matches torchjd's
  ``GradVacWeighting`` over ten steps (tests/methods/test_gradvac.py, when torchjd is installed).
* ``β`` defaults to 0.01, the paper's value; LibMTL and torchjd default to 0.5.
* Granularity: one ``φ̂_ij`` for the whole shared model (the paper also runs it per layer or per
  parameter group; that needs the per-block Gramians, which a Gramian method is not given). On a
  shared representation (``representation=z``) the similarities are those of ``∂L_i/∂z``.
* State: the ``(M, M)`` matrix ``φ̂`` over all ``M = num_tasks`` tasks, in a buffer (sized at the
  first step unless ``num_tasks`` is given), indexed by ``step.tasks``: pairs with an absent task
  are left untouched.
* Zero gradients: a cosine with a zero vector is taken as 0, and a zero ``g_j`` is never added.
  Numerical safeguard: in the correction the target is clamped to ``|φ̂| ≤ 1 − 100·eps(dtype)``
  (its ``√(1−φ̂²)`` is a divisor); the stored EMA is not clamped.
* Task-specific parameters get their own task's gradient (weight 1). Random orders are drawn as
  PCGrad draws them, from the method's own generators (state in ``state_dict``): the CPU one on
  the host, the Gramian's device's otherwise.
* Where it runs (``placement``, :mod:`gradsurgery.methods.host`): the lock-step loop is ``m − 1``
  iterations of about 15 tiny ops, ``O(m)`` kernel launches on an accelerator. So by default
  (``"auto"``) it runs on the host in float64: the Gramian and the present tasks' targets go
  over in one device-to-host copy (the step's one host synchronisation), the weights and the
  new targets come back in non-blocking copies; ``"device"`` keeps it on the device (no
  synchronisation, ``O(m)`` launches).

Example (φ̂ = 0: on its first step GradVac is PCGrad):
    >>> import torch
    >>> from gradsurgery.methods.base import TaskStep
    >>> K = torch.tensor([[1.0, -1.0], [-1.0, 2.0]], dtype=torch.float64)
    >>> step = TaskStep(torch.ones(2, dtype=torch.float64), torch.arange(2), 2, 0, gramian=K)
    >>> method = GradVac(beta=0.5, seed=0)
    >>> method(step).weights   # g1' = g1 + g2/2, g2' = g2 + g1
    tensor([2.0000, 1.5000], dtype=torch.float64)
    >>> method.phi_hat   # (1 - β)·0 + β·cos(g1, g2), cos = -1/√2
    tensor([[ 0.0000, -0.3536],
            [-0.3536,  0.0000]], dtype=torch.float64)
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from gradsurgery.methods.base import GramianWeighting, TaskStep
from gradsurgery.methods.generators import DeviceGenerators
from gradsurgery.methods.host import HostSolver, Placement, check_placement, on_host, placed
from gradsurgery.methods.pcgrad import random_partner_orders
from gradsurgery.methods.registry import register
from gradsurgery.methods.task_state import TaskStateMixin

__all__ = ["GradVac", "gradvac_coefficients", "gradvac_coefficients_numpy"]

EmaUpdate = Literal["every_pair", "on_correction"]


def gradvac_coefficients(
    gramian: Tensor,
    orders: Tensor,
    targets: Tensor,
    beta: float,
    ema_update: EmaUpdate = "every_pair",
) -> tuple[Tensor, Tensor]:
    """One GradVac step on the Gramian.

    Args:
        gramian: ``(m, m)`` Gramian of the present tasks.
        orders: ``(m, m-1)`` long tensor; row ``i`` lists the tasks ``j ≠ i`` in visiting order.
        targets: ``(m, m)`` EMA targets ``φ̂_ij`` of the present tasks (not modified).
        beta: EMA rate.
        ema_update: ``"every_pair"`` (paper, torchjd) or ``"on_correction"`` (LibMTL at 13f5fc7).

    Returns:
        ``(C, new_targets)``: ``g_i' = Σ_k C_ik g_k``, and the updated targets.
    """
    m = gramian.shape[0]
    if gramian.shape != (m, m) or targets.shape != (m, m):
        raise ValueError("the Gramian and the targets must both be (m, m)")
    if orders.shape != (m, max(m - 1, 0)):
        raise ValueError(f"orders must have shape ({m}, {m - 1}), got {tuple(orders.shape)}")
    dtype, device = gramian.dtype, gramian.device
    orders = orders.to(device)
    targets = targets.to(dtype=dtype, device=device).clone()
    coef = torch.eye(m, dtype=dtype, device=device)
    if m < 2:
        return coef, targets
    # Everything that depends only on the pair (i, partner) is gathered once, for all steps.
    visited = targets.gather(1, orders)  # φ̂ of each visited pair, read before its own update
    cap = 1.0 - 100 * torch.finfo(dtype).eps
    t = visited.clamp(-cap, cap)
    cot = t / (1 - t * t).sqrt()  # φ̂ / √(1 − φ̂²)
    norms = gramian.diagonal().clamp_min(0).sqrt()
    inv_norm_j = torch.where(norms > 0, 1 / torch.where(norms > 0, norms, 1.0), 0.0)[orders]
    partner_rows = gramian[orders]  # (m, m-1, m): row of K of each visited partner
    coef_k = gramian.clone()  # C K: row i holds g_i' · g_k for every k
    rows = torch.arange(m, device=device)
    phis, corrected = [], []
    for s in range(m - 1):
        partner = orders[:, s]
        dots = coef_k[rows, partner]
        norm_i = (coef_k * coef).sum(dim=1).clamp_min(0).sqrt()
        scale = norm_i * inv_norm_j[:, s]  # ‖g_i'‖ / ‖g_j‖ (0 when g_j = 0)
        ok = norm_i > 0
        phi = torch.where(ok, dots * inv_norm_j[:, s] / torch.where(ok, norm_i, 1.0), 0.0)
        phi = phi.clamp(-1.0, 1.0)
        correct = phi < visited[:, s]
        # ‖g_i'‖ (φ̂ √(1−φ²) − φ √(1−φ̂²)) / (‖g_j‖ √(1−φ̂²))
        amount = scale * (cot[:, s] * (1 - phi * phi).clamp_min(0).sqrt() - phi)
        amount = torch.where(correct, amount, 0.0)
        coef[rows, partner] += amount
        coef_k.addcmul_(amount[:, None], partner_rows[:, s])
        phis.append(phi)
        corrected.append(correct)
    phi_all = torch.stack(phis, dim=1)
    moved = (1 - beta) * visited + beta * phi_all
    if ema_update == "on_correction":
        moved = torch.where(torch.stack(corrected, dim=1), moved, visited)
    targets.scatter_(1, orders, moved)
    return coef, targets


def gradvac_coefficients_numpy(
    gramian: np.ndarray,
    orders: np.ndarray,
    targets: np.ndarray,
    beta: float,
    ema_update: EmaUpdate = "every_pair",
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`gradvac_coefficients` in NumPy (same algorithm and arguments), for the host."""
    m = gramian.shape[0]
    coef = np.eye(m, dtype=gramian.dtype)
    targets = targets.astype(gramian.dtype, copy=True)
    if m < 2:
        return coef, targets
    visited = np.take_along_axis(targets, orders, axis=1)
    cap = 1.0 - 100 * np.finfo(gramian.dtype).eps
    t = np.clip(visited, -cap, cap)
    cot = t / np.sqrt(1 - t * t)
    norms = np.sqrt(np.maximum(np.diagonal(gramian), 0.0))
    inv_norm = np.zeros_like(norms)
    np.divide(1.0, norms, out=inv_norm, where=norms > 0)
    inv_norm_j = inv_norm[orders]
    partner_rows = gramian[orders]
    coef_k = gramian.copy()
    rows = np.arange(m)
    phis = np.empty((m, m - 1), dtype=gramian.dtype)
    corrected = np.empty((m, m - 1), dtype=bool)
    for s in range(m - 1):
        partner = orders[:, s]
        dots = coef_k[rows, partner]
        norm_i = np.sqrt(np.maximum(np.einsum("ij,ij->i", coef_k, coef), 0.0))
        ok = norm_i > 0
        phi = np.zeros(m, dtype=gramian.dtype)
        np.divide(dots * inv_norm_j[:, s], norm_i, out=phi, where=ok)
        np.clip(phi, -1.0, 1.0, out=phi)
        correct = phi < visited[:, s]
        amount = (
            norm_i * inv_norm_j[:, s] * (cot[:, s] * np.sqrt(np.maximum(1 - phi * phi, 0)) - phi)
        )
        amount = np.where(correct, amount, 0.0)
        coef[rows, partner] += amount
        coef_k += amount[:, None] * partner_rows[:, s]
        phis[:, s] = phi
        corrected[:, s] = correct
    moved = (1 - beta) * visited + beta * phis
    if ema_update == "on_correction":
        moved = np.where(corrected, moved, visited)
    np.put_along_axis(targets, orders, moved, axis=1)
    return coef, targets


@register(
    "gradvac",
    paper="Wang et al., Gradient Vaccine, ICLR 2021",
    rule="raise cos(g_i', g_j) to its EMA target φ̂_ij when below it (random order); Δθ = Σ_i g_i'",
)
class GradVac(HostSolver, TaskStateMixin, GramianWeighting):
    """GradVac on the Gramian, whole-model granularity. See the module docstring.

    Args:
        beta: EMA rate of the targets (paper: 0.01).
        ema_update: ``"every_pair"`` (paper, torchjd) or ``"on_correction"`` (LibMTL at 13f5fc7).
        num_tasks: the number of tasks ``M`` (None: taken from the first step).
        seed: seed of the generators that draw the random orders (None: ``torch.initial_seed()``, read without drawing from the global stream).
        placement: ``"auto"`` (host, float64), ``"host"`` or ``"device"`` (see above).
    """

    #: the random partner orders are drawn by task position
    permutation_equivariant = False

    _task_state_names = ("phi_hat",)
    phi_hat: Tensor | None

    def __init__(
        self,
        beta: float = 0.01,
        ema_update: EmaUpdate = "every_pair",
        num_tasks: int | None = None,
        seed: int | None = None,
        placement: Placement = "auto",
    ) -> None:
        super().__init__()
        self.placement = check_placement(placement)
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {beta}")
        if ema_update not in ("every_pair", "on_correction"):
            raise ValueError(
                f"ema_update must be 'every_pair' or 'on_correction', got {ema_update!r}"
            )
        self.beta = float(beta)
        self.ema_update: EmaUpdate = ema_update
        self.generators = DeviceGenerators(seed)
        self.num_tasks = None
        self.register_buffer("phi_hat", None)
        if num_tasks is not None:
            self.bind(num_tasks)

    def _allocate(self, num_tasks: int, device: torch.device | None) -> None:
        self.phi_hat = torch.zeros(num_tasks, num_tasks, device=device)

    def gramian_weights(self, gramian: Tensor, step: TaskStep) -> Tensor:
        self._bind_to_step(step)
        assert self.phi_hat is not None
        if self.phi_hat.device != gramian.device or (
            gramian.dtype == torch.float64 and self.phi_hat.dtype != torch.float64
        ):
            dtype = torch.float64 if gramian.dtype == torch.float64 else self.phi_hat.dtype
            self.phi_hat = self.phi_hat.to(device=gramian.device, dtype=dtype)
        idx = step.tasks.to(gramian.device)
        pairs = (idx[:, None], idx[None, :])
        host = on_host(self.placement, gramian)
        generator = self.generators.get("cpu" if host else gramian.device)

        def solve(k: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
            orders = random_partner_orders(k.shape[0], generator, k.device)
            if host:  # the same loop in NumPy: a few µs per iteration instead of ~15 tensor ops
                c, t = gradvac_coefficients_numpy(
                    k.numpy(), orders.numpy(), targets.numpy(), self.beta, self.ema_update
                )
                return torch.from_numpy(c.sum(axis=0)), torch.from_numpy(t)
            coef, moved = gradvac_coefficients(k, orders, targets, self.beta, self.ema_update)
            return coef.sum(dim=0), moved

        weights, targets = placed(self.placement, solve, gramian, self.phi_hat[pairs])
        self.phi_hat[pairs] = targets.to(self.phi_hat.dtype)
        return weights

    def get_extra_state(self) -> dict[str, Any]:
        return {"generators": self.generators.state()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.generators.load(state["generators"])

    def extra_repr(self) -> str:
        return f"beta={self.beta}, ema_update={self.ema_update!r}"
