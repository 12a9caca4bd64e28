"""The MT-SAC update benchmark: its textbook-PCGrad contender computes PCGrad, and ``--quick`` runs."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_thread")


def test_textbook_contender_equals_ours_with_two_tasks() -> None:
    """With m = 2 each task has one partner, so PCGrad has no random order: both contenders must
    produce the same critic and actor gradients on the same batch."""
    bench = importlib.import_module("mtsac_update")
    s = bench.Settings(hidden=(8, 8), batch_per_task=4)
    agents, batch = bench.make_agents(2, s, "cpu")
    ours, textbook = agents[bench.OURS], agents[bench.TEXTBOOK]
    for agent in (ours, textbook):  # freeze the parameters: .grad then holds the update
        for opt in (agent.critic_optimizer, agent.actor_optimizer, agent.alpha_optimizer):
            for group in opt.param_groups:
                group["lr"] = 0.0
        agent.update(batch)
    for mod in ("critic", "actor"):
        got = [p.grad for p in getattr(textbook, mod).parameters()]
        want = [p.grad for p in getattr(ours, mod).parameters()]
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_quick_run_writes_json(tmp_path: Path) -> None:
    bench = importlib.import_module("mtsac_update")
    out = tmp_path / "r.json"
    result = bench.main(["--quick", "--sizes", "3", "--rounds", "2", "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["sizes"][0]["num_tasks"] == 3 == result["sizes"][0]["num_tasks"]
    contenders = data["sizes"][0]["contenders"]
    assert set(contenders) == {bench.RAW, bench.UNITARY, bench.OURS, bench.TEXTBOOK}
    assert contenders[bench.UNITARY]["ratio_to_unitary"]["median"] == pytest.approx(1.0)
    assert all(len(c["raw_seconds"]) == 2 for c in contenders.values())
    assert data["load_average_before"] is not None
