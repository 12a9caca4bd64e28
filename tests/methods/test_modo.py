"""MoDo (single-sample): hand-worked steps, the simplex invariant, LibMTL's loop as an oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradsurgery.methods.modo import MoDo
from gradsurgery.methods.registry import create_method
from gradsurgery.toy import run_toy
from tests.methods.steps import gramian_step as step_of

F64 = torch.float64


def test_registered():
    method = create_method("modo", gamma=0.01)
    assert isinstance(method, MoDo) and method.requires == "gramian" and method.gamma == 0.01
    assert MoDo.scale_degree is None and MoDo.single_task == "exact"


def test_two_tasks_by_hand():
    modo = MoDo(gamma=0.5, rho=0.0, num_tasks=2)
    modo.lambd.copy_(torch.tensor([0.8, 0.2], dtype=F64))
    agg = modo(step_of(torch.eye(2, dtype=F64)))
    # (0.8, 0.2) − 0.5 (0.8, 0.2) = (0.4, 0.1); + 0.25 each onto Δ
    torch.testing.assert_close(agg.weights, torch.tensor([0.65, 0.35], dtype=F64))
    torch.testing.assert_close(agg.task_specific_weights, torch.ones(2, dtype=F64))
    torch.testing.assert_close(modo.lambd, torch.tensor([0.65, 0.35], dtype=F64))
    # a large step lands on a vertex: (½, ½) − 10 (½, 0) = (−4.5, ½) → (0, 1)
    modo = MoDo(gamma=10.0, rho=0.0, num_tasks=2)
    w = modo(step_of(torch.diag(torch.tensor([1.0, 0.0], dtype=F64)))).weights
    torch.testing.assert_close(w, torch.tensor([0.0, 1.0], dtype=F64))


def test_three_tasks_by_hand():
    # K = diag(1, 2, 3), λ = 1/3, γ = 0.1: λ − γKλ = (12 − k − 2)/30, shifted by 2/30 onto Δ
    k = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=F64))
    want = torch.tensor([11.0, 10.0, 9.0], dtype=F64) / 30
    torch.testing.assert_close(MoDo(gamma=0.1, rho=0.0)(step_of(k)).weights, want)
    # ρ λ with uniform λ is a uniform shift, which the projection removes
    torch.testing.assert_close(MoDo(gamma=0.1, rho=0.5)(step_of(k)).weights, want)


def test_absent_tasks_keep_their_lambda():
    modo = MoDo(gamma=0.1, rho=0.0, num_tasks=3)
    k = torch.diag(torch.tensor([1.0, 3.0], dtype=F64))
    w = modo(step_of(k, tasks=torch.tensor([0, 2]), num=3)).weights
    # present: (½, ½) − 0.1 (½, 3/2) = (0.45, 0.35) → (0.55, 0.45); written back × 2/3
    torch.testing.assert_close(w, torch.tensor([0.55, 0.45], dtype=F64))
    torch.testing.assert_close(
        modo.lambd, torch.tensor([0.55 * 2 / 3, 1 / 3, 0.45 * 2 / 3], dtype=F64)
    )


def _libmtl_projection(y: np.ndarray) -> np.ndarray:
    """LibMTL's ``MoDo._projection2simplex``, in NumPy."""
    m = len(y)
    sorted_y = np.sort(y)[::-1]
    tmpsum, tmax_f = 0.0, (y.sum() - 1.0) / m
    for i in range(m - 1):
        tmpsum += sorted_y[i]
        tmax = (tmpsum - 1) / (i + 1.0)
        if tmax > sorted_y[i + 1]:
            tmax_f = tmax
            break
    return np.maximum(y - tmax_f, 0.0)


@settings(max_examples=25, deadline=None)
@given(
    m=st.integers(1, 6),
    gamma=st.sampled_from([1e-3, 0.05, 0.5, 5.0]),
    rho=st.sampled_from([0.0, 0.1, 1.0]),
    seed=st.integers(0, 10**6),
)
def test_matches_libmtl_loop_with_one_sample(m, gamma, rho, seed):
    """LibMTL's update with ``grads[0] = grads[1] = grads[2] = J``, over several steps; λ stays on Δ."""
    g = torch.Generator().manual_seed(seed)
    modo = MoDo(gamma=gamma, rho=rho)
    lam = np.full(m, 1.0 / m)
    for t in range(5):
        j = torch.randn(m, 7, generator=g, dtype=F64)
        w = modo(step_of(j @ j.T)).weights
        jn = j.numpy()
        lam = _libmtl_projection(lam - gamma * (jn @ (jn.T @ lam) + rho * lam))
        np.testing.assert_allclose(w.numpy(), lam, rtol=1e-10, atol=1e-12, err_msg=f"step {t}")
        assert abs(float(modo.lambd.sum()) - 1) < 1e-12 and bool((modo.lambd >= 0).all())


def test_state_dict_carries_lambda():
    a = MoDo(gamma=0.3)
    k = torch.tensor([[2.0, -1.0], [-1.0, 1.0]], dtype=F64)
    a(step_of(k))
    b = MoDo(gamma=0.3)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b(step_of(k)).weights, a(step_of(k)).weights)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="gamma"):
        MoDo(gamma=0.0)
    with pytest.raises(ValueError, match="rho"):
        MoDo(rho=-1.0)


def test_toy_runs():
    result = run_toy("pcgrad_figure1", "modo", steps=50)
    assert result.steps == 50 and bool(np.isfinite(np.asarray(result.trajectory)).all())
