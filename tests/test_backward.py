import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_impl import pcgrad_textbook, per_task_grads_loop
from torch import nn

from gradsurgery import LossShapeError, MultiTaskBackward, NonFiniteError
from gradsurgery.methods.pcgrad import PCGrad, random_partner_orders


class TrunkHeads(nn.Module):
    def __init__(self, m=3, din=4, hidden=8, dtype=torch.float64):
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Linear(din, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh()
        )
        self.heads = nn.ModuleList([nn.Linear(hidden, 1) for _ in range(m)])
        self.to(dtype)

    def forward(self, x):
        z = self.trunk(x)
        return z, [h(z).squeeze(1) for h in self.heads]


def _data(m=3, n=16, seed=0, dtype=torch.float64):
    """Inputs and learnable targets y_i = tanh(x · a_i)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g, dtype=dtype)
    a = torch.randn(m, 4, generator=g, dtype=dtype)
    return x, torch.tanh(a @ x.T)


def _losses(model, x, y):
    z, outs = model(x)
    return z, torch.stack([((o - y[i]) ** 2).mean() for i, o in enumerate(outs)])


def _grads(model):
    return [p.grad.clone() if p.grad is not None else None for p in model.parameters()]


def _expected_pcgrad(model, losses, seed):
    """Textbook PCGrad on the trunk, each head its own gradient; the same orders as PCGrad(seed)."""
    m = losses.shape[0]
    trunk = list(model.trunk.parameters())
    J = per_task_grads_loop(list(losses), trunk)
    orders = random_partner_orders(m, torch.Generator().manual_seed(seed))
    update = pcgrad_textbook(J, orders).sum(0)
    out, start = [], 0
    for p in trunk:
        out.append(update[start : start + p.numel()].view_as(p))
        start += p.numel()
    for i, head in enumerate(model.heads):
        out.extend(torch.autograd.grad(losses[i], list(head.parameters()), retain_graph=True))
    return out


def test_sum_equals_plain_backward():
    torch.manual_seed(0)
    model = TrunkHeads()
    x, y = _data()
    _, losses = _losses(model, x, y)
    losses.sum().backward()
    expected = _grads(model)
    model.zero_grad(set_to_none=True)
    mtl = MultiTaskBackward(model, "sum")
    _, losses = _losses(model, x, y)
    result = mtl.backward(losses)
    for g, e in zip(_grads(model), expected, strict=True):
        torch.testing.assert_close(g, e)
    assert result.gramian is None  # no per-task gradients were computed
    assert torch.equal(result.weights, torch.ones(3, dtype=torch.float64))


@pytest.mark.parametrize("explicit_shared", [True, False])
def test_pcgrad_on_trunk_heads_keep_their_own_gradient(explicit_shared):
    torch.manual_seed(1)
    model = TrunkHeads()
    x, y = _data(seed=1)
    _, losses = _losses(model, x, y)
    expected = _expected_pcgrad(model, losses, seed=7)
    shared = model.trunk if explicit_shared else None
    mtl = MultiTaskBackward(model, PCGrad(seed=7), shared=shared)
    _, losses = _losses(model, x, y)
    mtl.backward(losses)
    for g, e in zip(_grads(model), expected, strict=True):
        torch.testing.assert_close(g, e)
    assert {id(p) for p in mtl.shared_params} == {id(p) for p in model.trunk.parameters()}


def test_single_task_reduces_to_plain_training():
    torch.manual_seed(2)
    model = TrunkHeads(m=1)
    x, y = _data(m=1)
    _, losses = _losses(model, x, y)
    losses.sum().backward()
    expected = _grads(model)
    model.zero_grad(set_to_none=True)
    MultiTaskBackward(model, "pcgrad", shared=model.trunk).backward(_losses(model, x, y)[1])
    for g, e in zip(_grads(model), expected, strict=True):
        torch.testing.assert_close(g, e)


def test_accumulates_into_existing_grad_like_backward():
    model = TrunkHeads()
    x, y = _data()
    mtl = MultiTaskBackward(model, "pcgrad", shared=model.trunk, seed=0)
    mtl.backward(_losses(model, x, y)[1])
    once = _grads(model)
    mtl_again = MultiTaskBackward(model, "pcgrad", shared=model.trunk, seed=0)
    mtl_again.backward(_losses(model, x, y)[1])
    for g, e in zip(_grads(model), once, strict=True):
        torch.testing.assert_close(g, 2 * e)


def test_nan_loss_raises_naming_the_task_and_leaves_grad_untouched():
    model = TrunkHeads()
    x, y = _data()
    y[1, 0] = float("nan")
    for method in ("pcgrad", "sum"):
        mtl = MultiTaskBackward(
            model, method, shared=model.trunk, task_names=["left", "right", "sum"]
        )
        with pytest.raises(
            NonFiniteError,
            match=r"task 'right' \(index 1\) has a non-finite loss \(nan\) at step 0",
        ):
            mtl.backward(_losses(model, x, y)[1])
        assert all(p.grad is None for p in model.parameters())


def test_infinite_gradient_raises():
    w = nn.Parameter(torch.tensor([0.0, 1.0]))
    losses = [w[1] ** 2, w[0].abs().sqrt()]  # d/dw0 sqrt(|w0|) at 0 is inf·0 = nan
    with pytest.raises(NonFiniteError, match="task 1 has a non-finite gradient"):
        MultiTaskBackward([w], "pcgrad", shared=[w]).backward(losses)
    # torch.stack of the losses: each task's pass starts at its own loss, as with the list
    losses = torch.stack([w[1] ** 2, w[0].abs().sqrt()])
    with pytest.raises(NonFiniteError, match="task 1 has a non-finite gradient"):
        MultiTaskBackward([w], "pcgrad", shared=[w]).backward(losses)
    # any other vector sends zeros through task 1's branch for task 0 too: 0·inf = nan there
    losses = torch.stack([w[1] ** 2, w[0].abs().sqrt()]) * 1.0
    with pytest.raises(NonFiniteError, match="task 0 has a non-finite gradient"):
        MultiTaskBackward([w], "pcgrad", shared=[w]).backward(losses)
    losses = [w[1] ** 2, w[0].abs().sqrt()]
    MultiTaskBackward([w], "pcgrad", shared=[w], check_finite=False).backward(losses)
    assert not torch.isfinite(w.grad).all()


def test_absent_tasks_are_left_out():
    model = TrunkHeads()
    x, y = _data()
    mtl = MultiTaskBackward(model, PCGrad(seed=3), shared=model.trunk)
    _, losses = _losses(model, x, y)
    losses = torch.cat([losses[:1], torch.full((1,), float("nan")), losses[2:]])  # task 1 absent
    result = mtl.backward(losses, present=[True, False, True])
    assert result.tasks.tolist() == [0, 2]
    expected = _grads(model)
    model.zero_grad(set_to_none=True)
    ref = MultiTaskBackward(model, PCGrad(seed=3), shared=model.trunk, num_tasks=2)
    _, losses = _losses(model, x, y)
    ref.backward(losses[[0, 2]])
    for g, e in zip(_grads(model), expected, strict=True):
        if e is None:
            assert g is None or torch.count_nonzero(g) == 0
        else:
            torch.testing.assert_close(g, e)
    assert torch.count_nonzero(model.heads[1].weight.grad) == 0
    with pytest.raises(ValueError, match="no task is present"):
        mtl.backward(_losses(model, x, y)[1], present=[False, False, False])


def test_input_validation():
    model = TrunkHeads()
    x, y = _data()
    mtl = MultiTaskBackward(model, "pcgrad", num_tasks=3)
    with pytest.raises(LossShapeError, match="expected 3 task losses, got 2"):
        mtl.backward(_losses(model, x, y)[1][:2])
    with pytest.raises(LossShapeError, match="vector"):
        mtl.backward(torch.ones(3, 1, requires_grad=True))
    with pytest.raises(ValueError, match="do not require grad"):
        mtl.backward(torch.ones(3))
    with pytest.raises(TypeError, match="needs the model"):
        MultiTaskBackward(list(model.parameters()), num_tasks=3).backward_partitioned(
            lambda m, a: a, x, task_ids=torch.zeros(16, dtype=torch.long)
        )
    with pytest.raises(ValueError, match="needs num_tasks"):
        MultiTaskBackward(model).backward_partitioned(
            lambda m, a: a, x, task_ids=torch.zeros(16, dtype=torch.long)
        )
    with pytest.raises(ValueError, match="must also be in"):
        MultiTaskBackward(model.heads, shared=model.trunk)
    with pytest.raises(KeyError, match="unknown method 'pcgard'"):
        MultiTaskBackward(model, "pcgard")
    with pytest.raises(TypeError, match="bad arguments for method 'pcgrad'"):
        MultiTaskBackward(model, "pcgrad", alpha=3)


def test_list_of_scalar_losses_is_accepted():
    model = TrunkHeads()
    x, y = _data()
    _, losses = _losses(model, x, y)
    result = MultiTaskBackward(model, "pcgrad").backward(list(losses))
    assert result.losses.shape == (3,)


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9),
        lambda ps: torch.optim.Adam(ps, lr=0.01),
        lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.01),
    ],
)
def test_trains_with_any_optimizer_scheduler_clipping_and_param_groups(make_opt):
    torch.manual_seed(0)
    model = TrunkHeads(m=2)
    x, y = _data(m=2, n=64)
    groups = [
        {"params": model.trunk.parameters()},
        {"params": model.heads.parameters(), "lr": 0.02},
    ]
    opt = make_opt(groups)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=50, gamma=0.5)
    mtl = MultiTaskBackward(model, "pcgrad", shared=model.trunk)
    first = _losses(model, x, y)[1].detach()
    for _ in range(150):
        opt.zero_grad()
        mtl.backward(_losses(model, x, y)[1])
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    last = _losses(model, x, y)[1].detach()
    assert (last < 0.7 * first).all(), (first, last)
    assert mtl.step == 150


def test_bfloat16_model():
    torch.manual_seed(0)
    model = TrunkHeads(dtype=torch.bfloat16)
    x, y = _data(dtype=torch.bfloat16)
    result = MultiTaskBackward(model, "pcgrad", shared=model.trunk).backward(
        _losses(model, x, y)[1]
    )
    assert result.gramian.dtype == torch.float32
    assert all(p.grad.dtype == torch.bfloat16 for p in model.parameters())


def test_scaled_losses_scale_the_update_as_grad_scaler_needs():
    model = TrunkHeads()
    x, y = _data()
    MultiTaskBackward(model, PCGrad(seed=0), shared=model.trunk).backward(_losses(model, x, y)[1])
    plain = _grads(model)
    model.zero_grad(set_to_none=True)
    MultiTaskBackward(model, PCGrad(seed=0), shared=model.trunk).backward(
        1024.0 * _losses(model, x, y)[1]
    )
    for g, e in zip(_grads(model), plain, strict=True):
        torch.testing.assert_close(g, 1024.0 * e)


def test_state_dict_round_trip_gives_identical_next_update():
    model = TrunkHeads(m=4)
    x, y = _data(m=4)
    a = MultiTaskBackward(model, "pcgrad", seed=5)
    a.backward(_losses(model, x, y)[1])
    state = a.state_dict()
    model.zero_grad(set_to_none=True)
    a.backward(_losses(model, x, y)[1])
    expected = _grads(model)
    model.zero_grad(set_to_none=True)
    b = MultiTaskBackward(model, "pcgrad", seed=123)
    b.load_state_dict(state)
    assert b.step == 1 and b.shared_params is not None
    b.backward(_losses(model, x, y)[1])
    for g, e in zip(_grads(model), expected, strict=True):
        torch.testing.assert_close(g, e)
    with pytest.raises(ValueError, match="parameters"):
        MultiTaskBackward(model.trunk).load_state_dict(state)


def test_representation_engine_uses_the_representation_gramian():
    torch.manual_seed(4)
    model = TrunkHeads()
    x, y = _data(seed=4)
    z, losses = _losses(model, x, y)
    U = per_task_grads_loop(list(losses), [z])  # rows: dL_i/dz, flattened
    heads = [
        torch.autograd.grad(losses[i], list(h.parameters()), retain_graph=True)
        for i, h in enumerate(model.heads)
    ]
    orders = random_partner_orders(3, torch.Generator().manual_seed(9))
    from gradsurgery.methods.pcgrad import pcgrad_coefficients

    w = pcgrad_coefficients(U @ U.T, orders).sum(0)
    signal = (w @ U).view_as(z)
    trunk_expected = torch.autograd.grad(z, list(model.trunk.parameters()), grad_outputs=signal)
    mtl = MultiTaskBackward(model, PCGrad(seed=9))
    z, losses = _losses(model, x, y)
    result = mtl.backward(losses, representation=z)
    assert result.approximate
    torch.testing.assert_close(result.weights, w)
    for p, e in zip(model.trunk.parameters(), trunk_expected, strict=True):
        torch.testing.assert_close(p.grad, e)
    for h, expected in zip(model.heads, heads, strict=True):
        for p, e in zip(h.parameters(), expected, strict=True):
            torch.testing.assert_close(p.grad, e)
    assert {id(p) for p in mtl.shared_params} == {id(p) for p in model.trunk.parameters()}


class OneHotMLP(nn.Module):
    def __init__(self, m=4):
        super().__init__()
        self.m = m
        self.net = nn.Sequential(nn.Linear(3 + m, 16), nn.ReLU(), nn.Linear(16, 2)).double()

    def forward(self, x, task):
        return self.net(torch.cat([x, (task[:, None] == torch.arange(self.m)).double()], 1))


def _mse(model, x, task, y):
    return ((model(x, task) - y) ** 2).sum(1)


def _partitioned_batch(n=20, m=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    task = torch.randint(0, m, (n,), generator=g)
    return (
        torch.randn(n, 3, generator=g, dtype=torch.float64),
        task,
        torch.randn(n, 2, generator=g, dtype=torch.float64),
    )


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_partitioned_pcgrad_matches_textbook_on_per_task_means(seed):
    torch.manual_seed(seed)
    model = OneHotMLP()
    x, task, y = _partitioned_batch(seed=seed)
    present = sorted(set(task.tolist()))
    per_sample = _mse(model, x, task, y)
    losses = [per_sample[task == t].mean() for t in present]
    J = per_task_grads_loop(losses, list(model.parameters()))
    orders = random_partner_orders(len(present), torch.Generator().manual_seed(seed))
    expected = pcgrad_textbook(J, orders).sum(0)
    mtl = MultiTaskBackward(model, PCGrad(seed=seed), shared=model, num_tasks=4)
    result = mtl.backward_partitioned(_mse, x, task, y, task_ids=task)
    assert result.tasks.tolist() == present
    got = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    torch.testing.assert_close(got, expected)


def test_partitioned_sum_is_one_backward_of_the_task_means():
    model = OneHotMLP()
    x, task, y = _partitioned_batch(seed=3)
    per_sample = _mse(model, x, task, y)
    sum(per_sample[task == t].mean() for t in task.unique()).backward()
    expected = _grads(model)
    model.zero_grad(set_to_none=True)
    result = MultiTaskBackward(model, "sum", num_tasks=4).backward_partitioned(
        _mse, x, task, y, task_ids=task
    )
    assert result.gramian is None
    for g, e in zip(_grads(model), expected, strict=True):
        torch.testing.assert_close(g, e)


def test_partitioned_infers_task_specific_heads():
    class MultiHead(nn.Module):
        def __init__(self, m=3):
            super().__init__()
            self.body = nn.Linear(2, 4).double()
            self.heads = nn.Parameter(torch.randn(m, 4, dtype=torch.float64))

        def forward(self, x, task):
            return (self.body(x) * self.heads[task]).sum(1)

    model = MultiHead()
    x = torch.randn(9, 2, dtype=torch.float64)
    task = torch.arange(9) % 3

    def loss_fn(mod, x, t):
        return mod(x, t) ** 2

    # Granularity is the parameter tensor: heads packed in one tensor receive gradient from every
    # task, so inference calls them shared. Declared explicitly, each row gets its own gradient.
    mtl = MultiTaskBackward(model, "pcgrad", num_tasks=3)
    mtl.backward_partitioned(loss_fn, x, task, task_ids=task)
    assert {id(p) for p in mtl.shared_params} == {id(p) for p in model.parameters()}
    model.zero_grad(set_to_none=True)
    mtl = MultiTaskBackward(model, "pcgrad", num_tasks=3, shared=model.body)
    mtl.backward_partitioned(loss_fn, x, task, task_ids=task)
    per_sample = loss_fn(model, x, task)
    own = [
        torch.autograd.grad(per_sample[task == t].mean(), model.heads, retain_graph=True)[0][t]
        for t in range(3)
    ]
    torch.testing.assert_close(model.heads.grad, torch.stack(own))

    class SeparateHeads(nn.Module):
        def __init__(self, m=3):
            super().__init__()
            self.body = nn.Linear(2, 4).double()
            self.heads = nn.ModuleList([nn.Linear(4, 1).double() for _ in range(m)])

        def forward(self, x, task):
            z = self.body(x)
            outs = torch.cat([h(z) for h in self.heads], dim=1)  # every head, then pick
            return outs.gather(1, task[:, None]).squeeze(1)

    model = SeparateHeads()
    mtl = MultiTaskBackward(model, "pcgrad", num_tasks=3)
    mtl.backward_partitioned(loss_fn, x, task, task_ids=task)
    assert {id(p) for p in mtl.shared_params} == {id(p) for p in model.body.parameters()}
    assert all(math.isfinite(float(p.grad.sum())) for p in model.parameters())


def test_a_monitor_costs_task_gradients_only_on_its_steps():
    """Unitary scalarization with a monitor recording every 3rd step: per-task gradients (and a
    Gramian) on steps 0 and 3 only, the one-backward path otherwise; the update is the plain
    sum's on every step."""
    from gradsurgery.diagnostics import TriadMonitor

    x, y = _data()
    model = TrunkHeads()
    plain = TrunkHeads()
    plain.load_state_dict(model.state_dict())
    monitor = TriadMonitor(every=3)
    mtl = MultiTaskBackward(model, "sum", monitor=monitor)
    recorded = []
    for step in range(6):
        model.zero_grad()
        plain.zero_grad()
        assert mtl.needs_task_gradients == (step % 3 == 0)
        res = mtl.backward(_losses(model, x, y)[1])
        _losses(plain, x, y)[1].sum().backward()
        assert (res.gramian is not None) == (step % 3 == 0)
        for p, q in zip(model.parameters(), plain.parameters(), strict=True):
            torch.testing.assert_close(p.grad, q.grad)
        if monitor.last_row is not None:
            recorded.append(monitor.last_row["step"])
            monitor.last_row = None
    assert recorded == [0, 3] and monitor.summary()["steps"] == 2


def test_a_stacked_vector_costs_what_a_list_does():
    """torch.stack([...]) of the losses: task i's pass never enters another task's head (counted
    by a hook on each head's output) and the update is the list's; another vector is
    differentiated entry by entry, through every head each time."""
    from gradsurgery.diagnostics import TriadMonitor

    torch.manual_seed(0)
    model = TrunkHeads()
    x, y = _data()

    def run(make_losses, present=None):
        entered = [0, 0, 0]
        _, outs = model(x)
        for k, o in enumerate(outs):
            o.register_hook(lambda g, k=k: entered.__setitem__(k, entered[k] + 1))
        model.zero_grad(set_to_none=True)
        mtl = MultiTaskBackward(model, "upgrad", shared=model.trunk, monitor=TriadMonitor())
        losses = make_losses([((o - y[i]) ** 2).mean() for i, o in enumerate(outs)])
        res = mtl.backward(losses, present=present)
        return (
            entered,
            res,
            [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        )

    entered, res_list, grads_list = run(list)
    assert entered == [1, 1, 1]
    entered, res_stack, grads_stack = run(torch.stack)
    assert entered == [1, 1, 1]
    torch.testing.assert_close(res_stack.gramian, res_list.gramian)
    for g, e in zip(grads_stack, grads_list, strict=True):
        torch.testing.assert_close(g, e)
    entered, res_other, _ = run(lambda ls: torch.stack(ls) * 1.0)
    assert entered == [3, 3, 3]  # zeros through the other heads: the cost the stack path avoids
    torch.testing.assert_close(res_other.gramian, res_list.gramian)
    # with a task left out (present=), the stack is still seen through the index_select
    entered, res_some, _ = run(torch.stack, present=[True, False, True])
    assert entered == [1, 0, 1]
    torch.testing.assert_close(res_some.gramian, res_list.gramian[[0, 2]][:, [0, 2]])


def test_a_detached_loss_raises_naming_the_task_unless_left_out():
    """A constant (detached) task loss is refused, naming the task, in a stack, a list or a
    mapping; left out with present= it is ignored."""
    from gradsurgery.diagnostics import TriadMonitor

    w = nn.Parameter(torch.tensor([1.0, 2.0]))
    for method in ("sum", "pcgrad"):
        mtl = MultiTaskBackward([w], method, shared=[w], task_names=["a", "b"])
        live, const = (w**2).sum(), torch.tensor(3.0)
        for losses in (torch.stack([live, const]), [live, const], {"b": const, "a": live}):
            with pytest.raises(ValueError, match=r"task 'b' \(index 1\): the loss does not"):
                mtl.backward(losses)
    mtl = MultiTaskBackward([w], "sum", shared=[w], monitor=TriadMonitor())
    with pytest.raises(ValueError, match="task 1: the loss does not require grad"):
        mtl.backward([(w**2).sum(), (w**2).sum().detach()])
    res = mtl.backward(torch.stack([(w**2).sum(), torch.tensor(3.0)]), present=[True, False])
    torch.testing.assert_close(res.gramian, torch.tensor([[20.0]]))
    torch.testing.assert_close(w.grad, torch.tensor([2.0, 4.0]))


def test_stacked_losses_without_edge_support_take_the_entry_by_entry_path(monkeypatch):
    """A torch whose autograd.grad does not take GradientEdge outputs: same gradients."""
    import gradsurgery.engines.shared_input as shared_input

    w = nn.Parameter(torch.tensor([1.0, 2.0]))
    losses = torch.stack([(w**2).sum(), (3 * w).sum()])
    assert shared_input.stacked_loss_edges(losses) is not None
    monkeypatch.setattr(shared_input, "_edges_supported", lambda: False)
    assert shared_input.stacked_loss_edges(losses) is None
    grads = shared_input.SharedInputJacobian([w])(losses)
    torch.testing.assert_close(grads.jacobian.blocks[0], torch.tensor([[2.0, 4.0], [3.0, 3.0]]))
