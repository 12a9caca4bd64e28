"""CAGrad: conflict-averse gradient descent.

Liu, Liu, Jin, Stone, Liu. "Conflict-Averse Gradient Descent for Multi-task Learning", NeurIPS 2021
(Algorithm 1; official code: github.com/Cranial-XIX/CAGrad).

Rule. With ``g_0 = (1/m) Σ_i g_i`` the average gradient and ``c ∈ [0, 1)``, CAGrad looks for the
direction that maximises the worst task's local improvement within a ball around ``g_0``:

    max_d min_i g_iᵀ d    s.t.  ‖d − g_0‖ ≤ c ‖g_0‖.

Its dual is a problem over the simplex: with ``g_w = Σ_i w_i g_i`` and ``√φ = c ‖g_0‖``,

    w* = argmin_{w ∈ Δ}  g_wᵀ g_0 + √φ ‖g_w‖,      d = g_0 + (√φ / ‖g_w*‖) g_w*.

In Gramian terms ``g_wᵀ g_0 = wᵀ K 1 / m``, ``‖g_w‖² = wᵀ K w`` and ``‖g_0‖² = 1ᵀ K 1 / m²``, so
``d = Σ_i (1/m + λ w*_i) g_i`` with ``λ = √φ / ‖g_w*‖``: a weighting of the rows of ``J``.

Choices the paper leaves open, and ours:

* Solver. The official NYUv2 code (``nyuv2/utils.py``, checked) minimises the dual with
  ``scipy.optimize.minimize`` (SLSQP, from ``w = 1/m``) on ``wᵀ K 1/m + c‖g_0‖ sqrt(wᵀ K w + 1e-8)``;
  its Meta-World file (``mtrl/mtrl_files/cagrad.py``) takes 20 SGD steps on softmax logits instead
  (``cagrad_method="cagrad"``; SLSQP in ``"cagrad_exact"``). We solve the same convex problem
  without SciPy, on the Gramian scaled to unit largest diagonal.

  On the host (the default placement) exactly, through a family of quadratic programs: where
  ``g_w ≠ 0`` the dual's optimality conditions are those of ``min_{w ∈ Δ} ½ wᵀKw + μ aᵀw``
  (``a = K1/m``) with ``μ = ‖g_w‖/√φ``. On a fixed support the QP's solution is affine in ``μ``,
  ``w(μ) = x_0 + μ x_1`` (two solves of the bordered system), and ``x_0ᵀK x_1 = 0``, so
  ``‖g_{w(μ)}‖² = x_0ᵀKx_0 + μ² x_1ᵀKx_1`` and the condition ``‖g_w‖ = √φ μ`` is a quadratic
  equation in ``μ``. Starting from ``μ = ‖g_0‖/√φ``, each iteration solves the QP at ``μ``
  (:func:`~gradsurgery.methods.simplex.simplex_qp_active_set`'s active-set method, warm-started),
  solves the quadratic on its support and stops when that root keeps the support feasible and
  optimal (KKT checked); otherwise it moves ``μ`` there, or bisects a bracket of the monotone
  ``‖g_{w(μ)}‖ − √φ μ``. Usually the first root is the answer (0.2 ms at ``m = 10`` on a 2-core
  CPU). If 60 iterations do not get there (the dual's minimiser at ``g_w = 0``, say), the
  barrier method below is used instead.

  On the device (``placement="device"``): a log-barrier Newton method on the simplex with a batched line search
  and a fixed schedule (barrier parameter ``t = 1, 10, ...`` up to ``10⁶`` in float32 and ``10¹²``
  in float64, ``newton_steps`` Newton steps each), then three Newton steps on the support of the
  result (kept only if they pass a KKT check). The square root is smoothed as
  ``sqrt(wᵀKw + ε)`` with ``ε = max(eps, 1/t)`` shrinking with ``t`` (a continuation): the
  objective has a kink where ``g_w = 0``, which exists whenever the zero vector is in the convex
  hull (``m > d`` or strong conflicts), and the continuation keeps Newton's method from stalling
  there. No host synchronisation. On 150 random Gramians (``m ≤ 11``, rank-deficient and
  conflicting ones included) the dual value was within 1e-15 (float64) / 1e-5 (float32) of the
  best of ten SLSQP starts, whose single-start runs (the official code) stop at non-optimal
  points on some of them.
* Where it runs (``placement``, :mod:`gradsurgery.methods.host`): the barrier method is 7–13 stages of 4 Newton steps, each a Cholesky solve and a batched
  line search: over a thousand kernel launches on an accelerator. So by default
  (``"auto"``) it runs on the host in float64, one device-to-host copy of the Gramian (the step's
  one host synchronisation) and a non-blocking copy of the weights back; ``"device"`` keeps it
  on the device (no synchronisation, over a thousand launches).
* ``rescale`` (official code): ``0``: ``d``; ``1`` (default, the official NYUv2 and Meta-World
  runs): ``d / (1 + c²)``; ``2``: ``d / (1 + c)``.
* ``reduction``: ``"mean"`` (default): ``g_0`` is the mean, as in the paper (and the official
  Meta-World code); ``"sum"`` multiplies the update by ``m``, as the official NYUv2 script does "to
  match the sum loss". Task-specific parameters get their own task's gradient scaled like the
  shared update's base: ``1/m`` with ``"mean"``, ``1`` with ``"sum"`` (the official NYUv2 script
  gives them weight 1 while multiplying the shared update by ``m``: that is ``"sum"``).
* ``‖g_w*‖ = 0`` (the zero vector lies in the convex hull and is optimal): the official code
  divides by ``‖g_w‖ + 1e-8``; we set ``λ = 0`` when ``‖g_w*‖² ≤ 100·m·eps·max_i ‖g_i‖²`` (below
  rounding noise), so ``d = g_0``.
* ``c = 0`` gives ``d = g_0`` (plain averaging), ``m = 1`` gives ``d = (1 + c) g_1``.

Example (c = 0 is the mean):
    >>> import torch
    >>> from gradsurgery.methods.base import TaskStep
    >>> K = torch.tensor([[1.0, -1.0], [-1.0, 2.0]], dtype=torch.float64)
    >>> step = TaskStep(torch.ones(2), torch.arange(2), 2, 0, gramian=K)
    >>> CAGrad(c=0.0)(step).weights
    tensor([0.5000, 0.5000], dtype=torch.float64)
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

from gradsurgery.methods.base import GramianWeighting, TaskStep
from gradsurgery.methods.host import HostSolver, Placement, check_placement, placed
from gradsurgery.methods.registry import register
from gradsurgery.methods.simplex import simplex_minimize, simplex_qp_numpy, solve_bordered
from gradsurgery.profiling import host_region

__all__ = ["CAGrad", "cagrad_dual_weights", "cagrad_weights"]

Reduction = Literal["mean", "sum"]


def cagrad_dual_weights(
    gramian: Tensor, c: float, stages: int | None = None, newton_steps: int = 4
) -> Tensor:
    """``w* = argmin_{w ∈ Δ} wᵀ K 1/m + c ‖g_0‖ sqrt(wᵀ K w)``: the dual solution of CAGrad.

    A Gramian on the CPU is solved exactly in float64 through quadratic programs; elsewhere (or
    if that does not converge) by the barrier method (see the module docstring).
    """
    if gramian.device.type == "cpu":
        with host_region():  # the Gramian is on the host already: host work, no transfer
            w, ok = _dual_by_qps(gramian.detach().to(torch.float64).numpy(), c)
            if ok:
                return torch.from_numpy(w).to(gramian.dtype)
    return _dual_by_barrier(gramian, c, stages, newton_steps)


def _dual_by_qps(gramian: np.ndarray, c: float, max_iter: int = 60) -> tuple[np.ndarray, bool]:
    """The exact host solver of the dual (see the module docstring); ``(w, converged)``."""
    m = gramian.shape[0]
    scale = float(np.diagonal(gramian).max())
    if m == 1 or not scale > 0 or not np.isfinite(scale):
        return np.full(m, 1.0 / m), m == 1 or scale == 0
    k = gramian / scale
    a = k.sum(axis=1) / m
    g0_norm = np.sqrt(max(float(k.sum()), 0.0)) / m
    rho = c * g0_norm
    if not rho > 0:
        return np.full(m, 1.0 / m), True  # c = 0 or g_0 = 0: the update is g_0 whatever w
    lo, hi = 0.0, np.inf  # a bracket of μ: ‖g_{w(μ)}‖ − ρ μ decreases with μ
    mu, start = g0_norm / rho, None
    for _ in range(max_iter):
        w, _ = simplex_qp_numpy(k, mu * a, start)
        start = w > 0
        support = np.flatnonzero(start)
        n = support.shape[0]
        ks = k[np.ix_(support, support)]
        kkt = np.zeros((n + 1, n + 1))
        kkt[:n, :n] = ks
        kkt[:n, n] = kkt[n, :n] = 1.0
        x0 = solve_bordered(kkt, np.concatenate([np.zeros(n), [1.0]]))[:n]
        x1 = solve_bordered(kkt, np.concatenate([-a[support], [0.0]]))[:n]
        # ‖g_{w(μ)}‖² − ρ² μ² = c0 + 2 c1 μ + (c2 − ρ²) μ² on this support (c1 = 0 exactly)
        c0, c1, c2 = max(float(x0 @ ks @ x0), 0.0), float(x0 @ ks @ x1), float(x1 @ ks @ x1)
        quad = c2 - rho**2
        root = None
        if quad < 0:
            root = (-2 * c1 - np.sqrt(max(4 * c1 * c1 - 4 * quad * c0, 0.0))) / (2 * quad)
        if np.sqrt(max(float(w @ k @ w), 0.0)) > rho * mu:
            lo = max(lo, mu)
        else:
            hi = min(hi, mu)
        if root is not None and root > 0:
            cand = np.zeros(m)
            cand[support] = x0 + root * x1
            if (cand >= -1e-12).all():
                np.maximum(cand, 0.0, out=cand)
                cand /= cand.sum()
                grad = k @ cand + root * a
                nu = grad[support].mean()
                if (grad - nu >= -1e-10 * (1.0 + np.abs(grad).max())).all():
                    return cand, True
            if lo < root < hi:
                mu = root
                continue
        if hi == np.inf:
            mu = 2 * max(mu, lo)
        elif lo == 0.0:
            mu = hi / 2
        else:
            mu = np.sqrt(lo * hi)
        if hi < 1e-300:
            break
    return np.full(m, 1.0 / m), False


def _dual_by_barrier(
    gramian: Tensor, c: float, stages: int | None = None, newton_steps: int = 4
) -> Tensor:
    """The barrier solver of the dual (any device; see the module docstring)."""
    m = gramian.shape[0]
    dtype = gramian.dtype
    finfo = torch.finfo(dtype)
    scale = gramian.diagonal().amax()
    scale = torch.where(scale > finfo.tiny, scale, torch.ones_like(scale))
    k = gramian / scale
    a = k.sum(dim=1) / m
    rho = c * (k.sum() / m**2).clamp_min(0).sqrt()

    def value(ws: Tensor, t: float) -> Tensor:
        eps = max(finfo.eps, 1.0 / t)
        q = ((ws @ k) * ws).sum(dim=1)
        return ws @ a + rho * (q + eps).clamp_min(eps).sqrt()

    def grad_hess(w: Tensor, t: float) -> tuple[Tensor, Tensor]:
        eps = max(finfo.eps, 1.0 / t)
        kw = k @ w
        root = (w @ kw + eps).clamp_min(eps).sqrt()
        grad = a + rho * kw / root
        hess = rho * (k / root - torch.outer(kw, kw) / root**3)
        return grad, hess

    return simplex_minimize(value, grad_hess, m, gramian, stages, newton_steps)


def cagrad_weights(
    gramian: Tensor,
    c: float,
    rescale: int = 1,
    reduction: Reduction = "mean",
    stages: int | None = None,
    newton_steps: int = 4,
) -> Tensor:
    """The ``(m,)`` weights of CAGrad's update ``d = Σ_i w_i g_i`` (rescaled and reduced)."""
    m = gramian.shape[0]
    finfo = torch.finfo(gramian.dtype)
    w = cagrad_dual_weights(gramian, c, stages, newton_steps)
    gw_sq = (w @ gramian @ w).clamp_min(0)
    g0_norm = (gramian.sum() / m**2).clamp_min(0).sqrt()
    noise = 100 * m * finfo.eps * gramian.diagonal().amax().clamp_min(finfo.tiny)
    lam = torch.where(
        gw_sq > noise, c * g0_norm / gw_sq.clamp_min(finfo.tiny).sqrt(), torch.zeros_like(gw_sq)
    )
    weights = 1.0 / m + lam * w
    if rescale == 1:
        weights = weights / (1 + c**2)
    elif rescale == 2:
        weights = weights / (1 + c)
    elif rescale != 0:
        raise ValueError(f"rescale must be 0, 1 or 2, got {rescale!r}")
    return weights * m if reduction == "sum" else weights


@register(
    "cagrad",
    paper="Liu et al., Conflict-Averse Gradient Descent for Multi-task Learning, NeurIPS 2021",
    rule="w* = argmin_{w∈Δ} g_w·g_0 + c‖g_0‖‖g_w‖; d = g_0 + c‖g_0‖ g_w*/‖g_w*‖, ÷ (1+c²)",
)
class CAGrad(HostSolver, GramianWeighting):
    """CAGrad (Algorithm 1) from the Gramian. See the module docstring for the rule and choices.

    Args:
        c: radius of the ball around ``g_0``, relative to ``‖g_0‖`` (the paper uses 0.4 on NYUv2
            and 0.9 on Meta-World MT10); must be non-negative.
        rescale: ``0``, ``1`` (default) or ``2``: divide ``d`` by ``1``, ``1 + c²`` or ``1 + c``.
        reduction: ``"mean"`` (default, ``g_0`` the mean) or ``"sum"`` (update × m).
        stages, newton_steps: the dual solver's barrier schedule (see
            :func:`~gradsurgery.methods.simplex.simplex_minimize`; ``stages=None``: 7 in
            float32, 13 in float64).
        placement: ``"auto"`` (host, float64), ``"host"`` or ``"device"`` (see above).
    """

    #: with one task ``d = (1 + c) g``, divided by ``1 + c²`` (``rescale=1``)
    single_task = "positive"

    def __init__(
        self,
        c: float = 0.4,
        rescale: int = 1,
        reduction: Reduction = "mean",
        stages: int | None = None,
        newton_steps: int = 4,
        placement: Placement = "auto",
    ) -> None:
        super().__init__()
        self.placement = check_placement(placement)
        if c < 0:
            raise ValueError(f"c must be non-negative, got {c}")
        if rescale not in (0, 1, 2):
            raise ValueError(f"rescale must be 0, 1 or 2, got {rescale!r}")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        self.c = float(c)
        self.rescale = rescale
        self.reduction: Reduction = reduction
        self.stages = stages
        self.newton_steps = newton_steps

    def gramian_weights(self, gramian: Tensor, step: TaskStep) -> Tensor:
        return placed(self.placement, self._weights, gramian)

    def _weights(self, gramian: Tensor) -> Tensor:
        return cagrad_weights(
            gramian, self.c, self.rescale, self.reduction, self.stages, self.newton_steps
        )

    def task_specific_weights(self, step: TaskStep) -> Tensor:
        scale = 1.0 if self.reduction == "sum" else 1.0 / step.m
        return torch.full_like(step.losses, scale)

    def extra_repr(self) -> str:
        return f"c={self.c}, rescale={self.rescale}, reduction={self.reduction!r}"
