"""DB-MTL: hand-worked steps, LibMTL's loop transcribed as oracle, the balancing guarantees,
state, the engine and the toy."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradsurgery import MultiTaskBackward
from gradsurgery.jacobian import TaskJacobian
from gradsurgery.methods.db_mtl import DBMTL, db_mtl_update
from gradsurgery.methods.registry import create_method
from gradsurgery.toy.runner import run_toy
from tests.methods.steps import loss_step as step_of

F64 = torch.float64


def update(method: DBMTL, J, losses, **kw) -> torch.Tensor:
    J = torch.as_tensor(J, dtype=F64)
    out = method.aggregate(TaskJacobian([J]), step_of(losses, **kw))
    return out[0]


def libmtl(Js, losses, beta=0.9, sigma=0.0):
    """LibMTL's ``DB_MTL.backward`` on flat gradients (``eps`` 1e-8 in the log and in α)."""
    buf, out = torch.zeros_like(Js[0]), []
    for t, (J, L) in enumerate(zip(Js, losses, strict=True), start=1):
        g = J / (L + 1e-8)[:, None]
        buf = g + (beta / t**sigma) * (buf - g)
        u = buf.norm(dim=-1)
        out.append(((u.max() / (u + 1e-8))[:, None] * buf).sum(0))
    return out


def test_registered_and_declared():
    method = create_method("db_mtl", beta=0.5)
    assert isinstance(method, DBMTL) and method.requires == "jacobian"
    assert method.single_task is None and method.scale_degree == 1
    assert method.not_composable


def test_two_tasks_by_hand():
    m = DBMTL(beta=0.5, eps=0.0)
    J = [[1.0, 0.0], [0.0, 2.0]]
    # ĝ = 0.5 g = ((0.5, 0), (0, 1)); norms (0.5, 1): α = (2, 1)
    torch.testing.assert_close(update(m, J, [1.0, 1.0]), torch.tensor([1.0, 1.0], dtype=F64))
    # g = ((0.5, 0), (0, 2)); ĝ = ((0.5, 0), (0, 1.5)); α = (3, 1)
    torch.testing.assert_close(update(m, J, [2.0, 1.0]), torch.tensor([1.5, 1.5], dtype=F64))
    assert m.task_steps is not None and m.task_steps.tolist() == [2.0, 2.0]


def test_three_tasks_by_hand_and_heads_get_the_log_gradient():
    m = DBMTL(beta=0.0, eps=0.0)  # no memory: Δθ = max‖g‖ Σ g_i / ‖g_i‖
    J = [[3.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 4.0]]
    got = update(m, J, [1.0, 0.5, 2.0])  # g = (3, 0, 0), (0, 2, 0), (0, 0, 2): max norm 3
    torch.testing.assert_close(got, torch.tensor([3.0, 3.0, 3.0], dtype=F64))
    w = m.task_specific_weights(step_of([1.0, 0.5, 2.0]))
    torch.testing.assert_close(w, torch.tensor([1.0, 2.0, 0.5], dtype=F64))


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    m=st.integers(1, 4),
    beta=st.floats(0.0, 0.95),
    sigma=st.sampled_from([0.0, 0.5]),
)
def test_matches_libmtl(seed, m, beta, sigma):
    g = torch.Generator().manual_seed(seed)
    Js = [torch.randn(m, 6, generator=g, dtype=F64) for _ in range(4)]
    losses = [torch.rand(m, generator=g, dtype=F64) + 0.1 for _ in range(4)]
    method = DBMTL(beta=beta, beta_sigma=sigma)
    got = [update(method, J, L.tolist()) for J, L in zip(Js, losses, strict=True)]
    for a, b in zip(got, libmtl(Js, losses, beta, sigma), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)  # LibMTL: ‖ĝ‖ + 1e-8


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    m=st.integers(2, 4),
    scales=st.lists(st.floats(1e-3, 1e3), min_size=4, max_size=4),
)
def test_loss_scale_balancing_and_equal_contributions(seed, m, scales):
    """Scaling task i's loss by c_i (its value and gradient alike) changes nothing (log losses);
    every task's term α_i ĝ_i has the norm max_j ‖ĝ_j‖."""
    g = torch.Generator().manual_seed(seed)
    c = torch.tensor(scales[:m], dtype=F64)
    a, b = DBMTL(eps=0.0), DBMTL(eps=0.0)
    for _ in range(3):
        J = torch.randn(m, 5, generator=g, dtype=F64)
        L = torch.rand(m, generator=g, dtype=F64) + 0.1
        plain = update(a, J, L.tolist())
        scaled = update(b, J * c[:, None], (L * c).tolist())
        torch.testing.assert_close(scaled, plain, rtol=1e-9, atol=1e-12)
    assert a.grad_buffer is not None
    avg = a.grad_buffer
    norms = avg.norm(dim=1)
    terms = (norms.max() / norms)[:, None] * avg
    torch.testing.assert_close(terms.norm(dim=1), norms.max().expand(m))
    torch.testing.assert_close(db_mtl_update(avg), terms.sum(0))


def test_one_task_is_momentum_on_the_log_gradient():
    m = DBMTL(beta=0.9, eps=0.0)
    first = update(m, [[2.0, 0.0]], [2.0])  # (1 − β) ∇L / L
    torch.testing.assert_close(first, torch.tensor([0.1, 0.0], dtype=F64))
    second = update(m, [[0.0, 4.0]], [2.0])  # β·(0.1, 0) + 0.1·(0, 2): not ∝ the gradient
    torch.testing.assert_close(second, torch.tensor([0.09, 0.2], dtype=F64))


def test_absent_task_keeps_its_average_and_zero_rows_contribute_nothing():
    m = DBMTL(beta=0.5, eps=0.0, num_tasks=3)
    update(m, [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], [1.0, 1.0, 1.0])
    assert m.grad_buffer is not None
    kept = m.grad_buffer[1].clone()
    got = update(m, [[2.0, 0.0], [0.0, 0.0]], [1.0, 1.0], tasks=[0, 2], num_tasks=3)
    torch.testing.assert_close(m.grad_buffer[1], kept)
    assert m.task_steps is not None and m.task_steps.tolist() == [2.0, 1.0, 2.0]
    torch.testing.assert_close(got, torch.tensor([1.25, 0.0], dtype=F64))  # ĝ_0 = (2 + 0.5, 0) / 2


def test_state_dict_into_a_fresh_method():
    a = DBMTL(beta=0.5)
    update(a, [[1.0, 2.0], [3.0, -1.0]], [1.0, 2.0])
    b = DBMTL(beta=0.5)
    b.load_state_dict(a.state_dict())
    J, L = [[0.5, 0.5], [1.0, 0.0]], [0.7, 1.3]
    torch.testing.assert_close(update(b, J, L), update(a, J, L), rtol=0.0, atol=0.0)


def test_engine_update():
    torch.manual_seed(0)
    w = torch.randn(3, dtype=F64, requires_grad=True)
    head = torch.randn(2, dtype=F64, requires_grad=True)
    a, b = torch.randn(2, 3, dtype=F64)

    def losses():
        return [(w @ a) ** 2 + 1.0 + head[0] ** 2, (w @ b) ** 2 + 2.0 + head[1] ** 2]

    mtl = MultiTaskBackward([w, head], DBMTL(beta=0.0), shared=[w], num_tasks=2)
    ls = losses()
    ga = [torch.autograd.grad(x, w, retain_graph=True)[0] for x in ls]
    want = libmtl([torch.stack(ga)], [torch.stack([x.detach() for x in ls])], beta=0.0)[0]
    mtl.backward(ls)
    assert w.grad is not None and head.grad is not None
    torch.testing.assert_close(w.grad, want)
    lv = [x.detach() for x in losses()]
    want_head = torch.stack([2 * head[0] / (lv[0] + 1e-8), 2 * head[1] / (lv[1] + 1e-8)])
    torch.testing.assert_close(head.grad, want_head.detach())


def test_toy_runs():
    res = run_toy("pcgrad_figure1", "db_mtl", steps=50)
    assert math.isfinite(float(res.losses[-1].sum()))
