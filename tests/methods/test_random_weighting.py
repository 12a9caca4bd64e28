"""Random (torchjd's aggregator): support, seeding, heads, state, torchjd as an oracle."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradsurgery.methods.base import TaskStep
from gradsurgery.methods.random_weighting import Random
from gradsurgery.methods.registry import create_method
from gradsurgery.methods.rlw import RLW

F64 = torch.float64


def step_of(m: int, dtype: torch.dtype = F64, tasks=None, num_tasks=None) -> TaskStep:
    return TaskStep(
        losses=torch.ones(m, dtype=dtype),
        tasks=torch.arange(m) if tasks is None else tasks,
        num_tasks=m if num_tasks is None else num_tasks,
        step=0,
        gramian=torch.eye(m, dtype=dtype),
    )


def test_registered_and_needs_the_gramian():
    method = create_method("random", seed=3)
    assert isinstance(method, Random) and method.requires == "gramian"


def test_two_and_three_tasks_by_hand():
    # the weights are softmax of the generator's N(0, 1) draw, heads get weight 1
    for m in (2, 3):
        draw = torch.randn(m, generator=torch.Generator().manual_seed(7), dtype=F64)
        agg = Random(seed=7)(step_of(m))
        torch.testing.assert_close(agg.weights, torch.exp(draw) / torch.exp(draw).sum())
        torch.testing.assert_close(agg.task_specific_weights, torch.ones(m, dtype=F64))


@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 12), seed=st.integers(0, 10**6))
def test_weights_are_positive_on_the_simplex(m, seed):
    w = Random(seed=seed)(step_of(m)).weights
    assert w is not None and bool((w > 0).all())
    torch.testing.assert_close(w.sum(), torch.tensor(1.0, dtype=F64))


@settings(max_examples=20, deadline=None)
@given(m=st.integers(1, 10), d=st.integers(1, 10), seed=st.integers(0, 10**6))
def test_matches_torchjd_after_manual_seed(m, d, seed):
    aggregation = pytest.importorskip("torchjd.aggregation")
    jac = torch.randn(m, d, generator=torch.Generator().manual_seed(seed + 1), dtype=F64)
    ours = Random(seed=seed)(step_of(m)).weights
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        ref = aggregation.RandomWeighting()(jac)
    finally:
        torch.random.set_rng_state(state)
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)


def test_same_shared_weights_as_rlw_normal():
    ours = Random(seed=5)(step_of(4)).weights
    rlw = RLW("normal", seed=5).loss_weights(step_of(4))
    torch.testing.assert_close(ours, rlw)


def test_fresh_draw_every_step_and_state_round_trip():
    a = Random(seed=0)
    first = a(step_of(3)).weights
    b = Random(seed=1)
    b.load_state_dict(a.state_dict())
    second = a(step_of(3)).weights
    assert not torch.equal(first, second)
    torch.testing.assert_close(b(step_of(3)).weights, second, rtol=0, atol=0)


def test_absent_tasks_and_float32():
    agg = Random(seed=0)(step_of(2, torch.float32, tasks=torch.tensor([1, 3]), num_tasks=4))
    assert agg.weights is not None and agg.weights.shape == (2,)
    assert agg.weights.dtype == torch.float32
