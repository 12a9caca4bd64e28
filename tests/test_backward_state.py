"""Issue 12 (8): the method's own parameters, .to(), checkpoints, and random methods that leave
the user's random stream alone."""

import pytest
import torch
from torch import nn

from gradsurgery import MultiTaskBackward


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3))


def _losses(model, seed=1):
    out = model(torch.randn(5, 3, generator=torch.Generator().manual_seed(seed)))
    return [out[:, k].pow(2).mean() for k in range(3)]


def test_parameters_to_and_checkpoint_of_the_methods_own_state():
    model = _model()
    mtl = MultiTaskBackward(model, "uw", num_tasks=3)
    own = list(mtl.parameters())
    assert own and all(p.requires_grad for p in own)
    assert list(MultiTaskBackward(model, "pcgrad").parameters()) == []
    opt = torch.optim.SGD([*model.parameters(), *mtl.parameters()], lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        mtl.backward(_losses(model))
        opt.step()
    state = mtl.state_dict()
    assert any(torch.equal(v, own[0]) for v in state["method"].values() if torch.is_tensor(v))
    fresh = MultiTaskBackward(_model(), "uw", num_tasks=3)
    kept = list(fresh.parameters())
    fresh.load_state_dict(state)
    assert kept[0] is next(iter(fresh.parameters()))  # in place: an optimizer keeps it
    torch.testing.assert_close(kept[0], own[0])
    assert fresh.to(torch.float64) is fresh
    assert next(iter(fresh.parameters())).dtype == torch.float64


@pytest.mark.parametrize(
    ("method", "kwargs"), [("pcgrad", {}), ("rlw", {}), ("graddrop", {}), ("gradvac", {})]
)
def test_random_methods_leave_the_global_random_stream_alone(method, kwargs):
    model = _model()
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    mtl = MultiTaskBackward(model, method, **kwargs)
    mtl.backward(_losses(model))
    mtl.backward(_losses(model))
    torch.testing.assert_close(torch.rand(4), expected)


def test_unseeded_random_methods_are_reproducible_from_the_global_seed():
    def run(seed):
        model = _model()
        torch.manual_seed(seed)
        mtl = MultiTaskBackward(model, "rlw")
        return mtl.backward(_losses(model)).weights

    torch.testing.assert_close(run(5), run(5))
    assert not torch.equal(run(5), run(6))
