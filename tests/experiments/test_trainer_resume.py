"""A run killed mid-way and resumed from its checkpoint ends bit for bit where the uninterrupted run
ends: parameters, method state, metrics, history and logs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gradsurgery.data import MultiTaskDataset, TensorMultiTaskDataset, load_benchmark
from gradsurgery.experiments import (
    StopTraining,
    TrainConfig,
    Trainer,
    benchmark_setup,
    build_model,
)
from gradsurgery.runtime import seed_everything


class Killed(Exception):
    """Stands for the process dying at a given step."""


def _small(split: str, n: int) -> TensorMultiTaskDataset:
    ds = load_benchmark("multidigits", split)
    return TensorMultiTaskDataset(ds.inputs[:n], {k: v[:n] for k, v in ds.targets.items()}, ds.spec)


TRAIN, TEST = _small("train", 640), _small("test", 256)  # 10 batches of 64 per epoch


def _trainer(
    out: Path | None, method: str, callbacks=(), model_name: str = "mlp", **cfg
) -> Trainer:
    config = TrainConfig(
        method=method,
        seed=7,
        steps=25,  # crosses two epoch boundaries
        batch_size=64,
        lr=3e-3,
        eval_every=5,
        checkpoint_every=7,  # checkpoints at 7, 14, 21, 25: the kill at 17 resumes mid-epoch
        progress=False,
        **cfg,
    )
    seed_everything(config.seed)
    model = build_model(benchmark_setup("multidigits"), TRAIN.spec, model_name)
    return Trainer(model, TRAIN, TEST, config, out, callbacks=callbacks)


def _kill_at(step: int):
    def callback(trainer: Trainer, s: int) -> None:
        if s == step:
            raise Killed

    return callback


def _rows(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for r in rows:
        r.pop("time_s", None)
    return rows


@pytest.mark.parametrize(
    ("method", "extra"),
    [
        ("pcgrad", {"scheduler": "cosine"}),  # generator state, LR scheduler
        ("uw", {}),  # the method's parameters are in the optimizer
        ("famo", {}),  # state updated from one step to the next
        ("dwa", {"diagnostics": True}),  # end_epoch at epoch boundaries; triad log
    ],
)
def test_resume_after_kill_is_bit_exact(tmp_path: Path, method: str, extra: dict) -> None:
    ref = _trainer(tmp_path / "ref", method, **extra)
    expected = ref.fit()

    with pytest.raises(Killed):
        _trainer(tmp_path / "run", method, callbacks=[_kill_at(17)], **extra).fit()
    resumed_trainer = _trainer(tmp_path / "run", method, **extra)
    resumed = resumed_trainer.fit()

    assert resumed_trainer.resumed_from is not None
    assert resumed_trainer.resumed_from.name == "step-00000014.ckpt"
    assert resumed.sessions == 2 and expected.sessions == 1
    assert resumed.steps == expected.steps == 25
    for (name, a), (_, b) in zip(
        ref.model.state_dict().items(), resumed_trainer.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    for (name, a), (_, b) in zip(
        ref.mtl.method.state_dict().items(),
        resumed_trainer.mtl.method.state_dict().items(),
        strict=True,
    ):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b), name
    assert resumed.final_metrics == expected.final_metrics
    assert resumed.final_eval_loss == expected.final_eval_loss
    assert resumed.history == expected.history
    assert _rows(tmp_path / "run" / "train.jsonl") == _rows(tmp_path / "ref" / "train.jsonl")
    if extra.get("diagnostics"):
        assert _rows(tmp_path / "run" / "triad.jsonl") == _rows(tmp_path / "ref" / "triad.jsonl")
        assert resumed.diagnostics == expected.diagnostics
        assert resumed.diagnostics["steps"] == 25


def test_resume_with_dropout_model(tmp_path: Path) -> None:
    """Dropout draws from torch's global generator: restored from the checkpoint."""

    def make(out: Path, callbacks=()) -> Trainer:
        config = TrainConfig(
            method="pcgrad", seed=1, steps=12, batch_size=64, eval_every=6, checkpoint_every=4,
            progress=False,
        )  # fmt: skip
        seed_everything(1)
        model = build_model(benchmark_setup("multidigits"), TRAIN.spec, "mlp")
        model.inner.trunk.append(torch.nn.Dropout(0.3))
        return Trainer(model, TRAIN, TEST, config, out, callbacks=callbacks)

    ref = make(tmp_path / "ref")
    expected = ref.fit()
    with pytest.raises(Killed):
        make(tmp_path / "run", [_kill_at(10)]).fit()
    again = make(tmp_path / "run")
    assert again.fit().final_metrics == expected.final_metrics
    for a, b in zip(ref.model.parameters(), again.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_finished_run_is_not_retrained(tmp_path: Path) -> None:
    first = _trainer(tmp_path, "sum").fit()
    steps_before = len(_rows(tmp_path / "train.jsonl"))
    second_trainer = _trainer(tmp_path, "sum")
    second = second_trainer.fit()
    assert second.final_metrics == first.final_metrics
    assert second.steps == 25 and second.sessions == 2
    assert len(_rows(tmp_path / "train.jsonl")) == steps_before  # nothing retrained or relogged


def test_stop_training_keeps_the_run_resumable(tmp_path: Path) -> None:
    def stop(trainer: Trainer, step: int) -> None:
        if step == 14:
            raise StopTraining

    partial = _trainer(tmp_path, "sum", callbacks=[stop]).fit()
    assert partial.steps == 14
    assert _trainer(tmp_path, "sum").fit().steps == 25


def test_resume_refuses_another_configuration(tmp_path: Path) -> None:
    with pytest.raises(Killed):
        _trainer(tmp_path, "sum", callbacks=[_kill_at(8)]).fit()
    config = TrainConfig(
        method="sum", seed=7, steps=25, batch_size=64, lr=1e-2, eval_every=5, progress=False
    )
    model = build_model(benchmark_setup("multidigits"), TRAIN.spec)
    with pytest.raises(
        ValueError, match=r"different run configuration \(config.lr: checkpoint 0.003"
    ):
        Trainer(model, TRAIN, TEST, config, tmp_path).fit()


class _Lazy(MultiTaskDataset):
    """Item by item, as datasets read from files are: batches go through a DataLoader."""

    def __init__(self, base: TensorMultiTaskDataset) -> None:
        self.base, self.spec = base, base.spec

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        return self.base[i]


def test_resume_through_the_dataloader_path(tmp_path: Path) -> None:
    train, test = _Lazy(TRAIN), _Lazy(TEST)

    def make(out: Path, callbacks=()) -> Trainer:
        config = TrainConfig(
            method="pcgrad", seed=3, steps=15, batch_size=64, eval_every=5, checkpoint_every=4,
            progress=False,
        )  # fmt: skip
        seed_everything(3)
        model = build_model(benchmark_setup("multidigits"), TRAIN.spec)
        return Trainer(model, train, test, config, out, callbacks=callbacks)

    ref = make(tmp_path / "ref")
    assert not ref.train_source.in_memory
    expected = ref.fit()
    with pytest.raises(Killed):
        make(tmp_path / "run", [_kill_at(11)]).fit()  # resumes at step 8, mid-epoch
    again = make(tmp_path / "run")
    assert again.fit().history == expected.history
    for a, b in zip(ref.model.parameters(), again.model.parameters(), strict=True):
        assert torch.equal(a, b)
    # and it matches the in-memory fast path exactly
    seed_everything(3)
    model = build_model(benchmark_setup("multidigits"), TRAIN.spec)
    fast = Trainer(model, TRAIN, TEST, make(tmp_path / "x").config, None).fit()
    assert fast.history == expected.history
