"""Protocol presets: every preset validates and resolves; overrides; recorded as JSON."""

from __future__ import annotations

import json

import pytest

from gradsurgery.rl.config import SACConfig
from gradsurgery.rl.presets import (
    PRESETS,
    Budget,
    get_preset,
    kurin_config,
    preset_names,
    resolve_device,
    resolve_preset,
)


@pytest.mark.parametrize("name", preset_names())
@pytest.mark.parametrize("num_tasks", [1, 10, 50])
def test_every_preset_resolves(name: str, num_tasks: int) -> None:
    p = resolve_preset(name, num_tasks=num_tasks, method="pcgrad", seed=3, device="cpu")
    assert isinstance(p.agent, SACConfig)
    assert p.agent.method == "pcgrad" and p.agent.seed == 3 and p.agent.device == "cpu"
    assert p.replay_capacity_per_task * num_tasks <= p.budget.replay_size
    assert p.budget.warmup_steps < p.budget.steps
    record = json.loads(json.dumps(p.to_dict(), allow_nan=False))
    assert record["name"] == name and record["protocol"] == p.protocol.to_dict()
    assert SACConfig.from_dict(record["agent"]) == p.agent


def test_the_protocols_are_what_they_claim() -> None:
    v3, old = get_preset("metaworld-v3"), get_preset("mtrl-compat")
    assert (v3.protocol.max_episode_steps, v3.protocol.num_goals, v3.protocol.goal_seed) == (
        500,
        50,
        None,
    )
    assert v3.protocol.eval_terminate_on_success and v3.budget.eval_episodes == 50
    assert v3.report == "final_mean_success"
    assert (old.protocol.max_episode_steps, old.protocol.num_goals) == (150, 1)
    assert old.protocol.goal_seed is not None  # the same fixed goals for every seed
    assert old.protocol.success == "any_step" and old.report == "best_mean_success"
    for full in (v3, old):
        assert full.full_size and full.agent["hidden_sizes"] == (400, 400, 400)
        assert full.agent["batch_size_per_task"] == 128 and full.budget.steps == 2_000_000
    for name in ("metaworld-v3-cpu", "mtrl-compat-cpu", "smoke"):
        small = PRESETS[name]
        assert not small.full_size and len(small.agent["hidden_sizes"]) == 2
        assert small.agent["batch_size_per_task"] < 128 and small.budget.steps < 100_000


def test_overrides_and_step_capping() -> None:
    p = resolve_preset("metaworld-v3", num_tasks=10, steps=1000)
    assert p.budget.steps == 1000
    assert p.budget.eval_every == p.budget.checkpoint_every == p.budget.log_every == 1000
    assert p.budget.warmup_steps == 250  # capped at a quarter of the steps
    p = resolve_preset(
        "metaworld-v3",
        num_tasks=10,
        steps=1000,
        budget={"warmup_steps": 10, "eval_episodes": 2},
        agent={"hidden_sizes": [32, 32], "architecture": "multihead"},
        protocol={"max_episode_steps": 100},
        method_kwargs={"reduction": "mean"},
    )
    assert p.budget.warmup_steps == 10 and p.budget.eval_episodes == 2
    assert p.agent.hidden_sizes == (32, 32) and p.agent.architecture == "multihead"
    assert p.agent.method_kwargs == {"reduction": "mean"}
    assert p.protocol.max_episode_steps == 100 and p.protocol.num_goals == 50
    assert p.to_dict()["overrides"]["budget"] == {"warmup_steps": 10, "eval_episodes": 2}


def test_regularized_recipe() -> None:
    base = resolve_preset("mtrl-compat", num_tasks=10, method="pcgrad")
    reg = resolve_preset("mtrl-compat", num_tasks=10, method="pcgrad", regularized=True)
    assert reg.budget.replay_size == 4 * base.budget.replay_size
    assert not reg.agent.per_task_alpha and reg.agent.reward_normalization
    assert reg.agent.actor_weight_decay == kurin_config("pcgrad").actor_weight_decay
    assert reg.to_dict()["regularized"]


def test_bad_overrides_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("metaworld-v1")
    with pytest.raises(ValueError, match="unknown agent"):
        resolve_preset("smoke", num_tasks=1, agent={"hidden": 3})
    with pytest.raises(ValueError, match="unknown budget"):
        resolve_preset("smoke", num_tasks=1, budget={"epochs": 3})
    with pytest.raises(ValueError, match="unknown protocol"):
        resolve_preset("smoke", num_tasks=1, protocol={"horizon": 3})
    with pytest.raises(ValueError, match="max_episode_steps"):
        resolve_preset("smoke", num_tasks=1, protocol={"max_episode_steps": 600})
    with pytest.raises(ValueError, match="eval_every"):
        Budget(
            steps=10,
            warmup_steps=0,
            eval_every=0,
            eval_episodes=1,
            replay_size=1,
            checkpoint_every=1,
        )
    with pytest.raises(TypeError):
        Budget(
            steps=1.5,
            warmup_steps=0,
            eval_every=1,
            eval_episodes=1,
            replay_size=1,
            checkpoint_every=1,
        )  # type: ignore[arg-type]


def test_devices() -> None:
    import torch

    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("CPU") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
