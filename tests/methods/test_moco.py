"""MoCo: hand-worked steps, the simplex invariant, LibMTL's and the authors' loops as oracles."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from gradsurgery.jacobian import TaskJacobian
from gradsurgery.methods.base import TaskStep
from gradsurgery.methods.moco import MoCo
from gradsurgery.methods.registry import create_method
from gradsurgery.methods.simplex import project_simplex
from gradsurgery.toy import run_toy

F64 = torch.float64


def run(method: MoCo, j, losses=None, tasks=None, num=None) -> torch.Tensor:
    j = torch.as_tensor(j, dtype=F64)
    m = j.shape[0]
    losses = torch.ones(m, dtype=F64) if losses is None else losses
    tasks = torch.arange(m) if tasks is None else tasks
    step = TaskStep(losses, tasks, num or m, 0, jacobian=TaskJacobian([j]))
    agg = method(step)
    torch.testing.assert_close(agg.task_specific_weights, torch.ones(m, dtype=F64))
    assert agg.update is not None
    return agg.update[0]


def test_registered():
    method = create_method("moco", rho=0.1, lambda_map="softmax")
    assert isinstance(method, MoCo) and method.requires == "jacobian"
    assert MoCo.single_task is None and MoCo.scale_degree is None and method.host_syncs == 0


def test_two_tasks_by_hand():
    moco = MoCo(beta=0.5, beta_sigma=0.0, gamma=0.1, gamma_sigma=0.0)
    # y = ½ g: Y = ½ I, YYᵀ = ¼ I: a uniform shift of λ = (½, ½), removed by Π_Δ
    torch.testing.assert_close(
        run(moco, [[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0.25, 0.25], dtype=F64)
    )
    # y1 = ½ (½, 0) + ½ (2, 0) = (1.25, 0), y2 = (0, ¼): YYᵀλ = (0.78125, 0.03125),
    # λ − 0.1 YYᵀλ = (0.421875, 0.496875), + 0.040625 each onto Δ
    got = run(moco, [[2.0, 0.0], [0.0, 0.0]])
    torch.testing.assert_close(moco.lambd, torch.tensor([0.4625, 0.5375], dtype=F64))
    torch.testing.assert_close(got, torch.tensor([0.4625 * 1.25, 0.5375 * 0.25], dtype=F64))
    assert int(moco.steps) == 2


def test_step_sizes_decay_with_k():
    moco = MoCo(beta=0.5, beta_sigma=0.5)
    run(moco, [[1.0, 0.0]])  # k = 1: y = ½ g
    got = run(moco, [[0.0, 1.0]])  # k = 2: β = ½/√2
    b = 0.5 / 2**0.5
    torch.testing.assert_close(got, torch.tensor([0.5 * (1 - b), b], dtype=F64))


def test_three_tasks_by_hand():
    # β = 1: Y = J; orthogonal norms 1, 2, 3: 1/3 − 0.1 (1, 4, 9)/3 = (0.9, 0.6, 0.1)/3, whose
    # sum 1.6/3 falls short by 1.4/3: + 1.4/9 each, λ = (4.1, 3.2, 1.7)/9
    moco = MoCo(beta=1.0, gamma=0.1, gamma_sigma=0.0)
    j = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=F64))
    got = run(moco, j)
    lam = torch.tensor([4.1, 3.2, 1.7], dtype=F64) / 9
    torch.testing.assert_close(moco.lambd, lam)
    torch.testing.assert_close(got, lam * torch.tensor([1.0, 2.0, 3.0], dtype=F64))


def test_absent_tasks_keep_their_state():
    moco = MoCo(beta=1.0, num_tasks=3)
    run(moco, [[1.0, 0.0], [0.0, 1.0]], tasks=torch.tensor([0, 2]), num=3)
    assert moco.y is not None
    torch.testing.assert_close(
        moco.y, torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]], dtype=F64)
    )
    assert float(moco.lambd[1]) == pytest.approx(1 / 3) and float(
        moco.lambd.sum()
    ) == pytest.approx(1)


def _jacobians(m: int, steps: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(m, 6, generator=g, dtype=F64) for _ in range(steps)]


@settings(max_examples=20, deadline=None)
@given(m=st.integers(1, 5), rho=st.sampled_from([0.0, 0.5]), seed=st.integers(0, 10**6))
def test_matches_libmtl_loop(m, rho, seed):
    """LibMTL's ``MoCo.backward`` (normalised gradients, softmax λ) over several steps."""
    moco = MoCo(rho=rho, lambda_map="softmax", normalize=True)
    y, lam = torch.zeros(m, 6, dtype=F64), torch.ones(m, dtype=F64) / m
    g = torch.Generator().manual_seed(seed + 1)
    for step, grads in enumerate(_jacobians(m, 5, seed), start=1):
        losses = torch.rand(m, generator=g, dtype=F64) + 0.5
        got = run(moco, grads, losses=losses)
        grads = grads / (grads.norm(dim=1, keepdim=True) + 1e-8) * losses.unsqueeze(1)
        y = y - (0.5 / step**0.5) * (y - grads)
        lam = F.softmax(
            lam - (0.1 / step**0.5) * (y @ y.t() + rho * torch.eye(m, dtype=F64)) @ lam, -1
        )
        torch.testing.assert_close(got, y.t() @ lam, rtol=1e-10, atol=1e-12)


def _authors_projection(v: np.ndarray) -> np.ndarray:
    """``Tracking.projection_simplex_sort`` of the authors' repository."""
    u = np.sort(v)[::-1]
    cssv = np.cumsum(u) - 1
    ind = np.arange(v.shape[0]) + 1
    cond = u - cssv / ind > 0
    return np.maximum(v - cssv[cond][-1] / float(ind[cond][-1]), 0)


@settings(max_examples=20, deadline=None)
@given(m=st.integers(1, 5), seed=st.integers(0, 10**6))
def test_matches_the_authors_tracking_loop(m, seed):
    """The authors' ``Tracking`` (β = 0.1, λ step δ · 2 YYᵀλ with δ = 0.1, i.e. γ = 0.2 here)."""
    moco = MoCo(beta=0.1, gamma=0.2)
    y, lam = np.zeros((6, m)), np.ones(m) / m
    for step, grads in enumerate(_jacobians(m, 5, seed), start=1):
        got = run(moco, grads)
        y = y - 0.1 / step**0.5 * (y - grads.numpy().T)
        lam = _authors_projection(lam - 0.1 / step**0.5 * 2 * y.T @ (y @ lam))
        np.testing.assert_allclose(got.numpy(), y @ lam, rtol=1e-10, atol=1e-12)
        assert abs(float(moco.lambd.sum()) - 1) < 1e-12 and bool((moco.lambd >= 0).all())


@settings(max_examples=20, deadline=None)
@given(m=st.integers(1, 5), seed=st.integers(0, 10**6))
def test_update_is_the_tracked_combination(m, seed):
    moco = MoCo(gamma=1.0, rho=0.2)
    for grads in _jacobians(m, 3, seed):
        lam_before = moco.lambd.clone() if moco.lambd is not None else torch.ones(m, dtype=F64) / m
        got = run(moco, grads)
        assert moco.y is not None
        y = moco.y
        want_lam = project_simplex(
            lam_before - (1.0 / int(moco.steps) ** 0.5) * (y @ y.T @ lam_before + 0.2 * lam_before)
        )
        torch.testing.assert_close(moco.lambd, want_lam)
        torch.testing.assert_close(got, y.T @ moco.lambd)


def test_state_dict_round_trips_into_a_fresh_method():
    a = MoCo()
    js = _jacobians(3, 3, seed=0)
    for j in js[:2]:
        run(a, j)
    b = MoCo()
    b.load_state_dict(a.state_dict())
    assert set(a.state_dict()) == {"y", "lambd", "steps"}
    torch.testing.assert_close(run(b, js[2]), run(a, js[2]), rtol=0, atol=0)


def test_bad_arguments_are_refused():
    for kwargs, word in (
        ({"beta": 0.0}, "beta"),
        ({"gamma": 0.0}, "gamma"),
        ({"rho": -1.0}, "rho"),
        ({"beta_sigma": -1.0}, "sigma"),
        ({"lambda_map": "exp"}, "lambda_map"),
    ):
        with pytest.raises(ValueError, match=word):
            MoCo(**kwargs)


def test_toy_runs():
    result = run_toy("pcgrad_figure1", "moco", steps=50)
    assert result.steps == 50 and bool(np.isfinite(np.asarray(result.trajectory)).all())
