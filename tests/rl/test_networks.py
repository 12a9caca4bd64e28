"""Architectures of multi-task SAC: shapes, per-sample independence, task routing."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from gradsurgery.rl.care import CARENetwork
from gradsurgery.rl.film import FiLMNetwork
from gradsurgery.rl.networks import (
    MultiHeadMLP,
    OneHotMLP,
    build_actor,
    build_critic,
    build_task_network,
)
from gradsurgery.rl.soft_modularization import SoftModularNetwork
from gradsurgery.rl.task_embeddings import TASK_DESCRIPTIONS, base_task_name, task_embedding_table

M = 4
SMALL = {
    "mlp": {},
    "multihead": {},
    "softmod": {
        "base_hidden": (8, 8),
        "num_layers": 3,
        "num_modules": 3,
        "module_hidden": 5,
        "gating_hidden": 6,
    },
    "care": {
        "num_encoders": 3,
        "encoder_hidden": (6,),
        "feature_dim": 4,
        "context_dim": 4,
        "context_hidden": (6,),
    },
    "film": {"embedding_dim": 3, "conditioner_hidden": (5,)},
}
NAMES = ["reach-v3", "push-v3", "pick-place-v3", "door-open-v3"]


def net(arch: str, in_features: int = 7, out: int = 3):
    torch.manual_seed(0)
    names = NAMES if arch == "care" else None
    return build_task_network(
        arch, in_features, out, M, (9, 9), task_names=names, **SMALL[arch]
    ).double()


@pytest.mark.parametrize("arch", list(SMALL))
def test_shapes_and_rows_are_independent(arch: str) -> None:
    f = net(arch)
    x = torch.randn(10, 7, dtype=torch.float64)
    t = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 3, 0])
    out = f(x, t)
    assert out.shape == (10, 3)
    # each row's output depends on its own row only (no cross-sample coupling)
    for k in range(10):
        torch.testing.assert_close(f(x[k : k + 1], t[k : k + 1]), out[k : k + 1])
    # and the task id matters
    assert not torch.allclose(f(x, t), f(x, (t + 1) % M))


@pytest.mark.parametrize("arch", list(SMALL))
def test_actor_and_critic_shapes(arch: str) -> None:
    names = NAMES if arch == "care" else None
    actor = build_actor(arch, 5, 2, M, (8,), task_names=names, **SMALL[arch])
    critic = build_critic(arch, 5, 2, M, (8,), task_names=names, **SMALL[arch])
    obs, act, t = torch.randn(6, 5), torch.rand(6, 2), torch.tensor([0, 1, 2, 3, 1, 1])
    mean, log_std = actor(obs, t)
    q1, q2 = critic(obs, act, t)
    assert mean.shape == log_std.shape == (6, 2)
    assert q1.shape == q2.shape == (6,)
    assert not torch.equal(q1, q2)  # separate parameters
    # shared + task-specific partition the parameters
    n_all = sum(p.numel() for p in critic.parameters())
    counts = critic.num_parameters()
    assert counts["total"] == n_all


def test_multihead_task_output_ignores_other_heads() -> None:
    f = net("multihead")
    assert isinstance(f, MultiHeadMLP)
    x = torch.randn(6, 7, dtype=torch.float64)
    t = torch.tensor([0, 0, 1, 1, 2, 2])
    before = f(x, t)
    with torch.no_grad():
        f.heads[3].weight.add_(10.0)
        f.heads[1].bias.add_(1.0)
    after = f(x, t)
    torch.testing.assert_close(after[[0, 1, 4, 5]], before[[0, 1, 4, 5]])
    assert not torch.allclose(after[2:4], before[2:4])
    # gradient of task 0's output w.r.t. other heads is exactly zero
    f(x[:2], t[:2]).sum().backward()
    assert all(torch.count_nonzero(f.heads[k].weight.grad) == 0 for k in (1, 2, 3))
    assert torch.count_nonzero(f.heads[0].weight.grad) > 0
    assert {id(p) for p in f.task_specific_parameters(2)} == {
        id(p) for p in f.heads[2].parameters()
    }
    assert {id(p) for p in f.shared_parameters()} == {id(p) for p in f.trunk.parameters()}


def test_one_hot_mlp_is_an_mlp_on_the_concatenated_input() -> None:
    f = net("mlp")
    assert isinstance(f, OneHotMLP)
    x = torch.randn(3, 7, dtype=torch.float64)
    t = torch.tensor([2, 0, 3])
    z = torch.eye(M, dtype=torch.float64)[t]
    torch.testing.assert_close(f(x, t), f.net(torch.cat([x, z], 1)))
    assert list(f.task_specific_parameters()) == []


def test_softmod_routing_is_a_distribution_and_task_dependent() -> None:
    f = net("softmod")
    assert isinstance(f, SoftModularNetwork)
    x = torch.randn(5, 7, dtype=torch.float64)
    t = torch.tensor([0, 1, 2, 3, 0])
    probs, last = f.routing(x, t)
    assert len(probs) == f.num_layers - 1
    for p in probs:
        assert p.shape == (5, 3, 3)
        torch.testing.assert_close(p.sum(-1), torch.ones(5, 3, dtype=torch.float64))
    torch.testing.assert_close(last.sum(-1), torch.ones(5, dtype=torch.float64))
    # near-uniform routing at initialization (small routing output layers)
    assert float((probs[0] - 1 / 3).abs().max().detach()) < 0.05
    # the same state routed for two tasks gives different weights
    same = x[:1].expand(2, -1)
    p2, _ = f.routing(same, torch.tensor([0, 1]))
    assert not torch.allclose(p2[0][0], p2[0][1])


def test_softmod_forward_by_hand() -> None:
    """The module computation with given routing weights, written out with explicit loops."""
    f = net("softmod")
    x = torch.randn(2, 7, dtype=torch.float64)
    t = torch.tensor([1, 3])
    probs, last = f.routing(x, t)
    base = torch.relu(f.base(x))
    n = f.num_modules
    g = [base @ f.modules_in.weight[j] + f.modules_in.bias[j] for j in range(n)]
    for p, layer in zip(probs, f.modules_deep, strict=True):
        g = [
            torch.relu(sum(p[:, j, k : k + 1] * g[k] for k in range(n))) @ layer.weight[j]
            + layer.bias[j]
            for j in range(n)
        ]
    out = f.last(torch.relu(sum(last[:, j : j + 1] * g[j] for j in range(n))))
    torch.testing.assert_close(f(x, t), out)


def test_care_attention_and_stop_gradient() -> None:
    f = net("care")
    assert isinstance(f, CARENetwork)
    x = torch.randn(4, 7, dtype=torch.float64)
    t = torch.tensor([0, 1, 2, 3])
    alpha = f.attention_weights(x, t)
    torch.testing.assert_close(alpha.sum(-1), torch.ones(4, dtype=torch.float64))
    # no gradient reaches the context encoder through the attention
    alpha[:, 0].sum().backward()
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in f.context.parameters())
    assert any(
        p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in f.encoders.parameters()
    )
    # ... but the torso output trains it (z_ctx is concatenated to the encoding)
    f.zero_grad()
    f(x, t).sum().backward()
    assert any(torch.count_nonzero(p.grad) > 0 for p in f.context.parameters())
    # descriptions are a fixed buffer, not a parameter
    assert "descriptions" in dict(f.named_buffers())
    assert all("descriptions" not in name for name, _ in f.named_parameters())


def test_care_context_mlp_attention_is_state_independent() -> None:
    torch.manual_seed(0)
    f = CARENetwork(
        7,
        3,
        M,
        hidden=(6,),
        task_names=NAMES,
        attention="context_mlp",
        num_encoders=3,
        feature_dim=4,
        context_dim=4,
    ).double()
    t = torch.tensor([2, 2])
    a = f.attention_weights(torch.randn(2, 7, dtype=torch.float64), t)
    torch.testing.assert_close(a[0], a[1])


def test_care_unknown_tasks_fall_back_to_one_hot() -> None:
    with pytest.warns(UserWarning, match="one-hot"):
        table = task_embedding_table(["reach-v3", "my-new-task"])
    assert table.shape == (2, 384 + 1)
    assert table[1, 384] == 1 and float(table[1, :384].abs().sum()) == 0
    with pytest.warns(UserWarning, match="one-hot"):
        table = task_embedding_table(["a", "b"])
    torch.testing.assert_close(table, torch.eye(2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CARENetwork(5, 2, 2, hidden=(4,), task_names=None)  # no names: one-hot, silently


def test_shipped_embeddings_cover_metaworld_and_are_unit_norm() -> None:
    mt50 = [
        "assembly",
        "basketball",
        "bin-picking",
        "box-close",
        "button-press-topdown",
        "button-press-topdown-wall",
        "button-press",
        "button-press-wall",
        "coffee-button",
        "coffee-pull",
        "coffee-push",
        "dial-turn",
        "disassemble",
        "door-close",
        "door-lock",
        "door-open",
        "door-unlock",
        "hand-insert",
        "drawer-close",
        "drawer-open",
        "faucet-open",
        "faucet-close",
        "hammer",
        "handle-press-side",
        "handle-press",
        "handle-pull-side",
        "handle-pull",
        "lever-pull",
        "pick-place-wall",
        "pick-out-of-hole",
        "pick-place",
        "plate-slide",
        "plate-slide-side",
        "plate-slide-back",
        "plate-slide-back-side",
        "peg-insert-side",
        "peg-unplug-side",
        "soccer",
        "stick-push",
        "stick-pull",
        "push",
        "push-wall",
        "push-back",
        "reach",
        "reach-wall",
        "shelf-place",
        "sweep-into",
        "sweep",
        "window-open",
        "window-close",
    ]
    assert set(mt50) == set(TASK_DESCRIPTIONS)
    table = task_embedding_table([f"{n}-v3" for n in mt50])
    assert table.shape == (50, 384)
    torch.testing.assert_close(table.norm(dim=1), torch.ones(50), rtol=0, atol=1e-5)
    sims = table @ table.T
    # related tasks are closer than unrelated ones
    idx = {n: k for k, n in enumerate(mt50)}
    assert sims[idx["door-open"], idx["door-close"]] > sims[idx["door-open"], idx["basketball"]]
    assert base_task_name("pick-place-v3") == "pick-place" and base_task_name("reach") == "reach"


def test_film_starts_as_plain_mlp_and_modulates_per_task() -> None:
    torch.manual_seed(0)
    f = FiLMNetwork(7, 3, M, hidden=(9, 9), embedding_dim=3, init_scale=0.0).double()
    x = torch.randn(3, 7, dtype=torch.float64)
    t = torch.tensor([0, 1, 3])
    h = x
    for layer in f.layers:
        h = torch.relu(layer(h))
    torch.testing.assert_close(f(x, t), f.out(h))
    with torch.no_grad():
        last = f.conditioner[-1]
        assert isinstance(last, nn.Linear)
        last.weight.normal_()
    gamma_beta = f.film_parameters(torch.tensor([0, 1]))
    assert not torch.allclose(gamma_beta[0][0][0], gamma_beta[0][0][1])
    # FiLM applied to the pre-activation: relu(γ ⊙ (W x + b) + β)
    (g0, b0), (g1, b1) = f.film_parameters(t)
    h = torch.relu(g0 * f.layers[0](x) + b0)
    h = torch.relu(g1 * f.layers[1](h) + b1)
    torch.testing.assert_close(f(x, t), f.out(h))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="num_layers"):
        SoftModularNetwork(3, 1, 2, num_layers=1)
    with pytest.raises(ValueError, match="feature_dim == context_dim"):
        CARENetwork(3, 1, 2, feature_dim=4, context_dim=5)
    with pytest.raises(ValueError, match="unknown architecture"):
        build_task_network("resnet", 3, 1, 2)
    with pytest.raises(TypeError, match="no extra arguments"):
        build_task_network("mlp", 3, 1, 2, width=3)
