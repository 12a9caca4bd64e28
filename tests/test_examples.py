"""Every script in examples/ runs with small settings, in-process, and trains.

Each example defines ``main(argv) -> dict``; :data:`SMALL` gives the settings it is run with here
(every script must have an entry, so a new example cannot go untested).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SMALL = {
    "own_loop.py": [
        "--epochs", "2", "--train-size", "1024", "--batch-size", "64", "--bad-batch", "3",
    ],
}  # fmt: skip


def load(script: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{Path(script).stem}", EXAMPLES / script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_example_has_small_settings() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(SMALL)


def test_own_loop_trains_and_skips_the_bad_batch(capsys: pytest.CaptureFixture[str]) -> None:
    result = load("own_loop.py").main(SMALL["own_loop.py"])
    history = result["history"]
    assert result["tasks"] == ["left", "right"]
    assert len(history) == 2
    for task, (first, last) in enumerate(zip(history[0], history[-1], strict=True)):
        assert math.isfinite(first) and math.isfinite(last)
        assert last < first, f"task {task}'s loss did not decrease: {first} -> {last}"
    # exactly the injected batch (the 4th of epoch 0) was skipped, naming the task
    ((epoch, batch, message),) = result["skipped"]
    assert (epoch, batch) == (0, 3)
    assert "non-finite loss" in message and "'left'" in message
    assert all(acc > 0.2 for acc in result["test_accuracy"])  # chance is 0.1
    out = capsys.readouterr().out
    assert "skipped" in out and "left loss" in out and "right loss" in out
