"""The cost proxies: aten ops, kernel launches and host syncs counted by ``count_ops``."""

import torch

from gradsurgery.profiling import count_ops, deferred_read, host_region


def test_counts_forward_and_backward_ops_and_tells_views_from_launches():
    x = torch.randn(4, 3, requires_grad=True)
    with count_ops() as c:
        (x.t() * 2).sum().backward()
    assert c.by_op["t"] >= 1 and c.by_op["mul"] >= 1 and c.by_op["sum"] >= 1
    assert c.launches < c.ops  # t (and backward's views) launch nothing
    assert c.syncs == 0


def test_host_reads_and_data_dependent_shapes_are_syncs_counted_once():
    x = torch.randn(5)
    with count_ops() as c:
        x[0].item()  # Python read + its _local_scalar_dense: one sync
        x.tolist()
        bool(x[1] > 0)
        x.nonzero()
        x[x > 0]  # boolean-mask indexing
        torch.tensor([1.0, 2.0])  # a tensor from Python data: a host-to-device copy
        x.cpu()
        torch.full((), 1.0)  # no sync
    assert c.sync_events == ["item", "tolist", "__bool__", "nonzero", "index", "tensor", "cpu"]
    assert c.syncs == 7


def test_host_regions_and_deferred_reads_are_kept_apart():
    x = torch.randn(5)
    with count_ops() as c:
        with host_region():
            (x * 2).sum().item()  # mul, sum and the read: host work, no sync
        flag = x[0] > -100  # device work
        with deferred_read():
            bool(flag)  # a value copied to the host a step earlier: not a sync
    assert c.host_ops >= 3 and c.deferred_reads == 1
    assert c.by_op["gt"] == 1 and "mul" not in c.by_op and c.syncs == 0


def test_summary_names_the_totals():
    with count_ops() as c:
        torch.ones(3).sum().item()
    text = c.summary()
    assert "1 syncs (item)" in text and "launches" in text
