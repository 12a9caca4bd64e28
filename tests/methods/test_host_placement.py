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
