"""Trimmed mean: hand-worked cases, properties, small-m trimming, torchjd as an oracle."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradsurgery.jacobian import TaskJacobian
from gradsurgery.methods.base import TaskStep
from gradsurgery.methods.registry import create_method
from gradsurgery.methods.trimmed_mean import TrimmedMean, trimmed_mean_block

F64 = torch.float64


def update(method: TrimmedMean, *blocks: torch.Tensor) -> list[torch.Tensor]:
    m = blocks[0].shape[0]
    jac = TaskJacobian(list(blocks))
    step = TaskStep(torch.ones(m, dtype=F64), torch.arange(m), m, 0, jacobian=jac)
    agg = method(step)
    assert agg.update is not None
    torch.testing.assert_close(agg.task_specific_weights, torch.ones(m, dtype=F64))
    return agg.update


def test_registered_and_needs_the_jacobian():
    method = create_method("trimmed_mean", trim_number=2)
    assert isinstance(method, TrimmedMean) and method.requires == "jacobian"


def test_two_tasks_by_hand_is_the_mean():
    # m = 2 < 2t + 1 = 3: the trim is lowered to 0, the mean
    g = torch.tensor([[1.0, -4.0], [3.0, 2.0]], dtype=F64)
    (out,) = update(TrimmedMean(1), g)
    torch.testing.assert_close(out, torch.tensor([2.0, -1.0], dtype=F64))


def test_three_tasks_by_hand_is_the_median_per_coordinate():
    g = torch.tensor([[1.0, 7.0, 0.0], [-2.0, 5.0, 0.0], [4.0, 6.0, -1.0]], dtype=F64)
    (out,) = update(TrimmedMean(1), g)
    torch.testing.assert_close(out, torch.tensor([1.0, 6.0, 0.0], dtype=F64))
    (mean,) = update(TrimmedMean(0), g)
    torch.testing.assert_close(mean, g.mean(0))


def test_blocks_of_any_shape():
    a = torch.arange(24, dtype=F64).reshape(4, 2, 3)
    b = torch.tensor([[5.0], [-1.0], [2.0], [100.0]], dtype=F64)
    out = update(TrimmedMean(1), a, b)
    torch.testing.assert_close(out[0], a[1:3].mean(0))  # rows already sorted per coordinate
    torch.testing.assert_close(out[1], torch.tensor([3.5], dtype=F64))  # mean of 2 and 5


@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 9), d=st.integers(1, 12), t=st.integers(0, 4), seed=st.integers(0, 10**6))
def test_within_the_kept_range_and_permutation_invariant(m, d, t, seed):
    g = torch.randn(m, d, generator=torch.Generator().manual_seed(seed), dtype=F64)
    out = trimmed_mean_block(g, t)
    s = torch.sort(g, dim=0).values
    tt = min(t, (m - 1) // 2)
    assert bool((out >= s[tt] - 1e-12).all()) and bool((out <= s[m - 1 - tt] + 1e-12).all())
    perm = torch.randperm(m, generator=torch.Generator().manual_seed(seed + 1))
    torch.testing.assert_close(trimmed_mean_block(g[perm], t), out)


def test_robust_to_one_outlier():
    g = torch.tensor([[1.0], [1.1], [0.9], [1e6]], dtype=F64)
    torch.testing.assert_close(trimmed_mean_block(g, 1), torch.tensor([1.05], dtype=F64))


@settings(max_examples=20, deadline=None)
@given(
    t=st.integers(0, 3), extra=st.integers(1, 5), d=st.integers(1, 12), seed=st.integers(0, 10**6)
)
def test_matches_torchjd(t, extra, d, seed):
    aggregation = pytest.importorskip("torchjd.aggregation")
    m = 2 * t + extra
    g = torch.randn(m, d, generator=torch.Generator().manual_seed(seed), dtype=F64)
    torch.testing.assert_close(trimmed_mean_block(g, t), aggregation.TrimmedMean(t)(g))


def test_half_precision_is_averaged_in_float32():
    g = torch.tensor([[256.0], [1.0], [1.0]], dtype=torch.bfloat16)
    out = trimmed_mean_block(g, 0)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), torch.tensor([86.0]))


def test_negative_trim_is_refused():
    with pytest.raises(ValueError, match="non-negative"):
        TrimmedMean(-1)
