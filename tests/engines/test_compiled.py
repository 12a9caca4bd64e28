"""torch.compile: compiled per-task gradients, and a user's compiled model through both entry points."""

import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters

from gradsurgery import MultiTaskBackward
from gradsurgery.engines import TaskBatch, TaskPartitionedJacobian

M, N = 3, 4


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2 + M, 16), nn.Tanh(), nn.Linear(16, 2))


def _batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.arange(M).repeat_interleave(N)
    x = torch.cat(
        [torch.randn(M * N, 2, generator=g), (ids[:, None] == torch.arange(M)).float()], 1
    )
    return x, torch.randn(M * N, 2, generator=g)


def loss_fn(model, x, y):
    return ((model(x) - y) ** 2).mean(dim=1)


def test_compiled_per_task_gradients_equal_the_eager_ones_and_compile_once():
    torch._dynamo.reset()
    x, y = _batch()
    layout = TaskBatch.balanced(M, N)
    model = _mlp()
    eager = TaskPartitionedJacobian(model)(loss_fn, (x, y), layout, M)
    engine = TaskPartitionedJacobian(model, compile=True)
    first = engine(loss_fn, (x, y), layout, M)
    frames = counters["frames"]["ok"]
    again = engine(loss_fn, (x, y), layout, M)
    assert counters["frames"]["ok"] == frames  # the second step reuses the compiled graph
    for a, b, c in zip(
        eager.jacobian.blocks, first.jacobian.blocks, again.jacobian.blocks, strict=True
    ):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(c, a, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(first.losses, eager.losses)


def test_a_compiled_model_trains_compiled_and_keeps_its_own_compiled_calls():
    torch._dynamo.reset()
    x, y = _batch()
    layout = TaskBatch.balanced(M, N)
    model = _mlp()
    reference = _mlp()
    compiled = torch.compile(model)
    mtl = MultiTaskBackward(compiled, "pcgrad", num_tasks=M, seed=0)
    ref = MultiTaskBackward(reference, "pcgrad", num_tasks=M, seed=0)
    compiled(x)  # the user's compiled forward, before any multi-task step
    before = counters["frames"]["ok"]
    for _ in range(3):
        mtl.backward_partitioned(loss_fn, x, y, layout=layout)
        ref.backward_partitioned(loss_fn, x, y, layout=layout)
    engine = mtl._partitioned
    assert engine is not None and engine.compile and len(engine._compiled) == 1  # not eager
    assert counters["frames"]["ok"] > before  # the engine's own compiled graph
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6)
    frames = counters["frames"]["ok"]
    for _ in range(3):
        compiled(x)  # still served by its own cache: no recompilation, no fallback to eager
    assert counters["frames"]["ok"] == frames


def test_a_compiled_transformer_with_dropout_through_backward_losses():
    torch._dynamo.reset()
    torch.manual_seed(0)
    trunk = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1, batch_first=True), 1
    )
    heads = nn.ModuleList(nn.Linear(8, 1) for _ in range(M))
    model = nn.ModuleDict({"trunk": trunk, "heads": heads})

    def forward(x):
        z = model["trunk"](x).mean(1)
        return [h(z).squeeze(1) for h in model["heads"]]

    compiled = torch.compile(forward)
    x, ys = torch.randn(4, 5, 8), torch.randn(M, 4)
    mtl = MultiTaskBackward(model, "mgda", shared=trunk)
    for _ in range(2):
        model.zero_grad(set_to_none=True)
        losses = [((o - y) ** 2).mean() for o, y in zip(compiled(x), ys, strict=True)]
        # the oracle on the same forward (same dropout masks): one autograd.grad per task
        rows = [
            torch.cat(
                [
                    g.flatten()
                    for g in torch.autograd.grad(loss, list(trunk.parameters()), retain_graph=True)
                ]
            )
            for loss in losses
        ]
        result = mtl.backward(losses)
        torch.testing.assert_close(
            result.gramian, torch.stack(rows) @ torch.stack(rows).T, rtol=1e-4, atol=1e-6
        )
        assert all(torch.isfinite(p.grad).all() for p in trunk.parameters())


def test_a_donated_buffer_error_names_the_fix(monkeypatch):
    """torch versions whose compiled backward donates its buffers allow one pass only."""
    model = nn.Linear(2, 2)
    w = model.weight
    losses = [(model(torch.ones(1, 2)) ** 2).sum(), model(torch.ones(1, 2)).sum()]
    real = torch.autograd.grad

    def fake(*args, **kwargs):
        if kwargs.get("retain_graph"):
            raise RuntimeError(
                "This backward function was compiled with non-empty donated buffers which "
                "requires create_graph=False and retain_graph=False."
            )
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", fake)
    mtl = MultiTaskBackward(model, "pcgrad", shared=[w])
    with pytest.raises(RuntimeError, match=r"donated_buffer=False.*representation="):
        mtl.backward(losses)
