"""MGDA (Sener & Koltun 2018): min-norm point of the convex hull, from the Gramian; MGDA-UB."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from gradsurgery.backward import MultiTaskBackward
from gradsurgery.methods.base import TaskStep
from gradsurgery.methods.mgda import MGDA, gradient_normalizers
from gradsurgery.methods.registry import create_method, method_info
from gradsurgery.methods.simplex import min_norm_weights

F64 = torch.float64


def _step(gramian: torch.Tensor, losses: torch.Tensor | None = None) -> TaskStep:
    m = gramian.shape[0]
    return TaskStep(
        losses=losses if losses is not None else torch.ones(m, dtype=gramian.dtype),
        tasks=torch.arange(m),
        num_tasks=m,
        step=0,
        gramian=gramian,
    )


def _weights(grads: torch.Tensor, **kwargs) -> torch.Tensor:
    return MGDA(**kwargs)(_step(grads @ grads.T)).weights


def _jacobian(m: int, d: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    scales = torch.exp(torch.randn(m, 1, generator=gen, dtype=F64))
    return torch.randn(m, d, generator=gen, dtype=F64) * scales


def _slsqp_min_norm(k: np.ndarray) -> float:
    optimize = pytest.importorskip("scipy.optimize")
    m = k.shape[0]
    best = np.inf
    for s in range(3):
        x0 = np.full(m, 1.0 / m) if s == 0 else np.random.default_rng(s).dirichlet(np.ones(m))
        res = optimize.minimize(
            lambda x: x @ k @ x,
            x0,
            jac=lambda x: 2 * k @ x,
            bounds=[(0, 1)] * m,
            constraints=({"type": "eq", "fun": lambda x: x.sum() - 1},),
            method="SLSQP",
            options={"ftol": 1e-15, "maxiter": 1000},
        )
        x = np.clip(res.x, 0, None)
        x = x / x.sum()
        best = min(best, float(x @ k @ x))
    return best


# ---------------------------------------------------------------- hand-worked cases


@pytest.mark.parametrize("solver", ["exact", "frank_wolfe"])
def test_two_tasks_by_hand(solver):
    # Orthogonal unit gradients: the midpoint (½, ½).
    g = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64)
    torch.testing.assert_close(_weights(g, solver=solver), torch.tensor([0.5, 0.5], dtype=F64))
    # g1 = (1, 0), g2 = (−1, 1): γ on g2 = (g1·g1 − g1·g2)/‖g1 − g2‖² = 2/5; d = (0.2, 0.4).
    g = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=F64)
    w = _weights(g, solver=solver)
    torch.testing.assert_close(w, torch.tensor([0.6, 0.4], dtype=F64))
    torch.testing.assert_close(w @ g, torch.tensor([0.2, 0.4], dtype=F64))
    # g1 = (1, 0), g2 = (2, 0): the closest point of the hull is g1 itself.
    g = torch.tensor([[1.0, 0.0], [2.0, 0.0]], dtype=F64)
    torch.testing.assert_close(_weights(g, solver=solver), torch.tensor([1.0, 0.0], dtype=F64))


def test_three_tasks_by_hand():
    # e1, e2 and (1, 1): the min-norm point of the triangle is (½, ½), on the edge e1–e2.
    g = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=F64)
    torch.testing.assert_close(_weights(g), torch.tensor([0.5, 0.5, 0.0], dtype=F64))
    # Opposite gradients: 0 is in the hull, the update vanishes (Pareto-stationary).
    g = torch.tensor([[1.0, 2.0], [-1.0, -2.0], [3.0, 0.0]], dtype=F64)
    w = _weights(g)
    torch.testing.assert_close(w @ g, torch.zeros(2, dtype=F64), atol=1e-12, rtol=0)


# ---------------------------------------------------------------- properties


@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 8), d=st.integers(1, 12), seed=st.integers(0, 100_000))
def test_min_norm_properties_and_optimality(m, d, seed):
    j = _jacobian(m, d, seed)
    k = j @ j.T
    w = _weights(j)
    scale = float(k.diagonal().max())
    assert (w >= 0).all() and abs(float(w.sum()) - 1) < 1e-12
    d_vec = w @ j
    # Every task's gradient has a non-negative inner product with the update: g_i·d ≥ ‖d‖².
    assert ((j @ d_vec) >= d_vec @ d_vec - 1e-9 * scale).all()
    # Optimal: no worse than SLSQP on the simplex.
    assert float(d_vec @ d_vec) <= _slsqp_min_norm(k.numpy()) + 1e-10 * scale


@settings(max_examples=15, deadline=None)
@given(m=st.integers(2, 7), d=st.integers(1, 10), seed=st.integers(0, 100_000))
def test_solvers_agree(m, d, seed):
    j = _jacobian(m, d, seed)
    k = j @ j.T
    exact = _weights(j)
    iters = 2000
    fw = _weights(j, solver="frank_wolfe", max_iter=iters, tol=0)
    scale = float(k.diagonal().max())
    # Frank–Wolfe's guarantee (as in test_simplex): f(w_t) − f* ≤ 16 max_i K_ii / (t + 2); a
    # degenerate Gramian (m = 3 tasks in d = 2) is still 3.6e-4 max_i K_ii away at t = 2000.
    gap = float(fw @ k @ fw) - float(exact @ k @ exact)
    assert -1e-10 * scale <= gap <= 16 * scale / (iters + 2)
    if d >= m + 2:  # generic full-rank Gramian: the minimiser is unique
        assert float((fw - exact).abs().max()) < 0.05


def test_torchjd_oracle():
    torchjd = pytest.importorskip("torchjd.aggregation")
    for seed in range(4):
        j = _jacobian(5, 8, seed)
        k = j @ j.T
        theirs = torchjd.MGDAWeighting(epsilon=1e-12, max_iters=2000)(k)
        ours = _weights(j)
        scale = float(k.diagonal().max())
        assert float(ours @ k @ ours) <= float(theirs @ k @ theirs) + 1e-10 * scale
        assert float(theirs @ k @ theirs) == pytest.approx(float(ours @ k @ ours), abs=1e-4 * scale)


# ---------------------------------------------------------------- options


@pytest.mark.parametrize("normalization", ["none", "l2", "loss", "loss+"])
def test_normalizations_solve_the_normalised_problem(normalization):
    j = _jacobian(4, 6, 3)
    losses = torch.tensor([0.5, 2.0, 1.0, 4.0], dtype=F64)
    k = j @ j.T
    s = {
        "none": torch.ones(4, dtype=F64),
        "l2": j.norm(dim=1),
        "loss": losses,
        "loss+": losses * j.norm(dim=1),
    }[normalization]
    torch.testing.assert_close(gradient_normalizers(k, losses, normalization), s)
    expected = min_norm_weights((j / s[:, None]) @ (j / s[:, None]).T)
    raw = MGDA(normalization=normalization, apply_to="raw")(_step(k, losses)).weights
    torch.testing.assert_close(raw, expected)
    normalized = MGDA(normalization=normalization)(_step(k, losses)).weights
    torch.testing.assert_close(normalized, expected / s)
    # The "normalized" update is the min-norm point of the normalised gradients.
    d_vec = normalized @ j
    jn = j / s[:, None]
    assert ((jn @ d_vec) >= d_vec @ d_vec - 1e-10).all()


def test_normalizers_guard_non_positive_values():
    k = torch.diag(torch.tensor([0.0, 4.0], dtype=F64))
    losses = torch.tensor([-1.0, 0.0], dtype=F64)
    torch.testing.assert_close(
        gradient_normalizers(k, losses, "l2"), torch.tensor([1.0, 2.0], dtype=F64)
    )
    torch.testing.assert_close(gradient_normalizers(k, losses, "loss"), torch.ones(2, dtype=F64))
    with pytest.raises(ValueError):
        MGDA(normalization="max")


def test_task_specific_weights():
    g = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=F64)
    step = _step(g @ g.T)
    torch.testing.assert_close(MGDA()(step).task_specific_weights, torch.ones(2, dtype=F64))
    torch.testing.assert_close(
        MGDA(task_specific="weights")(step).task_specific_weights,
        torch.tensor([0.6, 0.4], dtype=F64),
    )


# ---------------------------------------------------------------- edge cases


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("solver", ["exact", "frank_wolfe"])
def test_edge_cases(dtype, solver):
    # m = 1: the only gradient.
    g = torch.tensor([[3.0, 4.0]], dtype=dtype)
    torch.testing.assert_close(_weights(g, solver=solver), torch.ones(1, dtype=dtype))
    # A zero gradient: 0 is in the hull, the update is zero; no NaN with any normalisation.
    g = torch.tensor([[1.0, 2.0], [0.0, 0.0], [-1.0, 3.0]], dtype=dtype)
    for normalization in ("none", "l2", "loss", "loss+"):
        w = _weights(g, solver=solver, normalization=normalization)
        assert torch.isfinite(w).all()
        torch.testing.assert_close(w @ g, torch.zeros(2, dtype=dtype), atol=1e-5, rtol=0)
    # Duplicated gradients share their weight equally.
    g = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=dtype)
    w = _weights(g, solver="exact")
    torch.testing.assert_close(w[0], w[1])
    torch.testing.assert_close(w @ g, torch.tensor([0.5, 0.5], dtype=dtype))
    # All gradients zero.
    w = _weights(torch.zeros(3, 4, dtype=dtype), solver=solver)
    assert torch.isfinite(w).all() and w.dtype == dtype


def test_registry():
    assert isinstance(create_method("mgda", normalization="l2"), MGDA)
    assert "Sener" in method_info("mgda").paper


# ---------------------------------------------------------------- MGDA-UB


class _TrunkHeads(nn.Module):
    def __init__(self, m: int = 3) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(4, 6), nn.Tanh()).to(F64)
        self.heads = nn.ModuleList([nn.Linear(6, 1).to(F64) for _ in range(m)])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        z = self.trunk(x)
        return z, [h(z).squeeze(1) for h in self.heads]


def test_mgda_ub_through_multitask_backward():
    torch.manual_seed(0)
    model = _TrunkHeads()
    x = torch.randn(10, 4, dtype=F64)
    y = torch.randn(3, 10, dtype=F64)
    z, outs = model(x)
    losses = [((o - t) ** 2).mean() for o, t in zip(outs, y, strict=True)]
    # The oracle: MGDA on the Gramian of the gradients w.r.t. the representation.
    u = torch.stack(
        [torch.autograd.grad(loss, z, retain_graph=True)[0].flatten() for loss in losses]
    )
    expected = min_norm_weights(u @ u.T)
    expected_trunk = torch.autograd.grad(
        z, list(model.trunk.parameters()), (expected @ u).view_as(z), retain_graph=True
    )
    mtl = MultiTaskBackward(model, MGDA(), shared=model.trunk)
    result = mtl.backward(losses, representation=z)
    assert result.approximate
    torch.testing.assert_close(result.weights, expected)
    torch.testing.assert_close(result.gramian, u @ u.T)
    for p, g in zip(model.trunk.parameters(), expected_trunk, strict=True):
        torch.testing.assert_close(p.grad, g)
    # Heads get their own gradients (the paper's Algorithm 2).
    for head, loss in zip(model.heads, losses, strict=True):
        for p, g in zip(
            head.parameters(),
            torch.autograd.grad(loss, list(head.parameters()), retain_graph=True),
            strict=True,
        ):
            torch.testing.assert_close(p.grad, g)
