"""ConFIG: hand-worked cases, the non-conflict and equal-cosine properties, torchjd as an oracle."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gradsurgery.methods.base import TaskStep
from gradsurgery.methods.config import ConFIG, config_weights
from gradsurgery.methods.registry import create_method

F64 = torch.float64


def update(method: ConFIG, j: torch.Tensor, tasks=None, num_tasks=None) -> torch.Tensor:
    m = j.shape[0]
    step = TaskStep(
        torch.ones(m, dtype=j.dtype),
        torch.arange(m) if tasks is None else tasks,
        m if num_tasks is None else num_tasks,
        0,
        gramian=j @ j.T,
    )
    agg = method(step)
    assert agg.weights is not None
    torch.testing.assert_close(agg.task_specific_weights, torch.ones(m, dtype=j.dtype))
    return agg.weights @ j


def random_jacobian(m: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    j = torch.randn(m, d, generator=g, dtype=F64) * (
        torch.rand(m, 1, generator=g, dtype=F64) * 5 + 0.1
    )
    return j - 0.5 * torch.randn(d, generator=g, dtype=F64)


def test_registered():
    assert isinstance(create_method("config"), ConFIG)


def test_two_tasks_by_hand():
    # g1 = (2, 0), g2 = (0, 3): û = e1, e2, x = (1, 1); length Σ g_iᵀx̂ = (2 + 3)/√2: Δθ = (2.5, 2.5)
    j = torch.tensor([[2.0, 0.0], [0.0, 3.0]], dtype=F64)
    torch.testing.assert_close(update(ConFIG(), j), torch.tensor([2.5, 2.5], dtype=F64))
    # g1 = (1, 0), g2 = (−1, 1): x = (1, 1 + √2) solves û_iᵀx = 1
    j = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=F64)
    x = torch.tensor([1.0, 1.0 + math.sqrt(2)], dtype=F64)
    xh = x / x.norm()
    torch.testing.assert_close(update(ConFIG(), j), (j @ xh).sum() * xh)


def test_three_tasks_by_hand():
    # orthonormal e1, e2, e3 scaled by 1, 2, 3: x = (1, 1, 1), length (1 + 2 + 3)/√3: Δθ = 2 (1, 1, 1)
    j = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=F64))
    torch.testing.assert_close(update(ConFIG(), j), torch.full((3,), 2.0, dtype=F64))
    # preferences (1, 2, 1) in a plane: g1 = e1, g2 = e2, g3 = (e1 + e2)/√2 · 4 (dependent rows, but
    # U x = p is consistent for p = (1, 1, √2)): x = (1, 1) has cosines 1, 1, √2
    j = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2 * math.sqrt(2), 2 * math.sqrt(2)]], dtype=F64)
    p = torch.tensor([1.0, 1.0, math.sqrt(2)], dtype=F64)
    d = update(ConFIG(pref_vector=p), j)
    torch.testing.assert_close(d / d.norm(), torch.tensor([1.0, 1.0], dtype=F64) / math.sqrt(2))


@settings(max_examples=30, deadline=None)
@given(m=st.integers(1, 8), extra=st.integers(0, 10), seed=st.integers(0, 10**6))
def test_non_negative_inner_product_with_every_task(m, extra, seed):
    j = random_jacobian(m, m + extra, seed)  # d ≥ m: independent rows
    d = update(ConFIG(), j)
    inner = j @ d
    assert bool((inner >= -1e-9 * inner.abs().max()).all())
    cosines = inner / (j.norm(dim=1) * d.norm())
    torch.testing.assert_close(cosines, cosines[0].expand(m))  # the same cosine with every task


@settings(max_examples=25, deadline=None)
@given(
    m=st.integers(1, 8),
    d=st.integers(1, 12),
    seed=st.integers(0, 10**6),
    pref=st.booleans(),
)
def test_matches_torchjd(m, d, seed, pref):
    aggregation = pytest.importorskip("torchjd.aggregation")
    j = random_jacobian(m, d, seed)
    p = (
        (torch.rand(m, generator=torch.Generator().manual_seed(seed)) + 0.5).double()  # fp32 buffer
        if pref
        else None
    )
    units = j / j.norm(dim=1, keepdim=True)
    sv = torch.linalg.svdvals(units)
    # C = U Uᵀ squares U's condition number (see the module docstring): compare where it is modest
    assume(m > min(m, d) or float(sv[-1] / sv[0]) > 1e-3)
    ours = update(ConFIG(pref_vector=p), j)
    ref = aggregation.ConFIG(pref_vector=p)(j)
    torch.testing.assert_close(ours, ref, rtol=1e-7, atol=1e-8 * float(j.abs().max()))


def test_zero_gradients():
    j = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]], dtype=F64)
    w = config_weights(j @ j.T, torch.ones(3, dtype=F64))
    assert float(w[1]) == 0.0
    torch.testing.assert_close(w @ j, torch.tensor([1.5, 1.5], dtype=F64))
    torch.testing.assert_close(config_weights(torch.zeros(2, 2), torch.ones(2)), torch.zeros(2))


def test_device_placement_and_absent_tasks():
    j = random_jacobian(4, 6, seed=2)
    host = update(ConFIG(), j)
    torch.testing.assert_close(update(ConFIG(placement="device"), j), host)
    # tasks 0 and 2 of 3 present: their preferences (1, 3) rescaled; the direction is the same
    pref = torch.tensor([1.0, 5.0, 3.0])
    sub = update(ConFIG(pref_vector=pref), j[:2], tasks=torch.tensor([0, 2]), num_tasks=3)
    want = update(ConFIG(pref_vector=[1.0, 3.0]), j[:2])
    torch.testing.assert_close(sub / sub.norm(), want / want.norm())


def test_preferences_orthogonal_to_the_span_give_no_update():
    """m > d with p orthogonal to the unit gradients' span: x = U⁺p is 0, so is the update (as
    torchjd gives); rounding noise must not be normalised into a direction (hypothesis found
    m = 4, d = 1 off by 4.26)."""
    j = torch.tensor([[1.0], [2.0], [-1.0], [-3.0]], dtype=F64)  # units +1, +1, −1, −1
    torch.testing.assert_close(update(ConFIG(), j), torch.zeros(1, dtype=F64))
    aggregation = pytest.importorskip("torchjd.aggregation")
    torch.testing.assert_close(aggregation.ConFIG()(j), torch.zeros(1, dtype=F64))
