"""STCH: the warm-up, the reference point, hand-worked weights, the μ → 0 limit, state, engine."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradsurgery import MultiTaskBackward
from gradsurgery.methods.registry import create_method
from gradsurgery.methods.stch import STCH, stch_objective, stch_weights
from tests.methods.steps import loss_step as step_of

F64 = torch.float64


def test_registered_and_requires_only_losses():
    method = create_method("stch", mu=0.5, epoch_length=10)
    assert isinstance(method, STCH) and method.requires == "losses"
    assert not method.needs_epoch_boundaries and STCH().needs_epoch_boundaries


def test_two_tasks_warm_up_then_stch_by_hand():
    # W = 1, one step per epoch: epoch 0 log losses; epoch 1 log losses and z; epoch 2 STCH
    method = STCH(mu=1.0, warmup_epochs=1, epoch_length=1)
    w0 = method(step_of([2.0, 4.0])).weights
    torch.testing.assert_close(w0, torch.tensor([0.5, 0.25], dtype=F64))  # ∇ Σ log L_i
    w1 = method(step_of([1.0, 2.0])).weights  # z = (1, 2)
    torch.testing.assert_close(w1, torch.tensor([1.0, 0.5], dtype=F64))
    # L = (e, 2): ℓ = (1, 0), p = (e, 1)/(e + 1), w = 2 p / L
    w2 = method(step_of([math.e, 2.0])).weights
    p = torch.tensor([math.e, 1.0], dtype=F64) / (math.e + 1)
    torch.testing.assert_close(w2, 2 * p / torch.tensor([math.e, 2.0], dtype=F64))
    # z stays fixed afterwards
    torch.testing.assert_close(method(step_of([math.e, 2.0])).weights, w2)


def test_three_tasks_weights_are_the_gradient_of_the_objective():
    losses = torch.tensor([0.5, 2.0, 1.5], dtype=F64, requires_grad=True)
    nadir = torch.tensor([1.0, 4.0, 0.5], dtype=F64)
    (3 * stch_objective(losses, nadir, mu=0.3)).backward()
    torch.testing.assert_close(stch_weights(losses.detach(), nadir, mu=0.3), losses.grad)
    # by hand: ℓ = log(0.5, 0.5, 3), p = softmax(ℓ/μ)
    ell = torch.log(torch.tensor([0.5, 0.5, 3.0], dtype=F64))
    p = torch.softmax(ell / 0.3, 0)
    torch.testing.assert_close(losses.grad, 3 * p / losses.detach())


@settings(max_examples=30, deadline=None)
@given(
    losses=st.lists(st.floats(1e-3, 1e3), min_size=1, max_size=8),
    mu=st.floats(1e-3, 10.0),
)
def test_between_the_max_and_the_max_plus_mu_log_m(losses, mu):
    loss = torch.tensor(losses, dtype=F64)
    nadir = torch.ones_like(loss)
    top = torch.log(loss).max()
    value = stch_objective(loss, nadir, mu)
    assert float(top) - 1e-9 <= float(value) <= float(top) + mu * math.log(len(losses)) + 1e-9


@settings(max_examples=30, deadline=None)
@given(losses=st.lists(st.floats(0.1, 10.0), min_size=2, max_size=6, unique=True))
def test_tends_to_tchebycheff_as_mu_goes_to_zero(losses):
    loss = torch.tensor(losses, dtype=F64)
    nadir = torch.ones_like(loss)
    top = int(torch.argmax(loss))
    gap = float(torch.log(loss).sort(descending=True).values[:2].diff().abs())
    mu = gap / 50  # e^{-50}: the max to double precision
    torch.testing.assert_close(stch_objective(loss, nadir, mu), torch.log(loss).max())
    w = stch_weights(loss, nadir, mu)  # m ∇ max_i log L_i = m e_top / L_top
    want = torch.zeros_like(loss)
    want[top] = len(losses) / loss[top]
    torch.testing.assert_close(w, want)


def test_absent_tasks_and_an_unseen_nadir():
    method = STCH(warmup_epochs=0, epoch_length=1)
    method(step_of([2.0, 8.0], tasks=[0, 2], num_tasks=3))  # epoch 0: z_0 = 2, z_2 = 8, z_1 unseen
    w = method.loss_weights(step_of([2.0, 1.0], tasks=[0, 1], num_tasks=3))
    # ℓ = (log 1, log 1): p = ½ each; w = 2 · ½ / L
    torch.testing.assert_close(w, torch.tensor([0.5, 1.0], dtype=F64))


def test_end_epoch_without_epoch_length():
    method = STCH(warmup_epochs=0)
    method(step_of([1.0, 1.0]))
    assert method.warming_up
    method.end_epoch()
    assert not method.warming_up


def test_state_dict_round_trip():
    a = STCH(warmup_epochs=1, epoch_length=2)
    for losses in ([1.0, 2.0], [2.0, 2.0], [3.0, 1.0], [1.0, 3.0]):
        a(step_of(losses))
    b = STCH(warmup_epochs=1, epoch_length=2)
    b.load_state_dict(a.state_dict())
    assert b.epochs == a.epochs == 2
    step = step_of([0.7, 0.9])
    torch.testing.assert_close(b.loss_weights(step), a.loss_weights(step), rtol=0, atol=0)


def test_through_multitask_backward():
    w = torch.zeros(2, dtype=F64, requires_grad=True)
    J = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64)
    c = torch.tensor([2.0, 0.5], dtype=F64)
    mtl = MultiTaskBackward([w], STCH(warmup_epochs=0, epoch_length=1), num_tasks=2)
    # epoch 0: w = 1/L (warm-up), z = c; epoch 1 at L = (e, 1) c: ℓ = (1, 0), w = 2 p / L
    p = torch.tensor([math.e, 1.0], dtype=F64) / (math.e + 1)
    for scale, want in (
        (torch.ones(2, dtype=F64), 1 / c),
        (torch.tensor([math.e, 1.0], dtype=F64), 2 * p / (c * torch.tensor([math.e, 1.0]))),
    ):
        mtl.backward([scale[i] * c[i] + (J[i] * (w - w.detach())).sum() for i in range(2)])
        assert w.grad is not None
        torch.testing.assert_close(w.grad, want)
        w.grad = None
    assert mtl.method.epochs == 2


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="mu"):
        STCH(mu=0.0)
    with pytest.raises(ValueError, match="warmup"):
        STCH(warmup_epochs=-1)
