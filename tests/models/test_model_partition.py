"""Properties every multi-task model shares: parameter partition, output shapes, gradient routing."""

import pytest
import torch

from gradsurgery.models import (
    MMoE,
    MTANClassifier,
    MTANSegNet,
    RoutingNetwork,
    TaskConditionedNetwork,
    cross_stitch_lenet,
    cross_stitch_mlp,
    hard_sharing_mlp,
    multi_lenet,
    resnet_multitask,
    routing_cifar,
    segnet_multitask,
)

# name -> (factory, input builder, expected per-task output shapes for a batch of 2)
SHARED_INPUT = {
    "hard_mlp": (
        lambda: hard_sharing_mlp(6, [3, 1, 2], hidden=(8,), head_hidden=(4,)),
        lambda: torch.randn(2, 6),
        [(2, 3), (2, 1), (2, 2)],
    ),
    "lenet28": (lambda: multi_lenet(dropout=0.0), lambda: torch.randn(2, 1, 28, 28), [(2, 10)] * 2),
    "lenet16": (
        lambda: multi_lenet(3, 4, input_size=16, dropout=0.0),
        lambda: torch.randn(2, 1, 16, 16),
        [(2, 4)] * 3,
    ),
    "resnet": (
        lambda: resnet_multitask([5, 2], widths=(4, 8)),
        lambda: torch.randn(2, 3, 32, 32),
        [(2, 5), (2, 2)],
    ),
    "segnet": (
        lambda: segnet_multitask(5, channels=(4, 8)),
        lambda: torch.randn(2, 3, 8, 8),
        [(2, 5, 8, 8), (2, 1, 8, 8), (2, 3, 8, 8)],
    ),
    "cross_stitch_mlp": (
        lambda: cross_stitch_mlp(6, [3, 2], hidden=(8, 8)),
        lambda: torch.randn(2, 6),
        [(2, 3), (2, 2)],
    ),
    "cross_stitch_lenet": (
        lambda: cross_stitch_lenet(2, 10, dropout=0.0),
        lambda: torch.randn(2, 1, 28, 28),
        [(2, 10)] * 2,
    ),
    "mtan_segnet": (
        lambda: MTANSegNet(4, channels=(4, 8, 8)),
        lambda: torch.randn(2, 3, 16, 16),
        [(2, 4, 16, 16), (2, 1, 16, 16), (2, 3, 16, 16)],
    ),
    "mtan_classifier": (
        lambda: MTANClassifier([3, 2], channels=(4, 8)),
        lambda: torch.randn(2, 3, 16, 16),
        [(2, 3), (2, 2)],
    ),
    "mmoe": (
        lambda: MMoE(6, [1, 3], num_experts=3, expert_hidden=(8,), expert_out=4),
        lambda: torch.randn(2, 6),
        [(2, 1), (2, 3)],
    ),
}

TASK_CONDITIONED = {
    "tc_mlp_per_task": lambda: TaskConditionedNetwork(5, 3, 4, hidden=(8, 8)),
    "tc_mlp_shared": lambda: TaskConditionedNetwork(5, 3, 4, hidden=(8,), head="shared"),
    "tc_conv": lambda: TaskConditionedNetwork((2, 8, 8), 3, 4, hidden=(8,), channels=(4,)),
    "routing": lambda: RoutingNetwork(5, 3, 4, hidden=(8,), num_blocks=3),
    "routing_cifar": lambda: routing_cifar(4, 3, conv_channels=4, conv_layers=2, input_size=8),
}

ALL = {**{k: v[0] for k, v in SHARED_INPUT.items()}, **TASK_CONDITIONED}


@pytest.mark.parametrize("name", sorted(ALL))
def test_shared_and_task_specific_partition_the_parameters(name):
    model = ALL[name]()
    every = [id(p) for p in model.parameters()]
    shared = [id(p) for p in model.shared_parameters()]
    specific = [id(p) for p in model.task_specific_parameters()]
    assert shared
    assert specific or name == "tc_mlp_shared"  # one network, one output layer: all shared
    assert not set(shared) & set(specific)
    assert sorted(shared + specific) == sorted(every)
    # each task's own parameters: disjoint, together all the task-specific ones
    per_task = [[id(p) for p in model.task_specific_parameters(i)] for i in range(model.num_tasks)]
    flat = [p for ids in per_task for p in ids]
    assert len(flat) == len(set(flat))
    assert sorted(flat) == sorted(specific)
    counts = model.num_parameters()
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    with pytest.raises(IndexError):
        list(model.task_specific_parameters(model.num_tasks))


def test_shared_head_task_conditioned_network_has_no_task_specific_parameters():
    model = TaskConditionedNetwork(5, 3, 4, hidden=(8,), head="shared")
    assert list(model.task_specific_parameters()) == []
    assert len(list(model.shared_parameters())) == len(list(model.parameters()))


@pytest.mark.parametrize("name", sorted(SHARED_INPUT))
def test_shared_input_output_shapes(name):
    factory, make_input, shapes = SHARED_INPUT[name]
    torch.manual_seed(0)
    model = factory()
    outputs = model(make_input())
    assert isinstance(outputs, list)
    assert len(outputs) == model.num_tasks
    assert [tuple(y.shape) for y in outputs] == shapes


def _task_losses(model, x):
    return [y.square().mean() for y in model(x)]


# Cross-stitch columns receive every task's gradient through the units by design (tested there).
ISOLATED = sorted(k for k in SHARED_INPUT if not k.startswith("cross_stitch"))


@pytest.mark.parametrize("name", ISOLATED)
def test_task_loss_reaches_only_its_own_specific_parameters(name):
    factory, make_input, _ = SHARED_INPUT[name]
    torch.manual_seed(0)
    model = factory().double()
    x = make_input().double()
    losses = _task_losses(model, x)
    for i, loss in enumerate(losses):
        model.zero_grad(set_to_none=True)
        loss.backward(retain_graph=True)
        for j in range(model.num_tasks):
            grads = [p.grad for p in model.task_specific_parameters(j)]
            touched = any(g is not None and bool(g.abs().sum() > 0) for g in grads)
            assert touched == (i == j), (i, j)
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.shared_parameters())


@pytest.mark.parametrize("name", ISOLATED)
def test_output_of_a_task_ignores_other_tasks_parameters(name):
    factory, make_input, _ = SHARED_INPUT[name]
    torch.manual_seed(0)
    model = factory().double().eval()
    x = make_input().double()
    before = [y.detach() for y in model(x)]
    with torch.no_grad():
        for p in model.task_specific_parameters(0):
            p.mul_(0.0).add_(3.0)
    after = model(x)
    assert not torch.allclose(after[0], before[0])
    for y_before, y_after in zip(before[1:], after[1:], strict=True):
        torch.testing.assert_close(y_after, y_before)


@pytest.mark.parametrize("name", sorted(n for n in ALL if not n.startswith("routing")))
def test_training_hooks_default_to_nothing(name):
    """Models without a training-time extra leave the trainer's step as it is: no inputs, and
    after_backward neither asks for the losses nor touches a gradient."""
    model = ALL[name]()
    task_ids = None if name in SHARED_INPUT else torch.tensor([0, 1])
    assert model.step_inputs(task_ids) == ()

    def losses() -> torch.Tensor:
        raise AssertionError("the default hook does not need the losses")

    model.after_backward(losses, task_ids, ())
    assert all(p.grad is None for p in model.parameters())
