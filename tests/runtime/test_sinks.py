"""The row sinks above the core: JSON Lines, CSV and TensorBoard writers, and triad_monitor."""

from __future__ import annotations

import csv
import json
import math
import types

import pytest
import torch

from gradsurgery.diagnostics import TriadMonitor
from gradsurgery.runtime import sinks
from gradsurgery.runtime.sinks import CsvSink, JsonlSink, TensorBoardSink, json_safe, triad_monitor

G = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)


def test_json_safe_makes_every_float_finite_or_none():
    row = {"a": math.nan, "b": [1.0, math.inf, (2, -math.inf)], "c": {"d": 3}, "e": "x"}
    assert json_safe(row) == {"a": None, "b": [1.0, None, [2, None]], "c": {"d": 3}, "e": "x"}


def test_jsonl_sink_writes_json_safe_rows_and_appends_on_request(tmp_path):
    path = tmp_path / "sub" / "rows.jsonl"
    sink = JsonlSink(path)
    sink.write({"step": 0, "v": math.nan, "cosine": [[1.0, math.inf]]})
    assert json.loads(path.read_text()) == {"step": 0, "v": None, "cosine": [[1.0, None]]}
    sink.write({"step": 1, "v": 2.0})
    sink.close()
    sink.close()  # idempotent
    kept = JsonlSink(path, append=True)  # a resumed session keeps the rows
    kept.truncate_after(0)
    kept.write({"step": 5})
    kept.close()
    assert [r["step"] for r in JsonlSink.read(path)] == [0, 5]
    JsonlSink(path).close()  # a fresh run empties the file
    assert path.read_text() == ""


def test_csv_sink_on_its_own(tmp_path):
    path = tmp_path / "t.csv"
    sink = CsvSink(path, task_names=["a", "b"])
    sink.write({"step": 0, "curvature": 0.5})  # task names known: the header is written now
    sink.write({"step": 1, "num_tasks": 1, "num_pairs": 0, "loss/b": 2.0, "cosine": [[1.0]]})
    sink.close()
    sink.close()
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        header = list(reader.fieldnames or [])
    assert header[:3] == ["step", "num_tasks", "num_pairs"] and header[-1] == "curvature"
    assert "grad_norm_ratio" in header and "weight/a" in header and "cosine" not in header
    assert rows[0]["curvature"] == "0.5" and rows[1]["loss/b"] == "2.0" and rows[1]["loss/a"] == ""
    with pytest.raises(ValueError, match="closed"):
        sink.write({"step": 2, "curvature": 1.0})


def test_tensorboard_sink_writes_numbers_only(monkeypatch, tmp_path):
    written: list[tuple[str, float, int]] = []
    writer = types.SimpleNamespace(
        add_scalar=lambda tag, value, global_step: written.append((tag, value, global_step)),
        flush=lambda: None,
        close=lambda: written.append(("closed", 0, -1)),
    )
    opened = []

    def fake_writer(log_dir, purge_step=None):
        opened.append((log_dir, purge_step))
        return writer

    monkeypatch.setattr(sinks, "tensorboard_writer", fake_writer)
    sink = TensorBoardSink(tmp_path / "tb", prefix="x/", purge_step=3)
    sink.write({"step": 4, "a": 1, "b": None, "c": math.nan, "d": True, "e": [1.0], "f/g": 2.5})
    sink.close()
    sink.close()
    assert opened == [(tmp_path / "tb", 3)]
    assert written == [("x/a", 1, 4), ("f/g", 2.5, 4), ("closed", 0, -1)]
    with pytest.raises(ValueError, match="closed"):
        sink.write({"step": 5, "a": 1})
    monkeypatch.setattr(sinks, "tensorboard_writer", lambda log_dir, purge_step=None: None)
    with pytest.raises(ImportError, match="pip install tensorboard"):
        TensorBoardSink(tmp_path / "tb")


def test_triad_monitor_sends_every_row_to_its_sinks_and_closes_them(tmp_path):
    class ListSink:
        def __init__(self) -> None:
            self.rows: list[dict] = []
            self.closed = 0

        def write(self, row: dict) -> None:
            self.rows.append(row)

        def close(self) -> None:
            self.closed += 1

    sink = ListSink()
    with TriadMonitor(task_names=["a", "b"], every=2, sinks=[sink]) as mon:
        r0 = mon.record(0, G @ G.T, torch.ones(2), torch.arange(2))
        assert mon.record(1, G @ G.T, torch.ones(2), torch.arange(2)) is None  # not recorded
        c = mon.record_curvature(1, 0.5)
    assert sink.rows == [r0, c] and c == {"step": 1, "curvature": 0.5} and sink.closed == 1
    assert r0["grad_norm_ratio"] == pytest.approx(math.sqrt(2))

    path = tmp_path / "m.jsonl"
    with triad_monitor(path, task_names=["a", "b"]) as mon:
        row = mon.record(0, G @ G.T, torch.ones(2), torch.arange(2))
    assert isinstance(mon, TriadMonitor) and JsonlSink.read(path) == [row]
    assert triad_monitor().sinks == []
