"""Evaluation: success aggregation (final / best over the series) and the episode loop."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gradsurgery.rl.envs import VecStep
from gradsurgery.rl.evaluation import EvalResult, EvalSeries, evaluate, plot_learning_curves

TASKS = ("reach-v3", "push-v3", "pick-place-v3")


def result(step: int, success: list[float], returns: list[float] | None = None) -> EvalResult:
    returns = returns if returns is not None else [float(step)] * len(success)
    return EvalResult(step, TASKS, np.array(success), np.array(returns), episodes=4)


def test_final_and_best_on_a_hand_made_series() -> None:
    s = EvalSeries(TASKS)
    s.append(result(10, [0.25, 0.0, 0.0]))  # mean 1/12
    s.append(result(20, [1.0, 0.5, 0.0]))  # mean 1/2   <- best
    s.append(result(30, [0.75, 0.25, 0.25]))  # mean 5/12 <- final
    out = s.summary()
    assert out["num_evaluations"] == 3
    assert out["final_step"] == 30
    assert out["final_mean_success"] == pytest.approx(5 / 12)
    assert out["best_mean_success"] == pytest.approx(0.5)
    assert out["best_step"] == 20
    # per task at the best evaluation (not the per-task maxima)
    assert out["best_success"] == {"reach-v3": 1.0, "push-v3": 0.5, "pick-place-v3": 0.0}
    assert out["final_success"]["pick-place-v3"] == 0.25
    # the best mean is at least the final mean and at least every evaluation's mean
    means = s.success_matrix().mean(axis=1)
    assert out["best_mean_success"] == pytest.approx(means.max())
    assert out["best_mean_success"] >= out["final_mean_success"]


def test_best_ties_take_the_earliest_and_empty_series() -> None:
    s = EvalSeries(TASKS)
    assert s.summary() == {"num_evaluations": 0}
    assert s.final() is None and s.best() is None
    s.append(result(5, [0.5, 0.5, 0.5]))
    s.append(result(6, [1.0, 0.5, 0.0]))
    assert s.best().step == 5


def test_series_round_trips_through_json_and_checks_order() -> None:
    s = EvalSeries(TASKS)
    s.append(result(10, [0.25, 0.0, 1.0], [1.5, float("nan"), 3.0]))
    s.append(result(20, [1.0, 0.5, 0.0]))
    rows = json.loads(json.dumps(s.to_list()))  # NaN became null
    back = EvalSeries.from_list(TASKS, rows)
    np.testing.assert_array_equal(back.success_matrix(), s.success_matrix())
    assert np.isnan(back.return_matrix()[0, 1])
    with pytest.raises(ValueError, match="after one at step"):
        s.append(result(15, [0.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="tasks"):
        s.append(EvalResult(30, ("reach-v3",), np.zeros(1), np.zeros(1), 1))


class ScriptedEnvs:
    """A stand-in vector env: task i's episode k succeeds at step ``succeed_at[i][k]`` (None:
    never) and lasts ``horizon`` steps; reward 1 per step."""

    def __init__(self, succeed_at: list[list[int | None]], horizon: int) -> None:
        self.tasks = tuple(f"t{i}" for i in range(len(succeed_at)))
        self.task_ids = np.arange(len(succeed_at))
        self.succeed_at, self.horizon = succeed_at, horizon
        self.episode = np.full(len(succeed_at), -1)
        self.t = np.zeros(len(succeed_at), dtype=int)
        self.terminate = False
        self.eval_mode = False
        self.resets = 0

    def begin_eval(self, terminate_on_success: bool) -> None:
        self.terminate, self.eval_mode = terminate_on_success, True

    def end_eval(self) -> None:
        self.eval_mode = False

    def reset(self, mask: np.ndarray | None = None) -> np.ndarray:
        mask = np.ones(len(self.tasks), bool) if mask is None else mask
        self.episode[mask] += 1
        self.t[mask] = 0
        self.resets += int(mask.sum())
        return np.zeros((len(self.tasks), 39))

    def step(self, actions: np.ndarray) -> VecStep:
        assert actions.shape == (len(self.tasks), 4)
        self.t += 1
        success = np.zeros(len(self.tasks), bool)
        for i in range(len(self.tasks)):
            eps = self.succeed_at[i]
            at = eps[self.episode[i] % len(eps)]
            success[i] = at is not None and self.t[i] == at  # the flag is up at one step only
        terminated = success & self.terminate
        truncated = (self.t >= self.horizon) & ~terminated
        return VecStep(
            np.zeros((len(self.tasks), 39)),
            np.ones(len(self.tasks)),
            terminated,
            truncated,
            success,
        )


class ZeroPolicy:
    def __init__(self) -> None:
        self.deterministic_calls = 0

    def act(self, obs, task_ids, deterministic=False, generator=None):
        self.deterministic_calls += bool(deterministic)
        return np.zeros((len(task_ids), 4), np.float32)


def test_evaluate_any_step_success_with_termination() -> None:
    # task 0: succeeds at step 3 in episodes 0 and 2; task 1 never; horizon 10
    envs = ScriptedEnvs([[3, None, 3, None], [None]], horizon=10)
    policy = ZeroPolicy()
    res = evaluate(policy, envs, 4, terminate_on_success=True, step=7)
    assert res.step == 7 and res.episodes == 4
    np.testing.assert_allclose(res.success, [0.5, 0.0])
    # returns: success episodes end at step 3 (return 3), the others run 10 steps
    np.testing.assert_allclose(res.returns, [(3 + 10 + 3 + 10) / 4, 10.0])
    np.testing.assert_allclose(res.lengths, [6.5, 10.0])
    assert policy.deterministic_calls > 0
    assert not envs.eval_mode  # evaluation mode switched off again


def test_evaluate_success_flag_at_any_step_counts_without_termination() -> None:
    envs = ScriptedEnvs([[3], [None]], horizon=10)
    res = evaluate(ZeroPolicy(), envs, 2, terminate_on_success=False, success="any_step")
    np.testing.assert_allclose(res.success, [1.0, 0.0])
    np.testing.assert_allclose(res.returns, [10.0, 10.0])  # full-length episodes
    envs = ScriptedEnvs([[3], [10]], horizon=10)
    res = evaluate(ZeroPolicy(), envs, 2, terminate_on_success=False, success="final_step")
    np.testing.assert_allclose(res.success, [0.0, 1.0])  # only the last step counts


def test_evaluate_ignores_extra_episodes_of_fast_tasks() -> None:
    # task 0: episode 0 succeeds at step 1, episodes 1-2 fail (10 steps), later ones succeed at
    # step 1; task 1 needs 30 steps for its 3 episodes, so task 0 runs extra (successful)
    # episodes meanwhile, which must not count.
    envs = ScriptedEnvs([[1, None, None, *[1] * 20], [None]], horizon=10)
    res = evaluate(ZeroPolicy(), envs, 3, terminate_on_success=True)
    assert res.success[0] == pytest.approx(1 / 3)
    assert envs.episode[0] > 3


def test_evaluate_rejects_bad_arguments() -> None:
    envs = ScriptedEnvs([[None]], horizon=2)
    with pytest.raises(ValueError):
        evaluate(ZeroPolicy(), envs, 0)
    with pytest.raises(ValueError):
        evaluate(ZeroPolicy(), envs, 1, success="sometimes")


def test_learning_curves_are_written(tmp_path) -> None:
    s = EvalSeries(TASKS)
    s.append(result(10, [0.25, 0.0, 0.0]))
    s.append(result(20, [1.0, 0.5, 0.0]))
    paths = plot_learning_curves(s, tmp_path, title="t")
    names = sorted(p.name for p in paths)
    assert names == sorted(["learning_curves.png", *(f"{t}.png" for t in TASKS)])
    assert all(p.stat().st_size > 1000 for p in paths)
    assert plot_learning_curves(EvalSeries(TASKS), tmp_path / "empty") == []
