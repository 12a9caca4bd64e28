"""Issue 12 (6, 7): losses as a mapping, errors naming the task, the GradScaler hint, and a
method's double backward through attention."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradsurgery import LossShapeError, MultiTaskBackward, NonFiniteError
from gradsurgery.errors import DoubleBackwardError


class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.trunk = nn.Linear(3, 4)
        self.heads = nn.ModuleList([nn.Linear(4, 1) for _ in range(3)])

    def forward(self, x):
        z = torch.tanh(self.trunk(x))
        return [h(z).pow(2).mean() for h in self.heads]


def test_mapping_losses_name_the_tasks_in_any_order():
    model, x = TwoHeads(), torch.randn(5, 3)
    a, b, c = model(x)
    mtl = MultiTaskBackward(model, "pcgrad", shared=model.trunk)
    mtl.backward({"cls": a, "reg": b, "depth": c})
    assert mtl.task_names == ["cls", "reg", "depth"]
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    a, b, c = model(x)
    ref = MultiTaskBackward(model, "pcgrad", shared=model.trunk)
    ref.backward([a, b, c])
    for e, p in zip(expected, model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, e)
    model.zero_grad()
    a, b, c = model(x)
    res = mtl.backward({"depth": c, "cls": a, "reg": b})  # a later step: any order
    torch.testing.assert_close(res.losses, torch.stack([a, b, c]).detach())
    a, b, c = model(x)
    with pytest.raises(LossShapeError, match="missing 'depth'"):
        mtl.backward({"cls": a, "reg": b})
    with pytest.raises(LossShapeError, match="missing 'depth'; unexpected 'dpth'"):
        mtl.backward({"cls": a, "reg": b, "dpth": c})


def test_mapping_keys_must_be_the_given_task_names():
    model, x = TwoHeads(), torch.randn(5, 3)
    a, b, c = model(x)
    mtl = MultiTaskBackward(model, "sum", task_names=["a", "b", "c"])
    with pytest.raises(LossShapeError, match="unexpected 'd'"):
        mtl.backward({"a": a, "b": b, "d": c})
    res = mtl.backward({"c": c, "b": b, "a": a})  # ordered by task_names
    torch.testing.assert_close(res.losses, torch.stack([a, b, c]).detach())
    with pytest.raises(LossShapeError, match="expected 2 task losses, got 3"):
        MultiTaskBackward(model, "sum", num_tasks=2).backward({"a": a, "b": b, "c": c})


def test_errors_name_the_task():
    model, x = TwoHeads(), torch.randn(5, 3)
    a, b, c = model(x)
    mtl = MultiTaskBackward(model, "pcgrad", task_names=["cls", "reg", "depth"])
    with pytest.raises(
        LossShapeError, match=r"expected 3 task losses, got 2: matched by position, 'depth'"
    ):
        mtl.backward([a, b])
    with pytest.raises(LossShapeError, match=r"task 'reg' \(index 1\): the loss is not a scalar"):
        mtl.backward([a, torch.stack([b, b]), c])
    with pytest.raises(LossShapeError, match="task 2: the loss is not a scalar"):
        MultiTaskBackward(model, "pcgrad").backward([a, b, torch.stack([c, c])])
    with pytest.raises(ValueError, match=r"task 'reg' \(index 1\): the loss does not require"):
        mtl.backward({"cls": a, "reg": b.detach(), "depth": c})


def test_non_finite_error_hints_at_grad_scaler():
    model, x = TwoHeads(), torch.randn(5, 3)
    a, b, c = model(x)
    mtl = MultiTaskBackward(model, "pcgrad")
    with pytest.raises(NonFiniteError, match=r"GradScaler.*check_finite=False"):
        mtl.backward([a, b * float("inf"), c])


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.trunk = nn.Linear(8, 8)
        self.heads = nn.ModuleList([nn.Linear(8, 1) for _ in range(2)])

    def forward(self, x):
        q = self.trunk(x).view(2, 1, 4, 8)
        z = F.scaled_dot_product_attention(q, q, q).reshape(-1, 8)
        return [h(z).pow(2).mean() for h in self.heads]


def test_cosreg_through_fused_attention_names_the_fix():
    model, x = Attention(), torch.randn(8, 8)
    mtl = MultiTaskBackward(model, "cosreg", shared=model.trunk)
    with pytest.raises(DoubleBackwardError, match=r"sdpa_kernel\(.*SDPBackend.MATH"):
        mtl.backward(model(x))
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model.zero_grad()
    with sdpa_kernel(SDPBackend.MATH):
        mtl.backward(model(x))
    assert model.trunk.weight.grad is not None
