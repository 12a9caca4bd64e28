"""SDMGrad (single-sample): hand-worked steps and minimisers, LibMTL's loop as an oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradsurgery.methods.registry import create_method
from gradsurgery.methods.sdmgrad import SDMGrad, sdmgrad_weights
from gradsurgery.toy import run_toy
from tests.methods.steps import gramian_step as step_of

F64 = torch.float64


def test_registered():
    method = create_method("sdmgrad", lamda=0.5)
    assert isinstance(method, SDMGrad) and method.requires == "gramian" and method.lamda == 0.5
    assert SDMGrad.scale_degree == 1 and SDMGrad.single_task == "exact"
    assert SDMGrad().host_syncs == 1 and SDMGrad(placement="device").host_syncs == 0


def test_one_step_by_hand():
    # K = diag(1, 0): s = ½, Ǩ = diag(4, 0); from w = ½: gradient Ǩw + λǨ1/2
    k = torch.diag(torch.tensor([1.0, 0.0], dtype=F64))
    half = torch.full((2,), 0.5, dtype=F64)
    weights, w = sdmgrad_weights(k, half, lamda=0.0, niter=1, lr=0.1, momentum=0.0)
    # (½, ½) − 0.1 (2, 0) = (0.3, 0.5) → (0.4, 0.6)
    torch.testing.assert_close(w, torch.tensor([0.4, 0.6], dtype=F64))
    torch.testing.assert_close(weights, w)
    weights, w = sdmgrad_weights(k, half, lamda=1.0, niter=1, lr=0.1, momentum=0.0)
    # gradient (2, 0) + (2, 0): (0.1, 0.5) → (0.3, 0.7); weights (w + ½)/2
    torch.testing.assert_close(w, torch.tensor([0.3, 0.7], dtype=F64))
    torch.testing.assert_close(weights, torch.tensor([0.4, 0.6], dtype=F64))
    # two steps with momentum ½: b = (2, 0), then b = (1, 0) + (Ǩw)= (1, 0) + (1.6, 0)
    _, w = sdmgrad_weights(k, half, lamda=0.0, niter=2, lr=0.1, momentum=0.5)
    # (0.4, 0.6) − 0.1 (2.6, 0) = (0.14, 0.6) → (0.27, 0.73)
    torch.testing.assert_close(w, torch.tensor([0.27, 0.73], dtype=F64))


def test_two_tasks_converge_to_the_direction_oriented_minimiser():
    # g1 = (1, 0), g2 = (−1, 1), g0 = (0, ½): min over w1 of (2w1 − 1)² + (1 − w1 + λ/2)² at
    # w1 = (6 + λ)/10; λ = 0 is MGDA's (0.6, 0.4)
    j = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=F64)
    k = j @ j.T
    for lamda in (0.0, 0.3, 1.0):
        method = SDMGrad(lamda=lamda, niter=300, lr=0.5, momentum=0.0)
        weights = method(step_of(k)).weights
        w1 = (6 + lamda) / 10
        torch.testing.assert_close(method.w, torch.tensor([w1, 1 - w1], dtype=F64))
        want = (torch.tensor([w1, 1 - w1], dtype=F64) + lamda / 2) / (1 + lamda)
        torch.testing.assert_close(weights, want)


def test_three_tasks_converge_by_hand():
    # orthogonal, norms 1, 2, 3, λ = 0: w_i ∝ 1/‖g_i‖² = (36, 9, 4)/49
    k = torch.diag(torch.tensor([1.0, 4.0, 9.0], dtype=F64))
    method = SDMGrad(lamda=0.0, niter=500, lr=0.5)
    torch.testing.assert_close(
        method(step_of(k)).weights, torch.tensor([36.0, 9.0, 4.0], dtype=F64) / 49
    )
    # equal orthogonal gradients: w stays uniform, the update is g0
    w = SDMGrad()(step_of(torch.eye(3, dtype=F64))).weights
    torch.testing.assert_close(w, torch.full((3,), 1 / 3, dtype=F64))


def _libmtl_projection(v: np.ndarray) -> np.ndarray:
    """LibMTL's ``SDMGrad.euclidean_proj_simplex`` (s = 1)."""
    n = v.shape[0]
    if v.sum() == 1 and (v >= 0).all():
        return v
    u = np.sort(v)[::-1]
    cssv = np.cumsum(u)
    rho = np.nonzero(u * np.arange(1, n + 1) > (cssv - 1))[0][-1]
    theta = float(cssv[rho] - 1) / (rho + 1)
    return (v - theta).clip(min=0)


def _libmtl_step(
    w: torch.Tensor,
    grads: torch.Tensor,
    lamda: float,
    niter: int,
    eps: float = 1e-8,
    lr: float = 5.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """LibMTL's ``SDMGrad.backward`` with ``zeta = xi1 = xi2 = grads``: ``(update, new w)``
    (LibMTL's ``eps = 1e-8`` and ``lr = 5``; other values to compare away from them)."""
    gg = grads @ grads.t()
    diag = torch.where(gg.diag() < 0, torch.zeros_like(gg.diag()), gg.diag())
    gg = gg / (diag.sqrt().mean().pow(2) + eps)
    gmean = gg.mean(dim=1)
    w = w.clone().requires_grad_(True)
    optimizer = torch.optim.SGD([w], lr=lr, momentum=0.5)
    for _ in range(niter):
        optimizer.zero_grad()
        w.grad = torch.mv(gg, w.detach()) + lamda * gmean
        optimizer.step()
        w.data.copy_(torch.from_numpy(_libmtl_projection(w.data.numpy())))
    w = w.detach()
    update = ((grads * w.view(-1, 1)).sum(0) + lamda * grads.mean(0)) / (1 + lamda)
    return update, w


@settings(max_examples=20, deadline=None)
@given(
    m=st.integers(1, 6),
    lamda=st.sampled_from([0.0, 0.3, 1.0]),
    niter=st.sampled_from([1, 5, 20]),
    seed=st.integers(0, 10**6),
)
def test_matches_libmtl_loop_with_one_sample(m, lamda, niter, seed):
    """LibMTL's loop over several steps, with a stable inner step (η = 0.1) and without its
    ``1e-8``: at η = 5 the inner loop is chaotic (see the next test)."""
    g = torch.Generator().manual_seed(seed)
    method = SDMGrad(lamda=lamda, niter=niter, lr=0.1)
    w_ref = torch.full((m,), 1.0 / m, dtype=F64)
    for t in range(4):
        j = torch.randn(m, 9, generator=g, dtype=F64) * (torch.rand(m, 1, generator=g) + 0.5)
        weights = method(step_of(j @ j.T)).weights
        ref, w_ref = _libmtl_step(w_ref, j, lamda, niter, eps=0.0, lr=0.1)
        torch.testing.assert_close(weights @ j, ref, rtol=1e-9, atol=1e-12, msg=f"step {t}")
        torch.testing.assert_close(method.w, w_ref, rtol=1e-9, atol=1e-12)
        assert abs(float(method.w.sum()) - 1) < 1e-12 and bool((method.w >= 0).all())


@settings(max_examples=20, deadline=None)
@given(
    m=st.integers(1, 6),
    lamda=st.sampled_from([0.0, 0.3, 1.0]),
    niter=st.sampled_from([1, 2, 3]),
    seed=st.integers(0, 10**6),
)
def test_matches_libmtl_defaults_on_one_step(m, lamda, niter, seed):
    """LibMTL verbatim (η = 5, ``s² + 1e-8``) on one step of a few inner iterations: with 20 the
    iteration (not a contraction at η = 5) amplifies rounding to O(1) differences in ``w``."""
    g = torch.Generator().manual_seed(seed)
    j = torch.randn(m, 9, generator=g, dtype=F64) * (torch.rand(m, 1, generator=g) + 0.5)
    weights = SDMGrad(lamda=lamda, niter=niter)(step_of(j @ j.T)).weights
    ref, _ = _libmtl_step(torch.full((m,), 1.0 / m, dtype=F64), j, lamda, niter)
    torch.testing.assert_close(weights @ j, ref, rtol=1e-5, atol=1e-6)


@settings(max_examples=20, deadline=None)
@given(m=st.integers(2, 6), s=st.sampled_from([1e-6, 1e-2, 10.0, 1e6]), seed=st.integers(0, 10**6))
def test_weights_are_scale_free(m, s, seed):
    g = torch.Generator().manual_seed(seed)
    j = torch.randn(m, 8, generator=g, dtype=F64)
    w = SDMGrad()(step_of(j @ j.T)).weights
    ws = SDMGrad()(step_of((s * j) @ (s * j).T)).weights
    torch.testing.assert_close(ws, w, rtol=1e-9, atol=1e-12)


def test_device_placement_agrees_with_the_host():
    g = torch.Generator().manual_seed(1)
    j = torch.randn(4, 6, generator=g, dtype=F64)
    host, device = SDMGrad(), SDMGrad(placement="device")
    for _ in range(3):
        torch.testing.assert_close(device(step_of(j @ j.T)).weights, host(step_of(j @ j.T)).weights)


def test_absent_tasks_keep_their_w_and_state_dict_round_trips():
    method = SDMGrad(num_tasks=3)
    k = torch.tensor([[2.0, -1.0], [-1.0, 1.0]], dtype=F64)
    method(step_of(k, tasks=torch.tensor([0, 2]), num=3))
    assert float(method.w[1]) == pytest.approx(1 / 3)
    assert float(method.w.sum()) == pytest.approx(1.0)
    copy = SDMGrad()
    copy.load_state_dict(method.state_dict())
    torch.testing.assert_close(copy.w, method.w)


def test_bad_arguments_are_refused():
    for kwargs in ({"lamda": -1.0}, {"niter": 0}, {"lr": 0.0}, {"momentum": 1.0}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            SDMGrad(**kwargs)


def test_toy_runs():
    result = run_toy("pcgrad_figure1", "sdmgrad", steps=50)
    assert result.steps == 50 and bool(np.isfinite(np.asarray(result.trajectory)).all())
