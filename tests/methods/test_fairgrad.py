"""FairGrad: hand-worked cases, the fixed-point equation, the scaling law, torchjd as an oracle."""

from __future__ import annotations

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gradsurgery.methods.fairgrad import FairGrad, fairgrad_weights
from gradsurgery.methods.registry import create_method
from tests.methods.steps import gramian_step as step_of

F64 = torch.float64


def random_jacobian(m: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scale = torch.rand(m, 1, generator=g, dtype=F64) * 5 + 0.1
    return torch.randn(m, d, generator=g, dtype=F64) * scale


def test_registered():
    method = create_method("fairgrad", alpha=2.0)
    assert isinstance(method, FairGrad) and method.requires == "gramian"
    assert method.scale_degree is None and FairGrad().scale_degree == 0


def test_two_tasks_by_hand():
    # identical unit gradients, α = 1: w1 + w2 = 1/w1 = 1/w2, so w = 1/√2 each
    one = torch.ones(2, 2, dtype=F64)
    torch.testing.assert_close(
        fairgrad_weights(one, 1.0, 0.0), torch.full((2,), 2**-0.5, dtype=F64)
    )
    # K = [[2, 1], [1, 2]]: 3w = 1/w
    k = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=F64)
    torch.testing.assert_close(fairgrad_weights(k, 1.0, 0.0), torch.full((2,), 3**-0.5, dtype=F64))
    agg = FairGrad(reg_eps=0.0)(step_of(k))
    torch.testing.assert_close(agg.task_specific_weights, agg.weights)  # heads get w_i, as LibMTL


def test_three_orthogonal_tasks_by_hand():
    # orthogonal gradients of norms 1, 2, 3: n_i² w_i = w_i^{-1/α}, w_i = n_i^{-2α/(α+1)}
    n = torch.tensor([1.0, 2.0, 3.0], dtype=F64)
    k = torch.diag(n**2)
    for alpha in (0.5, 1.0, 2.0, 5.0):
        want = n.pow(-2 * alpha / (alpha + 1))
        torch.testing.assert_close(fairgrad_weights(k, alpha, 0.0), want)
    # α = 1: every task gets the same share (K w)_i w_i = 1: the update is Σ g_i / n_i
    w = FairGrad(reg_eps=0.0)(step_of(k)).weights
    torch.testing.assert_close((k @ w) * w, torch.ones(3, dtype=F64))


@settings(max_examples=30, deadline=None)
@given(
    m=st.integers(1, 8),
    d=st.integers(8, 20),
    alpha=st.sampled_from([0.25, 0.5, 1.0, 2.0, 4.0]),
    seed=st.integers(0, 10**6),
)
@example(m=4, d=8, alpha=4.0, seed=2148)  # Armijo stalled at 6e-8 (F's decrease below rounding)
def test_weights_solve_the_fixed_point_equation(m, d, alpha, seed):
    j = random_jacobian(m, d, seed)  # d ≥ m: K is non-singular
    k = j @ j.T
    w = FairGrad(alpha=alpha, reg_eps=0.0)(step_of(k)).weights
    assert w is not None and bool((w > 0).all())
    torch.testing.assert_close(k @ w, w.pow(-1 / alpha), rtol=1e-8, atol=0)


@settings(max_examples=20, deadline=None)
@given(
    m=st.integers(2, 6),
    alpha=st.sampled_from([0.5, 1.0, 3.0]),
    s=st.sampled_from([1e-3, 0.1, 10.0, 1e4]),
    seed=st.integers(0, 10**6),
)
def test_scaling_law(m, alpha, s, seed):
    j = random_jacobian(m, 10, seed)
    w = fairgrad_weights(j @ j.T, alpha)
    ws = fairgrad_weights((s * j) @ (s * j).T, alpha)
    torch.testing.assert_close(ws @ (s * j), s ** ((1 - alpha) / (1 + alpha)) * (w @ j))


@settings(max_examples=20, deadline=None)
@given(
    m=st.integers(1, 7),
    alpha=st.sampled_from([0.5, 1.0, 2.0]),
    seed=st.integers(0, 10**6),
)
def test_matches_torchjd(m, alpha, seed):
    pytest.importorskip("scipy")
    aggregation = pytest.importorskip("torchjd.aggregation")
    j = random_jacobian(m, 12, seed)
    k = j @ j.T
    ours = FairGrad(alpha=alpha, reg_eps=0.0)(step_of(k)).weights
    ref = aggregation.FairGradWeighting(alpha=alpha)(k)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=0)


def test_device_placement_agrees_with_the_host():
    j = random_jacobian(5, 9, seed=3)
    k = j @ j.T
    host = FairGrad()(step_of(k)).weights
    device = FairGrad(placement="device")(step_of(k)).weights
    torch.testing.assert_close(device, host, rtol=1e-10, atol=0)
    f32 = FairGrad(placement="device")(step_of(k.float())).weights
    assert f32 is not None and f32.dtype == torch.float32
    torch.testing.assert_close(f32.double(), host, rtol=1e-4, atol=0)


def test_opposite_and_zero_gradients_stay_finite():
    # g2 = −g1: no solution without the ridge; with it w1 = w2 = 1/√ε and the update is 0
    j = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=F64)
    w = fairgrad_weights(j @ j.T, reg_eps=1e-6)
    torch.testing.assert_close(w, torch.full((2,), 1e3, dtype=F64))
    torch.testing.assert_close(w @ j, torch.zeros(2, dtype=F64))
    zero = fairgrad_weights(torch.zeros(3, 3, dtype=F64))
    assert bool(torch.isfinite(zero).all())
    j3 = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]], dtype=F64)
    w3 = fairgrad_weights(j3 @ j3.T)
    assert bool(torch.isfinite(w3).all()) and float(w3[1]) > 100 * float(w3[0])


def test_alpha_zero_is_uniform():
    k = torch.tensor([[4.0, -1.0], [-1.0, 1.0]], dtype=F64)
    torch.testing.assert_close(
        FairGrad(alpha=0.0)(step_of(k)).weights, torch.full((2,), 0.5, dtype=F64)
    )


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="alpha"):
        FairGrad(alpha=-1.0)
    with pytest.raises(ValueError, match="max_iter"):
        FairGrad(max_iter=0)
