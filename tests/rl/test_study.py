"""Aggregating rl runs over methods and seeds (``gradsurgery rl-report``)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import pytest

from gradsurgery.rl.study import (
    StudyError,
    load_runs,
    setting_of,
    summarize_study,
    write_study_report,
)

TASKS = ["reach-v3", "push-v3"]


def fake_run(
    root: Path,
    name: str,
    method: str,
    seed: int,
    successes: list[tuple[float, float]],
    *,
    status: str = "complete",
    steps: int = 300,
    method_kwargs: dict[str, Any] | None = None,
    wall_s: float = 120.0,
    diagnostics: dict[str, Any] | None = None,
) -> Path:
    """A ``result.json`` as the runner writes it, with the given per-task success series."""
    evals = [
        {
            "step": 100 * (k + 1),
            "mean_success": sum(s) / len(s),
            "mean_return": 10.0 * (k + 1) + seed,
            "success": dict(zip(TASKS, s, strict=True)),
            "return": dict.fromkeys(TASKS, 1.0),
            "episodes": 1,
        }
        for k, s in enumerate(successes)
    ]
    result = {
        "status": status,
        "suite": "MT2",
        "tasks": TASKS,
        "method": method,
        "seed": seed,
        "steps": steps,
        "wall_s": wall_s,
        "preset": {
            "name": "mtrl-compat-cpu",
            "report": "best_mean_success",
            "agent": {
                "method": method,
                "method_kwargs": method_kwargs or {},
                "lr": 3e-4,
                "seed": seed,
                "device": "cpu",
            },
            "budget": {"steps": steps, "eval_every": 100},
            "overrides": {"steps": steps, "agent": {"method_kwargs": method_kwargs or {}}},
        },
        "evaluations": evals,
        "diagnostics": diagnostics,
    }
    d = root / name
    d.mkdir(parents=True)
    (d / "result.json").write_text(json.dumps(result))
    return d


def test_numbers_over_seeds_by_hand(tmp_path: Path) -> None:
    fake_run(tmp_path, "sum0", "sum", 0, [(0, 0), (1, 0), (1, 1)])
    fake_run(tmp_path, "sum1", "sum", 1, [(0, 1), (1, 1), (0, 1)])
    fake_run(tmp_path, "pc0", "pcgrad", 0, [(1, 1), (1, 0), (0, 0)], wall_s=150.0)
    study = summarize_study(load_runs([tmp_path]))
    assert list(study["methods"]) == ["pcgrad", "sum"]
    s = study["methods"]["sum"]
    assert s["seeds"] == [0, 1]
    # finals 1.0 and 0.5; bests 1.0 and 1.0 (the best of the series, not of the last step)
    assert s["final_mean_success"]["mean"] == pytest.approx(0.75)
    assert s["final_mean_success"]["std"] == pytest.approx(math.sqrt(0.125))
    assert s["best_mean_success"]["mean"] == 1.0 and s["best_mean_success"]["std"] == 0.0
    assert s["final_mean_return"]["mean"] == pytest.approx(30.5)
    assert s["wall_min"]["mean"] == pytest.approx(2.0)
    assert s["final_success_per_task"] == {"reach-v3": 0.5, "push-v3": 1.0}
    assert s["curve"]["steps"] == [100, 200, 300]
    assert s["curve"]["mean"] == pytest.approx([0.25, 0.75, 0.75])
    assert s["curve"]["std"] == pytest.approx(
        [math.sqrt(0.125), math.sqrt(0.125), math.sqrt(0.125)]
    )
    p = study["methods"]["pcgrad"]
    assert p["final_mean_success"]["mean"] == 0.0 and p["final_mean_success"]["std"] is None
    assert p["best_mean_success"]["mean"] == 1.0 and p["per_seed"]["0"]["best_mean_success"] == 1.0
    assert study["report"] == "best_mean_success" and study["incomplete"] == []


def test_report_files_and_the_reported_column(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    fake_run(runs, "a", "sum", 0, [(0, 1), (1, 1)])
    fake_run(runs, "b", "sum", 1, [(1, 1), (0, 1)])
    fake_run(runs, "c", "cagrad", 0, [(0, 0), (0, 1)], method_kwargs={"c": 0.4})
    paths = write_study_report([runs], tmp_path / "out")
    md = paths["markdown"].read_text()
    assert "| sum | 2 | 75.0 ± 35.4" in md  # final: (100 + 50) / 2, std √0.125 = 35.4 %
    assert "**100.0 ± 0.0 [100.0, 100.0]**" in md  # the preset reports the best mean
    assert "| cagrad(c=0.4) | 1 |" in md
    assert "| reach-v3 | 0 | 50 |" in md  # per-task finals, methods sorted by label
    report = json.loads(paths["json"].read_text())
    assert set(report["methods"]) == {"sum", "cagrad(c=0.4)"}
    assert paths["plot"].stat().st_size > 0


def test_unfinished_runs_are_left_out_and_listed(tmp_path: Path) -> None:
    fake_run(tmp_path, "done", "sum", 0, [(1, 1)])
    fake_run(tmp_path, "cut", "sum", 1, [(0, 0)], status="stopped", steps=300)
    study = summarize_study(load_runs([tmp_path]))
    assert study["methods"]["sum"]["seeds"] == [0]
    assert study["incomplete"] == [
        {"path": str(tmp_path / "cut"), "status": "stopped", "steps": 300}
    ]


def test_different_settings_duplicates_and_bad_files_are_refused(tmp_path: Path) -> None:
    fake_run(tmp_path / "one", "a", "sum", 0, [(1, 1)], steps=300)
    fake_run(tmp_path / "one", "b", "pcgrad", 0, [(1, 1)], steps=400)
    with pytest.raises(StudyError, match=r"budget\.steps: 300 vs 400"):
        summarize_study(load_runs([tmp_path / "one"]))
    fake_run(tmp_path / "two", "a", "sum", 0, [(1, 1)])
    fake_run(tmp_path / "two", "b", "sum", 0, [(0, 1)])
    with pytest.raises(StudyError, match="both sum seed 0"):
        summarize_study(load_runs([tmp_path / "two"]))
    (tmp_path / "three" / "x").mkdir(parents=True)
    (tmp_path / "three" / "x" / "result.json").write_text("{not json")
    with pytest.raises(StudyError, match="cannot read"):
        load_runs([tmp_path / "three"])
    (tmp_path / "four" / "x").mkdir(parents=True)
    (tmp_path / "four" / "x" / "result.json").write_text('{"method": "sum"}')
    with pytest.raises(StudyError, match="not an rl result"):
        load_runs([tmp_path / "four"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(StudyError, match=r"no result\.json"):
        load_runs([tmp_path / "empty"])
    with pytest.raises(StudyError, match="does not exist"):
        load_runs([tmp_path / "missing"])


def test_method_and_its_arguments_are_not_part_of_the_setting(tmp_path: Path) -> None:
    a = json.loads((fake_run(tmp_path, "a", "sum", 0, [(1, 1)]) / "result.json").read_text())
    b = json.loads(
        (
            fake_run(tmp_path, "b", "cagrad", 0, [(1, 1)], method_kwargs={"c": 0.5}) / "result.json"
        ).read_text()
    )
    assert setting_of(a) == setting_of(b)
    assert a["preset"]["agent"]["method"] == "sum"  # the result itself is left untouched


def test_the_rl_report_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gradsurgery.cli import COMMANDS, _resolve

    command = _resolve(COMMANDS["rl-report"])
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    fake_run(tmp_path / "r", "a", "sum", 0, [(1, 0)])
    assert command.run(parser.parse_args([str(tmp_path / "r"), "--out", str(tmp_path / "o")])) == 0
    assert "| sum | 1 |" in capsys.readouterr().out
    assert (tmp_path / "o" / "mean_success.png").exists()
    assert command.run(parser.parse_args([str(tmp_path / "nothing")])) == 2
    assert "does not exist" in capsys.readouterr().err


def test_real_runs_of_the_runner(tmp_path: Path) -> None:
    """Two seeds of a real (stub-agent) run on Meta-World, summarized."""
    pytest.importorskip("metaworld")
    from gradsurgery.rl.runner import train_rl
    from tests.rl.test_runner import StubAgent, config

    for seed in (0, 1):
        train_rl(config(tmp_path / f"s{seed}", seed=seed, steps=48), agent_factory=StubAgent)
    study = summarize_study(load_runs([tmp_path]))
    row = study["methods"]["sum"]
    assert row["seeds"] == [0, 1] and row["curve"]["steps"] == [24, 48]
    for seed in ("0", "1"):
        result = json.loads((tmp_path / f"s{seed}" / "result.json").read_text())
        assert (
            row["per_seed"][seed]["final_mean_success"] == result["summary"]["final_mean_success"]
        )
        assert row["per_seed"][seed]["best_mean_success"] == result["summary"]["best_mean_success"]


def test_gradient_diagnostics_are_averaged_over_seeds(tmp_path: Path) -> None:
    def diag(conflict: float, cosine: float, ratio: float) -> dict[str, Any]:
        row = {"updates_diagnosed": 4, "mean_fraction_conflicting": conflict,
               "mean_cosine": cosine, "min_cosine": -0.9, "mean_grad_norm_ratio": ratio}  # fmt: skip
        return {"critic": row, "actor": row}

    fake_run(tmp_path, "a", "sum", 0, [(1, 1)], diagnostics=diag(0.2, 0.1, 3.0))
    fake_run(tmp_path, "b", "sum", 1, [(1, 1)], diagnostics=diag(0.4, -0.1, 5.0))
    fake_run(tmp_path, "c", "pcgrad", 0, [(1, 1)])
    study = summarize_study(load_runs([tmp_path]))
    d = study["methods"]["sum"]["diagnostics"]["critic"]
    assert d["runs"] == 2
    assert d["mean_fraction_conflicting"]["mean"] == pytest.approx(0.3)
    assert d["mean_cosine"]["mean"] == pytest.approx(0.0)
    assert d["mean_grad_norm_ratio"]["mean"] == pytest.approx(4.0)
    assert study["methods"]["pcgrad"]["diagnostics"] is None
    md = write_study_report([tmp_path], tmp_path / "out")["markdown"].read_text()
    assert "| sum | critic | 2 | 30 ± 14 [-97, 157] |" in md


def test_success_intervals_stay_in_range_and_the_figure_names_its_band(
    tmp_path: Path, saved_figures: list[Any]
) -> None:

    from gradsurgery.rl import study as study_mod

    fake_run(tmp_path, "a", "sum", 0, [(0, 1), (1, 1)])
    fake_run(tmp_path, "b", "sum", 1, [(1, 1), (1, 1)])
    fake_run(tmp_path, "c", "sum", 2, [(1, 1), (0.8, 1)])
    study = summarize_study(load_runs([tmp_path]))
    final = study["methods"]["sum"]["final_mean_success"]
    assert final["high"] == 1.0 and final["clipped"] and final["low"] < final["mean"]
    figures = saved_figures
    study_mod._plot(study, tmp_path / "mean_success.png")
    (ax,) = figures[0].axes
    assert ax.get_ylabel() == "mean success over tasks (%)"
    legend = ax.get_legend()
    assert legend is not None
    texts = [t.get_text() for t in legend.get_texts()]
    assert any(t.startswith("band: ±1 std over seeds") for t in texts)
