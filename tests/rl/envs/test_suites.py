"""Meta-World suites and the environment protocol."""

from __future__ import annotations

import pytest

pytest.importorskip("metaworld")

from gradsurgery.rl.envs import EnvProtocol, resolve_suite


def test_suites_resolve_to_metaworld_task_lists() -> None:
    mt10 = resolve_suite("mt10")
    assert mt10.name == "MT10" and mt10.num_tasks == 10 and mt10.goal_stream == "suite"
    assert mt10.tasks[:3] == ("reach-v3", "push-v3", "pick-place-v3")
    assert resolve_suite("MT50").num_tasks == 50
    assert resolve_suite("MT1:reach").tasks == ("reach-v3",)
    assert resolve_suite("MT1", ["push-v3"]).name == "MT1:push-v3"
    assert resolve_suite("reach-v3").slug == "MT1-reach-v3"
    custom = resolve_suite("reach-v3, push")
    assert custom.name == "custom" and custom.tasks == ("reach-v3", "push-v3")
    assert custom.goal_stream == "per_task"
    with pytest.raises(ValueError, match="did you mean"):
        resolve_suite("reech-v3")
    with pytest.raises(ValueError, match="twice"):
        resolve_suite("reach-v3,reach")
    with pytest.raises(ValueError, match="exactly one task"):
        resolve_suite("MT1")
    with pytest.raises(ValueError, match="fixed task list"):
        resolve_suite("MT10", ["reach-v3"])


def test_protocol_validation() -> None:
    with pytest.raises(ValueError, match="500"):
        EnvProtocol(max_episode_steps=501)
    with pytest.raises(ValueError, match="num_goals"):
        EnvProtocol(num_goals=0)
    with pytest.raises(ValueError, match="final_step"):
        EnvProtocol(success="final_step", eval_terminate_on_success=True)
    assert EnvProtocol().to_dict()["reward_function_version"] == "v2"
