"""Small solvers on the probability simplex ``Δ = {w ∈ ℝ^m : w ≥ 0, Σ_i w_i = 1}``, from a Gramian.

The Gramian-based methods (MGDA, CAGrad, Nash-MTL) reduce to small problems in ``m`` variables whose
data is the ``m × m`` Gramian ``K = J Jᵀ`` of the task gradients. This module solves them with
vectorized torch code: a fixed number of iterations, no host synchronisation (unless a function
says otherwise), in the Gramian's dtype and on its device.

* :func:`project_simplex`: Euclidean projection onto ``Δ`` (sort-based, batched).
* :func:`min_norm_2`: the analytic line search of Sener & Koltun (2018, Algorithm 1): the point of
  the segment ``[a, b]`` closest to the origin, from ``a·a``, ``a·b`` and ``b·b``.
* :func:`frank_wolfe_min_norm`: Sener & Koltun's Frank–Wolfe solver (Algorithm 2) of
  ``min_{w ∈ Δ} wᵀ K w``.
* :func:`simplex_qp`: ``min_{w ∈ Δ} ½ wᵀ Q w + bᵀ w`` for a positive semidefinite ``Q``, to machine
  precision: a primal-dual interior-point method (Mehrotra predictor-corrector) followed by a
  "polish" step that solves the equality-constrained problem on the detected support exactly.
  Fixed iteration count, no host synchronisation: the solver for a Gramian left on the device.
* :func:`simplex_qp_active_set`: the same problem on the host, in float64 NumPy, by a primal
  active-set method: finite, exact up to rounding whatever the conditioning (a gradient a million
  times smaller than the others included), and a few NumPy calls per change of the support
  (0.1 ms at ``m = 10`` on a 2-core CPU).
* :func:`simplex_minimize`: a log-barrier Newton method with a line search for a smooth convex
  objective given by its values, gradient and Hessian (used by CAGrad).
* :func:`min_norm_weights`: MGDA's weights, ``argmin_{w ∈ Δ} ‖Σ_i w_i g_i‖²``, with either solver.

The interior-point method (:func:`simplex_qp`). For ``min ½ wᵀQw + bᵀw`` s.t. ``w ≥ 0``,
``1ᵀw = 1`` it follows the central path of the KKT system ``Qw + b − ν 1 − z = 0``, ``1ᵀw = 1``,
``w ∘ z = τ`` with Newton steps on ``(w, ν, z)``: eliminating ``Δz`` leaves
``(Q + diag(z/w)) Δw − Δν 1 = r``, ``1ᵀΔw = −(1ᵀw − 1)``, solved with one Cholesky factorisation
and triangular solves. Each iteration takes an affine (predictor) step, sets the centring
``σ = (μ_aff/μ)³`` (Mehrotra), and takes the corrected step with a fraction-to-boundary rule
(0.99). The best iterate by objective value (normalised onto the simplex) is returned, and a
step whose solve failed (NaN, once rounding dominates) is skipped — a ``torch.where``, not a
branch — so extra iterations cost time but never accuracy. ``Q + diag(z/w)`` is positive
definite for any PSD ``Q``, so singular Gramians (duplicated or linearly dependent gradients,
zero gradients) need no special case; on a face of optimal solutions the method converges to
its analytic centre, so duplicated tasks get equal weights. 15 iterations reached machine precision (float32 and
float64) on 150 random Gramians up to ``m = 40``, rank-deficient and duplicated ones included;
that is the default.

Example (MGDA by hand: g1 = (1, 0), g2 = (0, 1) → w = (½, ½); g1 = (1, 0), g2 = (−1, 1): the
closest point of the segment to 0 is (0.2, 0.4) = 0.6 g1 + 0.4 g2):
    >>> import torch
    >>> min_norm_weights(torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64))
    tensor([0.5000, 0.5000], dtype=torch.float64)
    >>> min_norm_weights(torch.tensor([[1.0, -1.0], [-1.0, 2.0]], dtype=torch.float64))
    tensor([0.6000, 0.4000], dtype=torch.float64)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from gradsurgery.profiling import host_region

__all__ = [
    "MinNormSolver",
    "frank_wolfe_min_norm",
    "min_norm_2",
    "min_norm_weights",
    "project_simplex",
    "simplex_minimize",
    "simplex_qp",
    "simplex_qp_active_set",
    "simplex_qp_numpy",
    "solve_bordered",
]

MinNormSolver = Literal["exact", "frank_wolfe"]


def project_simplex(v: Tensor) -> Tensor:
    """Euclidean projection of each row of ``v`` (``(..., m)``) onto the probability simplex.

    The sort-based algorithm (Held, Wolfe & Crowder 1974; Duchi et al. 2008): with ``u`` sorted
    decreasingly, ``ρ = max{j : u_j − (Σ_{k≤j} u_k − 1)/j > 0}`` and ``θ = (Σ_{k≤ρ} u_k − 1)/ρ``,
    the projection is ``max(v − θ, 0)``.
    """
    m = v.shape[-1]
    u, _ = torch.sort(v, dim=-1, descending=True)
    css = u.cumsum(dim=-1) - 1
    ks = torch.arange(1, m + 1, device=v.device, dtype=v.dtype)
    cond = u - css / ks > 0
    rho = cond.to(v.dtype).cumsum(dim=-1).amax(dim=-1, keepdim=True).clamp_min(1)
    theta = css.gather(-1, rho.long() - 1) / rho
    return (v - theta).clamp_min(0)


def min_norm_2(aa: Tensor, ab: Tensor, bb: Tensor) -> Tensor:
    """``γ ∈ [0, 1]`` minimising ``‖(1 − γ) a + γ b‖²`` from the inner products ``a·a, a·b, b·b``.

    ``γ = (a·a − a·b) / ‖a − b‖²`` clipped to ``[0, 1]``; ``γ = 0`` when ``a = b``. (Sener &
    Koltun's
    code returns 0.999 / 0.001 instead of 1 / 0 at the ends of the segment; we return the exact
    minimiser.)
    """
    denom = aa + bb - 2 * ab
    safe = torch.where(denom > 0, denom, torch.ones_like(denom))
    gamma = torch.where(denom > 0, (aa - ab) / safe, torch.zeros_like(denom))
    return gamma.clamp(0, 1)


def frank_wolfe_min_norm(
    gramian: Tensor, max_iter: int = 250, tol: float = 1e-5, check_every: int = 10
) -> Tensor:
    """Sener & Koltun's Frank–Wolfe solver of ``min_{w ∈ Δ} wᵀ K w`` (Algorithm 2).

    Start at ``w = 1/m``; each iteration picks the vertex ``t = argmin_r (K w)_r`` and moves to
    the closest point to the origin on the segment between ``Σ w_i g_i`` and ``g_t``
    (:func:`min_norm_2`). Stops after ``max_iter`` iterations, or earlier when the last
    ``check_every`` iterations moved ``w`` by less than ``tol`` in ℓ1 norm; that test costs one host
    synchronisation per ``check_every`` iterations (``tol=0`` disables it: no synchronisation).
    """
    m = _check_square(gramian)
    w = torch.full((m,), 1.0 / m, dtype=gramian.dtype, device=gramian.device)
    if m == 1:
        return w
    eye = torch.eye(m, dtype=gramian.dtype, device=gramian.device)
    diag = gramian.diagonal()
    block_start = w
    for it in range(max_iter):
        kw = gramian @ w
        t = torch.argmin(kw)
        gamma = min_norm_2(w @ kw, kw[t], diag[t])
        w = (1 - gamma) * w + gamma * eye[t]
        if tol > 0 and (it + 1) % check_every == 0:
            if float((w - block_start).abs().sum()) < tol:  # the documented synchronisation
                break
            block_start = w
    return w


def simplex_qp(q: Tensor, b: Tensor | None = None, iters: int = 15, polish: bool = True) -> Tensor:
    """``argmin_{w ∈ Δ} ½ wᵀ Q w + bᵀ w`` for a symmetric positive semidefinite ``Q``.

    Interior-point iterations (see the module docstring), then, with ``polish``, the KKT system of
    the equality-constrained problem on the support ``{i : w_i > z_i}`` is solved with a
    pseudo-inverse; the polished point replaces the interior-point one only if it is feasible and
    satisfies the KKT conditions to tolerance (checked with ``torch.where``, no synchronisation).
    When the minimiser is not unique (singular ``Q``), the analytic centre of the optimal face is
    approximated; polishing then returns the minimum-norm KKT solution on that support.
    """
    m = _check_square(q)
    if b is None:
        b = torch.zeros(m, dtype=q.dtype, device=q.device)
    scale = _scale_of(q, b)
    qs, bs = q / scale, b / scale
    w, z = _ipm(qs, bs, iters)
    if polish and m > 1:
        w = _polish(qs, bs, w, z)
    return w


def simplex_qp_active_set(q: Tensor, b: Tensor | None = None) -> Tensor:
    """``argmin_{w ∈ Δ} ½ wᵀ Q w + bᵀ w`` on the host: a primal active-set method in float64.

    The free set ``F`` (entries allowed to be positive) starts as every entry, from the centre
    ``w = 1/m``. Each iteration solves the equality-constrained problem on ``F`` (the bordered
    system ``[Q_FF 1; 1ᵀ 0][x; −ν] = [−b_F; 1]``, by LU, or by least squares when that system is
    singular: duplicated or linearly dependent gradients, ``m > d``; the least-squares solution
    splits a duplicated task's weight equally) and moves towards its solution ``x``; an entry
    that would turn negative stops the move and leaves ``F``. At the solution of ``F``'s problem
    the multipliers ``(Q w + b)_i − ν`` of the entries outside ``F`` are checked; the most
    negative one, if any, enters ``F``. Each move decreases the objective, so no support repeats:
    the method is finite. The problem is first scaled to unit largest entry. The result is then
    checked against the KKT conditions (feasibility, multipliers ``≥ −tol``); if that fails (it
    has not in testing) or the iteration cap ``10 m + 50`` is reached, :func:`simplex_qp`'s
    interior-point result is returned instead.

    Args:
        q: ``(m, m)`` symmetric positive semidefinite, on the CPU (any float dtype).
        b: ``(m,)`` linear term (None: zero).

    Returns:
        ``(m,)`` in ``q``'s dtype.
    """
    m = _check_square(q)
    if q.device.type != "cpu":
        raise ValueError("simplex_qp_active_set runs on the host: pass CPU tensors")
    qn = q.detach().to(torch.float64).numpy()
    bn = np.zeros(m) if b is None else b.detach().to(torch.float64).numpy()
    w, ok = simplex_qp_numpy(qn, bn)
    if not ok:
        return simplex_qp(q.to(torch.float64), None if b is None else b.to(torch.float64)).to(
            q.dtype
        )
    return torch.from_numpy(w).to(q.dtype)


def simplex_qp_numpy(
    q: np.ndarray, b: np.ndarray, start: np.ndarray | None = None
) -> tuple[np.ndarray, bool]:
    """:func:`simplex_qp_active_set` on NumPy arrays: ``(w, converged and KKT checked)``.

    ``start``: the entries to start free (uniform weights on them; default: all), a warm start
    when a sequence of related problems is solved.
    """
    m = q.shape[0]
    eps = np.finfo(np.float64).eps
    scale = max(float(np.abs(np.diagonal(q)).max()), float(np.abs(b).max()), 1e-300)
    if not np.isfinite(scale):
        return np.full(m, 1.0 / m), False
    q, b = q / scale, b / scale
    free = np.ones(m, dtype=bool) if start is None or not start.any() else start.copy()
    w = free / free.sum()
    step_tol = 1e3 * eps
    for _ in range(10 * m + 50):
        f = np.flatnonzero(free)
        n = f.shape[0]
        kkt = np.zeros((n + 1, n + 1))
        kkt[:n, :n] = q[np.ix_(f, f)]
        kkt[:n, n] = kkt[n, :n] = 1.0
        rhs = np.concatenate([-b[f], [1.0]])
        x = solve_bordered(kkt, rhs)[:n]
        p = x - w[f]
        if np.abs(p).max() <= step_tol:
            g = q @ w + b
            nu = g[f].mean()
            mult = np.where(free, np.inf, g - nu)
            j = int(np.argmin(mult))
            if mult[j] >= -1e3 * eps * (1.0 + np.abs(g).max()):
                return w, _kkt_holds(q, b, w)
            free[j] = True
            continue
        shrinking = p < 0
        ratios = np.full(n, np.inf)
        ratios[shrinking] = -w[f][shrinking] / p[shrinking]
        r = int(np.argmin(ratios))
        alpha = min(1.0, float(ratios[r]))
        w[f] += alpha * p
        if alpha < 1.0:
            w[f[r]] = 0.0
            free[f[r]] = False
        np.maximum(w, 0.0, out=w)
        w /= w.sum()
    return w, False


def solve_bordered(kkt: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """LU solve, or least squares (the minimum-norm solution) when the system is singular."""
    try:
        x = np.linalg.solve(kkt, rhs)
        residual = np.abs(kkt @ x - rhs).max()
        if np.isfinite(x).all() and residual <= 1e-9 * (1.0 + np.abs(x).max()):
            return x
    except np.linalg.LinAlgError:
        pass
    solution: np.ndarray = np.linalg.lstsq(kkt, rhs, rcond=None)[0]
    return solution


def _kkt_holds(q: np.ndarray, b: np.ndarray, w: np.ndarray) -> bool:
    """Feasible, and every multiplier ``(Qw + b)_i − ν`` non-negative (zero on the support)."""
    if not np.isfinite(w).all() or (w < 0).any() or abs(w.sum() - 1.0) > 1e-9:
        return False
    g = q @ w + b
    support = w > 0
    nu = g[support].mean()
    tol = 1e-7 * (1.0 + np.abs(g).max())
    return bool((g - nu >= -tol).all() and (np.abs(g[support] - nu) <= tol).all())


def simplex_minimize(
    value: Callable[[Tensor, float], Tensor],
    grad_hess: Callable[[Tensor, float], tuple[Tensor, Tensor]],
    m: int,
    like: Tensor,
    stages: int | None = None,
    newton_steps: int = 5,
    polish: bool = True,
) -> Tensor:
    """``argmin_{w ∈ Δ} f(w)`` for a smooth convex ``f``: a log-barrier method.

    For ``t = 1, 10, 100, ...`` (``stages`` values; by default up to ``t = 10⁶`` in float32 and
    ``10¹²`` in float64) it takes ``newton_steps`` equality-constrained Newton steps on
    ``t f(w) − Σ_i log w_i``
    (``1ᵀw = 1``), each followed by a line search that evaluates the barrier objective at the step
    sizes ``1, ½, ..., 2⁻¹⁵`` (and 0) in one batch and keeps the best feasible one — so the barrier
    objective never increases, whatever the curvature of ``f``. The suboptimality at the end is
    at most ``m / t``, which leaves ``w`` accurate to about ``sqrt(m / t)`` where ``f`` is flat.
    With ``polish``, three Newton steps on ``f`` restricted to the support ``{w_i > t^{-1/2}}``
    (with ``Σ w = 1``, bordered KKT system solved by pseudo-inverse, ``t = ∞`` passed to ``f``)
    then refine ``w``; the result replaces the barrier's only if it is feasible, no worse, and
    satisfies the KKT conditions off the support (a ``torch.where``). No host synchronisation.

    Args:
        value: ``value(W, t)`` for a batch ``W`` of shape ``(L, m)``: the ``(L,)`` values of ``f``.
        grad_hess: ``grad_hess(w, t) -> (∇f(w), ∇²f(w))``.
            Both receive the barrier parameter ``t``, so that ``f`` may be a smoothing of the
            objective that sharpens as ``t`` grows (a continuation; CAGrad uses it).
        m: number of variables.
        like: a tensor whose dtype and device the computation uses.
        stages, newton_steps: the barrier schedule (see above).
    The caller should scale ``f`` so that its values and gradients are of order one.
    """
    dtype, device = like.dtype, like.device
    finfo = torch.finfo(dtype)
    if stages is None:
        stages = min(13, math.ceil(math.log10(1 / finfo.eps)))
    w = torch.full((m,), 1.0 / m, dtype=dtype, device=device)
    if m == 1:
        return w
    ones = torch.ones(m, dtype=dtype, device=device)
    sizes = torch.cat(
        [
            2.0 ** -torch.arange(16, dtype=dtype, device=device),
            torch.zeros(1, dtype=dtype, device=device),
        ]
    )
    for k in range(stages):
        t = 10.0**k
        for _ in range(newton_steps):
            g, h = grad_hess(w, t)
            inv_w = 1 / w
            grad = t * g - inv_w
            chol = torch.linalg.cholesky_ex(t * h + torch.diag(inv_w * inv_w))[0]
            sol = torch.cholesky_solve(torch.stack([grad, ones], dim=1), chol)
            nu = -sol[:, 0].sum() / sol[:, 1].sum()
            dw = torch.nan_to_num(-(sol[:, 0] + nu * sol[:, 1]))
            cand = w + sizes[:, None] * dw
            positive = (cand > 0).all(dim=1)
            safe = torch.where(positive[:, None], cand, ones)
            obj = t * value(safe, t) - safe.log().sum(dim=1)
            obj = torch.where(
                positive & torch.isfinite(obj), obj, torch.full_like(obj, float("inf"))
            )
            w = cand[torch.argmin(obj)]
            w = w / w.sum()
    if polish:
        w = _polish_smooth(value, grad_hess, w, (10.0 ** (stages - 1)) ** -0.5)
    return w


def _polish_smooth(
    value: Callable[[Tensor, float], Tensor],
    grad_hess: Callable[[Tensor, float], tuple[Tensor, Tensor]],
    w: Tensor,
    support_tol: float,
    steps: int = 3,
) -> Tensor:
    """Newton's method for ``min f`` on the support of ``w`` with ``Σ w = 1``; kept if valid."""
    m = w.shape[0]
    dtype, device = w.dtype, w.device
    s = (w > support_tol).to(dtype)
    a = torch.zeros(m + 1, m + 1, dtype=dtype, device=device)
    a[:m, m] = s
    a[m, :m] = s
    cur = w * s
    cur = cur / cur.sum().clamp_min(torch.finfo(dtype).tiny)
    for _ in range(steps):
        g, h = grad_hess(cur, math.inf)
        a[:m, :m] = h * (s[:, None] * s[None, :]) + torch.diag(1 - s)
        rhs = torch.cat([-g * s, torch.zeros(1, dtype=dtype, device=device)])
        cur = cur + (torch.linalg.pinv(a) @ rhs)[:m] * s
    tol = torch.finfo(dtype).eps ** 0.5
    g, _ = grad_hess(cur, math.inf)
    nu = (g * s).sum() / s.sum().clamp_min(1)
    values = value(torch.stack([cur.clamp_min(0), w]), math.inf)
    ok = (
        torch.isfinite(cur).all()
        & (cur >= -tol).all()
        & ((g - nu) * (1 - s) >= -tol * (1 + g.abs().amax())).all()
        & (values[0] <= values[1] + 10 * torch.finfo(dtype).eps * (1 + values[1].abs()))
    )
    cur = cur.clamp_min(0)
    cur = cur / cur.sum().clamp_min(torch.finfo(dtype).tiny)
    return torch.where(ok, cur, w)


def min_norm_weights(
    gramian: Tensor,
    solver: MinNormSolver = "exact",
    *,
    iters: int = 15,
    max_iter: int = 250,
    tol: float = 1e-5,
) -> Tensor:
    """MGDA's weights: ``argmin_{w ∈ Δ} wᵀ K w``, the minimum-norm point of the convex hull.

    Args:
        gramian: ``(m, m)`` Gramian ``K``.
        solver: ``"exact"`` (:func:`simplex_qp`) or ``"frank_wolfe"``
            (:func:`frank_wolfe_min_norm`).
        iters: interior-point iterations of the exact solver.
        max_iter, tol: Frank–Wolfe iteration limit and early-stopping tolerance.

    Two tasks have a closed form (the segment's closest point to the origin, :func:`min_norm_2`),
    which both solvers reach; it is used directly. The exact solver of a Gramian on the CPU is
    :func:`simplex_qp_active_set` (float64, finite); elsewhere :func:`simplex_qp` (fixed
    iterations, no host synchronisation).
    """
    if _check_square(gramian) == 2 and solver in ("exact", "frank_wolfe"):
        gamma = min_norm_2(gramian[0, 0], gramian[0, 1], gramian[1, 1])
        return torch.stack([1 - gamma, gamma])
    if solver == "exact":
        if gramian.device.type == "cpu":
            with host_region():  # the Gramian is on the host already: host work, no transfer
                return simplex_qp_active_set(gramian)
        return simplex_qp(gramian, iters=iters)
    if solver == "frank_wolfe":
        return frank_wolfe_min_norm(gramian, max_iter=max_iter, tol=tol)
    raise ValueError(f"solver must be 'exact' or 'frank_wolfe', got {solver!r}")


# ---------------------------------------------------------------------------------------- internals
def live_rows(gramian: Tensor) -> tuple[Tensor, Tensor]:
    """The Gramian's diagonal (clamped at 0) and which rows are live: a gradient whose squared
    norm is below ``eps²`` times the largest has no direction to balance."""
    finfo = torch.finfo(gramian.dtype)
    diag = gramian.diagonal().clamp_min(0)
    return diag, diag > finfo.eps**2 * diag.amax().clamp_min(finfo.tiny)


def _check_square(a: Tensor) -> int:
    if a.dim() != 2 or a.shape[0] != a.shape[1] or a.shape[0] == 0:
        raise ValueError(f"expected a non-empty square matrix, got shape {tuple(a.shape)}")
    return a.shape[0]


def _scale_of(q: Tensor, b: Tensor) -> Tensor:
    """A positive scale making the entries of ``Q`` and ``b`` at most one in magnitude."""
    tiny = torch.finfo(q.dtype).tiny
    s = torch.maximum(q.diagonal().abs().amax(), b.abs().amax())
    return torch.where(s > tiny, s, torch.ones_like(s))


def _step_to_boundary(x: Tensor, dx: Tensor) -> Tensor:
    """Largest ``a ≤ 1`` with ``x + a·dx ≥ 0`` (for ``x > 0``)."""
    return torch.where(dx < 0, -x / dx, torch.ones_like(x)).amin().clamp(max=1.0)


def _ipm(q: Tensor, b: Tensor, iters: int) -> tuple[Tensor, Tensor]:
    """Mehrotra predictor-corrector for ``min ½ wᵀQw + bᵀw`` on the simplex.

    Returns the best iterate (normalised onto the simplex, by objective value, so that a late
    step spoiled by rounding in a nearly singular solve cannot make things worse) and its ``z``.
    """
    m = q.shape[0]
    dtype, device = q.dtype, q.device
    finfo = torch.finfo(dtype)
    w = torch.full((m,), 1.0 / m, dtype=dtype, device=device)
    z = torch.ones(m, dtype=dtype, device=device)
    ones = torch.ones(m, dtype=dtype, device=device)
    nu = (q @ w + b).amin() - 1
    best_w, best_z = w, z
    best_f = torch.tensor(math.inf, dtype=dtype, device=device)
    for _ in range(iters):
        g = q @ w + b
        r_d = g - nu - z
        r_p = w.sum() - 1
        wz = w * z
        mu = wz.mean()
        inv_w = 1 / w
        chol = torch.linalg.cholesky_ex(q + torch.diag(z * inv_w))[0]
        # Predictor (τ = 0) and the solve with 1 on the right, which both directions share.
        sol = torch.cholesky_solve(torch.stack([-r_d - z, ones], dim=1), chol)
        e = sol[:, 1]
        e_sum = e.sum()
        dw = sol[:, 0] + ((-r_p - sol[:, 0].sum()) / e_sum) * e
        dz = (-wz - z * dw) * inv_w
        wz_cat, d_cat = torch.cat([w, z]), torch.cat([dw, dz])
        a_aff = _step_to_boundary(wz_cat, d_cat)
        mu_aff = ((w + a_aff * dw) * (z + a_aff * dz)).mean()
        sigma = (mu_aff / mu.clamp_min(finfo.tiny)).clamp(0, 1) ** 3
        # Corrector: target complementarity σμ, minus the predictor's second-order term.
        target = sigma * mu - dw * dz
        a = torch.cholesky_solve((-r_d + target * inv_w - z)[:, None], chol)[:, 0]
        dnu = (-r_p - a.sum()) / e_sum
        dw = a + dnu * e
        dz = (target - wz - z * dw) * inv_w
        step = 0.99 * _step_to_boundary(wz_cat, torch.cat([dw, dz]))
        # A failed factorisation (rounding, once w_i or z_i reach ~0) makes every solve NaN,
        # dnu included: the step is then skipped, and the best iterate is kept anyway.
        step = torch.where(torch.isfinite(dnu), step, torch.zeros_like(step))
        w = (w + step * torch.nan_to_num(dw)).clamp_min(finfo.tiny)
        z = (z + step * torch.nan_to_num(dz)).clamp_min(finfo.tiny)
        nu = nu + step * torch.nan_to_num(dnu)
        wn = w / w.sum()
        f = 0.5 * wn @ q @ wn + b @ wn
        better = f <= best_f
        best_w = torch.where(better, wn, best_w)
        best_z = torch.where(better, z, best_z)
        best_f = torch.minimum(f, best_f)
    return best_w, best_z


def _polish(q: Tensor, b: Tensor, w: Tensor, z: Tensor) -> Tensor:
    """Solve the KKT system on the support ``{w_i > z_i}`` exactly; keep it if it checks out."""
    m = q.shape[0]
    dtype = q.dtype
    support = w > z
    s = support.to(dtype)
    a = torch.zeros(m + 1, m + 1, dtype=dtype, device=q.device)
    a[:m, :m] = q * (s[:, None] * s[None, :]) + torch.diag(1 - s)
    a[:m, m] = -s
    a[m, :m] = s
    rhs = torch.cat([-b * s, torch.ones(1, dtype=dtype, device=q.device)])
    x = torch.linalg.pinv(a) @ rhs
    wp, nu = x[:m] * s, x[m]
    grad = q @ wp + b
    tol = torch.finfo(dtype).eps ** 0.5

    def objective(v: Tensor) -> Tensor:
        return 0.5 * v @ q @ v + b @ v

    ok = (
        torch.isfinite(x).all()
        & (wp >= -tol).all()
        & ((wp.sum() - 1).abs() <= tol)
        & ((grad - nu) >= -tol * (1 + grad.abs().amax())).all()
        & (objective(wp) <= objective(w) + tol * (1 + objective(w).abs()))
    )
    wp = wp.clamp_min(0)
    wp = wp / wp.sum().clamp_min(torch.finfo(dtype).tiny)
    return torch.where(ok, wp, w)
