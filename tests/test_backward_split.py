"""Issue 12 (2): which parameters are shared is checked, warned about, and followed when the
trainable set changes."""

import warnings

import pytest
import torch
from torch import nn

from gradsurgery import MultiTaskBackward


class Embedded(nn.Module):
    """A positional embedding outside the trunk, used by every task."""

    def __init__(self, m=2):
        super().__init__()
        torch.manual_seed(0)
        self.pos = nn.Parameter(torch.randn(4))
        self.trunk = nn.Linear(4, 4)
        self.heads = nn.ModuleList([nn.Linear(4, 1) for _ in range(m)])

    def forward(self, x):
        z = torch.tanh(self.trunk(x + self.pos))
        return [h(z).pow(2).mean() for h in self.heads]


def test_declared_task_specific_but_used_by_every_task_warns_once_naming_it():
    model, x = Embedded(), torch.randn(6, 4)
    mtl = MultiTaskBackward(model, "pcgrad", shared=model.trunk)
    with pytest.warns(UserWarning, match=r"several tasks on the same entries: pos\. "):
        mtl.backward(model(x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mtl.backward(model(x))  # once
        # the heads themselves (one task each) are not warned about
        MultiTaskBackward(model, "pcgrad", shared=[model.pos, *model.trunk.parameters()]).backward(
            model(x)
        )


class ReZero(nn.Module):
    """``z = x + alpha * f(x)`` with ``alpha = 0``: f gets no gradient on the first step."""

    def __init__(self, m=2):
        super().__init__()
        torch.manual_seed(0)
        self.f = nn.Linear(4, 4)
        self.alpha = nn.Parameter(torch.zeros(()))
        self.heads = nn.ModuleList([nn.Linear(4, 1) for _ in range(m)])

    def forward(self, x):
        z = x + self.alpha * torch.tanh(self.f(x))
        return [h(z).pow(2).mean() for h in self.heads]


def test_zero_initialised_adapter_becomes_shared_once_it_gets_gradient():
    model, x = ReZero(), torch.randn(6, 4)
    mtl = MultiTaskBackward(model, "pcgrad")
    mtl.backward(model(x))
    shared = {id(p) for p in mtl.shared_params}
    assert id(model.alpha) in shared and id(model.f.weight) not in shared
    with torch.no_grad():
        model.alpha.fill_(0.5)
    mtl.backward(model(x))
    mtl.backward(model(x))
    shared = {id(p) for p in mtl.shared_params}
    assert {id(model.alpha), id(model.f.weight), id(model.f.bias)} <= shared
    assert not shared & {id(p) for p in model.heads.parameters()}


def test_a_parameter_unfrozen_later_gets_its_gradient():
    model, x = Embedded(), torch.randn(6, 4)
    model.trunk.requires_grad_(False)
    mtl = MultiTaskBackward(model, "pcgrad")
    mtl.backward(model(x))
    assert model.trunk.weight.grad is None
    assert {id(p) for p in mtl.shared_params} == {id(model.pos)}
    model.trunk.requires_grad_(True)
    mtl.backward(model(x))
    assert model.trunk.weight.grad is not None
    assert id(model.trunk.weight) in {id(p) for p in mtl.shared_params}
    # a declared split follows too; tensors given as a list as well
    model.zero_grad(set_to_none=True)
    model.trunk.requires_grad_(False)
    params = list(model.parameters())
    mtl = MultiTaskBackward(params, "pcgrad", shared=[model.pos, *model.trunk.parameters()])
    mtl.backward(model(x))
    model.trunk.requires_grad_(True)
    mtl.backward(model(x))
    assert model.trunk.weight.grad is not None
    assert id(model.trunk.weight) in {id(p) for p in mtl.shared_params}


def test_a_parameter_added_later_is_followed_in_partitioned_steps():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    model[2].requires_grad_(False)
    x = torch.randn(6, 3, dtype=torch.float64)
    ids = torch.arange(6) % 2

    def loss_fn(mod, x):
        return mod(x).squeeze(1) ** 2

    mtl = MultiTaskBackward(model, "pcgrad", num_tasks=2)
    mtl.backward_partitioned(loss_fn, x, task_ids=ids)
    assert model[2].weight.grad is None
    model[2].requires_grad_(True)
    mtl.backward_partitioned(loss_fn, x, task_ids=ids)
    assert model[2].weight.grad is not None


def test_trainable_parameters_reached_but_not_in_params_warn_once():
    """A trainable parameter the losses reach but that is in neither set (left out of ``params``)
    would train under ``loss.backward()`` and silently not here: one warning at the first step."""
    model, x = Embedded(), torch.randn(6, 4)
    params = [p for p in model.parameters() if p is not model.pos]
    mtl = MultiTaskBackward(params, "pcgrad", shared=list(model.trunk.parameters()))
    with pytest.warns(
        UserWarning,
        match=r"1 trainable parameter\(s\) reached by the losses are not in params \(shapes \(4,\)\)",
    ):
        mtl.backward(model(x))
    assert model.pos.grad is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mtl.backward(model(x))  # once
        model.pos.requires_grad_(False)
        MultiTaskBackward(params, "sum").backward(model(x))  # frozen: nothing to say
