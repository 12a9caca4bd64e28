"""Report statistics on hand-made results: reference choice, Δm% per seed, best-cell marking."""

from __future__ import annotations

import math
from typing import Any

import pytest

from gradsurgery.data import benchmark_spec
from gradsurgery.data.spec import BenchmarkSpec, MetricSpec, TaskSpec
from gradsurgery.experiments.report import _markdown, summarize

SPEC = benchmark_spec("multidigits")
_ACC_ERR = (MetricSpec("accuracy", True), MetricSpec("error", False))
SPEC_ERR = BenchmarkSpec(
    name="two-digits",
    tasks=(
        TaskSpec("left", "classification", 10, metrics=_ACC_ERR),
        TaskSpec("right", "classification", 10, metrics=_ACC_ERR),
    ),
    layout="shared",
)


def _res(left: float, right: float, ms: float = 10.0) -> dict:
    return {
        "final_metrics": {
            "left": {"accuracy": left, "error": 1 - left},
            "right": {"accuracy": right, "error": 1 - right},
        },
        "time_per_step_ms": ms,
        "peak_memory_mib": 1.0,
        "memory_measure": "cpu_peak_rss_increase",
        "history": [],
        "diagnostics": None,
    }


def _single(acc: float) -> dict:
    return {
        "final_metrics": {"left": {"accuracy": acc}, "right": {"accuracy": acc}},
        "time_per_step_ms": 4.0,
        "peak_memory_mib": 2.0,
    }


def test_delta_m_against_single_task_per_seed() -> None:
    collected = {
        "methods": {
            "sum": {0: _res(0.80, 0.90), 1: _res(0.84, 0.86)},
            "pcgrad": {0: _res(0.90, 0.90)},
        },
        "single": {
            0: {
                "left": {**_single(0.80), "final_metrics": {"left": {"accuracy": 0.80}}},
                "right": {**_single(0.0), "final_metrics": {"right": {"accuracy": 1.00}}},
            },
            1: {
                "left": {**_single(0.0), "final_metrics": {"left": {"accuracy": 0.90}}},
                "right": {**_single(0.0), "final_metrics": {"right": {"accuracy": 0.90}}},
            },
        },
        "missing": ["uw seed 0"],
    }
    s = summarize(collected, SPEC)
    assert s["reference"] == "single-task"
    # reference: mean over seeds, left 0.85, right 0.95
    assert s["reference_metrics"] == {
        "left": {"accuracy": pytest.approx(0.85)},
        "right": {"accuracy": pytest.approx(0.95)},
    }
    # sum seed 0: drops (0.85-0.80)/0.85, (0.95-0.90)/0.95; seed 1: (0.85-0.84)/0.85, (0.95-0.86)/0.95
    d0 = 100 * ((0.05 / 0.85) + (0.05 / 0.95)) / 2
    d1 = 100 * ((0.01 / 0.85) + (0.09 / 0.95)) / 2
    dm = s["rows"]["sum"]["delta_m"]
    assert dm["n"] == 2 and dm["mean"] == pytest.approx((d0 + d1) / 2)
    assert dm["std"] == pytest.approx(abs(d0 - d1) / math.sqrt(2))
    acc = s["rows"]["sum"]["metrics"]["left"]["accuracy"]
    assert acc["mean"] == pytest.approx(0.82) and acc["n"] == 2
    assert s["rows"]["pcgrad"]["metrics"]["left"]["accuracy"]["std"] is None  # one seed
    # single-task row: time summed over the task models, memory the largest
    assert s["rows"]["single-task"]["time_per_step_ms"]["mean"] == pytest.approx(8.0)
    md = _markdown(s, SPEC, {"seeds": [0, 1], "methods": ["sum", "pcgrad"]})
    assert "**90.00 (n=1)**" in md  # pcgrad has the best left accuracy
    assert "Missing (failed or not run): uw seed 0" in md


def test_unitary_reference_without_single_task_runs() -> None:
    collected = {
        "methods": {"pcgrad": {0: _res(0.9, 0.9)}, "sum": {0: _res(0.8, 0.9), 1: _res(0.8, 0.9)}},
        "single": {},
        "missing": [],
    }
    s = summarize(collected, SPEC)
    assert s["reference"] == "sum"
    assert s["rows"]["sum"]["delta_m"]["mean"] == pytest.approx(0.0, abs=1e-12)
    # pcgrad: left 0.9 vs 0.8 → −12.5 %, right equal → 0; mean −6.25
    assert s["rows"]["pcgrad"]["delta_m"]["mean"] == pytest.approx(-6.25)
    assert "Δm% vs sum (unitary; no single-task baselines)" in _markdown(s, SPEC, {})


def _bounded_collected() -> dict:
    # sum: accuracies near 1 (the t-interval passes 100 %), errors near 0 (passes 0); times with a
    # slow outlier seed whose mean − t·s/√n would be negative
    return {
        "methods": {
            "sum": {
                0: {**_res(1.00, 0.70, ms=1.0), "peak_memory_mib": 1.0},
                1: {**_res(0.99, 0.70, ms=1.2), "peak_memory_mib": 1.5},
                2: {**_res(0.97, 0.70, ms=9.0), "peak_memory_mib": 30.0},
            },
            "pcgrad": {0: _res(0.90, 0.70004), 1: _res(0.90, 0.69998)},
            "uw": {0: _res(0.80, 0.60)},
        },
        "single": {},
        "missing": [],
    }


def test_intervals_stay_in_the_metric_range_and_are_marked() -> None:
    s = summarize(_bounded_collected(), SPEC_ERR)
    acc = s["rows"]["sum"]["metrics"]["left"]["accuracy"]
    err = s["rows"]["sum"]["metrics"]["left"]["error"]
    assert acc["high"] == 1.0 and acc["clipped"] and acc["low"] < acc["mean"]
    assert err["low"] == 0.0 and err["clipped"]
    md = _markdown(s, SPEC_ERR, {})
    assert "100.00]†" in md and "[0.00, " in md
    assert "cut to the metric's possible range" in md
    # no metric cell (columns 2–5, in %) leaves [0, 100]; no time or memory cell is negative
    for line in (line for line in md.splitlines() if "(n=" in line):
        cells = line.split("|")
        for k in (2, 3, 4, 5, 7, 8):
            text = cells[k].replace("[", " ").replace("]", " ").replace(",", " ").replace("±", " ")
            for tok in text.replace("(n=1)", " ").replace("*", " ").replace("†", " ").split():
                v = float(tok)
                assert v >= 0.0 and (k > 5 or v <= 100.0), line


def test_time_and_memory_are_median_and_iqr() -> None:
    s = summarize(_bounded_collected(), SPEC_ERR)
    t = s["rows"]["sum"]["time_per_step_ms"]
    assert (t["median"], t["q1"], t["q3"]) == pytest.approx((1.2, 1.1, 5.1))
    mem = s["rows"]["sum"]["peak_memory_mib"]
    assert mem["median"] == 1.5
    md = _markdown(s, SPEC_ERR, {})
    assert "| 1.2 [1.1, 5.1] | 1.5 [1.2, 15.8] |" in md
    assert "ms/step (median [IQR])" in md
    assert "10.0 (n=1)" in md  # uw: one seed


def test_every_tied_best_cell_is_bold() -> None:
    s = summarize(_bounded_collected(), SPEC_ERR)
    md = _markdown(s, SPEC_ERR, {})
    # right accuracy: sum 70.00 ± 0.00 and pcgrad 70.00 (70.004 / 69.998 %) tie at 2 decimals
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if "(n=" in line}
    right_col = 4  # | method | left accuracy | left error | right accuracy
    for label in ("sum (n=3)", "pcgrad (n=2)"):
        assert rows[label].split("|")[right_col].strip().startswith("**70.00"), rows[label]
    assert not rows["uw (n=1)"].split("|")[right_col].strip().startswith("**")


def test_learning_curve_figures_label_their_axes_and_band(tmp_path, saved_figures) -> None:
    import matplotlib

    matplotlib.use("Agg")

    from gradsurgery.experiments import report

    hist = [
        {"step": k, "metrics": {"left": {"accuracy": a}, "right": {"accuracy": a}},
         "train_loss": {"left": 1.0 / (k + 1), "right": 2.0 / (k + 1)}}
        for k, a in ((0, 0.5), (10, 0.99), (20, 1.0))
    ]  # fmt: skip
    collected = {
        "methods": {"sum": {0: {**_res(1, 1), "history": hist}, 1: {**_res(1, 1), "history": [
            {**h, "metrics": {"left": {"accuracy": 0.6}, "right": {"accuracy": 0.9}}} for h in hist
        ]}}},
        "single": {},
        "missing": [],
    }  # fmt: skip
    figures = saved_figures
    for kind in ("metric", "loss"):
        assert report._plot(collected, SPEC, kind, tmp_path / f"{kind}.png") is not None
    assert len(figures) == 2
    for fig in figures:
        axes = [ax for ax in fig.axes if ax.get_visible()]
        assert axes and all(ax.get_ylabel() for ax in axes)
        legend_texts = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
        assert "band: ±1 std over seeds" in legend_texts
    assert figures[0].axes[0].get_ylabel() == "eval accuracy (%)"
    # the band is cut at 100 %: no polygon vertex above it
    for coll in figures[0].axes[0].collections:
        vertices: Any = coll.get_paths()[0].vertices
        ys = [float(v[1]) for v in vertices]
        assert max(ys) <= 100.0 + 1e-9
