"""Issue 11 (1): MultiTaskBackward under data parallelism equals one process on the global batch.

Each test spawns 2 CPU processes (gloo on a file store) once and loops over methods inside; the
reference is computed in the test process, without a process group, on the concatenated batch.
"""

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from gradsurgery import MultiTaskBackward
from gradsurgery.diagnostics import TriadMonitor
from gradsurgery.errors import DistributedUnsupportedError
from gradsurgery.methods.registry import create_method, method_names

SEED = 1234  # rank 0's torch seed: the default method seed every rank gets (broadcast)
TOL = 1e-6


def run_on_two_ranks(fn, *args):
    """``fn(rank, *args)`` on 2 processes of a gloo group; their return values, by rank."""
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_entry, args=(tmp, fn, args), nprocs=2, join=True)
        return [torch.load(os.path.join(tmp, f"{r}.pt"), weights_only=False) for r in (0, 1)]


def _entry(rank, tmp, fn, args):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank, world_size=2)
    try:
        torch.save(fn(rank, *args), os.path.join(tmp, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------- shared-input batches
class Net(nn.Module):
    def __init__(self, tasks=3):
        super().__init__()
        torch.manual_seed(0)
        self.trunk = nn.Sequential(nn.Linear(3, 4), nn.Tanh())
        self.heads = nn.ModuleList(nn.Linear(4, 1) for _ in range(tasks))
        self.double()

    def forward(self, x):
        z = self.trunk(x)
        return torch.cat([h(z) for h in self.heads], dim=1)


def _data(steps=3, n=8):
    g = torch.Generator().manual_seed(7)
    return [
        (
            torch.randn(n, 3, generator=g, dtype=torch.float64),
            torch.randn(n, 3, generator=g, dtype=torch.float64),
        )
        for _ in range(steps)
    ]


def _gradient_methods():
    return [n for n in method_names() if create_method(n).requires != "losses"]


def _loss_methods():
    return ["sum", "mean", "uw", "dwa", "famo", "rlw", "imtl_l"]


def _train(model, method, batches, rank=None, ddp=False, **kw):
    """3 steps of SGD; the ``.grad`` of every step (the local shard when ``rank`` is set)."""
    net = nn.parallel.DistributedDataParallel(model) if ddp else model
    # ranks seed differently (for their data); their methods get rank 0's seed (broadcast)
    torch.manual_seed(SEED + (rank or 0))
    mtl = MultiTaskBackward(net, method, shared=model.trunk, **kw)
    opt = torch.optim.SGD([*model.parameters(), *mtl.parameters()], lr=0.1)
    grads = []
    for x, y in batches:
        if rank is not None:
            x, y = x.chunk(2)[rank], y.chunk(2)[rank]
        opt.zero_grad()
        out = net(x)
        mtl.backward([(out[:, i] - y[:, i]).pow(2).mean() for i in range(3)])
        grads.append([p.grad.clone() for p in model.parameters()])
        opt.step()
    return grads


def _shared_input_worker(rank, methods, ddp):
    return {m: _train(Net(), m, _data(), rank, ddp=ddp) for m in methods}


def _assert_exact(results, reference):
    for name, ref in reference.items():
        for step, (g0, g1, gr) in enumerate(
            zip(results[0][name], results[1][name], ref, strict=True)
        ):
            for a, b, c in zip(g0, g1, gr, strict=True):
                assert torch.equal(a, b), f"{name} step {step}: ranks differ"
                torch.testing.assert_close(a, c, atol=TOL, rtol=0, msg=f"{name} step {step}")


def test_every_gradient_method_on_two_bare_ranks_equals_one_process():
    methods = _gradient_methods()
    assert {"pcgrad", "nash_mtl", "graddrop"} <= set(methods)
    results = run_on_two_ranks(_shared_input_worker, methods, False)
    _assert_exact(results, {m: _train(Net(), m, _data()) for m in methods})


def test_ddp_wrapped_gradient_and_loss_methods_equal_one_process():
    methods = ["pcgrad", "mgda", "nash_mtl", "graddrop", "uw+pcgrad", *_loss_methods()]
    results = run_on_two_ranks(_shared_input_worker, methods, True)
    _assert_exact(results, {m: _train(Net(), m, _data()) for m in methods})


def _bare_loss_and_local_worker(rank):
    out = {m: _train(Net(), m, _data(), rank) for m in _loss_methods()}
    for m in ("pcgrad", "sum"):
        out[f"{m}-local"] = _train(Net(), m, _data(), rank, distributed="local")
    out["sum-monitor"] = _train(Net(), "sum", _data(), rank, monitor=TriadMonitor(every=2))
    return out


def test_loss_methods_on_bare_ranks_and_the_local_mode():
    results = run_on_two_ranks(_bare_loss_and_local_worker)
    reference = {m: _train(Net(), m, _data()) for m in _loss_methods()}
    # a monitor's steps compute per-task gradients even for "sum": the same update
    reference["sum-monitor"] = _train(Net(), "sum", _data(), monitor=TriadMonitor(every=2))
    _assert_exact(results, reference)
    for m in ("pcgrad-local", "sum-local"):  # approximate, but identical on both ranks
        for g0, g1 in zip(results[0][m], results[1][m], strict=True):
            assert all(torch.equal(a, b) for a, b in zip(g0, g1, strict=True))
    # "sum" is linear: the averaged local update is exact
    ref = _train(Net(), "sum", _data())
    for g0, gr in zip(results[0]["sum-local"], ref, strict=True):
        for a, c in zip(g0, gr, strict=True):
            torch.testing.assert_close(a, c, atol=TOL, rtol=0)


# ---------------------------------------------------------------- task-partitioned batches
M = 4  # task 3 is absent on every rank, task 2 on rank 0


class TaskNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(3 + M, 5), nn.Tanh())
        self.out = nn.Linear(5, M)
        self.double()

    def forward(self, x):
        return self.out(self.body(x))


def _task_batches(steps=3):
    """Per step the two ranks' shards: rank 0 holds tasks 0, 1; rank 1 tasks 0, 1, 2; counts
    differ."""
    g = torch.Generator().manual_seed(3)
    out = []
    for _ in range(steps):
        shards = []
        for ids in ([0, 0, 1], [1, 2, 2, 2, 0]):
            t = torch.tensor(ids)
            x = torch.cat(
                [
                    torch.randn(len(ids), 3, generator=g, dtype=torch.float64),
                    (t[:, None] == torch.arange(M)).double(),
                ],
                dim=1,
            )
            shards.append((x, torch.randn(len(ids), generator=g, dtype=torch.float64), t))
        out.append(shards)
    return out


def _loss_fn(model, x, y, t):
    return (model(x).gather(1, t[:, None]).squeeze(1) - y).pow(2)


def _train_partitioned(method, rank=None, ddp=False, strategy="auto"):
    model = TaskNet()
    net = nn.parallel.DistributedDataParallel(model) if ddp else model
    torch.manual_seed(SEED + (rank or 0))
    mtl = MultiTaskBackward(net, method, shared=model.body, num_tasks=M, strategy=strategy)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    grads = []
    for shards in _task_batches():
        if rank is None:
            x, y, t = (torch.cat(parts) for parts in zip(*shards, strict=True))
        else:
            x, y, t = shards[rank]
        opt.zero_grad()
        mtl.backward_partitioned(_loss_fn, x, y, t, task_ids=t)
        grads.append([p.grad.clone() for p in model.parameters()])
        opt.step()
    return grads


PARTITIONED = [
    ("pcgrad", "auto"),
    ("upgrad", "loop"),
    ("nash_mtl", "auto"),
    ("sum", "auto"),
    ("dwa", "auto"),
]


def _partitioned_worker(rank):
    out = {}
    for ddp in (False, True):
        for m, strategy in PARTITIONED:
            out[f"{m}-{strategy}-{ddp}"] = _train_partitioned(m, rank, ddp, strategy)
    return out


def test_task_partitioned_with_a_task_missing_on_one_rank_equals_one_process():
    results = run_on_two_ranks(_partitioned_worker)
    reference = {}
    for ddp in (False, True):
        for m, strategy in PARTITIONED:
            reference[f"{m}-{strategy}-{ddp}"] = _train_partitioned(m, strategy=strategy)
    _assert_exact(results, reference)


# ---------------------------------------------------------------- what still refuses
@pytest.fixture
def two_processes(monkeypatch):
    """torch.distributed as a process of a 2-process group sees it (no collective is run)."""
    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)


def test_what_cannot_be_exact_is_refused(two_processes):
    model = Net()
    for method in ("gradnorm", "cosreg"):
        with pytest.raises(DistributedUnsupportedError, match="double backward"):
            MultiTaskBackward(model, method, shared=model.trunk)
        MultiTaskBackward(model, method, shared=model.trunk, distributed="local")
    mtl = MultiTaskBackward(model, "mgda", shared=model.trunk)
    x = torch.randn(4, 3, dtype=torch.float64)
    z = model.trunk(x)
    out = torch.cat([h(z) for h in model.heads], dim=1)
    with pytest.raises(DistributedUnsupportedError, match="representation="):
        mtl.backward(list(out.pow(2).mean(0)), representation=z)
    with pytest.raises(ValueError, match="'exact' or 'local'"):
        MultiTaskBackward(model, "mgda", distributed="approx")
