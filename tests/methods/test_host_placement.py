"""Methods that solve their m×m problem on the host give the device path's result."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradsurgery.methods import create_method
from gradsurgery.methods.base import TaskStep
from gradsurgery.methods.host import check_placement, from_host, on_host, to_host
from gradsurgery.methods.pcgrad import (
    pcgrad_coefficients,
    pcgrad_coefficients_numpy,
    random_partner_orders,
)
from gradsurgery.profiling import count_ops


def _gramian(m, d, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    J = torch.randn(m, d, generator=g, dtype=dtype)
    J[: m // 2] -= 1.5 * torch.randn(d, generator=g, dtype=dtype)  # conflicts
    return J @ J.T


@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 12), d=st.integers(1, 20), seed=st.integers(0, 10_000))
def test_pcgrad_numpy_recursion_equals_the_torch_one(m, d, seed):
    K = _gramian(m, d, seed)
    orders = random_partner_orders(m, torch.Generator().manual_seed(seed))
    want = pcgrad_coefficients(K, orders)
    got = pcgrad_coefficients_numpy(K.numpy(), orders.numpy())
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("variant", ["full", "direction", "magnitude"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_pcgrad_host_and_device_placements_agree(variant, reduction):
    K = _gramian(7, 5, 3)
    step = TaskStep(torch.ones(7, dtype=torch.float64), torch.arange(7), 7, 0, gramian=K)
    host = create_method("pcgrad", seed=4, variant=variant, reduction=reduction)
    device = create_method(
        "pcgrad", seed=4, variant=variant, reduction=reduction, placement="device"
    )
    for _ in range(3):  # the same random orders, step after step
        torch.testing.assert_close(host(step).weights, device(step).weights)


def test_host_solve_is_one_transfer_and_no_device_launch():
    K = _gramian(10, 30, 0).float()
    step = TaskStep(torch.ones(10), torch.arange(10), 10, 0, gramian=K)
    method = create_method("pcgrad", seed=0)
    with count_ops() as c:
        w = method(step).weights
    assert w.dtype == torch.float32
    assert c.sync_events == ["cpu"] and c.host_ops > 0
    # weights back (a copy) and the task-specific weights: O(1) launches, whatever m
    assert c.launches <= 3
    device = create_method("pcgrad", seed=0, placement="device")
    with count_ops() as d:
        device(step)
    assert d.syncs == 0 and d.launches > 9 * 5  # O(m) small kernels


def test_transfers_and_placement_rules():
    a, b = torch.ones(2, 2), torch.arange(3, dtype=torch.float64)
    ha, hb = to_host(a, b)
    assert ha.dtype == hb.dtype == torch.float64 and ha.shape == (2, 2) and hb.tolist() == [0, 1, 2]
    assert from_host(hb, a).dtype == torch.float32
    assert on_host("auto", a) and on_host("host", a) and not on_host("device", a)
    with pytest.raises(ValueError, match="placement"):
        check_placement("gpu")


@settings(max_examples=30, deadline=None)
@given(
    m=st.integers(1, 10),
    seed=st.integers(0, 10_000),
    beta=st.sampled_from([0.01, 0.5, 1.0]),
    ema=st.sampled_from(["every_pair", "on_correction"]),
)
def test_gradvac_numpy_loop_equals_the_torch_one(m, seed, beta, ema):
    from gradsurgery.methods.gradvac import gradvac_coefficients, gradvac_coefficients_numpy

    K = _gramian(m, 6, seed)
    g = torch.Generator().manual_seed(seed)
    orders = random_partner_orders(m, g)
    targets = (torch.rand(m, m, generator=g, dtype=torch.float64) - 0.5) * 1.8
    coef, moved = gradvac_coefficients(K, orders, targets, beta, ema)
    c2, m2 = gradvac_coefficients_numpy(K.numpy(), orders.numpy(), targets.numpy(), beta, ema)
    np.testing.assert_allclose(c2, coef.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(m2, moved.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "name",
    [
        "pcgrad",
        "gradvac",
        "mgda",
        "cagrad",
        "nash_mtl",
        "upgrad",
        "dualproj",
        "aligned_mtl",
        "imtl_g",
    ],
)
def test_every_solver_is_o1_launches_with_one_sync_on_the_host(name):
    kw = {"seed": 0} if name in ("pcgrad", "gradvac") else {}
    counts = []
    for m in (4, 12):
        K = _gramian(m, 30, m).float()
        step = TaskStep(torch.rand(m) + 0.5, torch.arange(m), m, 0, gramian=K)
        method = create_method(name, **kw)
        method(step)  # allocate per-task state
        step = TaskStep(torch.rand(m) + 0.5, torch.arange(m), m, 1, gramian=K)
        with count_ops() as c:
            w = method(step).weights
        assert w.dtype == torch.float32 and torch.isfinite(w).all()
        assert c.syncs == 1, c.sync_events
        counts.append(c.launches)
    assert counts[0] == counts[1] <= 25, counts  # independent of m (device-side bookkeeping only)


@pytest.mark.parametrize("name", ["gradvac", "mgda", "cagrad", "nash_mtl", "upgrad", "aligned_mtl"])
def test_host_and_device_placements_agree(name):
    K = _gramian(6, 9, 1)
    kw = {"seed": 2} if name == "gradvac" else {}
    host = create_method(name, **kw)
    device = create_method(name, placement="device", **kw)
    for s in range(3):  # stateful methods: the state evolves the same way
        step = TaskStep(torch.ones(6, dtype=torch.float64) + s, torch.arange(6), 6, s, gramian=K)
        torch.testing.assert_close(host(step).weights, device(step).weights, rtol=1e-5, atol=1e-7)
