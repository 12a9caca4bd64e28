"""Solvers on the probability simplex: projection, two-point line search, QP, barrier, min-norm."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradsurgery.methods.simplex import (
    frank_wolfe_min_norm,
    min_norm_2,
    min_norm_weights,
    project_simplex,
    simplex_minimize,
    simplex_qp,
    simplex_qp_active_set,
)

F64 = torch.float64


def _jacobian(m: int, d: int, seed: int, dtype: torch.dtype = F64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    scales = torch.exp(torch.randn(m, 1, generator=gen, dtype=F64))
    return (torch.randn(m, d, generator=gen, dtype=F64) * scales).to(dtype)


def _slsqp_qp(q: np.ndarray, b: np.ndarray) -> float:
    """Best SLSQP value of ½ wᵀQw + bᵀw on the simplex over a few starts (test oracle)."""
    optimize = pytest.importorskip("scipy.optimize")
    m = q.shape[0]

    def f(x: np.ndarray) -> float:
        return float(0.5 * x @ q @ x + b @ x)

    best = np.inf
    for k in range(4):
        x0 = np.full(m, 1.0 / m) if k == 0 else np.random.default_rng(k).dirichlet(np.ones(m))
        res = optimize.minimize(
            f,
            x0,
            jac=lambda x: q @ x + b,
            bounds=[(0, 1)] * m,
            constraints=({"type": "eq", "fun": lambda x: x.sum() - 1},),
            method="SLSQP",
            options={"ftol": 1e-15, "maxiter": 1000},
        )
        best = min(best, f(np.clip(res.x, 0, None) / np.clip(res.x, 0, None).sum()))
    return best


# ---------------------------------------------------------------- projection and line search


def test_project_simplex_by_hand():
    v = torch.tensor([[0.5, 0.5], [2.0, 0.0], [1.0, 1.0], [0.3, -1.0]], dtype=F64)
    expected = torch.tensor([[0.5, 0.5], [1.0, 0.0], [0.5, 0.5], [1.0, 0.0]], dtype=F64)
    torch.testing.assert_close(project_simplex(v), expected)
    torch.testing.assert_close(
        project_simplex(torch.tensor([1.0, 1.0, 1.0])), torch.full((3,), 1 / 3)
    )


@settings(max_examples=50, deadline=None)
@given(m=st.integers(1, 9), seed=st.integers(0, 10_000))
def test_project_simplex_is_the_euclidean_projection(m, seed):
    v = torch.randn(m, generator=torch.Generator().manual_seed(seed), dtype=F64) * 3
    p = project_simplex(v)
    assert (p >= 0).all() and abs(float(p.sum()) - 1) < 1e-12
    # KKT: v − p = θ on the support, ≤ θ off it.
    theta = (v - p)[p > 0]
    assert float(theta.max() - theta.min()) < 1e-12
    assert ((v - p)[p == 0] <= theta.max() + 1e-12).all()


def test_min_norm_2_by_hand():
    t = lambda *x: torch.tensor(x, dtype=F64)  # noqa: E731
    # a = (1, 0), b = (0, 1): midpoint.
    assert float(min_norm_2(t(1.0), t(0.0), t(1.0))) == pytest.approx(0.5)
    # a = b: stay at a.
    assert float(min_norm_2(t(2.0), t(2.0), t(2.0))) == 0.0
    # a·b ≥ a·a (a = (1, 0), b = (2, 0)): a is the closest point, γ = 0.
    assert float(min_norm_2(t(1.0), t(2.0), t(4.0))) == 0.0
    # a·b ≥ b·b (a = (2, 0), b = (1, 0)): b, γ = 1.
    assert float(min_norm_2(t(4.0), t(2.0), t(1.0))) == 1.0
    # a = (1, 0), b = (-1, 1): γ = (1 + 1)/(1 + 2 + 2) = 0.4.
    assert float(min_norm_2(t(1.0), t(-1.0), t(2.0))) == pytest.approx(0.4)


# ---------------------------------------------------------------- QP on the simplex


@settings(max_examples=30, deadline=None)
@given(
    m=st.integers(1, 9),
    d=st.integers(1, 12),
    seed=st.integers(0, 10_000),
    lin=st.booleans(),
    solver=st.sampled_from([simplex_qp, simplex_qp_active_set]),
)
def test_simplex_qp_matches_slsqp_and_is_kkt(m, d, seed, lin, solver):
    j = _jacobian(m, d, seed)
    if seed % 3 == 0 and m > 2:
        j[1] = j[0]  # a duplicated task: a singular Gramian
    q = j @ j.T
    b = (
        torch.randn(m, generator=torch.Generator().manual_seed(seed + 1), dtype=F64)
        if lin
        else torch.zeros(m, dtype=F64)
    )
    w = solver(q, b)
    assert (w >= 0).all() and abs(float(w.sum()) - 1) < 1e-12
    value = float(0.5 * w @ q @ w + b @ w)
    scale = float(q.diagonal().max() + b.abs().max())
    assert value <= _slsqp_qp(q.numpy(), b.numpy()) + 1e-9 * scale
    # KKT: the gradient is minimal (and equal) on the support.
    grad = q @ w + b
    nu = grad[w > 1e-9].min()
    assert (grad >= nu - 1e-7 * scale).all()


@pytest.mark.parametrize("solver", [simplex_qp, simplex_qp_active_set])
def test_simplex_qp_degenerate_inputs(solver):
    zero = torch.zeros(3, 3, dtype=F64)
    torch.testing.assert_close(solver(zero), torch.full((3,), 1 / 3, dtype=F64))
    ones = torch.ones(2, 2, dtype=F64)  # identical gradients: the centre of the optimal face
    torch.testing.assert_close(solver(ones), torch.full((2,), 0.5, dtype=F64))
    torch.testing.assert_close(solver(torch.tensor([[3.0]])), torch.tensor([1.0]))


def test_active_set_is_exact_for_a_gradient_a_million_times_smaller():
    """One gradient 1e-6 times the others: the min-norm point is within rounding of the optimum
    (the interior-point method stops at 8.47e-6 here, worse than the tiny gradient alone)."""
    j = torch.randn(5, 50, generator=torch.Generator().manual_seed(135), dtype=F64)
    j[0] *= 1e-6
    q = j @ j.T
    w = simplex_qp_active_set(q)
    norm = float((w @ j).norm())
    assert norm <= float(j[0].norm())  # no worse than the tiny gradient alone
    # optimality: no vertex direction decreases ‖Σ w_i g_i‖² (multipliers ≥ 0, to rounding)
    grad = q @ w
    assert float((grad - grad[w > 0].mean()).min()) >= -1e-15
    assert norm == pytest.approx(5.6265e-6, rel=1e-4)
    assert float((min_norm_weights(q) @ j).norm()) == pytest.approx(norm, rel=1e-12)


def test_active_set_needs_the_host():
    with pytest.raises(ValueError, match="host"):
        simplex_qp_active_set(torch.eye(2, device="meta"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_solvers_keep_dtype(dtype):
    j = _jacobian(4, 6, 0, dtype)
    k = j @ j.T
    for solver in ("exact", "frank_wolfe"):
        w = min_norm_weights(k, solver)
        assert w.dtype == dtype and w.shape == (4,)
        assert torch.isfinite(w).all()


# ---------------------------------------------------------------- min-norm: both solvers


@settings(max_examples=15, deadline=None)
@given(m=st.integers(1, 8), d=st.integers(1, 10), seed=st.integers(0, 10_000))
def test_frank_wolfe_and_exact_agree(m, d, seed):
    j = _jacobian(m, d, seed)
    k = j @ j.T
    exact = min_norm_weights(k, "exact")
    iters = 2000
    fw = frank_wolfe_min_norm(k, max_iter=iters, tol=0)
    scale = float(k.diagonal().max())
    # Frank–Wolfe converges sublinearly, so compare the objectives f(w) = wᵀKw against its
    # guarantee (Jaggi 2013, with line search): f(w_t) − f* ≤ 2 C_f / (t + 2), where
    # C_f = 2 max_{s,w ∈ simplex} (s − w)ᵀK(s − w) ≤ 2 max_ij (e_i − e_j)ᵀK(e_i − e_j) ≤ 8 max_i K_ii.
    # (A degenerate Gramian, m = 3 tasks in d = 2, was still 3.6e-4 max_i K_ii away at t = 2000.)
    bound = 16 * scale / (iters + 2)
    assert float(fw @ k @ fw) - float(exact @ k @ exact) <= bound
    assert float(exact @ k @ exact) <= float(fw @ k @ fw) + 1e-10 * scale


def test_frank_wolfe_early_stop_and_one_task():
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64)
    torch.testing.assert_close(frank_wolfe_min_norm(k), torch.tensor([0.5, 0.5], dtype=F64))
    torch.testing.assert_close(frank_wolfe_min_norm(torch.tensor([[2.0]])), torch.tensor([1.0]))


# ---------------------------------------------------------------- barrier method


@settings(max_examples=20, deadline=None)
@given(m=st.integers(1, 8), seed=st.integers(0, 10_000))
def test_simplex_minimize_projects(m, seed):
    """``f(w) = ½‖w − c‖²`` is minimised by the projection of ``c``."""
    c = torch.randn(m, generator=torch.Generator().manual_seed(seed), dtype=F64)
    eye = torch.eye(m, dtype=F64)

    def value(ws: torch.Tensor, t: float) -> torch.Tensor:
        return 0.5 * ((ws - c) ** 2).sum(dim=1)

    def grad_hess(w: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        return w - c, eye

    w = simplex_minimize(value, grad_hess, m, c)
    torch.testing.assert_close(w, project_simplex(c), atol=1e-6, rtol=0)
