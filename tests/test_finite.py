"""The NaN/inf check: eager (before .grad is written), lazy (one step late, no sync), off."""

import math

import pytest
import torch
from torch import nn

from gradsurgery import MultiTaskBackward, NonFiniteError
from gradsurgery.engines import TaskBatch
from gradsurgery.finite import FiniteCheck
from gradsurgery.profiling import count_ops


def _setup(method="pcgrad", check="lazy", m=3, n=4):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2 + m, 6), nn.Tanh(), nn.Linear(6, 1)).double()
    ids = torch.arange(m).repeat_interleave(n)
    x = torch.cat([torch.randn(m * n, 2), (ids[:, None] == torch.arange(m))], 1).double()
    y = torch.randn(m * n, 1, dtype=torch.float64)
    mtl = MultiTaskBackward(
        model, method, num_tasks=m, check_finite=check, task_names=["a", "b", "c"][:m]
    )
    return model, mtl, x, y, TaskBatch.balanced(m, n, dtype=torch.float64)


def loss_fn(model, x, y):
    return ((model(x) - y) ** 2).squeeze(1)


def _poison(y, task, n=4):
    bad = y.clone()
    bad[task * n] = math.nan
    return bad


@pytest.mark.parametrize("method", ["sum", "pcgrad"])
def test_lazy_check_raises_at_the_next_step_naming_the_task_and_the_step(method):
    _, mtl, x, y, layout = _setup(method)
    mtl.backward_partitioned(loss_fn, x, y, layout=layout)  # step 0: fine
    mtl.backward_partitioned(loss_fn, x, _poison(y, 1), layout=layout)  # step 1: NaN, not yet seen
    with pytest.raises(NonFiniteError, match=r"task 'b' \(index 1\).* at step 1 .*one step late"):
        mtl.backward_partitioned(loss_fn, x, y, layout=layout)


def test_flush_checks_the_last_step():
    _, mtl, x, y, layout = _setup()
    mtl.backward_partitioned(loss_fn, x, y, layout=layout)
    mtl.flush()  # fine: nothing raised
    mtl.backward_partitioned(loss_fn, x, _poison(y, 2), layout=layout)
    with pytest.raises(NonFiniteError, match="task 'c'"):
        mtl.flush()
    mtl.flush()  # reported once


def test_eager_check_raises_before_grad_is_written_and_costs_one_sync():
    model, mtl, x, y, layout = _setup(check=True)
    mtl.backward_partitioned(loss_fn, x, y, layout=layout)
    model.zero_grad(set_to_none=True)
    with pytest.raises(NonFiniteError, match=r"task 'a' \(index 0\) has a non-finite loss"):
        mtl.backward_partitioned(loss_fn, x, _poison(y, 0), layout=layout)
    assert all(p.grad is None for p in model.parameters())
    with count_ops() as c:
        mtl.backward_partitioned(loss_fn, x, y, layout=layout)
    assert c.sync_events == ["__bool__", "cpu"]  # the check, and PCGrad's host solve


def test_off_means_no_check():
    model, mtl, x, y, layout = _setup(method="sum", check=False)
    mtl.backward_partitioned(loss_fn, x, _poison(y, 0), layout=layout)
    mtl.backward_partitioned(loss_fn, x, y, layout=layout)
    assert torch.isnan(model[0].weight.grad).any()


def test_an_overflowing_sum_of_finite_values_is_not_an_error():
    check = FiniteCheck(True, lambda t: f"task {t}")
    big = torch.full((3,), 3e38, dtype=torch.float32)  # finite, but their sum overflows
    check(0, big, torch.arange(3), [])
    with pytest.raises(NonFiniteError, match="task 1 has a non-finite gradient"):
        check(0, torch.ones(3), torch.arange(3), [torch.tensor([1.0, math.inf, 1.0])])


def test_bad_mode_is_refused():
    with pytest.raises(ValueError, match="check_finite"):
        FiniteCheck("sometimes", str)  # type: ignore[arg-type]
