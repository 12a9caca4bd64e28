"""One summary of triad rows: the monitor's running sums and a replay of rows read back agree."""

from __future__ import annotations

import math

import pytest
import torch

from gradsurgery.diagnostics import TriadMonitor, TriadSummary, triad_summary

F64 = torch.float64
G3 = torch.tensor([[1.0, 0.0], [-1.0, 1.0], [0.0, 1.0]], dtype=F64)
G_AB = torch.tensor([[1.0, 0.0], [-2.0, 0.5]], dtype=F64)


def test_replayed_rows_give_the_monitors_summary():
    rows = []

    class Rows:
        def write(self, row):
            rows.append(row)

        def close(self): ...

    mon = TriadMonitor(sinks=[Rows()])
    for step, g in enumerate([G3, G_AB, G3[:1], G3[[0, 2]]]):
        mon.record(step, g @ g.T, torch.ones(len(g)), torch.arange(len(g)))
        mon.record_curvature(step, [1.0, math.nan, 3.0, -2.0][step])
    assert triad_summary(rows) == mon.summary()
    s = mon.summary()
    assert s["steps"] == 4 and s["steps_with_pairs"] == 3 and s["curvature_steps"] == 3
    # norms: G3 (1, √2, 1), G_AB (1, √4.25), G3[[0, 2]] (1, 1)
    expected_ratio = (math.sqrt(2) + math.sqrt(4.25) + 1.0) / 3
    assert s["mean_grad_norm_ratio"] == pytest.approx(expected_ratio)


def test_undefined_values_and_other_rows_are_left_out():
    s = TriadSummary()
    s.add({"kind": "eval"})  # neither a triad nor a curvature row
    s.add({"step": 0, "curvature": None})
    s.add({"num_pairs": 1, "fraction_conflicting": 1.0, "mean_cosine": None, "min_cosine": None})
    s.add({"num_pairs": 1, "fraction_conflicting": 0.0, "mean_cosine": 0.5, "min_cosine": 0.5})
    r = s.result()
    assert r["steps"] == 2 and r["curvature_steps"] == 0 and r["mean_curvature"] is None
    assert r["mean_fraction_conflicting"] == 0.5 and r["fraction_steps_any_conflict"] == 0.5
    assert r["mean_cosine"] == 0.5 and r["min_cosine"] == 0.5  # the one step that defines it
    assert r["mean_grad_norm_ratio"] is None and r["mean_fraction_both"] is None
