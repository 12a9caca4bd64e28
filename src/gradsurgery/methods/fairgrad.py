"""FairGrad: α-fair task weights, the positive solution of ``(K w)_i = w_i^{-1/α}``.

Ban & Ji, "Fair Resource Allocation in Multi-Task Learning", ICML 2024 (arXiv:2402.15638). Checked
against LibMTL's ``LibMTL/weighting/FairGrad.py`` (which says it is modified from the authors' code,
``OptMN-Lab/fairgrad``) and torchjd's ``FairGradWeighting`` (``torchjd/aggregation/_fairgrad.py``,
which cites Equation 4 of the paper; the test oracle). Default ``α = 1`` as LibMTL's ``config.py``
(``FairGrad_alpha``); the paper's own values were not checked here.

Rule. With the task gradients' Gramian ``K = J Jᵀ``, the weights ``w > 0`` solve

    K w = w^{-1/α}      (entry-wise power),

and the update is ``Δθ = wᵀ J``. ``α = 1`` is proportional fairness (``(K w)_i w_i = 1``: every
task gets the same share ``g_iᵀ d · w_i`` of the update ``d``); ``α → ∞`` tends to max-min
fairness; ``α = 0`` is linear scalarization (uniform weights, as torchjd special-cases it).

The equation is the stationarity condition of the strictly convex

    F(w) = ½ wᵀ K̃ w − Σ_i φ(w_i),   φ(w) = log w (α = 1),  φ(w) = w^{1−1/α} / (1 − 1/α) (else),

which is what we solve: damped Newton steps (Hessian ``K̃ + diag(w^{−1/α−1}/α)``, a step kept
inside ``w > 0`` and backtracked by Armijo on ``F`` over a fixed ladder of step sizes, branch-free)
from ``w_i = K̃_ii^{−α/(α+1)}`` (the solution when the gradients are orthogonal).

Choices the paper leaves open, and ours:

* The solver: LibMTL and torchjd call ``scipy.optimize.least_squares`` on the residual with
  ``w ≥ 0`` from ``w = 1/m`` (torchjd: at most ``max_iters`` evaluations); we minimize ``F``, whose
  unique minimizer is the same solution, to ``tol`` (relative residual, host) or for ``max_iter``
  Newton steps.
* A ridge: ``K̃ = K + ε (tr K / m) I`` (``reg_eps = ε``, default 1e-6; for ``K = 0``, ``K̃ = I``:
  then the update is 0 whatever ``w``). Without it the equation has no solution when a
  non-negative combination of the gradients vanishes (``g_2 = −g_1``: adding the two rows gives
  ``0 = w_1^{-1/α} + w_2^{-1/α}``), and the authors' solver stops wherever its iteration cap
  leaves it. A task with a zero gradient gets the large weight ``≈ (ε tr K / m)^{−α/(α+1)}`` (its
  shared contribution is zero; its head gets that weight).
* Task-specific parameters get ``w_i ∇L_i``: LibMTL backpropagates ``Σ_i w_i L_i`` after solving
  (torchjd's ``mtl_backward`` would give them weight 1).
* Scaling: ``K → s² K`` gives ``w → s^{−2α/(α+1)} w``, so the update scales as
  ``s^{(1−α)/(1+α)}``: degree 0 (scale-free) for ``α = 1``, and no integer degree otherwise
  (``scale_degree`` is then None).
* Where it runs (``placement``, :mod:`gradsurgery.methods.host`): on the host in float64 by
  default (one synchronisation: the Gramian's copy; the Newton loop stops at ``tol``); with
  ``"device"`` a fixed ``max_iter`` steps on the device, no synchronisation.

Example (orthogonal g1 = (2, 0), g2 = (0, 1), α = 1: w_i = 1/‖g_i‖, the update (1, 1)):
    >>> import torch
    >>> from gradsurgery.methods.base import TaskStep
    >>> K = torch.tensor([[4.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    >>> FairGrad(reg_eps=0.0)(TaskStep(torch.ones(2), torch.arange(2), 2, 0, gramian=K)).weights
    tensor([0.5000, 1.0000], dtype=torch.float64)
"""

from __future__ import annotations

import torch
from torch import Tensor

from gradsurgery.methods.base import Aggregation, GramianWeighting, TaskStep
from gradsurgery.methods.host import (
    HostSolver,
    Placement,
    check_placement,
    from_host,
    on_host,
    solve_on_host,
)
from gradsurgery.methods.registry import register

__all__ = ["FairGrad", "fairgrad_weights"]

_LADDER = 24  # Armijo step sizes 1, ½, …, 2^-23


def _objective(kt: Tensor, w: Tensor, alpha: float) -> Tensor:
    """``F`` at each column of ``w`` (``(m, n)``): ``½ wᵀK̃w − Σ φ(w)``."""
    quad = 0.5 * (w * (kt @ w)).sum(dim=0)
    if alpha == 1.0:
        return quad - torch.log(w).sum(dim=0)
    q = 1.0 - 1.0 / alpha
    return quad - (w.pow(q) / q).sum(dim=0)


def fairgrad_weights(
    gramian: Tensor,
    alpha: float = 1.0,
    reg_eps: float = 1e-6,
    max_iter: int = 50,
    tol: float | None = 1e-12,
) -> Tensor:
    """The positive ``w`` with ``K̃ w = w^{-1/α}`` (see the module docstring).

    ``tol``: stop when ``‖K̃w − w^{−1/α}‖ ≤ tol · ‖w^{−1/α}‖`` (read on the host each step); None:
    exactly ``max_iter`` steps, no host read.
    """
    m = gramian.shape[0]
    if alpha == 0.0:
        return torch.full((m,), 1.0 / m, dtype=gramian.dtype, device=gramian.device)
    k = 0.5 * (gramian + gramian.T)
    trace = torch.diagonal(k).sum()
    eye = torch.eye(m, dtype=k.dtype, device=k.device)
    kt = torch.where(trace > 0, k + (reg_eps * trace / m) * eye, eye)
    w = torch.diagonal(kt).clamp_min(torch.finfo(k.dtype).tiny).pow(-alpha / (alpha + 1.0))
    steps = 0.5 ** torch.arange(_LADDER, dtype=k.dtype, device=k.device)
    for _ in range(max_iter):
        power = w.pow(-1.0 / alpha)
        grad = kt @ w - power
        if tol is not None and float(grad.norm()) <= tol * float(power.norm()):
            break
        hess = kt + torch.diag(power / (alpha * w))
        d = -torch.linalg.solve(hess, grad)
        # the largest step keeping w > 0 (at most 0.99 of the way to the boundary), then Armijo
        ratio = torch.where(d < 0, -w / torch.where(d < 0, d, -1.0), torch.inf)
        t_max = torch.clamp(0.99 * ratio.min(), max=1.0)
        ts = t_max * steps
        cand = w.unsqueeze(1) + d.unsqueeze(1) * ts
        f0 = _objective(kt, w.unsqueeze(1), alpha)
        armijo = _objective(kt, cand, alpha) <= f0 + 1e-4 * ts * (grad @ d)
        first = torch.argmax(armijo.to(torch.int8))  # the largest step that decreases F enough
        # no step passes: F's decrease is below its rounding (at the solution's doorstep), where
        # the Newton step itself converges; take it (still inside w > 0)
        t = torch.where(armijo.any(), ts.index_select(0, first.reshape(1)).squeeze(0), t_max)
        w = w + t * d
    return w


@register(
    "fairgrad",
    paper="Ban & Ji, Fair Resource Allocation in Multi-Task Learning, ICML 2024",
    rule="α-fair weights: w > 0 with (K w)_i = w_i^(−1/α); Δθ = wᵀJ, heads get w_i",
)
class FairGrad(HostSolver, GramianWeighting):
    """FairGrad on the Gramian. See the module docstring.

    Args:
        alpha: the fairness ``α ≥ 0`` (LibMTL: 1).
        reg_eps: the ridge ``ε`` relative to the mean diagonal of ``K``.
        max_iter: the number of Newton steps (a cap on the host, exact on the device).
        tol: the relative residual at which the host solve stops.
        placement: ``"auto"`` (host, float64), ``"host"`` or ``"device"``.
    """

    #: the update is scale-free for the default ``α = 1`` (instances with another α: None)
    scale_degree = 0
    #: ``g / ‖g‖^{2α/(α+1)}`` with one task
    single_task = "positive"

    def __init__(
        self,
        alpha: float = 1.0,
        reg_eps: float = 1e-6,
        max_iter: int = 50,
        tol: float = 1e-12,
        placement: Placement = "auto",
    ) -> None:
        super().__init__()
        if alpha < 0:
            raise ValueError(f"alpha must be non-negative, got {alpha}")
        if reg_eps < 0:
            raise ValueError(f"reg_eps must be non-negative, got {reg_eps}")
        if max_iter < 1:
            raise ValueError(f"max_iter must be at least 1, got {max_iter}")
        self.alpha = float(alpha)
        self.reg_eps = float(reg_eps)
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self.placement = check_placement(placement)
        if self.alpha != 1.0:
            self.scale_degree = None  # type: ignore[misc,assignment]  # s^{(1−α)/(1+α)}: not an integer

    def gramian_weights(self, gramian: Tensor, step: TaskStep) -> Tensor:
        args = (self.alpha, self.reg_eps, self.max_iter)
        if not on_host(self.placement, gramian):  # fixed steps, no host read
            return fairgrad_weights(gramian, *args, tol=None)
        w = solve_on_host(lambda k: fairgrad_weights(k, *args, tol=self.tol), gramian)
        return from_host(w, gramian)

    def forward(self, step: TaskStep) -> Aggregation:
        if step.gramian is None:
            raise ValueError("FairGrad needs the Gramian of the task gradients")
        w = self.gramian_weights(step.gramian, step)
        return Aggregation(weights=w, task_specific_weights=w)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, reg_eps={self.reg_eps}, placement={self.placement!r}"
