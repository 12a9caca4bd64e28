"""Goal sets are Meta-World's own."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

pytest.importorskip("metaworld")

from gradsurgery.rl.envs import resolve_suite, sample_goals


def test_goals_are_metaworld_s_own() -> None:
    """50 goals drawn for MT1 are exactly those of ``metaworld.MT1(name, seed)``."""
    import metaworld

    ours = sample_goals(resolve_suite("reach-v3"), 50, 5)[0]
    theirs = metaworld.MT1("reach-v3", seed=5).train_tasks
    assert len(ours) == len(theirs) == 50
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(
            pickle.loads(a.data)["rand_vec"], pickle.loads(b.data)["rand_vec"]
        )
