"""The representation engine: every ∂L_i/∂z and every head's gradient from one backward pass."""

import pytest
import torch
from torch import nn

from gradsurgery import MultiTaskBackward
from gradsurgery.engines import RepresentationJacobian
from gradsurgery.profiling import count_ops


class TrunkHeads(nn.Module):
    def __init__(self, m=4, shared_after=False):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(5, 8), nn.Tanh())
        self.post = nn.Linear(8, 8) if shared_after else None
        self.heads = nn.ModuleList(nn.Linear(8, 2) for _ in range(m))
        self.double()

    def forward(self, x):
        z = self.trunk(x)
        h = torch.tanh(self.post(z)) if self.post is not None else z
        return z, [head(h) for head in self.heads]


def _losses(model, x, ys):
    z, outs = model(x)
    return z, [((o - y) ** 2).mean() for o, y in zip(outs, ys, strict=True)]


def _reference(model, x, ys):
    """∂L_i/∂z and every head's own gradient, one autograd.grad per task."""
    z, losses = _losses(model, x, ys)
    u = torch.stack([torch.autograd.grad(loss, z, retain_graph=True)[0] for loss in losses])
    heads = [
        torch.autograd.grad(loss, list(h.parameters()), retain_graph=True)
        for loss, h in zip(losses, model.heads, strict=True)
    ]
    return u, heads


def _data(m=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randn(
        m, 6, 2, generator=g, dtype=torch.float64
    )


@pytest.mark.parametrize("stacked", [False, True])
def test_one_pass_gives_each_task_its_gradients(stacked):
    torch.manual_seed(0)
    model = TrunkHeads()
    x, ys = _data()
    u_ref, heads_ref = _reference(model, x, ys)
    z, losses = _losses(model, x, ys)
    specific = [p for h in model.heads for p in h.parameters()]
    grads = RepresentationJacobian(specific)(torch.stack(losses) if stacked else losses, z)
    assert len(grads.jacobian.blocks) == 1 and grads.owned is not None
    torch.testing.assert_close(grads.jacobian.blocks[0], u_ref)
    for p, g, row in zip(grads.owned.params, grads.owned.grads, grads.owned.owners, strict=True):
        task = next(i for i, h in enumerate(model.heads) if any(p is q for q in h.parameters()))
        assert row == task
        k = [q is p for q in model.heads[task].parameters()].index(True)
        torch.testing.assert_close(g, heads_ref[task][k])


def test_heads_run_once_not_once_per_task():
    torch.manual_seed(0)
    m = 6
    model = TrunkHeads(m)
    x, ys = _data(m)
    specific = [p for h in model.heads for p in h.parameters()]
    z, losses = _losses(model, x, ys)
    with count_ops() as c:
        RepresentationJacobian(specific)(losses, z)
    # each head's backward once: one matmul for its input gradient and one for its weight
    assert c.by_op["mm"] <= 2 * m + 2, c.summary()


def test_a_layer_shared_after_z_falls_back_to_the_exact_loop():
    torch.manual_seed(0)
    model = TrunkHeads(shared_after=True)
    x, ys = _data()
    u_ref, _ = _reference(model, x, ys)
    z, losses = _losses(model, x, ys)
    specific = [p for p in model.parameters() if all(p is not q for q in model.trunk.parameters())]
    grads = RepresentationJacobian(specific)(losses, z)
    assert grads.owned is None  # per-task blocks instead
    torch.testing.assert_close(grads.jacobian.blocks[0], u_ref)


def test_multitask_backward_writes_heads_and_trunk_and_leaves_absent_heads_alone():
    torch.manual_seed(0)
    model = TrunkHeads()
    x, ys = _data()
    mtl = MultiTaskBackward(model, "mgda", shared=model.trunk)
    z, losses = _losses(model, x, ys)
    present = [True, False, True, True]
    mtl.backward(torch.stack(losses), representation=z, present=present)
    assert all(p.grad is None for p in model.heads[1].parameters())
    _, heads_ref = _reference(model, x, ys)
    for i in (0, 2, 3):
        for p, g in zip(model.heads[i].parameters(), heads_ref[i], strict=True):
            torch.testing.assert_close(p.grad, g)
    assert all(p.grad is not None for p in model.trunk.parameters())
