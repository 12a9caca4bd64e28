"""Task-balanced multi-task replay: add, ring overwrite, balanced sampling, state round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradsurgery.rl import MultiTaskReplay, RewardNormalizer


def add_marked(rb: MultiTaskReplay, task_ids, marks) -> None:
    """Transitions whose every field encodes ``mark`` (so sampled rows can be traced back)."""
    t = torch.as_tensor(task_ids)
    v = torch.as_tensor(marks, dtype=torch.float32)
    n = t.shape[0]
    rb.add(
        t,
        v[:, None].expand(n, rb.obs_dim),
        v[:, None].expand(n, rb.action_dim),
        v,
        v[:, None].expand(n, rb.obs_dim) + 0.5,
        torch.zeros(n, dtype=torch.bool),
    )


def test_add_and_sizes() -> None:
    rb = MultiTaskReplay(3, 4, obs_dim=2, action_dim=1)
    add_marked(rb, [0, 1, 1, 2, 1], [1, 2, 3, 4, 5])
    assert len(rb) == 5 and rb.sizes.tolist() == [1, 3, 1]
    assert rb.rewards[1, :3].tolist() == [2.0, 3.0, 5.0]  # in arrival order within the task
    assert rb.task_size(1) == 3


def test_ring_overwrites_oldest_of_its_own_task() -> None:
    rb = MultiTaskReplay(2, 3, obs_dim=1, action_dim=1)
    for k in range(5):  # task 0 gets 5 transitions, task 1 only one
        add_marked(rb, [0], [10 + k])
    add_marked(rb, [1], [99])
    assert rb.sizes.tolist() == [3, 1]
    assert sorted(rb.rewards[0].tolist()) == [12.0, 13.0, 14.0]  # 10 and 11 evicted
    assert rb.rewards[1, 0] == 99  # a busy task never evicts another task's data
    # several transitions of one task in one call wrap around too
    add_marked(rb, [0, 0], [20, 21])
    assert sorted(rb.rewards[0].tolist()) == [14.0, 20.0, 21.0]


def test_sample_is_balanced_grouped_and_consistent() -> None:
    rb = MultiTaskReplay(3, 50, obs_dim=2, action_dim=2)
    add_marked(rb, [0] * 5 + [1] * 40 + [2] * 2, list(range(47)))
    b = rb.sample(16, torch.Generator().manual_seed(0))
    assert len(b) == 48
    assert b.task_ids.tolist() == [0] * 16 + [1] * 16 + [2] * 16
    # every sampled row comes from its own task and its fields belong together
    assert set(b.rewards[:16].tolist()) <= set(range(5))
    assert set(b.rewards[16:32].tolist()) <= set(range(5, 45))
    assert set(b.rewards[32:].tolist()) <= {45.0, 46.0}
    torch.testing.assert_close(b.obs[:, 0], b.rewards)
    torch.testing.assert_close(b.next_obs[:, 1], b.rewards + 0.5)
    torch.testing.assert_close(b.actions[:, 1], b.rewards)
    assert b.terminated.dtype == torch.float32 and float(b.terminated.sum()) == 0


def test_sampling_is_uniform_within_a_task() -> None:
    rb = MultiTaskReplay(1, 10, obs_dim=1, action_dim=1)
    add_marked(rb, [0] * 4, [0, 1, 2, 3])
    b = rb.sample(40_000, torch.Generator().manual_seed(1))
    freq = np.bincount(b.rewards.long().numpy(), minlength=4) / 40_000
    np.testing.assert_allclose(freq, 0.25, atol=0.01)


def test_sample_reproducible_and_needs_every_task() -> None:
    rb = MultiTaskReplay(2, 10, obs_dim=1, action_dim=1)
    add_marked(rb, [0, 0, 0], [1, 2, 3])
    with pytest.raises(ValueError, match=r"tasks \[1\]"):
        rb.sample(2)
    add_marked(rb, [1], [7])
    a = rb.sample(5, torch.Generator().manual_seed(3))
    b = rb.sample(5, torch.Generator().manual_seed(3))
    assert torch.equal(a.rewards, b.rewards)


def test_numpy_input_and_errors() -> None:
    rb = MultiTaskReplay(2, 2, obs_dim=3, action_dim=1)
    rb.add(
        np.array([1]),
        np.zeros((1, 3)),
        np.zeros((1, 1)),
        np.array([0.5]),
        np.ones((1, 3)),
        np.array([True]),
    )
    assert rb.terminated[1, 0] == 1.0 and rb.next_obs[1, 0].tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="task ids"):
        add_marked(rb, [2], [0])
    add_marked(rb, [0, 0, 0], [1, 2, 3])  # more than the capacity in one call: the last 2 stay
    assert sorted(rb.rewards[0].tolist()) == [2.0, 3.0] and rb.task_size(0) == 2


def test_reward_statistics_are_updated_on_add_and_carried_by_samples() -> None:
    norm = RewardNormalizer(2)
    rb = MultiTaskReplay(2, 2, obs_dim=1, action_dim=1, reward_normalizer=norm)
    add_marked(rb, [0, 0, 0, 1], [1.0, 2.0, 3.0, -4.0])  # task 0's first reward will be evicted
    rb_std = np.sqrt(np.var([1.0, 2.0, 3.0]) + 1e-8)  # statistics cover evicted rewards too
    assert float(norm.std()[0]) == pytest.approx(rb_std, rel=1e-12)
    b = rb.sample(3, torch.Generator().manual_seed(0))
    torch.testing.assert_close(b.reward_scale[:3], torch.full((3,), rb_std, dtype=torch.float32))
    torch.testing.assert_close(b.reward_max, torch.tensor([3.0] * 3 + [-4.0] * 3))
    assert float(b.reward_scale[3]) == pytest.approx(1e-4, rel=1e-3)  # one reward: std sqrt(1e-8)


def test_state_dict_round_trip() -> None:
    rb = MultiTaskReplay(2, 5, obs_dim=2, action_dim=1)
    add_marked(rb, [0, 1, 1, 0, 0, 0, 0, 0], list(range(8)))
    state = rb.state_dict()
    other = MultiTaskReplay(2, 5, obs_dim=2, action_dim=1)
    other.load_state_dict(state)
    for name in ("obs", "next_obs", "actions", "rewards", "terminated", "ptr", "size"):
        assert torch.equal(getattr(rb, name), getattr(other, name)), name
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    assert torch.equal(rb.sample(4, g1).rewards, other.sample(4, g2).rewards)
    # adding continues at the same ring position
    add_marked(rb, [0], [100])
    add_marked(other, [0], [100])
    assert torch.equal(rb.rewards, other.rewards)
    # statistics only
    light = rb.state_dict(include_data=False)
    assert "obs" not in light
    third = MultiTaskReplay(2, 5, obs_dim=2, action_dim=1)
    third.load_state_dict(light)
    assert len(third) == 0
    assert torch.equal(third.reward_normalizer.count, rb.reward_normalizer.count)
    with pytest.raises(ValueError, match="capacity"):
        MultiTaskReplay(2, 6, obs_dim=2, action_dim=1).load_state_dict(state)


@settings(max_examples=30, deadline=None)
@given(
    ids=st.lists(st.integers(0, 2), min_size=1, max_size=30),
    cap=st.integers(1, 6),
)
def test_ring_keeps_the_last_capacity_transitions_of_each_task(ids: list[int], cap: int) -> None:
    rb = MultiTaskReplay(3, cap, obs_dim=1, action_dim=1)
    # add in chunks of up to 4 (one vector step each; possibly more than cap of a task per call)
    k = 0
    while k < len(ids):
        chunk = []
        counts = [0, 0, 0]
        while k < len(ids) and len(chunk) < 4:
            counts[ids[k]] += 1
            chunk.append(k)
            k += 1
        add_marked(rb, [ids[j] for j in chunk], chunk)
    for t in range(3):
        mine = [j for j, i in enumerate(ids) if i == t]
        keep = mine[-cap:]
        assert rb.task_size(t) == len(keep)
        assert sorted(rb.rewards[t, : len(keep)].tolist()) == sorted(float(j) for j in keep)


def test_host_task_ids_take_the_sync_free_path_with_the_same_result() -> None:
    """Task ids from the host (the environments'): bookkeeping on the host, data by copies, no
    host synchronisation; the same buffer as with device-side ids. After the first sample that
    finds every task filled, sampling reads nothing on the host either."""
    from gradsurgery.profiling import count_ops

    g = torch.Generator().manual_seed(0)
    a, b = MultiTaskReplay(3, 4, 2, 1), MultiTaskReplay(3, 4, 2, 1)
    for step in range(7):
        ids = np.array([0, 1, 2, 2, 0, 2, 2, 2, 2][: 3 + step % 4])
        n = len(ids)
        obs, act = torch.randn(n, 2, generator=g).numpy(), torch.randn(n, 1, generator=g).numpy()
        rew, nxt = np.arange(n, dtype=np.float64) + step, obs + 1
        done = np.zeros(n, dtype=bool)
        with count_ops() as c:
            a.add(ids, obs, act, rew, nxt, done)
        assert c.syncs == 0, c.sync_events
        b.add(torch.as_tensor(ids), obs, act, rew, nxt, done)  # a CPU tensor: the same path
    for key in ("obs", "next_obs", "actions", "rewards", "terminated", "ptr", "size"):
        torch.testing.assert_close(getattr(a, key), getattr(b, key), rtol=0, atol=0)
    a.sample(2, torch.Generator().manual_seed(1))
    with count_ops() as c:
        a.sample(2, torch.Generator().manual_seed(1))
    assert c.syncs == 0, c.sync_events
