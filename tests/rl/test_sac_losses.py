"""MT-SAC losses against a hand-written NumPy computation, and the unitary path is one backward.

With learning rates 0 an update leaves the parameters alone, so the losses it reports are those of
the initial networks, which NumPy recomputes from the weights and the agent's own noise stream.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from gradsurgery.rl import MTSAC, SACBatch, SACConfig
from gradsurgery.rl.networks import squashed_gaussian
from gradsurgery.rl.presets import kurin_config

M, OBS, ACT, B = 3, 4, 2, 2


pytestmark = pytest.mark.usefixtures("one_thread")


def make_batch(seed: int = 0, dtype: torch.dtype = torch.float64) -> SACBatch:
    g = torch.Generator().manual_seed(seed)
    n = M * B
    return SACBatch(
        obs=torch.randn(n, OBS, generator=g, dtype=dtype),
        actions=torch.rand(n, ACT, generator=g, dtype=dtype) * 2 - 1,
        rewards=torch.randn(n, generator=g, dtype=dtype),
        next_obs=torch.randn(n, OBS, generator=g, dtype=dtype),
        terminated=torch.tensor([0.0, 1.0] * M, dtype=dtype),
        task_ids=torch.arange(M).repeat_interleave(B),
    )


def frozen_agent(**overrides) -> MTSAC:
    cfg = SACConfig(
        hidden_sizes=(5,),
        lr=0.0,
        alpha_lr=0.0,
        seed=3,
        dtype="float64",
        init_temperature=0.7,
        **overrides,
    )
    agent = MTSAC(cfg, OBS, ACT, M)
    if not cfg.per_task_alpha:
        return agent
    with torch.no_grad():  # distinct temperatures per task
        agent.temperature.log_alpha.copy_(torch.tensor([-0.5, 0.0, 0.3], dtype=torch.float64))
    return agent


def np_mlp(seq: nn.Sequential, x: np.ndarray) -> np.ndarray:
    layers = [mod for mod in seq if isinstance(mod, nn.Linear)]
    for k, lin in enumerate(layers):
        x = x @ lin.weight.detach().numpy().T + lin.bias.detach().numpy()
        if k < len(layers) - 1:
            x = np.maximum(x, 0.0)
    return x


def np_net(net, x, task_ids):
    one_hot = np.eye(M)[task_ids]
    return np_mlp(net.net, np.concatenate([x, one_hot], axis=1))


def np_policy(agent, obs, task_ids, eps):
    out = np_net(agent.actor.net, obs, task_ids)
    mean, raw = out[:, :ACT], out[:, ACT:]
    lo, hi = agent.config.log_std_bounds
    log_std = lo + 0.5 * (hi - lo) * (np.tanh(raw) + 1)
    u = mean + np.exp(log_std) * eps
    a = np.tanh(u)
    logp = (-0.5 * eps**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(1)
    # log(1 - tanh(u)^2) = log sech(u)^2, written stably for large |u|
    logp -= (2 * (math.log(2) - np.abs(u) - np.log1p(np.exp(-2 * np.abs(u))))).sum(1)
    return a, logp


def np_q(critic, obs, act, task_ids):
    x = np.concatenate([obs, act], axis=1)
    return np_net(critic.q1, x, task_ids)[:, 0], np_net(critic.q2, x, task_ids)[:, 0]


def expected(agent: MTSAC, batch: SACBatch, sigma=None, r_max=None) -> dict[str, float]:
    cfg = agent.config
    g = torch.Generator().set_state(agent.generator.get_state())
    n = len(batch)
    noise = torch.randn(2 * n, ACT, generator=g, dtype=torch.float64).numpy()
    eps_next, eps_pi = noise[:n], noise[n:]
    t = batch.task_ids.numpy()
    obs, nobs = batch.obs.numpy(), batch.next_obs.numpy()
    alpha = agent.alphas.numpy()[t]
    r = batch.rewards.numpy()
    if sigma is not None and cfg.reward_normalization:
        r = r / sigma
    a2, logp2 = np_policy(agent, nobs, t, eps_next)
    tq1, tq2 = np_q(agent.critic_target, nobs, a2, t)
    y = r + cfg.gamma * (1 - batch.terminated.numpy()) * (np.minimum(tq1, tq2) - alpha * logp2)
    if cfg.q_target_clip:
        scale = sigma if cfg.reward_normalization else np.ones_like(sigma)
        y = np.minimum(y, r_max / scale / (1 - cfg.gamma))
    q1, q2 = np_q(agent.critic, obs, batch.actions.numpy(), t)
    td = (q1 - y) ** 2 + (q2 - y) ** 2
    a, logp = np_policy(agent, obs, t, eps_pi)
    qa1, qa2 = np_q(agent.critic, obs, a, t)
    actor = alpha * logp - np.minimum(qa1, qa2)
    alpha_loss = -alpha * (logp - ACT)  # target entropy -|A|
    # L_i = (1/m) mean over task i; Σ_i L_i = batch mean for a balanced batch
    return {
        "critic_loss": td.mean(),
        "actor_loss": actor.mean(),
        "alpha_loss": alpha_loss.mean(),
        "entropy": -logp.mean(),
        "target_q": y.mean(),
        "reward": r.mean(),
        "per_task_critic": td.reshape(M, B).mean(1) / M,
    }


@pytest.mark.parametrize("per_task_alpha", [True, False])
@pytest.mark.parametrize("method", ["sum", "pcgrad"])
def test_losses_match_hand_computation(method: str, per_task_alpha: bool) -> None:
    agent = frozen_agent(method=method, per_task_alpha=per_task_alpha, log_per_task=True)
    batch = make_batch()
    want = expected(agent, batch)
    got = agent.update(batch)
    for key in ("critic_loss", "actor_loss", "alpha_loss", "entropy", "target_q", "reward"):
        assert got[key] == pytest.approx(want[key], rel=1e-10, abs=1e-12), key
    per_task = [got[f"critic_loss/{i}"] for i in range(M)]
    np.testing.assert_allclose(per_task, want["per_task_critic"], rtol=1e-10)
    np.testing.assert_allclose(
        [got[f"alpha/{i}"] for i in range(M)], agent.alphas.numpy(), rtol=1e-12
    )


def test_reward_normalization_and_target_clip_by_hand() -> None:
    agent = frozen_agent(reward_normalization=True, q_target_clip=True, gamma=0.5)
    base = make_batch(1)
    sigma = np.array([2.0, 2.0, 0.5, 0.5, 4.0, 4.0])
    r_max = np.array([0.1, 0.1, -0.2, -0.2, 3.0, 3.0])  # small maxima: the clip binds somewhere
    batch = SACBatch(
        **{
            k: getattr(base, k)
            for k in ("obs", "actions", "rewards", "next_obs", "terminated", "task_ids")
        },
        reward_scale=torch.tensor(sigma),
        reward_max=torch.tensor(r_max),
    )
    want = expected(agent, batch, sigma=sigma, r_max=r_max)
    got = agent.update(batch)
    assert got["reward"] == pytest.approx(want["reward"], rel=1e-12)
    assert got["target_q"] == pytest.approx(want["target_q"], rel=1e-10)
    assert got["critic_loss"] == pytest.approx(want["critic_loss"], rel=1e-10)


def test_reward_normalization_needs_statistics() -> None:
    agent = frozen_agent(reward_normalization=True)
    with pytest.raises(RuntimeError, match="make_replay"):
        agent.update(make_batch())


def test_squashed_gaussian_matches_torch_distributions() -> None:
    from torch.distributions import Independent, Normal, TransformedDistribution
    from torch.distributions.transforms import TanhTransform

    g = torch.Generator().manual_seed(0)
    mean = torch.randn(7, 3, generator=g, dtype=torch.float64)
    log_std = torch.randn(7, 3, generator=g, dtype=torch.float64) * 0.5
    noise = torch.randn(7, 3, generator=g, dtype=torch.float64)
    action, logp = squashed_gaussian(mean, log_std, noise)
    dist = TransformedDistribution(Independent(Normal(mean, log_std.exp()), 1), [TanhTransform()])
    torch.testing.assert_close(action, torch.tanh(mean + log_std.exp() * noise))
    torch.testing.assert_close(logp, dist.log_prob(action), rtol=1e-9, atol=1e-9)


def test_log_std_squashed_into_bounds() -> None:
    agent = frozen_agent(log_std_bounds=(-5.0, 1.0))
    with torch.no_grad():
        for lin in agent.actor.net.net:
            if isinstance(lin, nn.Linear):
                lin.weight.mul_(1e3)
    with torch.no_grad():
        _, log_std = agent.actor(
            torch.randn(50, OBS, dtype=torch.float64) * 10, torch.zeros(50, dtype=torch.long)
        )
    assert float(log_std.min()) >= -5.0 and float(log_std.max()) <= 1.0


def test_unitary_is_exactly_one_backward_per_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    """'sum': three autograd.backward calls per update (critic, actor, temperature), and the critic's
    gradient is that of one backward of the batch-mean loss."""
    agent = frozen_agent(method="sum")
    batch = make_batch(2)
    calls = []
    original = torch.autograd.backward

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "backward", counting)
    g = torch.Generator().set_state(agent.generator.get_state())
    agent.update(batch)  # lr = 0: .grad stays as computed, parameters unchanged
    monkeypatch.setattr(torch.autograd, "backward", original)
    assert len(calls) == 3
    got = [p.grad.clone() for p in agent.critic.parameters()]

    # plain single backward of Σ_i L_i = batch mean of the twin TD errors
    n = len(batch)
    noise = torch.randn(2 * n, ACT, generator=g, dtype=torch.float64)
    with torch.no_grad():
        alpha = agent.temperature(batch.task_ids).exp()
        a2, logp2 = agent.actor.sample(batch.next_obs, batch.task_ids, noise[:n])
        tq1, tq2 = agent.critic_target(batch.next_obs, a2, batch.task_ids)
        y = batch.rewards + 0.99 * (1 - batch.terminated) * (
            torch.minimum(tq1, tq2) - alpha * logp2
        )
    for p in agent.critic.parameters():
        p.grad = None
    q1, q2 = agent.critic(batch.obs, batch.actions, batch.task_ids)
    ((q1 - y).square() + (q2 - y).square()).mean().backward()
    for a, b in zip(got, (p.grad for p in agent.critic.parameters()), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_per_task_alpha_temperature_step_is_the_plain_sum() -> None:
    agent = frozen_agent(method="pcgrad")
    assert agent.backward["alpha"].method.name == "sum"
    assert agent.backward["actor"].method.name == "pcgrad"
    shared = frozen_agent(method="pcgrad", per_task_alpha=False)
    assert shared.backward["alpha"].method.name == "pcgrad"
    only_critic = frozen_agent(method="pcgrad", apply_method_to=("critic",))
    assert only_critic.backward["actor"].method.name == "sum"


def test_kurin_recipe() -> None:
    cfg = kurin_config("sum")
    assert (cfg.per_task_alpha, cfg.reward_normalization, cfg.actor_weight_decay) == (
        False,
        True,
        3e-4,
    )
    assert kurin_config("graddrop").actor_weight_decay == 1e-4
    agent = MTSAC(cfg.replace(hidden_sizes=(4,)), OBS, ACT, M)
    assert agent.actor_optimizer.param_groups[0]["weight_decay"] == 3e-4
    assert agent.critic_optimizer.param_groups[0]["weight_decay"] == 0.0
    assert agent.temperature.log_alpha.shape == (1,)


def test_softmod_task_reweighting_weights() -> None:
    agent = frozen_agent(task_reweighting="softmax_neg_log_alpha")
    la = agent.temperature.log_alpha.detach()
    want = torch.softmax(-la, 0)  # m · softmax / m
    torch.testing.assert_close(agent.task_weights(), want)
    with pytest.raises(ValueError, match="per_task_alpha"):
        SACConfig(task_reweighting="softmax_neg_log_alpha", per_task_alpha=False)


@pytest.mark.parametrize("method", ["sum", "pcgrad"])
def test_the_temperature_step_reads_log_pi_of_the_actor_loss(method: str) -> None:
    """The actor loss returns log π as an auxiliary output (:class:`ActorLoss`); the update's
    entropy and temperature loss use it, on the eager path (``sum``) from the actor loss's own
    forward, on the vectorized path (``pcgrad``) from the target pass: the same numbers."""
    agent = frozen_agent(method=method)
    b = make_batch(4)
    n = len(b)
    g = torch.Generator().set_state(agent.generator.get_state())
    noise_pi = torch.randn(2 * n, ACT, generator=g, dtype=torch.float64)[n:]
    with torch.no_grad():
        alpha = agent.temperature(b.task_ids).exp()
    w = agent.task_weights()[b.task_ids]
    out = agent.actor_objective(agent.actor, b.obs, b.task_ids, noise_pi, alpha, w)
    assert out.losses.shape == out.log_pi.shape == (n,) and not out.log_pi.requires_grad
    info = agent.update(b)
    torch.testing.assert_close(info["entropy"], -out.log_pi.mean().item(), rtol=1e-12, atol=1e-12)
    want_alpha_loss = -(alpha * (out.log_pi + agent.target_entropy)).mean()
    torch.testing.assert_close(info["alpha_loss"], want_alpha_loss.item(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        info["actor_loss"], out.losses.mean().item() * M, rtol=1e-12, atol=1e-12
    )
    assert not hasattr(agent, "_stash")
