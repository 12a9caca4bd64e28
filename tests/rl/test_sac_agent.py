"""The MT-SAC agent: acting, state round trip (identical next update), training signal, config."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from gradsurgery.rl import MTSAC, SACConfig
from gradsurgery.rl.replay import MultiTaskReplay

M, OBS, ACT = 3, 5, 2


pytestmark = pytest.mark.usefixtures("one_thread")


def filled(agent: MTSAC, seed: int = 0, steps: int = 20) -> MultiTaskReplay:
    rb = agent.make_replay(100)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        rb.add(
            torch.arange(M),
            torch.randn(M, OBS, generator=g),
            torch.rand(M, ACT, generator=g) * 2 - 1,
            torch.randn(M, generator=g) * 3 + 1,
            torch.randn(M, OBS, generator=g),
            torch.zeros(M),
        )
    return rb


def small(**kw) -> SACConfig:
    base = {"hidden_sizes": (16, 16), "batch_size_per_task": 8, "seed": 0}
    base.update(kw)
    return SACConfig(**base)


def params(agent: MTSAC) -> list[torch.Tensor]:
    mods = (agent.actor, agent.critic, agent.critic_target, agent.temperature)
    return [p.detach().clone() for mod in mods for p in mod.state_dict().values()]


@pytest.mark.parametrize(
    "kw",
    [
        {"method": "sum"},
        {"method": "pcgrad", "architecture": "multihead"},
        {"method": "uw", "per_task_alpha": False},  # a method with its own parameters
        {
            "method": "pcgrad",
            "architecture": "softmod",
            "reward_normalization": True,
            "q_target_clip": True,
            "architecture_kwargs": {
                "base_hidden": (8, 8),
                "num_layers": 2,
                "num_modules": 2,
                "module_hidden": 4,
            },
        },
    ],
)
def test_state_dict_round_trip_gives_identical_next_update(kw) -> None:
    a = MTSAC(small(**kw), OBS, ACT, M)
    rb = filled(a)
    g = torch.Generator().manual_seed(1)
    for _ in range(2):
        a.update(rb.sample(8, g))
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = MTSAC(small(**{**kw, "seed": 123}), OBS, ACT, M)  # different init, then loaded
    b.load_state_dict(torch.load(buf, weights_only=False))
    batch = rb.sample(8, g)
    info_a, info_b = a.update(batch), b.update(batch)
    assert info_a == info_b
    for x, y in zip(params(a), params(b), strict=True):
        assert torch.equal(x, y)
    obs = torch.randn(4, OBS)
    assert torch.equal(a.act(obs, [0, 1, 2, 0]), b.act(obs, [0, 1, 2, 0]))
    assert a.num_updates == b.num_updates == 3


def test_load_rejects_other_shapes() -> None:
    a = MTSAC(small(), OBS, ACT, M)
    with pytest.raises(ValueError, match="state is for"):
        MTSAC(small(), OBS + 1, ACT, M).load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match="architecture"):
        MTSAC(small(architecture="multihead"), OBS, ACT, M).load_state_dict(a.state_dict())


def test_act_numpy_torch_single_and_deterministic() -> None:
    agent = MTSAC(small(), OBS, ACT, M)
    obs = np.random.default_rng(0).normal(size=(4, OBS)).astype(np.float32)
    a = agent.act(obs, np.array([0, 1, 2, 0]))
    assert isinstance(a, np.ndarray) and a.dtype == np.float32 and a.shape == (4, ACT)
    assert np.all(np.abs(a) <= 1)
    one = agent.act(obs[0], 1, deterministic=True)
    assert one.shape == (ACT,)
    with torch.no_grad():
        mean, _ = agent.actor(torch.as_tensor(obs[:1]), torch.tensor([1]))
    np.testing.assert_allclose(one, torch.tanh(mean)[0].numpy(), rtol=1e-6)
    t = agent.act(torch.as_tensor(obs), torch.tensor([0, 1, 2, 0]))
    assert isinstance(t, torch.Tensor) and t.shape == (4, ACT)
    broadcast = agent.act(obs, 2, deterministic=True)
    np.testing.assert_allclose(broadcast, agent.act(obs, [2, 2, 2, 2], deterministic=True))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    np.testing.assert_array_equal(agent.act(obs, 0, generator=g1), agent.act(obs, 0, generator=g2))
    with pytest.raises(ValueError, match="task ids"):
        agent.act(obs, [0, 1])


def test_same_seed_same_agent_and_updates() -> None:
    a, b = (
        MTSAC(small(method="pcgrad", method_kwargs={"seed": 0}), OBS, ACT, M),
        MTSAC(small(method="pcgrad", method_kwargs={"seed": 0}), OBS, ACT, M),
    )
    rb = filled(a)
    batch = rb.sample(8, torch.Generator().manual_seed(0))
    assert a.update(batch) == b.update(batch)
    for x, y in zip(params(a), params(b), strict=True):
        assert torch.equal(x, y)


def test_critic_fits_a_constant_reward() -> None:
    """Training signal: with γ = 0 the critics regress on the reward; their loss must fall."""
    agent = MTSAC(small(gamma=1e-6, lr=1e-2, task_loss_scale="sum"), OBS, ACT, M)
    rb = agent.make_replay(50)
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        rb.add(
            torch.arange(M),
            torch.randn(M, OBS, generator=g),
            torch.rand(M, ACT, generator=g),
            torch.tensor([1.0, -2.0, 3.0]),
            torch.randn(M, OBS, generator=g),
            torch.zeros(M),
        )
    first = agent.update(rb.sample(8, g))["critic_loss"]
    for _ in range(50):
        last = agent.update(rb.sample(8, g))["critic_loss"]
    assert last < 0.05 * first


def test_temperature_moves_toward_the_entropy_target() -> None:
    """With a target entropy far above the policy's, every α grows; far below, every α shrinks."""
    for target, sign in ((50.0, 1), (-50.0, -1)):
        agent = MTSAC(small(target_entropy=target, lr=0.0, alpha_lr=1e-2), OBS, ACT, M)
        rb = filled(agent)
        before = agent.alphas.clone()
        for _ in range(5):
            agent.update(rb.sample(8))
        assert torch.all(torch.sign(agent.alphas - before) == sign)


def test_config_validation_and_dict_round_trip() -> None:
    cfg = SACConfig(
        architecture="care", task_names=["reach-v3", "push-v3"], apply_method_to=["actor"]
    )
    assert cfg.task_names == ("reach-v3", "push-v3") and cfg.apply_method_to == ("actor",)
    assert SACConfig.from_dict(cfg.to_dict()) == cfg
    for bad in (
        {"architecture": "transformer"},
        {"apply_method_to": ("policy",)},
        {"gamma": 1.5},
        {"log_std_bounds": (2.0, -20.0)},
        {"dtype": "float16"},
    ):
        with pytest.raises(ValueError):
            SACConfig(**bad)
    with pytest.raises(ValueError, match="unknown SACConfig fields"):
        SACConfig.from_dict({"learning_rate": 1.0})
    with pytest.raises(ValueError, match="task names"):
        MTSAC(SACConfig(task_names=("a",)), OBS, ACT, M)


def test_dwa_weights_move_only_after_the_agents_epoch_boundaries() -> None:
    """DWA on every loss (``per_task_alpha=False``: the temperature is shared, so it gets the
    method too): its weights are 1 until two epochs closed, and epochs close only when the loop
    calls ``MTSAC.end_epoch`` (the runner does at every episode boundary), on each method. (The
    temperature loss is negative here, where DWA measures no rate: its weights stay 1.)"""
    agent = MTSAC(small(method="dwa", per_task_alpha=False), OBS, ACT, M)
    assert agent.needs_epoch_boundaries
    rb = filled(agent)
    gen = torch.Generator().manual_seed(1)
    ones = torch.ones(M, dtype=agent.dtype)
    for _ in range(6):  # no boundary: the loss sum
        agent.update(rb.sample(8, gen))
        for name, res in agent.last_results.items():
            assert res.weights is not None
            torch.testing.assert_close(res.weights, ones, msg=name)
    for _ in range(2):  # two epochs of 3 updates each
        for _ in range(3):
            agent.update(rb.sample(8, gen))
        agent.end_epoch()
    assert {name: e.method.epochs for name, e in agent.backward.items()} == {
        "critic": 2, "actor": 2, "alpha": 2,
    }  # fmt: skip
    agent.update(rb.sample(8, gen))
    for name in ("critic", "actor"):
        res = agent.last_results[name]
        assert res.weights is not None
        assert not torch.allclose(res.weights, ones), name
        torch.testing.assert_close(res.weights.sum(), torch.tensor(float(M), dtype=agent.dtype))
    assert not MTSAC(
        small(method="dwa", method_kwargs={"epoch_length": 5}), OBS, ACT, M
    ).needs_epoch_boundaries
