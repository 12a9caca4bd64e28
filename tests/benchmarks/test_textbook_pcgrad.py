"""The benchmark's textbook PCGrad baseline computes the same update as gradsurgery's PCGrad, and the
cost benchmark runs end to end (``--quick``)."""

from __future__ import annotations

import copy
import importlib
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from gradsurgery import MultiTaskBackward
from gradsurgery.methods.pcgrad import random_partner_orders

textbook_pcgrad = importlib.import_module("textbook_pcgrad")
TextbookPCGrad = textbook_pcgrad.TextbookPCGrad


def _orders_of(mtl: MultiTaskBackward, m: int) -> torch.Tensor:
    """The orders our PCGrad will draw at its next step (a copy of its generator draws them)."""
    method = mtl.method
    own = method.generators.get("cpu") if hasattr(method, "generators") else method.generator
    gen = torch.Generator()
    gen.set_state(own.get_state())
    return random_partner_orders(m, gen)


def test_hand_worked_two_tasks() -> None:
    # g1 = (1, 0), g2 = (-1, 1): g1' = g1 + g2/2 = (0.5, 0.5), g2' = g2 + g1 = (0, 1); sum (0.5, 1.5)
    w = nn.Parameter(torch.tensor([1.0, 0.0]))
    losses = [w @ torch.tensor([1.0, 0.0]), w @ torch.tensor([-1.0, 1.0])]
    TextbookPCGrad([w], reduction="sum").backward(losses)
    assert torch.allclose(w.grad, torch.tensor([0.5, 1.5]))
    w.grad = None
    losses = [w @ torch.tensor([1.0, 0.0]), w @ torch.tensor([-1.0, 1.0])]
    TextbookPCGrad([w], reduction="mean").backward(losses)
    assert torch.allclose(w.grad, torch.tensor([0.25, 0.75]))


def test_no_conflict_is_plain_sum() -> None:
    w = nn.Parameter(torch.tensor([0.3, -0.2]))
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([2.0, 1.0])  # a · b > 0
    TextbookPCGrad([w]).backward([w @ a, w @ b])
    assert torch.allclose(w.grad, a + b)


@pytest.mark.parametrize("m", [2, 4, 7])
def test_task_partitioned_same_update_as_ours(m: int) -> None:
    torch.manual_seed(m)
    n = 5
    ids = torch.arange(m).repeat_interleave(n)
    x = torch.cat([torch.randn(m * n, 3), nn.functional.one_hot(ids, m).float()], dim=1)
    y = torch.randn(m, 1, 2).expand(m, n, 2).reshape(m * n, 2) * 3  # tasks disagree
    base = nn.Sequential(nn.Linear(3 + m, 6), nn.Tanh(), nn.Linear(6, 2)).double()
    x, y = x.double(), y.double()

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((model(x) - y) ** 2).mean(dim=1)

    ours = base
    theirs = nn.Sequential(nn.Linear(3 + m, 6), nn.Tanh(), nn.Linear(6, 2)).double()
    theirs.load_state_dict(base.state_dict())
    mtl = MultiTaskBackward(ours, "pcgrad", num_tasks=m, seed=3)
    orders = _orders_of(mtl, m)
    result = mtl.backward_partitioned(loss_fn, x, y, task_ids=ids)

    losses = loss_fn(theirs, x, y).view(m, n).mean(dim=1)
    TextbookPCGrad(list(theirs.parameters())).backward(list(losses), orders=orders.tolist())
    assert bool((result.gramian < 0).any()), "the case should contain conflicts"
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-9, atol=1e-10)


def test_shared_input_with_heads() -> None:
    """With ``shared=`` the baseline equals ours everywhere; without (the ports' flattening of every
    parameter) the trunk update differs, because ‖g_j‖² then includes task j's head."""
    torch.manual_seed(0)
    m = 3
    trunk = nn.Sequential(nn.Linear(4, 5), nn.Tanh()).double()
    heads = nn.ModuleList(nn.Linear(5, 1) for _ in range(m)).double()
    model = nn.ModuleDict({"trunk": trunk, "heads": heads})
    twin = nn.ModuleDict(
        {
            "trunk": nn.Sequential(nn.Linear(4, 5), nn.Tanh()).double(),
            "heads": nn.ModuleList(nn.Linear(5, 1) for _ in range(m)).double(),
        }
    )
    twin.load_state_dict(model.state_dict())
    ported = copy.deepcopy(twin)
    x = torch.randn(8, 4, dtype=torch.float64)
    targets = torch.randn(m, 8, 1, dtype=torch.float64) * 2

    def losses_of(mod: nn.ModuleDict) -> torch.Tensor:
        z = mod["trunk"](x)
        return torch.stack(
            [((h(z) - t) ** 2).mean() for h, t in zip(mod["heads"], targets, strict=True)]
        )

    mtl = MultiTaskBackward(model, "pcgrad", shared=trunk, seed=1)
    orders = _orders_of(mtl, m)
    result = mtl.backward(losses_of(model))
    assert bool((result.gramian < 0).any()), "the case should contain conflicts"
    textbook = TextbookPCGrad(list(twin.parameters()), shared=list(twin["trunk"].parameters()))
    textbook.backward(list(losses_of(twin)), orders=orders.tolist())
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-9, atol=1e-10)
    # Heads: each gets its own task's gradient.
    for i, head in enumerate(model["heads"]):
        own = torch.autograd.grad(losses_of(model)[i], list(head.parameters()))
        for p, g in zip(head.parameters(), own, strict=True):
            torch.testing.assert_close(p.grad, g, rtol=1e-9, atol=1e-10)
    # The ports' way (every parameter flattened) moves the trunk differently.
    TextbookPCGrad(list(ported.parameters())).backward(
        list(losses_of(ported)), orders=orders.tolist()
    )
    gap = max(
        (p.grad - q.grad).abs().max().item()
        for p, q in zip(model["trunk"].parameters(), ported["trunk"].parameters(), strict=True)
    )
    assert gap > 1e-6


def test_quick_benchmark_runs_end_to_end(tmp_path: Path) -> None:
    bench = importlib.import_module("gradient_cost")
    threads = torch.get_num_threads()
    out = tmp_path / "cost.json"
    try:
        result = bench.main(["--quick", "--threads", "1", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    saved = json.loads(out.read_text())
    assert saved["config"]["quick"] is True
    assert saved["machine"]["torch"] == torch.__version__
    for key in ("partitioned_m3", "shared_m3"):
        methods = saved["parts"][key]["methods"]
        assert bench.UNITARY in methods and bench.TEXTBOOK in methods
        for r in methods.values():
            assert r["median_ms"] > 0 and len(r["samples_ms"]) == saved["parts"][key]["rounds"]
            assert r["peak_extra_bytes"] is None or r["peak_extra_bytes"] > 0
    assert "pcgrad" in saved["solver"]["methods"]
    assert result["parts"].keys() == saved["parts"].keys()


def test_profiled_peak_counts_live_tensor_bytes() -> None:

    def work() -> None:
        a = torch.ones(250_000)  # 1,000,000 bytes
        b = torch.ones(250_000)
        del a
        c = torch.ones(250_000)  # reuses a's share of the budget: peak stays 2 MB
        del b, c

    peak = importlib.import_module("harness").profiled_peak(work)
    if peak is None:
        pytest.skip("this torch build does not expose the profiler's allocation events")
    assert 2_000_000 <= peak < 2_100_000
