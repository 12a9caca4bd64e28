"""Constant: fixed weights by hand, absent tasks, state, errors, torchjd as an oracle."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradsurgery.methods.constant import Constant
from gradsurgery.methods.registry import create_method
from tests.methods.steps import loss_step as step_of

F64 = torch.float64


def test_registered_and_requires_only_losses():
    method = create_method("constant", weights=[1.0, 2.0])
    assert isinstance(method, Constant) and method.requires == "losses"


def test_two_tasks_by_hand():
    agg = Constant([0.25, 3.0])(step_of([1.0, 5.0]))
    assert agg.weights is not None
    torch.testing.assert_close(agg.weights, torch.tensor([0.25, 3.0], dtype=F64))
    torch.testing.assert_close(agg.task_specific_weights, agg.weights)
    # the update of the losses 1·(x) and 5·(y) is ∇(0.25 L1 + 3 L2)


def test_three_tasks_with_one_absent_keep_their_own_weights():
    w = Constant([0.5, 9.0, 2.0]).loss_weights(step_of([1.0, 1.0], tasks=[0, 2], num_tasks=3))
    torch.testing.assert_close(w, torch.tensor([0.5, 2.0], dtype=F64))


def test_default_is_the_sum():
    torch.testing.assert_close(
        Constant().loss_weights(step_of([3.0, 4.0, 5.0])), torch.ones(3, dtype=F64)
    )


@settings(max_examples=25, deadline=None)
@given(
    weights=st.lists(st.floats(-10, 10, allow_nan=False), min_size=1, max_size=8),
    seed=st.integers(0, 10**6),
)
def test_weights_do_not_depend_on_the_losses(weights, seed):
    losses = torch.rand(len(weights), generator=torch.Generator().manual_seed(seed), dtype=F64)
    method = Constant(weights)
    torch.testing.assert_close(
        method.loss_weights(step_of(losses)), torch.tensor(weights, dtype=F64)
    )


@settings(max_examples=20, deadline=None)
@given(m=st.integers(1, 8), d=st.integers(1, 10), seed=st.integers(0, 10**6))
def test_matches_torchjd(m, d, seed):
    aggregation = pytest.importorskip("torchjd.aggregation")
    g = torch.Generator().manual_seed(seed)
    jac = torch.randn(m, d, generator=g, dtype=F64)
    weights = torch.randn(m, generator=g, dtype=F64)
    ours = Constant(weights).loss_weights(step_of(torch.ones(m)))
    torch.testing.assert_close(ours @ jac, aggregation.Constant(weights)(jac))


def test_state_dict_carries_the_weights():
    a = Constant([1.0, 2.0, 3.0])
    b = Constant([0.0, 0.0, 0.0])
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(
        b.loss_weights(step_of([1.0, 1.0, 1.0])), torch.tensor([1.0, 2.0, 3.0], dtype=F64)
    )


def test_bad_weights_are_refused():
    with pytest.raises(ValueError, match="non-empty vector"):
        Constant([[1.0]])
    with pytest.raises(ValueError, match="finite"):
        Constant([1.0, float("nan")])
    with pytest.raises(ValueError, match="one weight per task"):
        Constant([1.0, 2.0]).loss_weights(step_of([1.0, 1.0, 1.0]))
