"""The trainer learns on the embedded data within seconds, for both batch layouts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gradsurgery.data import BenchmarkSpec, TaskPartitionedDataset, load_benchmark
from gradsurgery.data.spec import classification_task
from gradsurgery.experiments import (
    TrainConfig,
    Trainer,
    benchmark_setup,
    build_model,
)
from gradsurgery.models import RoutingNetwork, TaskConditionedNetwork
from gradsurgery.runtime import seed_everything


def _fit(benchmark: str, out: Path | None = None, **cfg) -> tuple[Trainer, object]:
    train, test = load_benchmark(benchmark, "train"), load_benchmark(benchmark, "test")
    seed_everything(0)
    model = build_model(benchmark_setup(benchmark), train.spec, cfg.pop("model", None))
    trainer = Trainer(model, train, test, TrainConfig(progress=False, **cfg), out)
    return trainer, trainer.fit()


def test_multidigits_learns(tmp_path: Path) -> None:
    _, result = _fit(
        "multidigits", tmp_path, method="pcgrad", steps=60, batch_size=128, lr=3e-3, eval_every=20
    )
    accs = {t: m["accuracy"] for t, m in result.final_metrics.items()}
    assert min(accs.values()) > 0.5  # chance: 0.1
    first, last = result.history[0]["train_loss"], result.history[-1]["train_loss"]
    assert all(last[t] < 0.7 * first[t] for t in ("left", "right"))
    assert [h["step"] for h in result.history] == [20, 40, 60]
    assert result.time_per_step_ms > 0 and result.peak_memory_mib >= 0
    rows = [json.loads(x) for x in (tmp_path / "train.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["type"] == "train"]
    assert len(train_rows) == 60 and set(train_rows[0]["loss"]) == {"left", "right"}
    assert set(train_rows[0]["weights"]) == {"left", "right"}
    assert sum(r["type"] == "eval" for r in rows) == 3


def test_digit_attributes_learns_with_learnable_method_weights() -> None:
    trainer, result = _fit("digit-attributes", method="uw", steps=60, batch_size=64, lr=3e-3)
    accs = [m["accuracy"] for m in result.final_metrics.values()]
    assert sum(accs) / len(accs) > 0.75  # majority class: about 0.6
    log_vars = list(trainer.mtl.method.parameters())
    assert log_vars and all(
        id(p) in {id(q) for g in trainer.optimizer.param_groups for q in g["params"]}
        for p in log_vars
    )
    assert any(float(p.detach().abs().sum()) > 0 for p in log_vars)  # they were trained


def test_representation_engine_and_diagnostics() -> None:
    _, result = _fit(
        "multidigits", method="pcgrad", steps=30, batch_size=128, lr=3e-3, representation=True,
        diagnostics=True,
    )  # fmt: skip
    assert min(m["accuracy"] for m in result.final_metrics.values()) > 0.3
    assert result.diagnostics is not None and result.diagnostics["steps"] == 30
    assert 0.0 <= result.diagnostics["mean_fraction_conflicting"] <= 1.0


def _partitioned(n_per_task: int, data_seed: int, num_tasks: int = 3) -> TaskPartitionedDataset:
    """Task i: classify 8-d points by the sign of its own linear function w_i (2 classes)."""
    w = torch.randn(num_tasks, 8, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(data_seed)
    x = torch.randn(num_tasks * n_per_task, 8, generator=g)
    t = torch.arange(num_tasks).repeat_interleave(n_per_task)
    y = ((x * w[t]).sum(1) > 0).long()
    tasks = tuple(classification_task(f"t{i}", 2) for i in range(num_tasks))
    spec = BenchmarkSpec("toy-partitioned", tasks, "partitioned", (8,))
    return TaskPartitionedDataset(x, y, t, spec)


@pytest.mark.parametrize("kind", ["task-conditioned", "routing"])
def test_task_partitioned_training_learns(kind: str) -> None:
    train, test = _partitioned(200, data_seed=1), _partitioned(100, data_seed=2)
    seed_everything(0)
    if kind == "routing":
        model = RoutingNetwork(8, 2, 3, hidden=(32,), num_blocks=3)
    else:
        model = TaskConditionedNetwork(8, 2, 3, hidden=(32, 32))
    config = TrainConfig(method="pcgrad", steps=120, batch_size=60, lr=1e-2, progress=False)
    result = Trainer(model, train, test, config).fit()
    accs = [m["accuracy"] for m in result.final_metrics.values()]
    assert min(accs) > 0.7, accs  # chance 0.5
    if kind == "routing":
        assert any(
            float(p.detach().abs().sum()) > 0 for p in model.router_parameters()
        )  # routers trained


class _Writer:
    def __init__(self) -> None:
        self.scalars: list[tuple[str, float, int]] = []

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.append((tag, value, step))

    def close(self) -> None:
        pass


def test_tensorboard_scalars(tmp_path: Path, monkeypatch) -> None:
    from gradsurgery.experiments import trainer as trainer_module

    writer = _Writer()
    calls = []

    def fake(log_dir, purge_step=None):
        calls.append((Path(log_dir), purge_step))
        return writer

    monkeypatch.setattr(trainer_module, "tensorboard_writer", fake)
    _fit("multidigits", tmp_path, method="famo", steps=4, batch_size=64, eval_every=2)
    assert calls == [(tmp_path / "tensorboard", 0)]  # events of an earlier, killed session: purged
    tags = {tag for tag, _, _ in writer.scalars}
    assert {"train/loss/left", "train/weight/right", "time/step_ms", "eval/left/accuracy"} <= tags
    assert max(step for _, _, step in writer.scalars) == 4


@pytest.mark.parametrize("layout", ["shared-input", "partitioned"])
def test_trainer_calls_the_models_training_hooks_every_step(layout: str, monkeypatch) -> None:
    """step_inputs before the forward pass, after_backward before the optimizer step, for any
    MultiTaskModel and either batch layout (the routing network's REINFORCE step is one)."""
    if layout == "partitioned":
        train, test = _partitioned(40, data_seed=1), _partitioned(20, data_seed=2)
        model = TaskConditionedNetwork(8, 2, 3, hidden=(8,))
    else:
        train, test = load_benchmark("multidigits", "train"), load_benchmark("multidigits", "test")
        model = build_model(benchmark_setup("multidigits"), train.spec)
    calls: list[tuple[str, object]] = []

    def step_inputs(task_ids):
        calls.append(("step_inputs", None if task_ids is None else task_ids.shape))
        return ()

    def after_backward(losses, task_ids, inputs):
        grads = [p.grad for p in model.parameters()]
        assert inputs == () and any(g is not None for g in grads)  # after the task backward
        calls.append(("after_backward", tuple(losses().shape)))

    monkeypatch.setattr(model, "step_inputs", step_inputs)
    monkeypatch.setattr(model, "after_backward", after_backward)
    config = TrainConfig(method="sum", steps=3, batch_size=30, progress=False)
    Trainer(model, train, test, config).fit()
    if layout == "partitioned":
        expected = [("step_inputs", (30,)), ("after_backward", (30,))]
    else:
        expected = [("step_inputs", None), ("after_backward", (2,))]
    assert calls == expected * 3


@pytest.mark.parametrize("method", ["sum", "dwa"])
def test_trainer_ends_the_methods_epoch_after_every_epochs_last_batch(
    method: str, monkeypatch
) -> None:
    """Method.end_epoch, the loops' epoch-boundary hook, is called on any method (a no-op for
    most) after the last of every epoch's 4 batches; DWA's epochs are the trainer's."""
    train, test = _partitioned(40, data_seed=1), _partitioned(20, data_seed=2)
    model = TaskConditionedNetwork(8, 2, 3, hidden=(8,))
    config = TrainConfig(method=method, steps=10, batch_size=30, progress=False)
    trainer = Trainer(model, train, test, config)
    hook = trainer.mtl.method.end_epoch
    calls: list[int] = []

    def end_epoch() -> None:
        calls.append(trainer.step)
        hook()

    monkeypatch.setattr(trainer.mtl.method, "end_epoch", end_epoch)
    trainer.fit()
    assert calls == [4, 8]
    if method == "dwa":
        assert trainer.mtl.method.epochs == 2
        assert trainer.mtl.method.epochs_seen.tolist() == [2, 2, 2]
