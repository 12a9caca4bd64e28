"""TriadMonitor's rows and summary, written through the JSONL / CSV / TensorBoard sinks of
``triad_monitor``, and plot_triad."""

from __future__ import annotations

import csv
import json
import math
import sys
import types

import pytest
import torch

from gradsurgery.diagnostics import TriadMonitor, plot_triad, triad_stats
from gradsurgery.runtime.sinks import triad_monitor

F64 = torch.float64
NAMES = ["seg", "depth", "normal"]
# Rows of three task gradients: pairs (0,1) cos -1/√2, (0,2) cos 0, (1,2) cos 1/√2.
G3 = torch.tensor([[1.0, 0.0], [-1.0, 1.0], [0.0, 1.0]], dtype=F64)
# A pair meeting Theorem 2 (a) and ξ ≤ 1 (see test_triad).
G_AB = torch.tensor([[1.0, 0.0], [-2.0, 0.5]], dtype=F64)


def gram(g: torch.Tensor) -> torch.Tensor:
    return g @ g.T


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def read_csv(path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def test_rows_jsonl_and_csv(tmp_path):
    jl, cv = tmp_path / "log.jsonl", tmp_path / "sub" / "log.csv"
    losses0 = torch.tensor([0.5, 1.5, 2.5])
    with triad_monitor(jl, task_names=NAMES, csv_path=cv, full_matrices=True) as mon:
        r0 = mon.record(0, gram(G3), losses0, torch.arange(3), weights=torch.tensor([1.0, 0.5, 2]))
        mon.record_curvature(0, 0.25)
        # Task "depth" absent at step 1: rows of the Gramian are tasks 0 and 2.
        r1 = mon.record(1, gram(G3[[0, 2]]), torch.tensor([0.4, 2.4]), torch.tensor([0, 2]))

    rows = read_jsonl(jl)
    assert rows == [r0, {"step": 0, "curvature": 0.25}, r1]

    stats = triad_stats(gram(G3)).scalars()
    assert r0["step"] == 0 and r0["num_tasks"] == 3 and r0["num_pairs"] == 3
    for key, value in stats.items():
        assert r0[key] == pytest.approx(value)
    assert r0["fraction_conflicting"] == pytest.approx(1 / 3)
    assert r0["min_cosine"] == pytest.approx(-1 / math.sqrt(2))
    assert [r0[f"loss/{n}"] for n in NAMES] == [0.5, 1.5, 2.5]
    assert [r0[f"grad_norm/{n}"] for n in NAMES] == pytest.approx([1.0, math.sqrt(2), 1.0])
    assert [r0[f"weight/{n}"] for n in NAMES] == [1.0, 0.5, 2.0]
    assert r0["tasks"] == NAMES
    s = 1 / math.sqrt(2)
    assert torch.allclose(
        torch.tensor(r0["cosine"], dtype=F64),
        torch.tensor([[1, -s, 0], [-s, 1, s], [0, s, 1]], dtype=F64),
    )

    assert "loss/depth" not in r1 and "weight/seg" not in r1
    assert r1["tasks"] == ["seg", "normal"]
    assert r1["loss/normal"] == pytest.approx(2.4)
    assert r1["num_pairs"] == 1 and r1["fraction_conflicting"] == 0.0

    header, csv_rows = read_csv(cv)
    assert cv.read_text().count("step,") == 1  # header written once
    assert header[0] == "step"
    for kind in ("loss", "grad_norm", "weight"):
        assert [f"{kind}/{n}" for n in NAMES] == [h for h in header if h.startswith(kind + "/")]
    assert "curvature" in header and "cosine" not in header and "tasks" not in header
    assert len(csv_rows) == 3
    assert float(csv_rows[0]["fraction_conflicting"]) == pytest.approx(1 / 3)
    assert float(csv_rows[0]["weight/depth"]) == 0.5
    assert csv_rows[0]["curvature"] == ""
    assert csv_rows[1]["step"] == "0" and float(csv_rows[1]["curvature"]) == 0.25
    assert csv_rows[1]["loss/seg"] == ""
    assert csv_rows[2]["loss/depth"] == "" and float(csv_rows[2]["loss/normal"]) == pytest.approx(
        2.4
    )
    assert csv_rows[2]["weight/seg"] == ""


def test_rows_are_flushed_before_close(tmp_path):
    jl, cv = tmp_path / "a.jsonl", tmp_path / "a.csv"
    mon = triad_monitor(jl, csv_path=cv)
    mon.record(0, gram(G3), torch.ones(3), torch.arange(3))
    # A killed run keeps what was recorded: read while the monitor is still open.
    assert len(read_jsonl(jl)) == 1
    assert len(read_csv(cv)[1]) == 1
    mon.close()
    mon.close()  # idempotent


def test_every(tmp_path):
    jl = tmp_path / "e.jsonl"
    with triad_monitor(jl, every=3) as mon:
        out = [mon.record(s, gram(G3), torch.ones(3), torch.arange(3)) for s in range(8)]
    assert [r is not None for r in out] == [s % 3 == 0 for s in range(8)]
    assert [r["step"] for r in read_jsonl(jl)] == [0, 3, 6]
    assert mon.summary()["steps"] == 3
    with pytest.raises(ValueError, match="every"):
        TriadMonitor(every=0)


def test_summary():
    mon = TriadMonitor()
    empty = mon.summary()
    assert empty["steps"] == 0 and empty["mean_fraction_conflicting"] is None
    assert empty["mean_curvature"] is None
    mon.record(0, gram(G3), torch.ones(3), torch.arange(3))
    mon.record(1, gram(G_AB), torch.ones(2), torch.tensor([0, 1]))
    single = mon.record(2, gram(G3[:1]), torch.ones(1), torch.tensor([2]))
    assert single["num_pairs"] == 0 and single["fraction_conflicting"] == 0.0
    assert single["mean_cosine"] is None and single["min_cosine"] is None
    mon.record_curvature(0, 1.0)
    mon.record_curvature(1, 3.0)
    mon.record_curvature(2, float("nan"))  # written as null, left out of the aggregates

    cos_ab = -2 / math.sqrt(4.25)
    s = mon.summary()
    assert s["steps"] == 3 and s["steps_with_pairs"] == 2
    assert s["mean_fraction_conflicting"] == pytest.approx((1 / 3 + 1) / 2)
    assert s["mean_fraction_condition_a"] == pytest.approx((0 + 1) / 2)
    assert s["mean_fraction_xi_le_one"] == pytest.approx((2 / 3 + 1) / 2)  # ξ = 2.5, 1, 0.1
    assert s["mean_fraction_both"] == pytest.approx((0 + 1) / 2)
    assert s["fraction_steps_any_conflict"] == 1.0
    assert s["fraction_steps_condition_a"] == 0.5
    assert s["mean_cosine"] == pytest.approx((0 + cos_ab) / 2)
    assert s["min_cosine"] == pytest.approx(cos_ab)
    assert s["curvature_steps"] == 2
    assert (s["mean_curvature"], s["min_curvature"], s["max_curvature"]) == (2.0, 1.0, 3.0)
    mon.close()


def test_without_task_names_csv_columns_from_first_row(tmp_path):
    cv = tmp_path / "n.csv"
    with triad_monitor(csv_path=cv) as mon:
        mon.record_curvature(0, 0.5)  # before any triad row: held until the header is known
        row = mon.record(0, gram(G3[:2]), torch.tensor([1.0, 2.0]), torch.tensor([0, 1]))
        assert row["loss/0"] == 1.0 and row["grad_norm/1"] == pytest.approx(math.sqrt(2))
        with pytest.warns(UserWarning, match="task_names"):
            mon.record(1, gram(G3), torch.ones(3), torch.arange(3))
    header, rows = read_csv(cv)
    assert "loss/1" in header and "loss/2" not in header
    assert [r["step"] for r in rows] == ["0", "0", "1"]
    assert float(rows[0]["curvature"]) == 0.5 and rows[1]["curvature"] == ""


def test_curvature_only_csv(tmp_path):
    cv = tmp_path / "c.csv"
    with triad_monitor(csv_path=cv) as mon:
        mon.record_curvature(0, 0.5)
    header, rows = read_csv(cv)
    assert header == ["step", "curvature"] and rows == [{"step": "0", "curvature": "0.5"}]


def test_validation():
    mon = TriadMonitor(task_names=["a", "b"])
    k = gram(G3)
    with pytest.raises(ValueError, match="losses"):
        mon.record(0, k, torch.ones(2), torch.arange(3))
    with pytest.raises(ValueError, match="tasks"):
        mon.record(0, k, torch.ones(3), torch.arange(2))
    with pytest.raises(ValueError, match="weights"):
        mon.record(0, k, torch.ones(3), torch.arange(3), weights=torch.ones(2))
    with pytest.raises(ValueError, match="out of range"):
        mon.record(0, k, torch.ones(3), torch.arange(3))


def test_one_host_sync_per_record(monkeypatch):
    calls: list[str] = []
    for name in ("item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__"):
        original = getattr(torch.Tensor, name)

        def spy(self, *args, _original=original, _name=name, **kwargs):
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, spy)
    mon = TriadMonitor(task_names=NAMES, full_matrices=True)
    mon.record(0, gram(G3), torch.ones(3), torch.arange(3), weights=torch.ones(3))
    assert calls == ["tolist"]


def test_tensorboard_missing_raises(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # makes the import fail
    with pytest.raises(ImportError, match="pip install tensorboard"):
        triad_monitor(tmp_path / "x.jsonl", tensorboard_dir=tmp_path / "tb")
    assert not (tmp_path / "x.jsonl").exists()


def test_tensorboard_scalars(monkeypatch, tmp_path):
    written: list[tuple[str, float, int]] = []

    class FakeWriter:
        def __init__(self, log_dir: str, purge_step: int | None = None) -> None:
            self.log_dir = log_dir

        def add_scalar(self, tag: str, value: float, global_step: int) -> None:
            written.append((tag, value, global_step))

        def flush(self) -> None: ...

        def close(self) -> None:
            written.append(("closed", 0.0, -1))

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = FakeWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    with triad_monitor(task_names=NAMES, tensorboard_dir=tmp_path / "tb") as mon:
        mon.record(5, gram(G3[:1]), torch.ones(1), torch.tensor([1]))
        mon.record_curvature(5, 0.75)
    tags = {tag: (value, step) for tag, value, step in written}
    assert tags["triad/fraction_conflicting"] == (0.0, 5)
    assert tags["loss/depth"] == (1.0, 5)
    assert tags["triad/curvature"] == (0.75, 5)
    assert "triad/mean_cosine" not in tags  # undefined with one task: skipped
    assert written[-1][0] == "closed"


def test_plot_triad(tmp_path):
    jl = tmp_path / "p.jsonl"
    with triad_monitor(jl) as mon:
        for step in range(4):
            g = G3 if step % 2 else G_AB
            mon.record(step, gram(g), torch.ones(len(g)), torch.arange(len(g)))
            mon.record_curvature(step, 0.1 * step)
        mon.record(4, gram(G3[:1]), torch.ones(1), torch.tensor([0]))  # nulls are drawn as gaps
    out = plot_triad(jl, tmp_path / "fig" / "triad.png", dpi=40)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
