"""``WEIGHTING+GRADIENT`` compositions (:mod:`gradsurgery.methods.composed`).

The model is the conformance suite's: task ``i``'s loss is
``c_i + <J_i, w - w.detach()> + <H_i, h_i - h_i.detach()>`` (value ``c_i``, gradient ``J_i`` on the
shared ``w``, ``H_i`` on its head ``h_i``), so every expected update is worked out by hand.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from gradsurgery.backward import MultiTaskBackward
from gradsurgery.cli import main
from gradsurgery.cli_args import method_args
from gradsurgery.experiments.compare import resolve_methods
from gradsurgery.experiments.runner import RunSpec
from gradsurgery.methods import (
    DynamicWeightAverage,
    GradDrop,
    PCGrad,
    UncertaintyWeighting,
    create_method,
)
from gradsurgery.methods.composed import Composed
from gradsurgery.methods.registry import (
    composable_methods,
    method_info,
    method_names,
    resolve_method,
)
from gradsurgery.toy.runner import run_toy


class _Model:
    def __init__(self, m: int, d: int, h: int = 2) -> None:
        self.w = torch.zeros(d, dtype=torch.float64, requires_grad=True)
        self.heads = [torch.zeros(h, dtype=torch.float64, requires_grad=True) for _ in range(m)]

    @property
    def params(self) -> list[Tensor]:
        return [self.w, *self.heads]

    def losses(self, J: Tensor, Hd: Tensor, c: Tensor, scale: Tensor | None = None) -> Tensor:
        dw = self.w - self.w.detach()
        out = torch.stack(
            [
                c[i] + (J[i] * dw).sum() + (Hd[i] * (h - h.detach())).sum()
                for i, h in enumerate(self.heads)
            ]
        )
        return out if scale is None else out * scale

    def grads(self) -> list[Tensor]:
        out = []
        for p in self.params:
            assert p.grad is not None
            out.append(p.grad.clone())
            p.grad = None
        return out


def _uw_pcgrad(model: _Model, log_vars: Tensor, seed: int = 0) -> MultiTaskBackward:
    m = len(model.heads)
    mtl = MultiTaskBackward(
        model.params, "uw+pcgrad", shared=[model.w], num_tasks=m, **{"pcgrad.seed": seed}
    )
    with torch.no_grad():
        mtl.method.weighting.log_vars.copy_(log_vars)
    return mtl


def _f64(*rows: list[float]) -> Tensor:
    """A matrix of the rows, or the vector of a single row."""
    out = torch.tensor(rows, dtype=torch.float64)
    return out[0] if len(rows) == 1 else out


# ------------------------------------------------------------------ hand-worked cases
def test_two_tasks_by_hand():
    """UW's weights at s = (0, log 2) are (1, ½): the weighted rows (1, 0), (-1, 1) conflict;
    PCGrad projects each on the other's normal plane: (½, ½) + (0, 1) = (½, 3/2)."""
    model = _Model(2, 2)
    mtl = _uw_pcgrad(model, torch.tensor([0.0, math.log(2.0)]))
    J, Hd, c = _f64([1.0, 0.0], [-2.0, 2.0]), _f64([1.0, 2.0], [4.0, -2.0]), _f64([3.0, 0.5])
    result = mtl.backward(model.losses(J, Hd, c))
    gw, h0, h1 = model.grads()
    torch.testing.assert_close(gw, _f64([0.5, 1.5]))
    torch.testing.assert_close(h0, _f64([1.0, 2.0]))  # weighted own-task gradients w_i H_i
    torch.testing.assert_close(h1, _f64([2.0, -1.0]))
    # the step's weights are PCGrad's (2, 3/2) on the weighted rows times UW's (1, ½)
    torch.testing.assert_close(result.weights, _f64([2.0, 0.75]))
    # the log-variances train as alone: ∂/∂s_i = 1 − e^{−s_i} L_i
    log_vars = mtl.method.weighting.log_vars
    torch.testing.assert_close(log_vars.grad, torch.tensor([1.0 - 3.0, 1.0 - 0.25]))


def test_three_tasks_by_hand():
    """w = (1, ½, ¼): weighted rows a = (1,0,0), b = (-1,1,0), c = (0,0,1); only a and b conflict
    (in any order): a' = (½,½,0), b' = (0,1,0), c' = c; sum (½, 3/2, 1)."""
    model = _Model(3, 3)
    mtl = _uw_pcgrad(model, torch.tensor([0.0, math.log(2.0), math.log(4.0)]))
    J = _f64([1.0, 0.0, 0.0], [-2.0, 2.0, 0.0], [0.0, 0.0, 4.0])
    Hd, c = torch.ones(3, 2, dtype=torch.float64), _f64([1.0, 2.0, 4.0])
    mtl.backward(model.losses(J, Hd, c))
    gw, *heads = model.grads()
    torch.testing.assert_close(gw, _f64([0.5, 1.5, 1.0]))
    for h, w in zip(heads, [1.0, 0.5, 0.25], strict=True):
        torch.testing.assert_close(h, torch.full((2,), w, dtype=torch.float64))
    torch.testing.assert_close(mtl.method.weighting.log_vars.grad, torch.zeros(3))


@settings(max_examples=25, deadline=None)
@given(
    m=st.integers(2, 4),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_equals_pcgrad_on_the_weighted_losses(m, seed, data):
    """Over three steps (PCGrad's orders drawn alike, UW's s moving by hand): ``uw+pcgrad`` is
    PCGrad on the losses weighted by UW's weights held constant, and UW's ``s`` get
    ``1 − e^{−s} L``."""
    g = torch.Generator().manual_seed(seed)
    s = torch.tensor(data.draw(st.lists(st.floats(-2, 2), min_size=m, max_size=m)))
    composed_model, plain_model = _Model(m, 4), _Model(m, 4)
    composed = _uw_pcgrad(composed_model, s, seed=seed)
    plain = MultiTaskBackward(
        plain_model.params, PCGrad(seed=seed), shared=[plain_model.w], num_tasks=m
    )
    for _ in range(3):
        J = torch.randn(m, 4, generator=g, dtype=torch.float64)
        Hd = torch.randn(m, 2, generator=g, dtype=torch.float64)
        c = torch.rand(m, generator=g, dtype=torch.float64) + 0.1
        w = torch.exp(-s).double()
        composed.backward(composed_model.losses(J, Hd, c))
        plain.backward(plain_model.losses(J, Hd, c, scale=w))
        for got, want in zip(composed_model.grads(), plain_model.grads(), strict=True):
            torch.testing.assert_close(got, want)
        log_vars = composed.method.weighting.log_vars
        torch.testing.assert_close(log_vars.grad, (1 - w * c).float())
        with torch.no_grad():  # a step of the log-variances, mirrored in the reference
            log_vars -= 0.1 * log_vars.grad
            s = log_vars.detach().clone()
        log_vars.grad = None


def test_sum_plus_pcgrad_is_pcgrad():
    g = torch.Generator().manual_seed(0)
    a, b = _Model(3, 5), _Model(3, 5)
    composed = MultiTaskBackward(a.params, "sum+pcgrad", shared=[a.w], num_tasks=3, seed=4)
    plain = MultiTaskBackward(b.params, "pcgrad", shared=[b.w], num_tasks=3, seed=4)
    for _ in range(4):
        J, Hd = torch.randn(3, 5, generator=g).double(), torch.randn(3, 2, generator=g).double()
        c = torch.rand(3, generator=g).double()
        composed.backward(a.losses(J, Hd, c))
        plain.backward(b.losses(J, Hd, c))
        for got, want in zip(a.grads(), b.grads(), strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_a_jacobian_method_sees_the_weighted_rows():
    """``uw+graddrop`` is GradDrop (same draws) on the weighted losses."""
    g = torch.Generator().manual_seed(1)
    s = torch.tensor([0.3, -0.7, 1.1])
    a, b = _Model(3, 6), _Model(3, 6)
    composed = MultiTaskBackward(
        a.params, Composed(UncertaintyWeighting(3), GradDrop(seed=2)), shared=[a.w], num_tasks=3
    )
    with torch.no_grad():
        composed.method.weighting.log_vars.copy_(s)
    plain = MultiTaskBackward(b.params, GradDrop(seed=2), shared=[b.w], num_tasks=3)
    for _ in range(3):
        J, Hd = torch.randn(3, 6, generator=g).double(), torch.randn(3, 2, generator=g).double()
        c = torch.rand(3, generator=g).double()
        composed.backward(a.losses(J, Hd, c))
        plain.backward(b.losses(J, Hd, c, scale=torch.exp(-s).double()))
        for got, want in zip(a.grads(), b.grads(), strict=True):
            torch.testing.assert_close(got, want)


# ------------------------------------------------------------------ the object
def test_parameters_state_and_epochs_are_the_parts():
    model = _Model(3, 5)
    mtl = MultiTaskBackward(model.params, "uw+pcgrad", shared=[model.w], num_tasks=3, seed=0)
    assert [p is mtl.method.weighting.log_vars for p in mtl.parameters()] == [True]
    g = torch.Generator().manual_seed(0)
    for _ in range(2):
        J, Hd = torch.randn(3, 5, generator=g).double(), torch.randn(3, 2, generator=g).double()
        mtl.backward(model.losses(J, Hd, torch.rand(3, generator=g).double()))
        model.grads()
        with torch.no_grad():
            mtl.method.weighting.log_vars -= 0.5
    state = mtl.method.state_dict()
    assert "weighting.log_vars" in state
    assert any(k.startswith("gradient.") for k in state)  # PCGrad's random stream
    fresh = MultiTaskBackward(model.params, "uw+pcgrad", shared=[model.w], num_tasks=3, seed=9)
    fresh.load_state_dict(mtl.state_dict())
    torch.testing.assert_close(fresh.method.weighting.log_vars, mtl.method.weighting.log_vars)
    J, Hd = torch.randn(3, 5, generator=g).double(), torch.randn(3, 2, generator=g).double()
    c = torch.rand(3, generator=g).double()
    mtl.backward(model.losses(J, Hd, c))
    want = model.grads()
    fresh.backward(model.losses(J, Hd, c))
    for got, w in zip(model.grads(), want, strict=True):
        torch.testing.assert_close(got, w, rtol=0, atol=0)

    dwa = Composed(DynamicWeightAverage(), PCGrad())
    assert dwa.needs_epoch_boundaries and dwa.requires == "gramian" and dwa.name == "dwa+pcgrad"
    assert not Composed(DynamicWeightAverage(epoch_length=5), PCGrad()).needs_epoch_boundaries


def test_declared_properties_follow_the_parts():
    uw_pcgrad = create_method("uw+pcgrad")
    assert uw_pcgrad.permutation_equivariant is False  # PCGrad's orders
    assert uw_pcgrad.scale_degree == 1 and uw_pcgrad.single_task == "exact"  # as both parts
    assert create_method("uw+cagrad").single_task == "positive"  # as CAGrad
    assert create_method("gradnorm+pcgrad").scale_degree is None  # GradNorm reads the norms
    assert create_method("uw+mgda", placement="device").host_syncs == 0
    assert create_method("uw+mgda").host_syncs == 1


# ------------------------------------------------------------------ names and refusals
@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("pcgrad+mgda", "two gradient methods"),
        ("uw+dwa", "two loss weightings"),
        ("pcgrad+uw", "write uw+pcgrad"),
        ("uw+imtl", "imtl cannot be composed"),
        ("cosreg+pcgrad", "cosreg cannot be composed"),
        ("uw+pcgrad+mgda", "WEIGHTING+GRADIENT"),
        ("uw+", "WEIGHTING+GRADIENT"),
    ],
)
def test_meaningless_compositions_are_refused(name, why):
    for call in (resolve_method, create_method):
        with pytest.raises(ValueError, match=re.escape(why)):
            call(name)


def test_refusals_of_objects_and_unknown_parts():
    with pytest.raises(ValueError, match="two gradient methods"):
        Composed(PCGrad(), create_method("mgda"))
    with pytest.raises(ValueError, match="a composition already"):
        Composed(UncertaintyWeighting(), Composed(UncertaintyWeighting(), PCGrad()))
    with pytest.raises(KeyError, match="did you mean pcgrad"):
        resolve_method("uw+pcgradd")


def test_names_resolve_everywhere():
    assert resolve_method("Uncertainty+PC-Grad") == "uw+pcgrad"
    assert create_method("uncertainty+pc-grad").name == "uw+pcgrad"
    assert method_info("uw+pcgrad").cls is Composed
    assert "uw+pcgrad" not in method_names()  # composed names are not registered
    weightings, gradients = composable_methods()
    assert {"uw", "dwa", "sum", "gradnorm"} <= set(weightings) and "cosreg" not in weightings
    assert {"pcgrad", "mgda", "graddrop"} <= set(gradients) and "imtl" not in gradients
    assert resolve_methods(["sum", "UW+pcgrad", "uw+pcgrad"]) == ["sum", "uw+pcgrad"]
    assert RunSpec("multidigits", "uw+pcgrad", 0).relative_dir().parts == ("uw+pcgrad", "seed0")
    toy = run_toy("pcgrad_figure1", "uw+pcgrad", steps=5)
    assert toy.method == "uw+pcgrad"


def test_keyword_arguments_reach_the_parts():
    both = create_method("rlw+pcgrad", seed=3)  # a bare key: every part that takes it
    assert isinstance(both, Composed)
    seeded = torch.Generator().manual_seed(3).get_state()
    for part in (both.weighting, both.gradient):
        assert torch.equal(part.generators.cpu.get_state(), seeded)
    one = create_method("uw+pcgrad", **{"pcgrad.reduction": "mean", "uw.init": 0.5})
    assert isinstance(one, Composed)
    assert one.gradient.reduction == "mean" and one.weighting.init == 0.5
    aliased = create_method("uw+pcgrad", **{"uncertainty.init": 0.25})
    assert isinstance(aliased, Composed) and aliased.weighting.init == 0.25
    with pytest.raises(TypeError, match="neither part"):
        create_method("uw+pcgrad", bogus=1)
    with pytest.raises(TypeError, match="not one of its parts"):
        create_method("uw+pcgrad", **{"mgda.placement": "device"})
    parsed = method_args(["uw+pcgrad.pcgrad.seed=1", "uw+pcgrad.init=0.5"], ["uw+pcgrad"])
    assert parsed == {"uw+pcgrad": {"pcgrad.seed": 1, "init": 0.5}}


def test_command_lines_refuse_with_the_reason(capsys, tmp_path):
    assert main(["toy", "--methods", "pcgrad+mgda", "--out", str(tmp_path)]) == 2
    assert "two gradient methods" in capsys.readouterr().err
    code = main(["compare", "--methods", "uw+dwa", "--out", str(tmp_path), "--no-progress"])
    assert code == 2
    assert "two loss weightings" in capsys.readouterr().err
