"""Krum / Multi-Krum: hand-worked cases, properties, small m, ties, torchjd as an oracle."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradsurgery.methods.base import TaskStep
from gradsurgery.methods.krum import Krum, krum_scores
from gradsurgery.methods.registry import create_method

F64 = torch.float64


def weights(method: Krum, g: torch.Tensor) -> torch.Tensor:
    m = g.shape[0]
    agg = method(TaskStep(torch.ones(m, dtype=g.dtype), torch.arange(m), m, 0, gramian=g @ g.T))
    assert agg.weights is not None
    return agg.weights


def test_registered():
    method = create_method("krum", n_byzantine=1, n_selected=2)
    assert isinstance(method, Krum) and method.requires == "gramian"


def test_two_tasks_by_hand():
    # m = 2, f = 0: no neighbour counted (m − f − 2 = 0), both scores 0: the tie goes to task 0
    g = torch.tensor([[1.0, 0.0], [0.0, 3.0]], dtype=F64)
    torch.testing.assert_close(weights(Krum(), g), torch.tensor([1.0, 0.0], dtype=F64))
    torch.testing.assert_close(weights(Krum(n_selected=2), g), torch.tensor([0.5, 0.5], dtype=F64))


def test_three_and_five_tasks_by_hand():
    # g = 0, 1, 10 on a line; one neighbour each: scores 1, 1, 9
    g = torch.tensor([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0]], dtype=F64)
    torch.testing.assert_close(krum_scores(g @ g.T, 0), torch.tensor([1.0, 1.0, 9.0], dtype=F64))
    torch.testing.assert_close(weights(Krum(), g), torch.tensor([1.0, 0.0, 0.0], dtype=F64))
    # five points 0, 1, 3, 4, 20 on a line, f = 1: two neighbours each
    x = torch.tensor([0.0, 1.0, 3.0, 4.0, 20.0], dtype=F64).unsqueeze(1)
    scores = krum_scores(x @ x.T, 1)
    torch.testing.assert_close(scores, torch.tensor([4.0, 3.0, 3.0, 4.0, 33.0], dtype=F64))
    torch.testing.assert_close(
        krum_scores(x @ x.T, 1, squared=True),
        torch.tensor([10.0, 5.0, 5.0, 10.0, 545.0], dtype=F64),
    )
    w = weights(Krum(n_byzantine=1, n_selected=3), x)
    torch.testing.assert_close(w, torch.tensor([1 / 3, 1 / 3, 1 / 3, 0.0, 0.0], dtype=F64))


@settings(max_examples=25, deadline=None)
@given(
    m=st.integers(1, 10),
    d=st.integers(1, 8),
    f=st.integers(0, 3),
    k=st.integers(1, 4),
    seed=st.integers(0, 10**6),
)
def test_weights_average_the_lowest_scores(m, d, f, k, seed):
    g = torch.randn(m, d, generator=torch.Generator().manual_seed(seed), dtype=F64)
    w = weights(Krum(f, k), g)
    kk = min(k, m)
    torch.testing.assert_close(w.sum(), torch.tensor(1.0, dtype=F64))
    chosen = w > 0
    assert int(chosen.sum()) == kk
    scores = krum_scores(g @ g.T, f)
    if kk < m:
        assert float(scores[chosen].max()) <= float(scores[~chosen].min()) + 1e-12


def test_an_outlier_is_never_selected():
    gen = torch.Generator().manual_seed(0)
    g = torch.randn(6, 4, generator=gen, dtype=F64) * 0.1 + 1.0
    g[2] = 100.0
    for k in (1, 2, 3, 4):
        assert float(weights(Krum(1, k), g)[2]) == 0.0


@settings(max_examples=25, deadline=None)
@given(
    f=st.integers(0, 3),
    extra=st.integers(4, 7),
    k=st.integers(1, 3),
    d=st.integers(2, 8),
    seed=st.integers(0, 10**6),
)
def test_matches_torchjd(f, extra, k, d, seed):
    # at least two neighbours (m − f − 2 ≥ 2), so scores do not tie for random gradients
    aggregation = pytest.importorskip("torchjd.aggregation")
    m = f + extra
    g = torch.randn(m, d, generator=torch.Generator().manual_seed(seed), dtype=F64)
    k = min(k, m)
    ref = aggregation.KrumWeighting(n_byzantine=f, n_selected=k)(g @ g.T)
    torch.testing.assert_close(weights(Krum(f, k), g), ref)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="n_byzantine"):
        Krum(-1)
    with pytest.raises(ValueError, match="n_selected"):
        Krum(0, 0)
