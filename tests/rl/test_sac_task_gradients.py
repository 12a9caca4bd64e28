"""Per-task SAC losses through the vectorized engine equal a loop over tasks, for every architecture,
and an MT-SAC update with PCGrad applies PCGrad to exactly those per-task gradients."""

from __future__ import annotations

import pytest
import torch

from gradsurgery.engines.task_partitioned import TaskPartitionedJacobian
from gradsurgery.methods.pcgrad import pcgrad_coefficients, random_partner_orders
from gradsurgery.rl import MTSAC, SACBatch, SACConfig

M, OBS, ACT, B = 3, 4, 2, 3


pytestmark = pytest.mark.usefixtures("one_thread")


ARCH_KWARGS = {
    "mlp": {},
    "multihead": {},
    "softmod": {
        "base_hidden": (6, 6),
        "num_layers": 3,
        "num_modules": 2,
        "module_hidden": 4,
        "gating_hidden": 5,
    },
    "care": {
        "num_encoders": 2,
        "encoder_hidden": (4,),
        "feature_dim": 3,
        "context_dim": 3,
        "context_hidden": (5,),
    },
    "film": {"embedding_dim": 3, "conditioner_hidden": (4,)},
}


def batch(seed: int = 0, unbalanced: bool = False) -> SACBatch:
    g = torch.Generator().manual_seed(seed)
    ids = (
        torch.tensor([2, 0, 1, 0, 2, 1, 0, 2, 1])
        if not unbalanced
        else torch.tensor([0, 0, 0, 0, 2, 1, 0, 2, 2])
    )
    n = ids.shape[0]
    return SACBatch(
        obs=torch.randn(n, OBS, generator=g, dtype=torch.float64),
        actions=torch.rand(n, ACT, generator=g, dtype=torch.float64) * 2 - 1,
        rewards=torch.randn(n, generator=g, dtype=torch.float64),
        next_obs=torch.randn(n, OBS, generator=g, dtype=torch.float64),
        terminated=torch.zeros(n, dtype=torch.float64),
        task_ids=ids,
    )


def agent_for(arch: str, method: str = "sum", **kw) -> MTSAC:
    cfg = SACConfig(
        architecture=arch,
        architecture_kwargs=ARCH_KWARGS[arch],
        hidden_sizes=(5, 5),
        seed=1,
        dtype="float64",
        method=method,
        task_names=("reach-v3", "push-v3", "door-open-v3"),
        **kw,
    )
    return MTSAC(cfg, OBS, ACT, M)


def loop_gradients(module, loss_fn, inputs, ids):
    """Per-task gradients by a Python loop: one autograd.grad of each task's mean loss."""
    params = [p for p in module.parameters() if p.requires_grad]
    rows, losses = [], []
    for t in range(M):
        mask = ids == t
        if not bool(mask.any()):
            continue
        per = loss_fn(module, *inputs)
        loss = per[mask].mean()
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        rows.append(
            torch.cat(
                [
                    (g if g is not None else torch.zeros_like(p)).flatten()
                    for g, p in zip(grads, params, strict=True)
                ]
            )
        )
        losses.append(loss.detach())
    return torch.stack(rows), torch.stack(losses)


def engine_gradients(module, loss_fn, inputs, ids):
    engine = TaskPartitionedJacobian(module, strategy="vmap")
    res = engine(loss_fn, inputs, ids, M)
    return res.jacobian.matrix(), res.losses


@pytest.mark.parametrize("arch", list(ARCH_KWARGS))
@pytest.mark.parametrize("unbalanced", [False, True])
def test_engine_per_task_gradients_equal_loop(arch: str, unbalanced: bool) -> None:
    agent = agent_for(arch)
    b = batch(unbalanced=unbalanced)
    ids = b.task_ids
    n = ids.shape[0]
    w = torch.full((n,), 1.0 / M, dtype=torch.float64)
    y = torch.randn(n, dtype=torch.float64)
    critic_in = (b.obs, b.actions, ids, y, w)
    J_loop, l_loop = loop_gradients(agent.critic, agent._critic_loss, critic_in, ids)
    J_vmap, l_vmap = engine_gradients(agent.critic, agent._critic_loss, critic_in, ids)
    torch.testing.assert_close(J_vmap, J_loop, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(l_vmap, l_loop, rtol=1e-12, atol=1e-14)

    noise = torch.randn(n, ACT, dtype=torch.float64)
    alpha = torch.rand(n, dtype=torch.float64) + 0.1
    actor_in = (b.obs, ids, noise, alpha, w)
    agent.critic.requires_grad_(False)
    J_loop, l_loop = loop_gradients(agent.actor, agent._actor_loss, actor_in, ids)
    J_vmap, l_vmap = engine_gradients(agent.actor, agent._actor_loss, actor_in, ids)
    torch.testing.assert_close(J_vmap, J_loop, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(l_vmap, l_loop, rtol=1e-12, atol=1e-14)


def test_pcgrad_update_applies_pcgrad_to_loop_gradients() -> None:
    """End to end: the critic's .grad after an update is PCGrad (same random orders) of the per-task
    gradients computed by a loop."""
    agent = agent_for("mlp", method="pcgrad", lr=0.0, alpha_lr=0.0, method_kwargs={"seed": 5})
    b = batch(3)
    n = len(b)
    method_gen = torch.Generator().set_state(
        agent.backward["critic"].method.generators.cpu.get_state()
    )
    g = torch.Generator().set_state(agent.generator.get_state())
    noise = torch.randn(2 * n, ACT, generator=g, dtype=torch.float64)
    with torch.no_grad():
        alpha = agent.temperature(b.task_ids).exp()
        a2, logp2 = agent.actor.sample(b.next_obs, b.task_ids, noise[:n])
        tq1, tq2 = agent.critic_target(b.next_obs, a2, b.task_ids)
        y = b.rewards + 0.99 * (torch.minimum(tq1, tq2) - alpha * logp2)
    w = torch.full((n,), 1.0 / M, dtype=torch.float64)
    J, _ = loop_gradients(
        agent.critic, agent._critic_loss, (b.obs, b.actions, b.task_ids, y, w), b.task_ids
    )
    orders = random_partner_orders(M, method_gen)
    weights = pcgrad_coefficients(J @ J.T, orders).sum(0)
    want = weights @ J

    agent.update(b)  # lr 0: parameters stay, .grad holds the combined update
    got = torch.cat([p.grad.flatten() for p in agent.critic.parameters()])
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(agent.last_results["critic"].weights, weights, rtol=1e-9, atol=1e-12)


def test_multihead_heads_get_only_their_task_gradient() -> None:
    agent = agent_for("multihead", method="pcgrad", lr=0.0, alpha_lr=0.0)
    b = batch(4)
    agent.update(b)
    # each head of the actor gets only its own task's gradient: absent tasks' heads get zeros
    b2 = SACBatch(**{**b.__dict__, "task_ids": torch.tensor([0, 0, 0, 1, 1, 1, 0, 0, 1])})
    agent.update(b2)
    head2 = agent.actor.net.heads[2]
    assert torch.count_nonzero(head2.weight.grad) == 0
    assert torch.count_nonzero(agent.actor.net.heads[0].weight.grad) > 0
