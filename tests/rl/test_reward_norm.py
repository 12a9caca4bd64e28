"""Per-task reward normalization statistics, against NumPy over every reward seen (Kurin et al.)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradsurgery.rl import RewardNormalizer


def test_statistics_by_hand() -> None:
    norm = RewardNormalizer(3)
    norm.update(torch.tensor([0, 1, 0]), torch.tensor([2.0, -1.0, 4.0]))
    norm.update(torch.tensor([0]), torch.tensor([6.0]))
    # task 0: rewards 2, 4, 6 -> mean 4, E[r^2] = 56/3, var = 8/3
    assert norm.count.tolist() == [3.0, 1.0, 0.0]
    assert float(norm.mean[0]) == pytest.approx(4.0)
    assert float(norm.sq_mean[0]) == pytest.approx(56 / 3)
    sigma = norm.std()
    assert float(sigma[0]) == pytest.approx(math.sqrt(8 / 3 + 1e-8), rel=1e-14)
    assert float(sigma[1]) == pytest.approx(1e-4, rel=1e-12)  # single reward: var 0, + 1e-8
    assert float(sigma[2]) == 1.0  # no reward yet: nothing to normalize
    assert norm.max().tolist() == [6.0, -1.0, math.inf]
    # division only, no centring
    r = norm.normalize(torch.tensor([4.0, 4.0]), torch.tensor([0, 2]))
    torch.testing.assert_close(r, torch.tensor([4.0 / math.sqrt(8 / 3 + 1e-8), 4.0]))


@settings(max_examples=40, deadline=None)
@given(
    data=st.lists(
        st.tuples(st.integers(0, 2), st.floats(-100, 100, allow_nan=False)), min_size=1, max_size=40
    ),
    split=st.integers(0, 40),
)
def test_batched_updates_equal_numpy_over_all_rewards(data, split: int) -> None:
    ids = torch.tensor([d[0] for d in data])
    rewards = torch.tensor([d[1] for d in data], dtype=torch.float64)
    norm = RewardNormalizer(3)
    norm.update(ids[:split], rewards[:split])
    norm.update(ids[split:], rewards[split:])
    for t in range(3):
        mine = rewards[ids == t].numpy()
        if mine.size == 0:
            assert float(norm.std()[t]) == 1.0
            continue
        assert float(norm.mean[t]) == pytest.approx(mine.mean(), rel=1e-9, abs=1e-9)
        want = math.sqrt(max(np.mean(mine**2) - mine.mean() ** 2, 0.0) + 1e-8)
        assert float(norm.std()[t]) == pytest.approx(want, rel=1e-6, abs=1e-7)
        assert float(norm.max()[t]) == mine.max()


def test_sequential_running_average_as_kurin() -> None:
    """The batched update equals Kurin et al.'s one-at-a-time running average m ← m·c/(c+1) + r/(c+1)."""
    rng = np.random.default_rng(0)
    rewards = rng.normal(3.0, 2.0, size=200)
    norm = RewardNormalizer(1)
    m1 = m2 = c = 0.0
    for r in rewards:
        m1 = c / (c + 1) * m1 + r / (c + 1)
        m2 = c / (c + 1) * m2 + r**2 / (c + 1)
        c += 1
    for chunk in np.array_split(rewards, 7):
        norm.update(torch.zeros(len(chunk), dtype=torch.long), torch.tensor(chunk))
    assert float(norm.std()[0]) == pytest.approx(math.sqrt(m2 - m1**2 + 1e-8), rel=1e-12)


def test_state_dict_round_trip() -> None:
    a = RewardNormalizer(2)
    a.update(torch.tensor([0, 1, 1]), torch.tensor([1.0, 2.0, 5.0]))
    b = RewardNormalizer(2)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(a.std(), b.std())
    torch.testing.assert_close(a.max(), b.max())
    with pytest.raises(ValueError):
        a.update(torch.tensor([0, 1]), torch.tensor([1.0]))
