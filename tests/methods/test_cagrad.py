"""CAGrad (Liu et al. 2021): the dual on the simplex without SciPy; weights on the rows of J."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradsurgery.methods.base import TaskStep
from gradsurgery.methods.cagrad import (
    CAGrad,
    _dual_by_barrier,
    cagrad_dual_weights,
    cagrad_weights,
)
from gradsurgery.methods.registry import create_method

F64 = torch.float64


def _step(gramian: torch.Tensor) -> TaskStep:
    m = gramian.shape[0]
    return TaskStep(
        losses=torch.ones(m, dtype=gramian.dtype),
        tasks=torch.arange(m),
        num_tasks=m,
        step=0,
        gramian=gramian,
    )


def _jacobian(m: int, d: int, seed: int, conflict: bool = False, dtype=F64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    scales = torch.exp(torch.randn(m, 1, generator=gen, dtype=F64))
    j = torch.randn(m, d, generator=gen, dtype=F64) * scales
    if conflict and m > 1:
        j[1:] -= 0.8 * j[0]
    return j.to(dtype)


def _dual_value(k: torch.Tensor, c: float, w: torch.Tensor) -> float:
    m = k.shape[0]
    g0_norm = float(k.sum()) ** 0.5 / m
    return float(w @ k.sum(dim=1) / m + c * g0_norm * float(w @ k @ w) ** 0.5)


def _slsqp_dual(k: np.ndarray, c: float) -> float:
    """The official code's SciPy solve (best of a few starts: SLSQP alone stalls on some)."""
    optimize = pytest.importorskip("scipy.optimize")
    m = k.shape[0]
    b = np.full(m, 1.0 / m)
    rho = c * np.sqrt(b @ k @ b)

    def f(x: np.ndarray) -> float:
        return float(x @ k @ b + rho * np.sqrt(max(x @ k @ x, 0.0)))

    best = np.inf
    for s in range(6):
        x0 = b.copy() if s == 0 else np.random.default_rng(s).dirichlet(np.ones(m))
        res = optimize.minimize(
            f,
            x0,
            bounds=[(0, 1)] * m,
            constraints=({"type": "eq", "fun": lambda x: 1 - x.sum()},),
            method="SLSQP",
            options={"ftol": 1e-15, "maxiter": 2000},
        )
        x = np.clip(res.x, 0, None)
        best = min(best, f(x / x.sum()))
    return best


# ---------------------------------------------------------------- hand-worked cases


def test_c_zero_is_the_mean():
    j = _jacobian(4, 6, 0, conflict=True)
    for rescale in (0, 1, 2):
        w = CAGrad(c=0.0, rescale=rescale)(_step(j @ j.T)).weights
        torch.testing.assert_close(w, torch.full((4,), 0.25, dtype=F64))


def test_orthogonal_pair_by_hand():
    # g1 = (1, 0), g2 = (0, 1), c = ½: w* = (½, ½), g_w = g0, λ = c‖g0‖/‖g0‖ = ½, d = 1.5 g0.
    k = torch.eye(2, dtype=F64)
    for rescale, factor in ((0, 1.0), (1, 1.25), (2, 1.5)):
        w = CAGrad(c=0.5, rescale=rescale)(_step(k)).weights
        torch.testing.assert_close(w, torch.full((2,), 0.75 / factor, dtype=F64))
    w = CAGrad(c=0.5, rescale=0, reduction="sum")(_step(k)).weights
    torch.testing.assert_close(w, torch.full((2,), 1.5, dtype=F64))


def test_one_task():
    # m = 1: d = g + c‖g‖ g/‖g‖ = (1 + c) g, then rescaled.
    k = torch.tensor([[9.0]], dtype=F64)
    for rescale, expected in ((0, 1.4), (1, 1.4 / 1.16), (2, 1.0)):
        torch.testing.assert_close(
            cagrad_weights(k, 0.4, rescale), torch.tensor([expected], dtype=F64)
        )


# ---------------------------------------------------------------- against SciPy and duality


@settings(max_examples=15, deadline=None)
@given(
    m=st.integers(1, 7),
    d=st.integers(1, 10),
    seed=st.integers(0, 100_000),
    conflict=st.booleans(),
    c=st.sampled_from([0.1, 0.4, 0.9]),
)
def test_dual_matches_scipy(m, d, seed, conflict, c):
    j = _jacobian(m, d, seed, conflict)
    k = j @ j.T
    k = k / k.diagonal().max()
    w = cagrad_dual_weights(k, c)
    assert (w >= 0).all() and abs(float(w.sum()) - 1) < 1e-9
    assert _dual_value(k, c, w) <= _slsqp_dual(k.numpy(), c) + 1e-8


@settings(max_examples=25, deadline=None)
@given(
    m=st.integers(1, 9),
    d=st.integers(1, 10),
    seed=st.integers(0, 100_000),
    conflict=st.booleans(),
    c=st.sampled_from([0.1, 0.4, 0.9]),
)
def test_host_qp_solver_and_device_barrier_agree(m, d, seed, conflict, c):
    """The exact host solver (a family of QPs) is never worse than the device's barrier method."""
    j = _jacobian(m, d, seed, conflict)
    k = j @ j.T
    k = k / k.diagonal().max()
    host, barrier = cagrad_dual_weights(k, c), _dual_by_barrier(k, c)
    assert _dual_value(k, c, host) <= _dual_value(k, c, barrier) + 1e-12
    assert _dual_value(k, c, host) == pytest.approx(_dual_value(k, c, barrier), abs=1e-9)


@settings(max_examples=12, deadline=None)
@given(m=st.integers(2, 7), extra=st.integers(1, 5), seed=st.integers(0, 100_000))
def test_strong_duality(m, extra, seed):
    """d = g0 + c‖g0‖ g_w/‖g_w‖ is in the ball and its worst task improvement is the dual value."""
    c = 0.5
    j = _jacobian(m, m + extra, seed, conflict=seed % 2 == 0)
    k = j @ j.T
    weights = cagrad_weights(k, c, rescale=0)
    d_vec = weights @ j
    g0 = j.mean(dim=0)
    assert float((d_vec - g0).norm()) == pytest.approx(c * float(g0.norm()), rel=1e-8)
    w = cagrad_dual_weights(k, c)
    assert float((j @ d_vec).min()) == pytest.approx(_dual_value(k, c, w), rel=1e-6, abs=1e-9)


def test_torchjd_oracle():
    pytest.importorskip("cvxpy")
    aggregation = pytest.importorskip("torchjd.aggregation")
    for seed in range(5):
        j = _jacobian(4, 7, seed, conflict=seed % 2 == 0)
        k = j @ j.T
        theirs = aggregation.CAGradWeighting(c=0.5)(k)  # = rescale 0, mean reduction
        ours = cagrad_weights(k, 0.5, rescale=0)
        # torchjd solves an SVD-reduced problem with CLARABEL: close, and never better than ours.
        torch.testing.assert_close(ours, theirs, rtol=2e-3, atol=1e-5)
        w_theirs = (theirs - 0.25) / (theirs - 0.25).sum()
        w_ours = cagrad_dual_weights(k, 0.5)
        assert _dual_value(k, 0.5, w_ours) <= _dual_value(k, 0.5, w_theirs) + 1e-9


# ---------------------------------------------------------------- options and edge cases


def test_options():
    k = torch.eye(3, dtype=F64)
    step = _step(k)
    torch.testing.assert_close(
        CAGrad()(step).task_specific_weights, torch.full((3,), 1 / 3, dtype=F64)
    )
    torch.testing.assert_close(
        CAGrad(reduction="sum")(step).task_specific_weights, torch.ones(3, dtype=F64)
    )
    for bad in ({"c": -1.0}, {"rescale": 3}, {"reduction": "max"}):
        with pytest.raises(ValueError):
            CAGrad(**bad)
    assert isinstance(create_method("cagrad", c=0.9), CAGrad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_edge_cases(dtype):
    # All gradients zero: finite weights, zero update.
    w = cagrad_weights(torch.zeros(3, 3, dtype=dtype), 0.5)
    assert torch.isfinite(w).all()
    # Identical gradients: d = (1 + c) g, split equally.
    g = torch.tensor([[1.0, 2.0], [1.0, 2.0]], dtype=dtype)
    w = cagrad_weights(g @ g.T, 0.5, rescale=0)
    torch.testing.assert_close(w, torch.full((2,), 0.75, dtype=dtype), rtol=1e-5, atol=1e-5)
    # A zero gradient among others, and exactly opposite gradients (0 in the hull): no NaN.
    for g in (
        torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]], dtype=dtype),
        torch.tensor([[1.0, 2.0], [-1.0, -2.0]], dtype=dtype),
    ):
        w = cagrad_weights(g @ g.T, 0.5)
        assert torch.isfinite(w).all() and w.dtype == dtype
    # Opposite gradients: g0 = 0, so the ball is a point and d = 0.
    g = torch.tensor([[1.0, 2.0], [-1.0, -2.0]], dtype=dtype)
    torch.testing.assert_close(cagrad_weights(g @ g.T, 0.5) @ g, torch.zeros(2, dtype=dtype))


def test_float32_close_to_float64():
    for seed in range(3):
        j = _jacobian(5, 8, seed, conflict=True)
        k = j @ j.T
        torch.testing.assert_close(
            cagrad_weights(k.float(), 0.4).double(), cagrad_weights(k, 0.4), rtol=2e-3, atol=1e-4
        )
