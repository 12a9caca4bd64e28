"""Atomic checkpoint writes, integrity checks on load, and falling back to the previous checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from gradsurgery.runtime import checkpoint as ckpt
from gradsurgery.runtime.checkpoint import (
    CheckpointError,
    CheckpointManager,
    atomic_write_bytes,
    load_checkpoint,
    save_checkpoint,
)


def _state(v: float) -> dict:
    return {"w": torch.full((3,), v), "step": int(v), "rng": (3, tuple(range(5)), None)}


def test_round_trip(tmp_path: Path) -> None:
    path = save_checkpoint(_state(2.0), tmp_path / "a.ckpt")
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["w"], torch.full((3,), 2.0))
    assert loaded["step"] == 2 and loaded["rng"] == (3, (0, 1, 2, 3, 4), None)


class _HalfWriter:
    """A file whose write puts half the bytes on disk, then fails (a full disk, a kill)."""

    def __init__(self, f):
        self.f = f

    def write(self, data: bytes) -> int:
        self.f.write(data[: len(data) // 2])
        self.f.flush()
        raise OSError(28, "No space left on device")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def __getattr__(self, name):
        return getattr(self.f, name)


def test_failed_write_leaves_the_old_file_intact(tmp_path: Path, monkeypatch) -> None:
    path = save_checkpoint(_state(1.0), tmp_path / "a.ckpt")
    before = path.read_bytes()
    real_fdopen = os.fdopen
    monkeypatch.setattr(ckpt.os, "fdopen", lambda fd, mode: _HalfWriter(real_fdopen(fd, mode)))
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(_state(5.0), path)
    assert path.read_bytes() == before
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["a.ckpt"]  # the temp file is gone


def test_failed_rename_leaves_the_old_file_intact(tmp_path: Path, monkeypatch) -> None:
    path = save_checkpoint(_state(1.0), tmp_path / "a.ckpt")

    def boom(src, dst):
        raise KeyboardInterrupt  # killed between the write and the rename

    monkeypatch.setattr(ckpt.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(path, b"new contents")
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["a.ckpt"]


def test_truncated_checkpoint_gives_a_clear_error(tmp_path: Path) -> None:
    path = save_checkpoint(_state(1.0), tmp_path / "a.ckpt")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 100])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(path)
    path.write_bytes(raw[:10])
    with pytest.raises(CheckpointError, match="not a gradsurgery checkpoint"):
        load_checkpoint(path)


def test_altered_checkpoint_gives_a_clear_error(tmp_path: Path) -> None:
    path = save_checkpoint(_state(1.0), tmp_path / "a.ckpt")
    raw = bytearray(path.read_bytes())
    raw[-50] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"corrupt.*SHA-256"):
        load_checkpoint(path)


def test_missing_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.ckpt")
    torch.save({"a": 1}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a gradsurgery checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")


def test_manager_keeps_two_and_falls_back_past_a_corrupt_one(tmp_path: Path, capsys) -> None:
    mgr = CheckpointManager(tmp_path, keep=2)
    for step in (5, 10, 15):
        mgr.save(_state(float(step)), step)
    assert [p.name for p in mgr.checkpoints()] == ["step-00000010.ckpt", "step-00000015.ckpt"]
    newest = mgr.path_for(15)
    newest.write_bytes(newest.read_bytes()[:-7])
    state, path = mgr.load_latest()
    err = capsys.readouterr().err  # one plain line, no warnings module source line
    assert err.count("\n") == 1 and err.startswith("gradsurgery: skipped unreadable checkpoint")
    assert "step-00000010" in err and "step-00000015" in err
    assert state["step"] == 10 and path.name == "step-00000010.ckpt"
    assert (tmp_path / "step-00000015.ckpt.corrupt").exists()  # out of the rotation
    assert [p.name for p in mgr.checkpoints()] == ["step-00000010.ckpt"]


def test_manager_raises_when_nothing_is_readable(tmp_path: Path) -> None:
    mgr = CheckpointManager(tmp_path, keep=2)
    assert mgr.load_latest() is None
    mgr.save(_state(1.0), 1)
    mgr.path_for(1).write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"no readable checkpoint.*step-00000001.*delete"):
        mgr.load_latest()


def test_an_unreadable_only_checkpoint_keeps_refusing(tmp_path: Path) -> None:
    """Set aside as .corrupt, it must not make the next attempt a silent fresh start."""
    mgr = CheckpointManager(tmp_path, keep=2)
    mgr.save(_state(1.0), 1)
    mgr.path_for(1).write_bytes(mgr.path_for(1).read_bytes()[:100])
    for _ in range(2):
        with pytest.raises(CheckpointError, match=r"step-00000001\.ckpt.*delete " + str(tmp_path)):
            mgr.load_latest()
    assert mgr.corrupt() == [tmp_path / "step-00000001.ckpt.corrupt"]
    mgr.save(_state(2.0), 2)  # a good checkpoint again (a run started over): it is used
    found = mgr.load_latest()
    assert found is not None and found[1].name == "step-00000002.ckpt"


def test_atomic_writes_respect_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a.json", b"{}")
        os.umask(0o077)
        atomic_write_bytes(tmp_path / "b.json", b"{}")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600


def test_trainer_reports_a_corrupt_checkpoint(tmp_path: Path) -> None:
    from gradsurgery.data import load_benchmark
    from gradsurgery.experiments import TrainConfig, Trainer, benchmark_setup, build_model

    train = load_benchmark("digit-attributes", "train")
    test = load_benchmark("digit-attributes", "test")
    config = TrainConfig(method="sum", steps=2, batch_size=64, progress=False)
    model = build_model(benchmark_setup("digit-attributes"), train.spec)
    Trainer(model, train, test, config, tmp_path).fit()
    (ck,) = (tmp_path / "checkpoints").iterdir()
    ck.write_bytes(ck.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated"):
        Trainer(model, train, test, config, tmp_path).fit()
