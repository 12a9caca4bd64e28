"""The RL runner: logs, checkpoints, exact resume, the ``rl`` command; full-size presets on CPU."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("metaworld")

from gradsurgery.rl.runner import ResumeError, RLRunConfig, train_rl
from gradsurgery.runtime.checkpoint import CheckpointManager, load_checkpoint


class StubAgent:
    """A random linear-Gaussian policy whose update is one SGD step of a squared loss: enough to
    check that the runner feeds, saves and restores an agent exactly (tests only)."""

    def __init__(self, config: Any, obs_dim: int, action_dim: int, num_tasks: int) -> None:
        g = torch.Generator().manual_seed(config.seed)
        self.w = 0.01 * torch.randn(
            num_tasks, obs_dim, action_dim, generator=g, dtype=torch.float64
        )
        self.gen = torch.Generator().manual_seed(config.seed + 1)
        self.num_updates = 0
        self.acted: list[np.ndarray] = []

    def _mean(self, obs: Any, task_ids: Any) -> torch.Tensor:
        o = torch.as_tensor(np.asarray(obs), dtype=torch.float64)
        w = self.w[torch.as_tensor(np.asarray(task_ids), dtype=torch.long)]
        return torch.tanh(torch.einsum("nd,nda->na", o, w))

    def act(
        self, obs: Any, task_ids: Any, deterministic: bool = False, generator: Any = None
    ) -> np.ndarray:
        mean = self._mean(obs, task_ids)
        if not deterministic:
            mean = torch.clamp(
                mean + 0.3 * torch.randn(mean.shape, generator=self.gen, dtype=mean.dtype), -1, 1
            )
            self.acted.append(mean.numpy().copy())
        return mean.numpy().astype(np.float32)

    def update(self, batch: Any) -> dict[str, float]:
        pred = torch.einsum("nd,nda->na", batch.obs.double(), self.w[batch.task_ids])
        err = pred - batch.actions.double() * batch.rewards.double()[:, None]
        grad = torch.einsum("nd,na->nda", batch.obs.double(), err)
        self.w.index_add_(0, batch.task_ids, -1e-4 * grad)
        self.num_updates += 1
        return {"loss": float(err.square().mean()), "note": "not a number"}

    def state_dict(self) -> dict[str, Any]:
        return {"w": self.w.clone(), "gen": self.gen.get_state(), "num_updates": self.num_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.w = state["w"].clone()
        self.gen.set_state(state["gen"])
        self.num_updates = int(state["num_updates"])


# 12-step episodes, 2 goals: a boundary every 12 steps
BUDGET = {"warmup_steps": 10, "eval_every": 24, "eval_episodes": 2, "checkpoint_every": 24,
          "log_every": 12, "replay_size": 1000}  # fmt: skip
PROTOCOL = {"max_episode_steps": 12, "num_goals": 2}


def config(out: Path, **kw: Any) -> RLRunConfig:
    base = dict(suite="MT1:reach-v3", preset="smoke", steps=72, seed=5, out_dir=out, budget=BUDGET,
                protocol=PROTOCOL, progress=False, tensorboard=False, plots=False, threads=1)  # fmt: skip
    base.update(kw)
    return RLRunConfig(**base)


def rows_without_timing(path: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows:
        for key in ("env_steps_per_s", "updates_per_s", "wall_s"):
            row.pop(key, None)
    return rows


class FakeWriter:
    """Records what would go to TensorBoard (not installed in every test environment)."""

    def __init__(self) -> None:
        self.scalars: dict[str, list[tuple[int, float]]] = {}
        self.closed = False

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.setdefault(tag, []).append((step, float(value)))

    def close(self) -> None:
        self.closed = True


def test_run_writes_results_logs_and_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gradsurgery.rl.runner as runner

    writer = FakeWriter()
    monkeypatch.setattr(runner, "tensorboard_writer", lambda log_dir, purge_step=None: writer)
    res = train_rl(config(tmp_path / "a", plots=True, tensorboard=True), agent_factory=StubAgent)
    assert writer.closed
    assert [s for s, _ in writer.scalars["eval/mean_success"]] == [24, 48, 72]
    assert len(writer.scalars["eval_success/reach-v3"]) == 3
    assert [s for s, _ in writer.scalars["train/loss"]] == [12, 24, 36, 48, 60, 72]
    assert "train/updates_per_s" in writer.scalars
    assert res.status == "complete" and res.steps == 72 and res.env_steps == 72
    assert res.updates == 72 - 10 == res.agent.num_updates  # one update per step after warm-up
    assert [r.step for r in res.series.results] == [24, 48, 72]
    result = json.loads((tmp_path / "a" / "result.json").read_text())
    assert result["status"] == "complete" and result["preset"]["name"] == "smoke"
    assert result["preset"]["protocol"]["max_episode_steps"] == 12
    assert result["summary"]["report"] == "final_mean_success"
    assert set(result["summary"]["final_success"]) == {"reach-v3"}
    rows = rows_without_timing(tmp_path / "a" / "log.jsonl")
    train = [r for r in rows if r["kind"] == "train"]
    assert [r["step"] for r in train] == [12, 24, 36, 48, 60, 72]
    assert "loss" in train[-1] and "note" not in train[-1] and "train_return" in train[-1]
    assert sum(r["kind"] == "eval" for r in rows) == 3
    ckpts = CheckpointManager(tmp_path / "a" / "checkpoints").checkpoints()
    assert [p.name for p in ckpts] == ["step-00000048.ckpt", "step-00000072.ckpt"]  # newest two
    state = load_checkpoint(ckpts[-1])
    assert state["run"]["step"] == 72 and state["replay"]["has_data"] and len(state["envs"]) == 1
    assert (tmp_path / "a" / "learning_curves.png").exists()
    assert (tmp_path / "a" / "curves" / "reach-v3.png").exists()


def test_resume_continues_exactly(tmp_path: Path, capsys) -> None:
    """Stopped at step 36, resumed to 48, the step-48 checkpoint damaged, resumed from 36 to the
    end: the same actions, updates, evaluations and logs as one uninterrupted run."""
    whole = train_rl(config(tmp_path / "whole"), agent_factory=StubAgent)
    first = train_rl(config(tmp_path / "split", stop_after_steps=30), agent_factory=StubAgent)
    assert first.status == "stopped" and first.steps == 36  # the first boundary after 30
    middle = train_rl(config(tmp_path / "split", stop_after_steps=40), agent_factory=StubAgent)
    assert middle.steps == 48 and middle.resumed_from == [36]
    # a damaged newest checkpoint (a kill during the write cannot do this: writes are atomic; a
    # disk can) is set aside, and the run resumes from the one before
    newest = tmp_path / "split" / "checkpoints" / "step-00000048.ckpt"
    newest.write_bytes(newest.read_bytes()[:-100])
    second = train_rl(config(tmp_path / "split"), agent_factory=StubAgent)
    assert "skipped unreadable checkpoint" in capsys.readouterr().err  # one plain stderr line
    assert second.status == "complete" and second.resumed_from == [36]
    # the actions the resumed agent took are the tail of the uninterrupted run's
    n = len(second.agent.acted)
    np.testing.assert_array_equal(np.stack(second.agent.acted), np.stack(whole.agent.acted[-n:]))
    torch.testing.assert_close(second.agent.w, whole.agent.w, rtol=0, atol=0)
    assert second.updates == whole.updates
    np.testing.assert_array_equal(second.series.success_matrix(), whole.series.success_matrix())
    np.testing.assert_array_equal(second.series.return_matrix(), whole.series.return_matrix())
    assert rows_without_timing(tmp_path / "split" / "log.jsonl") == rows_without_timing(
        tmp_path / "whole" / "log.jsonl"
    )
    a = load_checkpoint(tmp_path / "whole" / "checkpoints" / "step-00000072.ckpt")["replay"]
    b = load_checkpoint(tmp_path / "split" / "checkpoints" / "step-00000072.ckpt")["replay"]
    for key in ("obs", "actions", "rewards", "next_obs"):
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    # rerunning a finished run changes nothing
    again = train_rl(config(tmp_path / "split"), agent_factory=StubAgent)
    assert again.steps == 72 and again.agent.acted == []
    assert again.summary["final_mean_success"] == whole.summary["final_mean_success"]
    # a larger budget extends it, evaluating on schedule (not again at once)
    longer = train_rl(config(tmp_path / "split", steps=120), agent_factory=StubAgent)
    assert longer.resumed_from == [36, 72] and longer.updates == 120 - 10
    assert [r.step for r in longer.series.results] == [24, 48, 72, 96, 120]


def test_resume_refuses_another_run_and_without_replay_refills(tmp_path: Path) -> None:
    train_rl(
        config(tmp_path / "r", stop_after_steps=24, save_replay=False), agent_factory=StubAgent
    )
    with pytest.raises(ResumeError, match=r"agent\.method"):
        train_rl(config(tmp_path / "r", method="pcgrad"), agent_factory=StubAgent)
    with pytest.raises(ResumeError, match="seed"):
        train_rl(config(tmp_path / "r", seed=6), agent_factory=StubAgent)
    res = train_rl(config(tmp_path / "r", save_replay=False), agent_factory=StubAgent)
    # the empty buffer is refilled for warmup_steps steps before updates resume
    assert res.updates == (72 - 10) - 10
    fresh = train_rl(config(tmp_path / "r", resume=False, steps=24), agent_factory=StubAgent)
    assert fresh.resumed_from == [] and fresh.steps == 24


def test_run_state_round_trip_and_the_shared_resume_error() -> None:
    from gradsurgery.rl.presets import get_preset
    from gradsurgery.rl.runner import RunState
    from gradsurgery.runtime import resumable

    assert ResumeError is resumable.ResumeError and issubclass(ResumeError, ValueError)
    state = RunState.start(("a", "b"), get_preset("smoke").budget)
    assert (state.step, state.updates, state.resumed_from) == (0, 0, [])
    state.step, state.updates, state.refill_until, state.at_boundary = 36, 26, 40, False
    state.resumed_from.append(24)
    state.accumulator.add_update({"loss": 2.0})
    state.accumulator.add_episodes(np.array([True, False]), np.ones(2), np.zeros(2))
    saved = state.to_state()
    again = RunState.from_state(saved, ("a", "b"))
    assert again.to_state() == saved and again.resumed_from == [24] and again.step == 36
    assert again.accumulator.row(("a", "b")) == state.accumulator.row(("a", "b"))


def test_the_rl_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gradsurgery.cli import UsageError
    from gradsurgery.rl.rl_cli import COMMAND, add_rl_parser, run_rl

    assert COMMAND.name == "rl" and COMMAND.run is run_rl

    parser = argparse.ArgumentParser()
    add_rl_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["rl", "--list-presets"])
    assert args._run is run_rl and run_rl(args) == 0
    assert "mtrl-compat" in capsys.readouterr().out
    assert parser.parse_args(["rl", "--suite", "MT10", "--diagnose-every", "7"]).diagnose_every == 7
    for argv, message in [
        (["rl"], "--suite"),
        (["rl", "--suite", "MT10", "--method", "nope"], "unknown method"),
        (["rl", "--suite", "MT1:reech"], "did you mean"),
        (["rl", "--suite", "MT10", "--agent-arg", "widths=3"], "unknown agent"),
        (["rl", "--suite", "MT10", "--budget-arg", "steps"], "KEY=VALUE"),
    ]:
        with pytest.raises(UsageError, match=message):
            run_rl(parser.parse_args(argv))


@pytest.mark.skipif(
    "fork" not in __import__("multiprocessing").get_all_start_methods(), reason="needs fork"
)
def test_async_envs_give_the_sync_run(tmp_path: Path) -> None:
    """One process per task or all in this one: the same run."""
    a = train_rl(config(tmp_path / "sync", steps=24), agent_factory=StubAgent)
    b = train_rl(config(tmp_path / "async", steps=24, strategy="async"), agent_factory=StubAgent)
    np.testing.assert_array_equal(np.stack(a.agent.acted), np.stack(b.agent.acted))
    torch.testing.assert_close(a.agent.w, b.agent.w, rtol=0, atol=0)


@pytest.mark.parametrize("preset", ["metaworld-v3", "mtrl-compat"])
def test_full_size_presets_run_on_cpu_at_tiny_scale(tmp_path: Path, preset: str) -> None:
    """The published-size agent (3x400, 128 per task) through the real MTSAC, budget overridden:
    what a GPU run does, in a few steps."""
    budget = {"warmup_steps": 4, "eval_every": 8, "eval_episodes": 1, "checkpoint_every": 8,
              "log_every": 4, "replay_size": 1000}  # fmt: skip
    cfg = RLRunConfig("MT1:reach-v3", method="pcgrad", preset=preset, steps=8, seed=0,
                      out_dir=tmp_path / preset, budget=budget, progress=False, plots=False,
                      protocol={"max_episode_steps": 8, "num_goals": 2}, threads=1)  # fmt: skip
    res = train_rl(cfg)
    assert res.status == "complete" and res.updates == 4
    assert res.preset.agent.hidden_sizes == (400, 400, 400)
    assert res.preset.agent.batch_size_per_task == 128
    assert res.agent.num_updates == 4
    state = load_checkpoint(tmp_path / preset / "checkpoints" / "step-00000008.ckpt")
    assert state["agent"]["num_updates"] == 4
    assert len(res.series) == 1 and 0.0 <= res.summary["final_mean_success"] <= 1.0


def test_real_mtsac_resume_gives_the_uninterrupted_run(tmp_path: Path) -> None:
    """The real agent with PCGrad (its random task orders come from the method's own generator):
    stopped, resumed from its checkpoint and run to the end, it ends with the uninterrupted run's
    weights, optimizer state and evaluations, bit for bit."""
    kw = dict(suite="reach-v3,push-v3", method="pcgrad", steps=48,
              agent={"hidden_sizes": (32, 32), "batch_size_per_task": 8})  # fmt: skip
    whole = train_rl(config(tmp_path / "whole", **kw))
    first = train_rl(config(tmp_path / "split", stop_after_steps=20, **kw))
    assert first.status == "stopped" and first.steps == 24
    second = train_rl(config(tmp_path / "split", **kw))
    assert second.resumed_from == [24] and second.updates == whole.updates == 48 - 10
    a, b = whole.agent.state_dict(), second.agent.state_dict()

    def assert_same(x: Any, y: Any) -> None:
        if isinstance(x, dict):
            assert x.keys() == y.keys()
            for k in x:
                assert_same(x[k], y[k])
        elif isinstance(x, (list, tuple)):
            assert len(x) == len(y)
            for u, v in zip(x, y, strict=True):
                assert_same(u, v)
        elif isinstance(x, torch.Tensor):
            torch.testing.assert_close(x, y, rtol=0, atol=0)
        else:
            assert x == y

    assert_same(a, b)
    np.testing.assert_array_equal(second.series.return_matrix(), whole.series.return_matrix())


def test_gradient_diagnostics_every_n_updates(tmp_path: Path) -> None:
    """``diagnose_every=5``: conflict statistics of the critic's and the actor's task gradients
    on updates 0, 5, 10, ... in the log, TensorBoard and result.json; the run itself unchanged
    in what it records."""
    kw = dict(suite="reach-v3,push-v3", method="sum", steps=48, diagnose_every=5,
              agent={"hidden_sizes": (32, 32), "batch_size_per_task": 8})  # fmt: skip
    res = train_rl(config(tmp_path / "d", **kw))
    rows = [json.loads(line) for line in (tmp_path / "d" / "log.jsonl").read_text().splitlines()]
    diag = [r for r in rows if r["kind"] == "diagnostics"]
    assert res.updates == 38
    for loss in ("critic", "actor"):
        mine = [r for r in diag if r["loss"] == loss]
        assert [r["update"] for r in mine] == list(range(0, 38, 5))
        assert [r["step"] for r in mine] == [11 + u for u in range(0, 38, 5)]  # 10 warm-up steps
        for r in mine:
            assert r["num_tasks"] == 2 and r["num_pairs"] == 1
            assert r["fraction_conflicting"] in (0.0, 1.0)
            assert (r["fraction_conflicting"] == 1.0) == (r["mean_cosine"] < 0)
            norms = [r["grad_norm/reach-v3"], r["grad_norm/push-v3"]]
            assert r["grad_norm_ratio"] == pytest.approx(max(norms) / min(norms))
    result = json.loads((tmp_path / "d" / "result.json").read_text())
    summary = result["diagnostics"]
    assert summary == res.diagnostics
    critic = [r for r in diag if r["loss"] == "critic"]
    assert summary["critic"]["updates_diagnosed"] == 8
    assert summary["critic"]["mean_cosine"] == pytest.approx(
        sum(r["mean_cosine"] for r in critic) / 8
    )
    assert summary["critic"]["min_cosine"] == min(r["min_cosine"] for r in critic)
    plain = train_rl(config(tmp_path / "p", **{**kw, "diagnose_every": None}))
    assert json.loads((tmp_path / "p" / "result.json").read_text())["diagnostics"] is None
    assert plain.updates == res.updates
    with pytest.raises(ValueError, match="positive"):
        train_rl(config(tmp_path / "bad", **{**kw, "diagnose_every": 0}))
    with pytest.raises(TypeError, match="backward"):
        train_rl(config(tmp_path / "stub", diagnose_every=3), agent_factory=StubAgent)


def test_overlapped_updates_are_one_reproducible_resumable_run(tmp_path: Path) -> None:
    """``overlap=True``: each update runs while the environments step, so it sees the replay one
    step older; sync and async workers give the same run, a stop and resume gives the
    uninterrupted one, and a checkpoint made without overlap is not continued with it."""
    whole = train_rl(config(tmp_path / "whole", overlap=True), agent_factory=StubAgent)
    other = train_rl(config(tmp_path / "async", overlap=True, strategy="async", steps=72),
                     agent_factory=StubAgent)  # fmt: skip
    np.testing.assert_array_equal(np.stack(whole.agent.acted), np.stack(other.agent.acted))
    plain = train_rl(config(tmp_path / "plain"), agent_factory=StubAgent)
    assert whole.updates == plain.updates
    assert not torch.equal(whole.agent.w, plain.agent.w)  # the updates saw other batches
    first = train_rl(config(tmp_path / "split", overlap=True, stop_after_steps=30),
                     agent_factory=StubAgent)  # fmt: skip
    assert first.status == "stopped"
    second = train_rl(config(tmp_path / "split", overlap=True), agent_factory=StubAgent)
    assert second.resumed_from == [first.steps]
    torch.testing.assert_close(second.agent.w, whole.agent.w, rtol=0, atol=0)
    with pytest.raises(ResumeError, match="overlap"):
        train_rl(config(tmp_path / "plain", overlap=True, steps=96), agent_factory=StubAgent)


class EpochStubAgent(StubAgent):
    """The stub agent with the optional ``end_epoch``: records the update count at each call."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.epochs_ended_at: list[int] = []

    def end_epoch(self) -> None:
        self.epochs_ended_at.append(self.num_updates)


@pytest.mark.parametrize("overlap", [False, True])
def test_the_agents_epoch_ends_at_every_episode_boundary_after_its_update(
    tmp_path: Path, overlap: bool
) -> None:
    """12-step episodes, 10 warm-up steps: ``end_epoch`` after the updates of steps 12, 24, ...,
    72 (updates 2, 14, ..., 62), with or without overlapped updates."""
    res = train_rl(config(tmp_path / "e", overlap=overlap), agent_factory=EpochStubAgent)
    assert res.agent.epochs_ended_at == [s - 10 for s in range(12, 73, 12)]


def test_an_agent_without_end_epoch_refuses_a_method_that_needs_it(tmp_path: Path) -> None:
    from gradsurgery.backward import MultiTaskBackward

    class DWAStub(StubAgent):
        def __init__(self, *args: Any, **method_kwargs: Any) -> None:
            super().__init__(*args)
            w = torch.nn.Parameter(torch.zeros(2))
            self.backward = {"critic": MultiTaskBackward([w], "dwa", num_tasks=1, **method_kwargs)}

    with pytest.raises(ValueError, match="DynamicWeightAverage needs epoch boundaries"):
        train_rl(config(tmp_path / "r"), agent_factory=DWAStub)
    fixed = train_rl(  # with a fixed epoch length DWA needs no boundary
        config(tmp_path / "f", steps=12),
        agent_factory=lambda *a: DWAStub(*a, epoch_length=5),
    )
    assert fixed.steps == 12


def test_dwa_through_the_runner_changes_its_weights_after_episode_boundaries(
    tmp_path: Path,
) -> None:
    """``gradsurgery rl --method dwa``: the real agent's methods close an epoch at each of the
    4 episode boundaries (steps 12, 24, 36, 48); from the third epoch on the critic's weights
    are DWA's, not the loss sum's (its losses are positive: DWA measures their rates)."""
    kw = dict(suite="reach-v3,push-v3", method="dwa", steps=48,
              agent={"hidden_sizes": (32, 32), "batch_size_per_task": 8})  # fmt: skip
    res = train_rl(config(tmp_path / "dwa", **kw))
    agent = res.agent
    assert [agent.backward[n].method.epochs for n in ("critic", "actor")] == [4, 4]
    weights = agent.last_results["critic"].weights
    assert not torch.allclose(weights, torch.ones_like(weights))
    torch.testing.assert_close(weights.sum(), torch.tensor(2.0, dtype=weights.dtype))


def test_a_second_process_in_the_same_run_directory_is_refused(tmp_path: Path) -> None:
    """The run directory is locked while a run holds it (issue: two processes training one run);
    the lock goes with the run's close, also when building the run fails."""
    from gradsurgery.rl.runner import RLRun
    from gradsurgery.runtime.lock import DirectoryLockedError

    cfg = config(tmp_path / "run")
    first = RLRun(cfg, agent_factory=StubAgent)
    try:
        with pytest.raises(DirectoryLockedError, match=str(os.getpid())):
            RLRun(cfg, agent_factory=StubAgent)
    finally:
        first.close()
    RLRun(cfg, agent_factory=StubAgent).close()  # free again

    def broken(*args: Any) -> Any:
        raise RuntimeError("no agent")

    with pytest.raises(RuntimeError, match="no agent"):
        RLRun(cfg, agent_factory=broken)
    RLRun(cfg, agent_factory=StubAgent).close()  # the failed build released it
