"""Issue 12 (3): gradient methods refuse data parallelism (not exact yet); loss weighting works."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
from torch import nn

from gradsurgery import MultiTaskBackward
from gradsurgery.errors import DistributedUnsupportedError


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))


def _losses(model):
    out = model(torch.randn(5, 3))
    return [out[:, 0].pow(2).mean(), out[:, 1].pow(2).mean()]


@pytest.fixture
def two_processes(monkeypatch):
    """torch.distributed as a process of a 2-process group sees it."""
    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)


def test_gradient_methods_refuse_a_multi_process_group(two_processes):
    model = _model()
    with pytest.raises(DistributedUnsupportedError, match=r"group of 2 processes.*bypasses"):
        MultiTaskBackward(model, "pcgrad")
    with pytest.raises(DistributedUnsupportedError, match="monitor"):
        from gradsurgery.diagnostics import TriadMonitor

        MultiTaskBackward(model, "sum", monitor=TriadMonitor())
    for method in ("sum", "uw", "rlw"):
        MultiTaskBackward(model, method).backward(_losses(model))


def test_gradient_methods_check_again_at_the_step(monkeypatch):
    model = _model()
    mtl = MultiTaskBackward(model, "mgda")
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
    with pytest.raises(DistributedUnsupportedError, match="'mgda'"):
        mtl.backward(_losses(model))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        model = _model()
        try:
            MultiTaskBackward(model, "pcgrad")
            out[rank] = "accepted"
        except DistributedUnsupportedError:
            out[rank] = "refused"
        MultiTaskBackward(model, "sum").backward(_losses(model))
    finally:
        dist.destroy_process_group()


def test_a_real_two_process_gloo_group_refuses_pcgrad():
    import torch.multiprocessing as mp

    out = mp.Manager().dict()
    mp.spawn(_worker, args=(_free_port(), out), nprocs=2, join=True)
    assert dict(out) == {0: "refused", 1: "refused"}


def test_a_ddp_wrapped_model_refuses_gradient_methods(tmp_path):
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        ddp = nn.parallel.DistributedDataParallel(_model())
        with pytest.raises(DistributedUnsupportedError, match="wrapped in DistributedDataParallel"):
            MultiTaskBackward(ddp, "pcgrad")
        with pytest.raises(DistributedUnsupportedError, match="wrapped"):
            MultiTaskBackward(nn.ModuleList([ddp]), "graddrop")
        mtl = MultiTaskBackward(ddp, "sum")
        mtl.backward(_losses(ddp))
        assert ddp.module[0].weight.grad is not None
    finally:
        dist.destroy_process_group()
