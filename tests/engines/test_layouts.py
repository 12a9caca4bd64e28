"""Task-partitioned layouts given by the caller: no host synchronisation, the same gradients."""

import pytest
import torch
from torch import nn

from gradsurgery import MultiTaskBackward
from gradsurgery.engines import TaskBatch, TaskPartitionedJacobian
from gradsurgery.profiling import count_ops


def _model(m, dtype=torch.float64):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3 + m, 8), nn.Tanh(), nn.Linear(8, 2)).to(dtype)


def _sorted_batch(counts, seed=0):
    g = torch.Generator().manual_seed(seed)
    m = len(counts)
    ids = torch.cat([torch.full((c,), t) for t, c in enumerate(counts)])
    x = torch.cat([torch.randn(len(ids), 3, generator=g), (ids[:, None] == torch.arange(m))], 1)
    y = torch.randn(len(ids), 2, generator=g)
    return x.double(), y.double(), ids


def loss_fn(model, x, y):
    return ((model(x) - y) ** 2).mean(dim=1)


def test_balanced_layout_is_a_view_with_the_grouping_of_task_ids():
    layout = TaskBatch.balanced(3, 4, dtype=torch.float64)
    grouped = TaskBatch(torch.arange(3).repeat_interleave(4), 3, torch.float64)
    assert layout.index is None and layout.n == 12 and layout.present == [0, 1, 2]
    t = torch.arange(12.0)
    assert layout.segments(t).data_ptr() == t.data_ptr()  # a view: no gather
    torch.testing.assert_close(layout.segments(t), t[grouped.index])
    torch.testing.assert_close(layout.weights, grouped.weights)
    torch.testing.assert_close(layout.segment_means(t.double()), grouped.segment_means(t.double()))
    assert layout.tasks.tolist() == grouped.tasks.tolist()


@pytest.mark.parametrize("counts", [[3, 1, 4], [2, 0, 5], [4, 4, 4]])
def test_contiguous_layout_equals_grouping_by_task_ids(counts):
    x, y, ids = _sorted_batch(counts)
    layout = TaskBatch.contiguous(counts, dtype=torch.float64)
    grouped = TaskBatch(ids, len(counts), torch.float64)
    assert layout.tasks.tolist() == grouped.tasks.tolist() == [t for t, c in enumerate(counts) if c]
    assert layout.counts.tolist() == grouped.counts.tolist()
    per = torch.randn(len(ids), dtype=torch.float64)
    torch.testing.assert_close(layout.segment_means(per), grouped.segment_means(per))
    model = _model(len(counts))
    engine = TaskPartitionedJacobian(model)
    a = engine(loss_fn, (x, y), layout, len(counts))
    b = engine(loss_fn, (x, y), ids, len(counts))
    torch.testing.assert_close(a.jacobian.matrix(), b.jacobian.matrix())
    torch.testing.assert_close(a.losses, b.losses)


def test_bad_layouts_are_refused():
    with pytest.raises(ValueError, match="non-negative"):
        TaskBatch.contiguous([0, 0])
    with pytest.raises(ValueError, match="non-negative"):
        TaskBatch.contiguous([2, -1])
    with pytest.raises(ValueError, match="per_task"):
        TaskBatch.balanced(3, 0)
    m = 3
    x, y, ids = _sorted_batch([2, 2, 2])
    mtl = MultiTaskBackward(_model(m), "pcgrad", num_tasks=m)
    with pytest.raises(ValueError, match="sample dimension first"):
        mtl.backward_partitioned(loss_fn, x[:-1], y[:-1], layout=TaskBatch.balanced(m, 2))
    with pytest.raises(ValueError, match="4 tasks, not 3"):
        mtl.backward_partitioned(loss_fn, x, y, layout=TaskBatch.contiguous([2, 2, 1, 1]))
    with pytest.raises(TypeError, match="exactly one of"):
        mtl.backward_partitioned(loss_fn, x, y, task_ids=ids, layout=TaskBatch.balanced(m, 2))
    with pytest.raises(TypeError, match="exactly one of"):
        mtl.backward_partitioned(loss_fn, x, y)


@pytest.mark.parametrize("method", ["sum", "pcgrad", "mgda"])
def test_given_layout_gives_the_update_of_task_ids(method):
    m, n = 4, 5
    x, y, ids = _sorted_batch([n] * m)
    grads = []
    for kw in ({"task_ids": ids}, {"layout": TaskBatch.balanced(m, n, dtype=torch.float64)}):
        model = _model(m)
        mtl = MultiTaskBackward(
            model, method, num_tasks=m, **({"seed": 0} if method == "pcgrad" else {})
        )
        mtl.backward_partitioned(loss_fn, x, y, **kw)
        grads.append([p.grad for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)


def test_no_host_sync_with_a_given_layout_and_the_lazy_check():
    m, n = 5, 4
    x, y, _ = _sorted_batch([n] * m)
    layout = TaskBatch.balanced(m, n, dtype=torch.float64)
    model = _model(m)
    for method, syncs in (("sum", 0), ("pcgrad", 1)):  # PCGrad: its one host solve
        mtl = MultiTaskBackward(model, method, num_tasks=m, check_finite="lazy")
        mtl.backward_partitioned(loss_fn, x, y, layout=layout)
        with count_ops() as c:
            mtl.backward_partitioned(loss_fn, x, y, layout=layout)
        assert c.syncs == syncs, c.sync_events
        assert c.deferred_reads == 1  # the previous step's finite flag
    # Grouping by task ids reads the counts on the host.
    mtl = MultiTaskBackward(model, "sum", num_tasks=m, check_finite="lazy")
    with count_ops() as c:
        mtl.backward_partitioned(loss_fn, x, y, task_ids=torch.arange(m).repeat_interleave(n))
    assert c.syncs >= 1


def test_sum_takes_one_plain_backward_and_few_extra_ops():
    """'sum' with a given layout: the raw step's ops plus the check and the weighting."""
    m, n = 5, 4
    x, y, _ = _sorted_batch([n] * m)
    layout = TaskBatch.balanced(m, n, dtype=torch.float64)
    model = _model(m)
    mtl = MultiTaskBackward(model, "sum", num_tasks=m, check_finite="lazy")
    with count_ops() as raw:
        loss_fn(model, x, y).view(m, n).mean(dim=1).sum().backward()
    mtl.backward_partitioned(loss_fn, x, y, layout=layout)
    model.zero_grad(set_to_none=True)
    with count_ops() as ours:
        mtl.backward_partitioned(loss_fn, x, y, layout=layout)
    assert ours.by_op["addmm"] == raw.by_op["addmm"] and ours.by_op["mm"] == raw.by_op["mm"]
    assert ours.launches - raw.launches <= 6, (ours.summary(), raw.summary())
