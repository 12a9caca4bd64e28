"""Dynamic Weight Average (MTAN, Liu et al. 2019): epoch bookkeeping and the weight formula."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from gradsurgery import MultiTaskBackward
from gradsurgery.methods.base import TaskStep
from gradsurgery.methods.dwa import DynamicWeightAverage
from gradsurgery.methods.registry import create_method


def _step(losses, tasks=None, num_tasks=None, dtype=torch.float32):
    losses = torch.as_tensor(losses, dtype=dtype)
    tasks = torch.arange(len(losses)) if tasks is None else torch.as_tensor(tasks)
    return TaskStep(losses=losses, tasks=tasks, num_tasks=num_tasks or len(losses), step=0)


def mtan_weights(
    epoch_losses: list[list[list[float]]], temperature: float = 2.0
) -> list[list[float]]:
    """The MTAN loop: ``epoch_losses[e][k]`` is step ``k``'s loss vector; weights of every epoch."""
    n = len(epoch_losses[0][0])
    avg = [[sum(step[i] for step in ep) / len(ep) for i in range(n)] for ep in epoch_losses]
    out = []
    for e in range(len(epoch_losses)):
        if e < 2:
            out.append([1.0] * n)
            continue
        r = [avg[e - 1][i] / avg[e - 2][i] for i in range(n)]
        z = sum(math.exp(x / temperature) for x in r)
        out.append([n * math.exp(x / temperature) / z for x in r])
    return out


# ---------------------------------------------------------------- hand-worked cases


def test_weights_after_two_epochs_by_hand():
    dwa = DynamicWeightAverage(num_tasks=2, epoch_length=2)
    # epoch 0: averages (2, 1); epoch 1: averages (1, 1)  ->  r = (0.5, 1)
    for losses in ([3.0, 1.0], [1.0, 1.0], [1.5, 0.5], [0.5, 1.5]):
        assert dwa(_step(losses)).weights.tolist() == [1.0, 1.0]
    w = dwa(_step([9.0, 9.0])).weights
    e1, e2 = math.exp(0.25), math.exp(0.5)
    assert w.tolist() == pytest.approx([2 * e1 / (e1 + e2), 2 * e2 / (e1 + e2)], rel=1e-6)
    assert w.sum().item() == pytest.approx(2.0)


@settings(max_examples=25, deadline=None)
@given(
    data=st.lists(
        st.lists(st.lists(st.floats(0.05, 10.0), min_size=3, max_size=3), min_size=3, max_size=3),
        min_size=3,
        max_size=5,
    )
)
def test_matches_the_mtan_loop(data):
    dwa = DynamicWeightAverage(num_tasks=3, epoch_length=3)
    expected = mtan_weights(data)
    for epoch, steps in enumerate(data):
        for losses in steps:
            w = dwa(_step(losses, dtype=torch.float64)).weights
            assert w.tolist() == pytest.approx(expected[epoch], rel=1e-9)


def test_end_epoch_call_equals_epoch_length():
    a = DynamicWeightAverage(num_tasks=2, epoch_length=3)
    b = DynamicWeightAverage(num_tasks=2)
    seq = [[1.0, 2.0], [1.2, 1.8], [0.9, 2.1]] * 3 + [[0.5, 0.5]]
    for k, losses in enumerate(seq):
        wa = a(_step(losses)).weights
        wb = b(_step(losses)).weights
        torch.testing.assert_close(wa, wb)
        if k % 3 == 2:
            b.end_epoch()
    assert a.epochs == b.epochs == 3


def test_no_epoch_boundary_means_weights_one():
    dwa = DynamicWeightAverage(num_tasks=3)
    for k in range(10):
        assert dwa(_step([1.0 / (k + 1), 1.0, 5.0])).weights.tolist() == [1.0, 1.0, 1.0]


def test_zero_losses_give_no_nan():
    dwa = DynamicWeightAverage(num_tasks=2, epoch_length=1)
    for losses in ([0.0, 1.0], [0.0, 0.5], [0.0, 0.25]):
        w = dwa(_step(losses)).weights
        assert torch.isfinite(w).all()
    # r = (1 by convention for a zero denominator, 0.5)
    e1, e2 = math.exp(0.5), math.exp(0.25)
    assert w.tolist() == pytest.approx([2 * e1 / (e1 + e2), 2 * e2 / (e1 + e2)], rel=1e-6)


def test_absent_tasks_keep_their_history_and_weights_cover_present_tasks():
    dwa = DynamicWeightAverage(num_tasks=3, epoch_length=1)
    dwa(_step([1.0, 1.0, 1.0]))  # epoch 0
    dwa(_step([0.5, 1.0], tasks=[0, 1], num_tasks=3))  # epoch 1: task 2 absent
    # task 2 has one epoch of history only: r_2 = 1; r_0 = 0.5, r_1 = 1
    w = dwa(_step([1.0, 1.0, 1.0])).weights
    z = [math.exp(0.25), math.exp(0.5), math.exp(0.5)]
    assert w.tolist() == pytest.approx([3 * v / sum(z) for v in z], rel=1e-6)
    # with task 1 absent: softmax over the two present tasks, summing to 2
    w2 = dwa.loss_weights(_step([1.0, 1.0], tasks=[0, 2], num_tasks=3))
    assert w2.sum().item() == pytest.approx(2.0)
    assert dwa.epochs_seen.tolist() == [3, 3, 2]


def test_single_task():
    dwa = DynamicWeightAverage(epoch_length=1)
    for loss in (3.0, 2.0, 1.0):
        assert dwa(_step([loss])).weights.tolist() == [1.0]


def test_state_dict_round_trip_mid_epoch():
    a = DynamicWeightAverage(num_tasks=2, epoch_length=3)
    seq = [[1.0, 2.0], [1.3, 1.7], [0.8, 2.2], [0.6, 1.9], [0.5, 1.8], [0.4, 1.7], [0.3, 1.6]]
    for losses in seq:
        a(_step(losses))
    b = DynamicWeightAverage(epoch_length=3)  # unbound: state allocated from the checkpoint
    b.load_state_dict(a.state_dict())
    assert b.steps_in_epoch == a.steps_in_epoch == 1
    for losses in ([0.2, 1.5], [0.2, 1.4], [0.1, 1.3], [0.1, 1.2]):
        torch.testing.assert_close(a(_step(losses)).weights, b(_step(losses)).weights)


def test_registered_and_validates_arguments():
    assert isinstance(create_method("dwa", epoch_length=5), DynamicWeightAverage)
    with pytest.raises(ValueError):
        DynamicWeightAverage(temperature=0.0)
    with pytest.raises(ValueError):
        DynamicWeightAverage(epoch_length=0)


# ---------------------------------------------------------------- end to end


def test_end_to_end_model_gradient_is_the_weighted_sum():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    ref = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    ref.load_state_dict(model.state_dict())
    mtl = MultiTaskBackward(model, "dwa", epoch_length=2)
    x = torch.randn(5, 3, dtype=torch.float64)
    y = torch.randn(5, 2, dtype=torch.float64)

    def losses_of(net, scale):
        return ((net(x) - scale * y) ** 2).mean(dim=0)

    for k in range(5):  # epochs 0, 1 and one step of epoch 2
        model.zero_grad()
        result = mtl.backward(losses_of(model, 1.0 + 0.3 * k))
    assert result.weights.tolist() != [1.0, 1.0]
    ref.zero_grad()
    (result.weights.double() * losses_of(ref, 1.0 + 0.3 * 4)).sum().backward()
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad)


def test_needs_epoch_boundaries_only_without_an_epoch_length():
    from gradsurgery.methods import method_names, refuse_without_epoch_boundaries

    assert DynamicWeightAverage().needs_epoch_boundaries
    assert not DynamicWeightAverage(epoch_length=3).needs_epoch_boundaries
    with pytest.raises(ValueError, match="never signals"):
        refuse_without_epoch_boundaries(DynamicWeightAverage(), "this loop")
    refuse_without_epoch_boundaries(DynamicWeightAverage(epoch_length=3), "this loop")
    epoch_based = {"dwa", "stch"}  # STCH: its warm-up and reference point are per epoch
    for name in method_names():  # every other method works in any loop; the hook is a no-op
        if name not in epoch_based:
            method = create_method(name)
            assert not method.needs_epoch_boundaries, name
            method.end_epoch()
    assert not create_method("stch", epoch_length=3).needs_epoch_boundaries
