"""The resume protocol on its own: nothing to resume, a round trip, refusals, a corrupt newest
checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from gradsurgery.runtime.checkpoint import CheckpointError, CheckpointManager, load_checkpoint
from gradsurgery.runtime.resumable import ENVELOPE_KEYS, Resumable, ResumeError

FINGERPRINT = {"seed": 0, "agent": {"method": "sum", "widths": [8, 8]}, "tasks": ["a", "b"]}


def resumable(directory: Path, **kw: Any) -> Resumable:
    base: dict[str, Any] = dict(kind="test-loop", format=3, fingerprint=FINGERPRINT)
    base.update(kw)
    return Resumable(directory, **base)


def payload(step: int) -> dict[str, Any]:
    return {"step": step, "weights": torch.arange(4.0) * step, "series": [{"step": step}]}


def test_a_fresh_directory_has_nothing_to_resume(tmp_path: Path) -> None:
    assert resumable(tmp_path / "none").load() is None
    assert not (tmp_path / "none").exists()  # looking creates nothing


def test_save_then_load_gives_the_payload_back(tmp_path: Path) -> None:
    run = resumable(tmp_path, keep=2)
    for step in (10, 20, 30):
        run.save(payload(step), step)
    assert [p.name for p in CheckpointManager(tmp_path).checkpoints()] == [
        "step-00000020.ckpt",
        "step-00000030.ckpt",
    ]  # the newest `keep`
    found = resumable(tmp_path).load()
    assert found is not None
    state, path = found
    assert path.name == "step-00000030.ckpt"
    assert set(state) == {"step", "weights", "series"}  # the envelope is removed
    assert state["step"] == 30 and state["series"] == [{"step": 30}]
    torch.testing.assert_close(state["weights"], torch.arange(4.0) * 30)
    # on disk: the envelope next to the payload
    raw = load_checkpoint(path)
    assert raw["kind"] == "test-loop" and raw["format"] == 3 and raw["fingerprint"] == FINGERPRINT
    assert "device" not in raw  # recorded only when the loop asks for the device check


def test_a_different_fingerprint_is_refused_listing_every_difference(tmp_path: Path) -> None:
    resumable(tmp_path).save(payload(1), 1)
    changed = {**FINGERPRINT, "seed": 1, "agent": {"method": "pcgrad", "widths": [8, 8]}}
    with pytest.raises(ResumeError) as info:
        resumable(tmp_path, fingerprint=changed, start_over="start over (--fresh)").load()
    message = str(info.value)
    assert "different run configuration" in message
    assert "agent.method: checkpoint 'sum', now 'pcgrad'" in message
    assert "seed: checkpoint 0, now 1" in message
    assert "tasks" not in message and "widths" not in message  # equal leaves are not listed
    assert message.endswith("use another output directory, or start over (--fresh)")
    # a new key and a removed one are differences too
    with pytest.raises(ResumeError, match=r"overlap: checkpoint None, now True"):
        resumable(tmp_path, fingerprint={**FINGERPRINT, "overlap": True}).load()
    # lists and tuples compare by their items
    same = {**FINGERPRINT, "tasks": ("a", "b")}
    assert resumable(tmp_path, fingerprint=same).load() is not None


def test_many_differences_are_counted_past_the_first_eight(tmp_path: Path) -> None:
    resumable(tmp_path, fingerprint={f"k{i:02d}": i for i in range(1, 13)}).save(payload(1), 1)
    with pytest.raises(ResumeError, match=r"k08: checkpoint 8, now -8; and 4 more\)"):
        resumable(tmp_path, fingerprint={f"k{i:02d}": -i for i in range(1, 13)}).load()


def test_another_format_or_kind_is_refused(tmp_path: Path) -> None:
    resumable(tmp_path, format=1).save(payload(1), 1)
    with pytest.raises(ResumeError, match=r"has checkpoint format 1, expected 3"):
        resumable(tmp_path).load()
    with pytest.raises(ResumeError, match=r"is not a other-loop checkpoint \(kind 'test-loop'"):
        resumable(tmp_path, kind="other-loop", format=1).load()
    # a checkpoint written without the protocol (no envelope at all)
    CheckpointManager(tmp_path).save({"step": 2}, 2)
    with pytest.raises(ResumeError, match=r"kind None, format None"):
        resumable(tmp_path, format=1).load()


def test_the_device_check_compares_kinds_of_device(tmp_path: Path) -> None:
    resumable(tmp_path, device="cuda:0").save(payload(1), 1)
    assert resumable(tmp_path, device=torch.device("cuda:1")).load() is not None  # same kind
    with pytest.raises(ResumeError, match=r"written on cuda:0; .* same kind of device \(now cpu\)"):
        resumable(tmp_path, device="cpu").load()
    found = resumable(tmp_path).load()  # not asked: not checked, and not in the payload
    assert found is not None and "device" not in found[0]
    other = tmp_path / "other"
    resumable(other).save(payload(1), 1)  # written without a device
    with pytest.raises(ResumeError, match="written on None"):
        resumable(other, device="cpu").load()


def test_a_corrupt_newest_checkpoint_falls_back_to_the_one_before(tmp_path: Path, capsys) -> None:
    run = resumable(tmp_path)
    run.save(payload(10), 10)
    newest = run.save(payload(20), 20)
    newest.write_bytes(newest.read_bytes()[:-50])
    found = run.load()
    assert "unreadable" in capsys.readouterr().err
    assert found is not None and found[0]["step"] == 10 and found[1].name == "step-00000010.ckpt"
    assert newest.with_name(newest.name + ".corrupt").exists()  # set aside, out of the rotation
    assert [p.name for p in run.manager.checkpoints()] == ["step-00000010.ckpt"]


def test_a_payload_may_not_use_the_envelope_keys(tmp_path: Path) -> None:
    assert {"kind", "format", "fingerprint", "device"} == ENVELOPE_KEYS
    with pytest.raises(ValueError, match=r"\['format'\]"):
        resumable(tmp_path).save({"format": 1, "step": 0}, 0)
    assert resumable(tmp_path).load() is None  # nothing written


def test_clear_starts_over(tmp_path: Path) -> None:
    run = resumable(tmp_path / "ckpt")
    run.save(payload(1), 1)
    run.clear()
    assert run.load() is None and not run.directory.exists()


def test_resume_error_is_a_value_error() -> None:
    assert issubclass(ResumeError, ValueError)


def test_an_unreadable_only_checkpoint_refuses_naming_both_ways_forward(tmp_path: Path) -> None:
    run = Resumable(
        tmp_path, kind="demo", format=1, fingerprint={}, start_over="start over (--fresh)"
    )
    only = run.save(payload(10), 10)
    only.write_bytes(only.read_bytes()[:-50])
    for _ in range(2):  # the rerun refuses too (no silent fresh start)
        with pytest.raises(CheckpointError, match=r"step-00000010.*delete .*or start over"):
            run.load()
    run.clear()
    assert run.load() is None
