"""GLS: hand-worked weights, the geometric-mean gradient (LibMTL's objective as oracle), Euler's
identity, edge cases, the engine and the toy."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradsurgery import MultiTaskBackward
from gradsurgery.methods.gls import GLS, gls_weights
from gradsurgery.methods.registry import create_method
from gradsurgery.toy.runner import run_toy
from tests.methods.steps import loss_step as step_of

F64 = torch.float64


def test_registered_and_requires_only_losses():
    method = create_method("gls")
    assert isinstance(method, GLS) and method.requires == "losses"
    assert method.single_task == "exact" and method.scale_degree == 1


def test_two_tasks_by_hand():
    # L = (1, 4): G = 2, w = G / (2 L) = (1, 1/4)
    agg = GLS()(step_of([1.0, 4.0]))
    assert agg.weights is not None
    torch.testing.assert_close(agg.weights, torch.tensor([1.0, 0.25], dtype=F64))
    torch.testing.assert_close(agg.task_specific_weights, agg.weights)


def test_three_tasks_by_hand():
    # L = (1, 2, 4): G = 8^(1/3) = 2, w = 2 / (3 L) = (2/3, 1/3, 1/6)
    w = gls_weights(torch.tensor([1.0, 2.0, 4.0], dtype=F64))
    torch.testing.assert_close(w, torch.tensor([2 / 3, 1 / 3, 1 / 6], dtype=F64))


def test_one_task_is_exactly_plain_training():
    assert gls_weights(torch.tensor([3.7], dtype=F64)).item() == 1.0
    assert gls_weights(torch.tensor([3.7])).item() == 1.0


@settings(max_examples=40, deadline=None)
@given(losses=st.lists(st.floats(1e-3, 1e3), min_size=1, max_size=8))
def test_weights_are_the_gradient_of_the_geometric_mean(losses):
    """Oracle: autograd of LibMTL's objective ``(Π L_i)^(1/m)``."""
    x = torch.tensor(losses, dtype=F64, requires_grad=True)
    torch.pow(x.prod(), 1.0 / len(losses)).backward()
    assert x.grad is not None
    torch.testing.assert_close(gls_weights(x.detach()), x.grad, rtol=1e-10, atol=0.0)


@settings(max_examples=40, deadline=None)
@given(
    losses=st.lists(st.floats(1e-3, 1e3), min_size=1, max_size=8),
    scale=st.floats(1e-3, 1e3),
)
def test_euler_identity_and_invariance_to_a_common_loss_scale(losses, scale):
    x = torch.tensor(losses, dtype=F64)
    w = gls_weights(x)
    geo = math.exp(sum(math.log(v) for v in losses) / len(losses))
    assert (w > 0).all()
    torch.testing.assert_close((w * x).sum(), torch.tensor(geo, dtype=F64), rtol=1e-10, atol=0.0)
    torch.testing.assert_close(w * x, torch.full_like(x, geo / len(losses)), rtol=1e-10, atol=0.0)
    # scaling every loss by s leaves the weights unchanged (G and L_i scale alike)
    torch.testing.assert_close(gls_weights(x * scale), w, rtol=1e-10, atol=0.0)


def test_equal_losses_give_the_mean():
    torch.testing.assert_close(
        gls_weights(torch.full((5,), 0.3, dtype=F64)), torch.full((5,), 0.2, dtype=F64)
    )


def test_many_tasks_do_not_overflow_and_nonpositive_losses_stay_finite():
    big = gls_weights(torch.full((400,), 1e300, dtype=F64))  # Π L overflows; the logs do not
    torch.testing.assert_close(big, torch.full((400,), 1 / 400, dtype=F64))
    w = gls_weights(torch.tensor([-2.0, 8.0, 0.0], dtype=F64))
    assert torch.isfinite(w).all() and w[0] < 0 and w[1] > 0 and w[2] > 0


def test_engine_update_is_the_geometric_mean_gradient():
    torch.manual_seed(0)
    w = torch.randn(4, dtype=F64, requires_grad=True)
    a, b = torch.randn(2, 4, dtype=F64)
    losses = [(w @ a) ** 2 + 1.0, (w @ b) ** 2 + 2.0]
    mtl = MultiTaskBackward([w], "gls", shared=[w], num_tasks=2)
    mtl.backward(losses)
    assert w.grad is not None
    got = w.grad.clone()
    w.grad = None
    losses = [(w @ a) ** 2 + 1.0, (w @ b) ** 2 + 2.0]
    torch.sqrt(losses[0] * losses[1]).backward()
    torch.testing.assert_close(got, w.grad)


def test_toy_runs():
    res = run_toy("pcgrad_figure1", "gls", steps=50)
    assert math.isfinite(float(res.losses[-1].sum()))
