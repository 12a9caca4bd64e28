"""Nash-MTL (Navon et al. 2022): K α = 1/α by the paper's CCP (torch barrier) or directly."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradsurgery.methods.base import TaskStep
from gradsurgery.methods.nash_mtl import NashMTL, nash_mtl_weights
from gradsurgery.methods.registry import create_method

F64 = torch.float64


def _step(gramian: torch.Tensor, step: int = 0, tasks=None, num_tasks=None) -> TaskStep:
    m = gramian.shape[0]
    tasks = torch.arange(m) if tasks is None else torch.as_tensor(tasks)
    return TaskStep(
        losses=torch.ones(m, dtype=gramian.dtype),
        tasks=tasks,
        num_tasks=num_tasks if num_tasks is not None else m,
        step=step,
        gramian=gramian,
    )


def _jacobian(m: int, d: int, seed: int, conflict: bool = False) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    scales = torch.exp(0.5 * torch.randn(m, 1, generator=gen, dtype=F64))
    j = torch.randn(m, d, generator=gen, dtype=F64) * scales
    if conflict and m > 1:
        j[1:] -= 0.5 * j[0]
    return j


def _residual(k: torch.Tensor, alpha: torch.Tensor) -> float:
    return float((alpha * (k @ alpha) - 1).abs().max())


# ---------------------------------------------------------------- hand-worked cases


@pytest.mark.parametrize("solver", ["ccp", "direct"])
def test_orthogonal_gradients_by_hand(solver):
    # K = diag(1, 4): α_i (K α)_i = K_ii α_i² = 1 → α = (1, ½); each task gets g_i·Δθ = 1/α_i.
    k = torch.diag(torch.tensor([1.0, 4.0], dtype=F64))
    torch.testing.assert_close(
        nash_mtl_weights(k, solver=solver), torch.tensor([1.0, 0.5], dtype=F64)
    )
    # m = 1: α = 1/‖g‖, a unit update.
    torch.testing.assert_close(
        nash_mtl_weights(torch.tensor([[9.0]], dtype=F64), solver=solver),
        torch.tensor([1 / 3], dtype=F64),
    )


def test_two_aligned_tasks_by_hand():
    # g1 = g2 = g with ‖g‖ = 2: α1 = α2 = a, a · 2a · 4 = 1 → a = 1/(2√2).
    g = torch.tensor([[2.0, 0.0], [2.0, 0.0]], dtype=F64)
    for solver in ("ccp", "direct"):
        alpha = nash_mtl_weights(g @ g.T, solver=solver)
        torch.testing.assert_close(alpha, torch.full((2,), 0.5**1.5, dtype=F64))


# ---------------------------------------------------------------- the bargaining solution


@settings(max_examples=40, deadline=None)
@given(
    m=st.integers(1, 8),
    extra=st.integers(0, 6),
    seed=st.integers(0, 100_000),
    conflict=st.booleans(),
)
def test_direct_solves_the_bargaining_equation(m, extra, seed, conflict):
    j = _jacobian(m, m + extra, seed, conflict)  # full row rank: K positive definite
    k = j @ j.T
    alpha = nash_mtl_weights(k, solver="direct")
    assert (alpha > 0).all()
    assert _residual(k, alpha) < 1e-8
    # ‖Δθ‖² = αᵀKα = Σ_i α_i (Kα)_i = m.
    assert float(alpha @ k @ alpha) == pytest.approx(m, rel=1e-8)


@settings(max_examples=12, deadline=None)
@given(m=st.integers(1, 7), extra=st.integers(0, 5), seed=st.integers(0, 100_000))
def test_ccp_reaches_the_nash_point_without_conflict(m, extra, seed):
    """With non-negative inner products every constraint is active: the CCP ends at K α = 1/α."""
    gen = torch.Generator().manual_seed(seed)
    j = torch.rand(m, m + extra, generator=gen, dtype=F64)  # all g_i·g_j ≥ 0
    k = j @ j.T
    alpha = nash_mtl_weights(k, solver="ccp")
    assert (alpha > 0).all()
    assert _residual(k, alpha) < 1e-8
    torch.testing.assert_close(alpha, nash_mtl_weights(k, solver="direct"))


@settings(max_examples=12, deadline=None)
@given(m=st.integers(2, 7), extra=st.integers(0, 5), seed=st.integers(0, 100_000))
def test_ccp_solution_is_feasible_and_positive(m, extra, seed):
    j = _jacobian(m, m + extra, seed, conflict=True)
    k = j @ j.T
    alpha = nash_mtl_weights(k, solver="ccp")
    assert torch.isfinite(alpha).all() and (alpha > 0).all()
    assert float((alpha * (k @ alpha)).min()) >= 1 - 1e-3  # α_i (Kα)_i ≥ 1


def test_ccp_matches_the_official_implementation():
    """torchjd's port of the official cvxpy/ECOS code, from its start α = 1 (where it is usable)."""
    pytest.importorskip("cvxpy")
    pytest.importorskip("ecos")
    from torchjd.aggregation._nash_mtl import _NashMTLWeighting

    compared = 0
    for seed in range(16):
        m = 2 + seed % 6
        j = _jacobian(m, 10 + 10 * (seed % 3), seed, conflict=seed % 2 == 1)
        k = j @ j.T
        if not (k.sum(dim=1) > 0).all():
            continue  # the official linearisation at α = 1 is undefined there (it fails)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = _NashMTLWeighting(
                n_tasks=m, max_norm=0.0, update_weights_every=1, optim_niter=50
            )(j)
        ours = nash_mtl_weights(k, torch.ones(m, dtype=F64), solver="ccp")
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-8)
        compared += 1
    assert compared >= 5


# ---------------------------------------------------------------- the method


def test_max_norm_clipping():
    j = _jacobian(4, 6, 1)
    k = j @ j.T
    for max_norm in (0.5, 1.0):
        w = NashMTL(max_norm=max_norm)(_step(k)).weights
        # αᵀKα = m = 4 at the solution, so the update is always clipped to max_norm.
        assert float(w @ k @ w) ** 0.5 == pytest.approx(max_norm, rel=1e-9)
    w = NashMTL(max_norm=10.0)(_step(k)).weights
    assert float(w @ k @ w) == pytest.approx(4.0, rel=1e-8)
    unclipped = NashMTL(max_norm=0.0, solver="direct")(_step(k)).weights
    assert _residual(k, unclipped) < 1e-8


def test_task_specific_weights():
    k = torch.diag(torch.tensor([1.0, 4.0], dtype=F64))
    agg = NashMTL(max_norm=0.5)(_step(k))
    torch.testing.assert_close(agg.task_specific_weights, torch.tensor([1.0, 0.5], dtype=F64))
    agg = NashMTL(task_specific="ones")(_step(k))
    torch.testing.assert_close(agg.task_specific_weights, torch.ones(2, dtype=F64))


def test_update_weights_every_and_absent_tasks():
    k = torch.diag(torch.tensor([1.0, 4.0, 9.0], dtype=F64))
    method = NashMTL(max_norm=0.0, update_weights_every=3, num_tasks=3)
    first = method(_step(k, step=0)).weights
    torch.testing.assert_close(first, torch.tensor([1.0, 0.5, 1 / 3], dtype=F64))
    # Steps 1 and 2 reuse the weights even though the Gramian changed.
    w = method(_step(4 * k, step=1)).weights
    torch.testing.assert_close(w, first)
    # Step 2 with task 1 absent: a different set of tasks, recomputed on the sub-Gramian.
    sub = torch.diag(torch.tensor([4.0, 4.0], dtype=F64))
    w = method(_step(sub, step=2, tasks=[0, 2], num_tasks=3)).weights
    torch.testing.assert_close(w, torch.tensor([0.5, 0.5], dtype=F64))
    torch.testing.assert_close(method.alpha, torch.tensor([0.5, 0.5, 0.5], dtype=F64))
    # Step 3 (3 % 3 == 0): recomputed.
    w = method(_step(k, step=3)).weights
    torch.testing.assert_close(w, first)


def test_state_dict_round_trip():
    j = _jacobian(3, 5, 2)
    k = j @ j.T
    a = NashMTL(max_norm=0.0, update_weights_every=2)
    wa = a(_step(k, step=0)).weights
    b = NashMTL(max_norm=0.0, update_weights_every=2)
    b.load_state_dict(a.state_dict())
    # b reuses a's weights at step 1, whatever the Gramian.
    torch.testing.assert_close(b(_step(2 * k, step=1)).weights, wa)
    b.reset()
    assert not b.seen.any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("solver", ["ccp", "direct"])
def test_edge_cases(dtype, solver):
    # A zero gradient: weight 0, the others bargain among themselves.
    g = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]], dtype=dtype)
    alpha = nash_mtl_weights(g @ g.T, solver=solver)
    torch.testing.assert_close(alpha, torch.tensor([1.0, 0.0, 0.5], dtype=dtype))
    # Opposite gradients: no solution; the warm start (1/‖g_i‖) is returned, finite.
    g = torch.tensor([[1.0, 2.0], [-2.0, -4.0]], dtype=dtype)
    alpha = nash_mtl_weights(g @ g.T, solver=solver)
    torch.testing.assert_close(alpha, 1 / g.norm(dim=1))
    # ... or the previous weights.
    prev = torch.tensor([0.3, 0.7], dtype=dtype)
    torch.testing.assert_close(nash_mtl_weights(g @ g.T, prev, solver=solver), prev)
    # All zero: zero weights.
    alpha = nash_mtl_weights(torch.zeros(3, 3, dtype=dtype), solver=solver)
    torch.testing.assert_close(alpha, torch.zeros(3, dtype=dtype))
    # Through the method, with clipping: finite.
    w = NashMTL(solver=solver)(_step(g @ g.T)).weights
    assert torch.isfinite(w).all() and w.dtype == dtype


def test_float32_close_to_float64():
    for seed in range(3):
        j = _jacobian(5, 8, seed, conflict=True)
        k = j @ j.T
        for solver in ("ccp", "direct"):
            torch.testing.assert_close(
                nash_mtl_weights(k.float(), solver=solver).double(),
                nash_mtl_weights(k, solver=solver),
                rtol=1e-3,
                atol=1e-5,
            )


def test_no_sync_mode_gives_the_same_answer():
    j = _jacobian(4, 7, 3, conflict=True)
    k = j @ j.T
    for solver in ("ccp", "direct"):
        torch.testing.assert_close(
            nash_mtl_weights(k, solver=solver, tol=0.0), nash_mtl_weights(k, solver=solver)
        )


def test_registry_and_validation():
    assert isinstance(create_method("nash_mtl", max_norm=0.5), NashMTL)
    for bad in (
        {"max_norm": -1.0},
        {"update_weights_every": 0},
        {"optim_niter": 0},
        {"solver": "cvxpy"},
        {"task_specific": "none"},
    ):
        with pytest.raises(ValueError):
            NashMTL(**bad)


def test_through_multitask_backward_with_absent_tasks():
    from gradsurgery.backward import MultiTaskBackward

    g = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 4.0]], dtype=F64)
    theta = torch.nn.Parameter(torch.zeros(3, dtype=F64))
    method = NashMTL(max_norm=0.0, solver="direct")
    mtl = MultiTaskBackward([theta], method, shared=[theta])
    # L_i = g_i · θ: the task gradients are the rows of g.
    result = mtl.backward([g[i] @ theta for i in range(3)], present=[True, False, True])
    torch.testing.assert_close(result.weights, torch.tensor([1.0, 0.25], dtype=F64))
    torch.testing.assert_close(theta.grad, torch.tensor([1.0, 0.0, 1.0], dtype=F64))
    assert method.seen.tolist() == [True, False, True]
    theta.grad = None
    result = mtl.backward([g[i] @ theta for i in range(3)])
    torch.testing.assert_close(result.weights, torch.tensor([1.0, 0.5, 0.25], dtype=F64))


def _spread(seed: int, m: int, norms: tuple[float, ...], shift: float) -> torch.Tensor:
    """A Jacobian whose rows have norms about ``norms`` and conflict with the first row."""
    gen = torch.Generator().manual_seed(seed)
    j = torch.randn(m, 10, generator=gen, dtype=F64) * torch.tensor(norms, dtype=F64)[:, None]
    j[1:] -= shift * j[0]
    return j


def test_ccp_and_direct_differ_under_strong_conflict_and_only_direct_is_the_nash_point():
    """Gradient norms 1 to 100 and strong conflict (``K 1`` has a negative entry): the CCP stops
    where some constraints are slack, not at ``K α = 1/α``; ``solver="direct"`` satisfies it."""
    for seed in range(8):
        j = _spread(seed, 3, (1.0, 10.0, 100.0), 0.5)
        k = j @ j.T
        if not (k.sum(dim=1) <= 0).any():
            continue
        ccp = nash_mtl_weights(k, torch.ones(3, dtype=F64), solver="ccp")
        direct = nash_mtl_weights(k, solver="direct")
        assert _residual(k, direct) < 1e-8  # G w = 1/w elementwise
        assert _residual(k, ccp) > 1e-2
        assert not torch.allclose(ccp, direct, rtol=1e-3)
        return
    pytest.fail("no strongly conflicting Gramian among the seeds")


def test_official_implementation_stops_short_of_the_nash_point_on_spread_norms():
    """Norms 1, 10, 100 with ``K 1 > 0`` (the official code's start α = 1 is usable): our CCP
    ends at the Nash point, torchjd's port of the official cvxpy/ECOS code short of it — the two
    differ by more than the 1e-5 of ``test_ccp_matches_the_official_implementation``."""
    pytest.importorskip("cvxpy")
    pytest.importorskip("ecos")
    from torchjd.aggregation._nash_mtl import _NashMTLWeighting

    j = _spread(2, 3, (1.0, 10.0, 100.0), 0.5)
    k = j @ j.T
    assert (k.sum(dim=1) > 0).all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = _NashMTLWeighting(n_tasks=3, max_norm=0.0, update_weights_every=1, optim_niter=50)(
            j
        )
    ours = nash_mtl_weights(k, torch.ones(3, dtype=F64), solver="ccp")
    assert _residual(k, ours) < 1e-8
    assert _residual(k, theirs) > 1e-4
    assert not torch.allclose(ours, theirs, rtol=1e-5, atol=1e-8)
