"""The routing network's router: sampling, greedy routing, and the REINFORCE update."""

import math

import pytest
import torch

from gradsurgery.models import RoutingNetwork


def test_route_samples_from_the_task_policy():
    model = RoutingNetwork(3, 2, num_tasks=2, hidden=(), num_blocks=3)
    with torch.no_grad():
        model.policy_logits[0][0] = torch.log(torch.tensor([0.7, 0.2, 0.1]))
        model.policy_logits[1][0] = torch.log(torch.tensor([0.0, 0.0, 1.0]))
    g = torch.Generator().manual_seed(0)
    n = 20000
    routes = model.route(torch.zeros(n, dtype=torch.long), generator=g)
    freq = torch.bincount(routes[:, 0], minlength=3).double() / n
    tol = 4 * math.sqrt(0.25 / n)
    torch.testing.assert_close(
        freq, torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64), atol=tol, rtol=0
    )
    assert (model.route(torch.ones(50, dtype=torch.long), generator=g) == 2).all()


def test_eval_mode_and_greedy_take_the_most_probable_block():
    model = RoutingNetwork(3, 2, num_tasks=2, hidden=(4,), num_blocks=3)
    with torch.no_grad():
        model.policy_logits[0].copy_(torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0]]))
        model.policy_logits[1].copy_(torch.tensor([[0.0, 0.0, 3.0], [0.0, 1.0, 0.0]]))
    task = torch.tensor([0, 1, 1, 0])
    expected = torch.tensor([[1, 0], [2, 1], [2, 1], [1, 0]])
    assert torch.equal(model.route(task, greedy=True), expected)
    model.eval()
    assert torch.equal(model.route(task), expected)
    x = torch.randn(4, 3)
    torch.testing.assert_close(model(x, task), model(x, task, expected))


def test_a_task_routes_by_its_own_policy_only():
    torch.manual_seed(0)
    model = RoutingNetwork(3, 2, num_tasks=3, hidden=(4,), num_blocks=3).eval()
    x, task = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    before = model(x, task).detach()
    with torch.no_grad():
        model.policy_logits[1].copy_(torch.tensor([[0.0, 0.0, 9.0], [0.0, 9.0, 0.0]]))
    after = model(x, task)
    keep = task != 1
    torch.testing.assert_close(after[keep], before[keep])
    assert not torch.allclose(after[~keep], before[~keep])


def test_forward_applies_the_chosen_blocks():
    model = RoutingNetwork(3, 2, num_tasks=2, hidden=(4,), num_blocks=3).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    task = torch.tensor([0, 1, 0, 1, 1])
    routes = torch.tensor([[0, 2], [1, 1], [2, 0], [0, 0], [2, 2]])
    out = model(x, task, routes)
    for n in range(5):
        h = torch.relu(model.blocks[0][int(routes[n, 0])](x[n]))
        torch.testing.assert_close(out[n], model.blocks[1][int(routes[n, 1])](h))


def test_router_loss_reaches_only_the_policy_tables_and_task_losses_never_do():
    torch.manual_seed(0)
    model = RoutingNetwork(3, 2, num_tasks=2, hidden=(4,), num_blocks=3)
    task = torch.tensor([0, 1, 1, 0])
    routes = model.route(task)
    out = model(torch.randn(4, 3), task, routes)
    out.square().sum().backward()
    assert all(p.grad is None for p in model.router_parameters())
    model.zero_grad(set_to_none=True)
    model.router_loss(task, routes, torch.tensor([1.0, -1.0, 0.5, 2.0])).backward()
    assert all(p.grad is None for p in model.network_parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.router_parameters())


def test_router_loss_is_reinforce_by_hand():
    model = RoutingNetwork(3, 2, num_tasks=2, hidden=(), num_blocks=2, baseline_momentum=0.5)
    task = torch.tensor([0, 0, 1])
    routes = torch.tensor([[0], [1], [1]])
    rewards = torch.tensor([1.0, 3.0, 2.0])
    loss = model.router_loss(task, routes, rewards)
    # uniform policy: log π = log 1/2 everywhere; no baseline yet
    torch.testing.assert_close(loss, torch.tensor(-(1.0 + 3.0 + 2.0) * math.log(0.5) / 3))
    loss.backward()
    # ∂/∂θ_0 of -(1/3)[1·log π(0) + 3·log π(1)] with π = softmax(θ) at θ = 0
    g0 = -(1 / 3) * (1 * torch.tensor([0.5, -0.5]) + 3 * torch.tensor([-0.5, 0.5]))
    torch.testing.assert_close(model.policy_logits[0].grad[0], g0)
    # baselines were set to each task's mean reward, then move with momentum 0.5
    torch.testing.assert_close(model.baseline, torch.tensor([2.0, 2.0]))
    model.router_loss(torch.tensor([0]), torch.tensor([[0]]), torch.tensor([4.0]))
    torch.testing.assert_close(model.baseline, torch.tensor([3.0, 2.0]))  # task 1 absent: kept


@pytest.mark.parametrize("reward_kind", ["correct", "neg_loss"])
def test_reinforce_moves_each_task_policy_toward_its_better_block(reward_kind):
    torch.manual_seed(0)
    m, k = 3, 4
    model = RoutingNetwork(2, 1, num_tasks=m, hidden=(), num_blocks=k)
    best = torch.tensor([2, 0, 3])  # each task's best block
    opt = torch.optim.SGD(model.router_parameters(), lr=0.5)
    g = torch.Generator().manual_seed(1)
    for _ in range(200):
        task = torch.randint(0, m, (64,), generator=g)
        routes = model.route(task, generator=g)
        hit = (routes[:, 0] == best[task]).float()
        rewards = hit if reward_kind == "correct" else -(1.0 - hit) * 2.0 - 0.1
        opt.zero_grad()
        model.router_loss(task, routes, rewards).backward()
        opt.step()
    probs = model.policy()[:, 0]  # (m, k)
    for t in range(m):
        assert probs[t, best[t]] > 0.9, probs[t]
    model.eval()
    assert torch.equal(model.route(torch.arange(m))[:, 0], best)


def test_collaboration_reward_favours_blocks_other_tasks_use():
    # two blocks, equal task reward; block 1 is used by everyone else: with ρ > 0 it wins
    model = RoutingNetwork(2, 1, num_tasks=1, hidden=(), num_blocks=2, collaboration=1.0)
    with torch.no_grad():
        model.usage.copy_(torch.tensor([[0.1, 0.9]]))
    task = torch.zeros(2, dtype=torch.long)
    routes = torch.tensor([[0], [1]])
    loss = model.router_loss(task, routes, torch.zeros(2), update_statistics=False)
    loss.backward()
    grad = model.policy_logits[0].grad[0]
    assert grad[1] < 0 < grad[0]  # gradient descent raises block 1's logit
    model_plain = RoutingNetwork(2, 1, num_tasks=1, hidden=(), num_blocks=2)
    model_plain.router_loss(task, routes, torch.zeros(2)).backward()
    torch.testing.assert_close(model_plain.policy_logits[0].grad, torch.zeros(1, 2))


def test_router_loss_validates_shapes():
    model = RoutingNetwork(2, 1, num_tasks=2, hidden=(3,), num_blocks=2)
    task = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="expected routes"):
        model.router_loss(task, torch.zeros(2, 1, dtype=torch.long), torch.zeros(2))
    with pytest.raises(ValueError, match="num_blocks"):
        RoutingNetwork(2, 1, num_tasks=2, num_blocks=0)


def test_state_dict_round_trips_router_statistics():
    model = RoutingNetwork(2, 1, num_tasks=2, hidden=(3,), num_blocks=2)
    task = torch.tensor([0, 1, 1])
    model.router_loss(task, model.route(task), torch.tensor([1.0, 2.0, 3.0]))
    clone = RoutingNetwork(2, 1, num_tasks=2, hidden=(3,), num_blocks=2)
    clone.load_state_dict(model.state_dict())
    torch.testing.assert_close(clone.baseline, model.baseline)
    torch.testing.assert_close(clone.usage, model.usage)
    assert torch.equal(clone.baseline_seen, model.baseline_seen)


def test_training_hooks_are_route_then_reinforce_with_negative_loss():
    """step_inputs samples the batch's routes; after_backward is router_loss(-loss).backward()."""
    task = torch.tensor([0, 1, 1, 0, 2])
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    by_hand, hooked = (
        RoutingNetwork(3, 2, num_tasks=3, hidden=(4,), collaboration=0.3) for _ in "ab"
    )
    hooked.load_state_dict(by_hand.state_dict())

    def sample_losses(model, routes):
        return model(x, task, routes).square().sum(1)

    torch.manual_seed(1)
    routes = by_hand.route(task)
    with torch.no_grad():
        rewards = -sample_losses(by_hand, routes)
    by_hand.router_loss(task, routes, rewards).backward()

    torch.manual_seed(1)
    inputs = hooked.step_inputs(task)
    assert len(inputs) == 1 and torch.equal(inputs[0], routes)
    hooked.after_backward(lambda: sample_losses(hooked, inputs[0]), task, inputs)

    for a, b in zip(by_hand.parameters(), hooked.parameters(), strict=True):
        assert (a.grad is None) == (b.grad is None)
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)
    assert all(p.grad is None for p in hooked.network_parameters())  # routers only
    for name, buf in by_hand.named_buffers():
        torch.testing.assert_close(buf, dict(hooked.named_buffers())[name], rtol=0, atol=0)
    with pytest.raises(ValueError, match="task-partitioned"):
        hooked.step_inputs(None)
