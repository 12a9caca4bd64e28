"""A supervised multi-task trainer for any model and any registered method, resumable bit for bit.

:class:`Trainer` trains a :class:`~gradsurgery.models.MultiTaskModel` on a multi-task dataset with
a :class:`~gradsurgery.MultiTaskBackward` method:

* shared-input data (every sample labelled for every task): one loss per task
  (:func:`~gradsurgery.experiments.benchmarks.task_loss`), ``mtl.backward(losses)``; with
  ``representation=True`` the approximate MGDA-UB engine, ``mtl.backward(losses, representation=z)``;
* task-partitioned data (a task id per sample): ``mtl.backward_partitioned(loss_fn, x, y, t,
  task_ids=t)`` (about one backward pass for all tasks).

Every :class:`~gradsurgery.models.MultiTaskModel` gets its two per-step hooks, whatever the layout:
:meth:`~gradsurgery.models.MultiTaskModel.step_inputs` before the forward pass (extra inputs of the
batch: a routing network samples its routes) and
:meth:`~gradsurgery.models.MultiTaskModel.after_backward` after the task backward pass, before the
optimizer step (a routing network trains its routers by REINFORCE with reward ``−loss``).

A method's learnable parameters (uncertainty weighting's log-variances) join the model's in the
optimizer. The method gets :meth:`Method.end_epoch <gradsurgery.methods.base.Method.end_epoch>` after
every epoch's last batch (DWA closes its epoch there; a no-op for most methods).

Budget: ``epochs`` or ``steps`` (steps win). Evaluation every ``eval_every`` steps (default: at the
end of every epoch) and at the last step, with the benchmark's metrics
(:class:`~gradsurgery.metrics.MultiTaskEvaluator`).

Files in ``out_dir`` (all optional: ``out_dir=None`` writes nothing and cannot resume):

* ``checkpoints/step-XXXXXXXX.ckpt`` — written atomically at every evaluation (or every
  ``checkpoint_every`` steps) and at the end; the newest two are kept
  (:mod:`~gradsurgery.runtime.checkpoint`);
* ``train.jsonl`` — one row per step (``{"type": "train", "step", "epoch", "loss": {task: v},
  "weights": {task: w}, "time_s"}``, every ``log_every`` steps) and one per evaluation
  (``{"type": "eval", "step", "metrics": {task: {metric: v}}, "eval_loss", "train_loss"}``);
* ``triad.jsonl`` (+ ``triad.png``) — the tragic-triad rows of
  :class:`~gradsurgery.diagnostics.TriadMonitor` when ``diagnostics=True`` (a
  :class:`~gradsurgery.runtime.sinks.JsonlSink` appended to across resumed sessions; the run's
  summary is :func:`~gradsurgery.diagnostics.triad_summary` of all its rows);
* ``tensorboard/`` — when TensorBoard is installed and ``tensorboard=True``.

Deterministic resume. :meth:`Trainer.fit` looks for a checkpoint first. A checkpoint holds the model,
the optimizer, the LR scheduler, the ``MultiTaskBackward`` state (the method's buffers, parameters
and generators; the step; the shared/specific split), the state of every global generator, the
data position (epoch, index of the next batch, that epoch's permutation), the evaluation history,
the step times and the peak memory so far. Resuming from it and training to the end gives the same
parameters and metrics, bit for bit, as the run that was never interrupted — on the same machine,
torch version and number of threads (float reductions may differ across thread counts), and with
``num_workers=0`` when ``__getitem__`` draws random augmentations. A checkpoint written with a
different configuration is refused (``ValueError`` naming the differences). The logs are cut back
to the checkpoint's step before the run continues.

Timing: the time of a step is forward + backward (the method's work included) + optimizer step, on
the host clock (after ``torch.cuda.synchronize`` on a GPU); data loading and evaluation excluded.
Reported: the median over all steps (robust to the first steps' warm-up) and the mean.
Peak memory: :class:`~gradsurgery.runtime.runlog.PeakMemory` (CUDA: ``max_memory_allocated``;
CPU: peak RSS increase), measured from the second step of each session on (the first step's one-time
allocations — autograd and ``vmap`` setup, lazily created buffers — would otherwise dominate small
models) and maximized over the sessions of a resumed run.

Example:
    >>> from gradsurgery.experiments import Trainer, TrainConfig, benchmark_setup, build_model
    >>> from gradsurgery.runtime import seed_everything
    >>> from gradsurgery.data import load_benchmark
    >>> train, test = load_benchmark("multidigits", "train"), load_benchmark("multidigits", "test")
    >>> seed_everything(0)
    >>> model = build_model(benchmark_setup("multidigits"), train.spec)
    >>> cfg = TrainConfig(method="pcgrad", steps=20, batch_size=128, progress=False)
    >>> result = Trainer(model, train, test, cfg).fit()
    >>> result.steps, sorted(result.final_metrics)
    (20, ['left', 'right'])
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gradsurgery.backward import MultiTaskBackward, StepResult
from gradsurgery.data import MultiTaskDataset
from gradsurgery.diagnostics import TriadMonitor, triad_summary
from gradsurgery.experiments.benchmarks import partitioned_loss, task_loss
from gradsurgery.experiments.data import Batch, BatchSource, EpochOrder, batch_to
from gradsurgery.metrics import MultiTaskEvaluator
from gradsurgery.models import MultiTaskModel
from gradsurgery.runtime.resumable import Resumable
from gradsurgery.runtime.runlog import (
    JsonlLog,
    PeakMemory,
    Progress,
    tensorboard_writer,
)
from gradsurgery.runtime.seeding import (
    capture_rng_state,
    derive_seed,
    restore_rng_state,
    seed_everything,
)
from gradsurgery.runtime.sinks import JsonlSink
from gradsurgery.runtime.values import finite_or_none

__all__ = [
    "StopTraining",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "triad_summary",
]

#: The checkpoints' kind and layout number (:mod:`gradsurgery.runtime.resumable`).
CHECKPOINT_KIND = "gradsurgery.experiments.trainer"
CHECKPOINT_FORMAT = 2

#: Config fields that do not change what is computed (they may differ on resume).
_COSMETIC = frozenset(
    {"progress", "tensorboard", "log_every", "num_workers", "checkpoint_every", "keep_checkpoints"}
)


class StopTraining(Exception):
    """Raise from a callback to stop :meth:`Trainer.fit` cleanly (the run stays resumable)."""


@dataclass
class TrainConfig:
    """Everything that decides a training run (see :class:`Trainer`).

    Attributes:
        method: registered method name; ``method_kwargs`` its options.
        seed: seeds the data order and every generator used in training.
        epochs / steps: the budget (``steps`` wins when both are given).
        batch_size, lr, optimizer (``"adam"``, ``"adamw"``, ``"sgd"``), weight_decay, momentum (SGD),
        scheduler (None or ``"cosine"``, per step), grad_clip (max global norm, None: off).
        eval_every: evaluate every this many steps (None: at each epoch end); always at the end.
        checkpoint_every: checkpoint every this many steps (None: at each evaluation).
        log_every: write a train row every this many steps.
        diagnostics: record tragic-triad statistics every ``diagnostics_every`` steps (forces
            per-task gradients even for loss-weighting methods).
        representation: MGDA-UB-style approximate engine (shared-input models with a
            representation).
        device, num_workers (DataLoader workers for datasets not held in memory), check_finite,
        progress (None: when stderr is a terminal), tensorboard (when installed), drop_last.
    """

    method: str = "sum"
    method_kwargs: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    epochs: int | None = None
    steps: int | None = None
    batch_size: int = 256
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    momentum: float = 0.9
    scheduler: str | None = None
    grad_clip: float | None = None
    eval_every: int | None = None
    eval_batch_size: int = 1024
    checkpoint_every: int | None = None
    keep_checkpoints: int = 2
    log_every: int = 1
    diagnostics: bool = False
    diagnostics_every: int = 1
    representation: bool = False
    device: str = "cpu"
    num_workers: int = 0
    check_finite: bool = True
    progress: bool | None = None
    tensorboard: bool = True
    drop_last: bool = True

    def __post_init__(self) -> None:
        if self.epochs is None and self.steps is None:
            raise ValueError("give a budget: epochs or steps")
        for name in ("epochs", "steps", "eval_every", "checkpoint_every"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v}")
        if self.optimizer not in ("adam", "adamw", "sgd"):
            raise ValueError(f"optimizer must be adam, adamw or sgd, got {self.optimizer!r}")
        if self.scheduler not in (None, "cosine"):
            raise ValueError(f"scheduler must be None or 'cosine', got {self.scheduler!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    """What a finished run reports (JSON-ready via :meth:`to_dict`)."""

    final_metrics: dict[str, dict[str, float]]
    final_eval_loss: dict[str, float]
    history: list[dict[str, Any]]
    steps: int
    epochs: float
    time_per_step_ms: float
    mean_time_per_step_ms: float
    peak_memory_mib: float
    memory_measure: str
    wall_s: float
    sessions: int
    diagnostics: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _host(t: Tensor | None) -> list[float] | None:
    return None if t is None else t.detach().double().cpu().tolist()


@dataclass
class _Session:
    """What one call of :meth:`Trainer.fit` opens: its logs, progress bar and measures."""

    log: JsonlLog | None
    tb: Any
    progress: Progress
    memory: PeakMemory
    start: float  # host clock at the session's start or its last checkpoint

    def close(self) -> None:
        self.progress.close()
        if self.log is not None:
            self.log.close()
        if self.tb is not None:
            self.tb.close()


class Trainer:
    """Train one model with one method (see the module docstring).

    Args:
        model: the multi-task model (shared-input: ``model(x) -> [y_1..y_m]``; task-conditioned:
            ``model(x, task_ids) -> y``).
        train_set, eval_set: datasets with the same spec (``.spec``).
        config: :class:`TrainConfig`.
        out_dir: where checkpoints and logs go (None: nothing is written, no resume).
        task_losses: per-task ``loss(pred, target) -> scalar`` (default: from the spec's kinds).
        loss_fn: task-partitioned per-sample loss ``loss_fn(model, x, y, task_ids, *extra)``.
        callbacks: ``callback(trainer, step)`` after every step (after logging and checkpointing);
            raise :class:`StopTraining` to stop.

    Build the model after seeding (``seed_everything(config.seed)``) for a run that is a function
    of its seed; :meth:`fit` reseeds the training generators itself.
    """

    def __init__(
        self,
        model: nn.Module,
        train_set: MultiTaskDataset,
        eval_set: MultiTaskDataset,
        config: TrainConfig,
        out_dir: str | Path | None = None,
        *,
        task_losses: Sequence[Callable[[Tensor, Tensor], Tensor]] | None = None,
        loss_fn: Callable[..., Tensor] | None = None,
        callbacks: Sequence[Callable[[Trainer, int], None]] = (),
    ) -> None:
        self.spec = train_set.spec
        if eval_set.spec.task_names != self.spec.task_names:
            raise ValueError("the training and evaluation sets have different tasks")
        self.config = config
        self.device = torch.device(config.device)
        self.model = model.to(self.device)
        self.partitioned = self.spec.partitioned
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.callbacks = list(callbacks)
        self.task_losses = list(task_losses or [task_loss(t) for t in self.spec.tasks])
        self.loss_fn = loss_fn or partitioned_loss
        if config.representation and (
            self.partitioned or not getattr(model, "provides_representation", False)
        ):
            raise ValueError(
                "representation=True needs a shared-input model that returns its shared "
                "representation (model(x, return_representation=True))"
            )
        if isinstance(model, MultiTaskModel) and model.num_tasks != self.spec.num_tasks:
            raise ValueError(
                f"the model has {model.num_tasks} tasks, the data {self.spec.num_tasks}"
            )

        self.train_source = BatchSource(train_set, num_workers=config.num_workers)
        self.eval_source = BatchSource(eval_set, num_workers=config.num_workers)
        self.order = EpochOrder(
            len(train_set), config.batch_size, config.seed, drop_last=config.drop_last
        )
        bpe = self.order.batches_per_epoch
        self.total_steps = (
            config.steps if config.steps is not None else bpe * int(config.epochs or 0)
        )

        self.triad_log: JsonlSink | None = None
        self.monitor: TriadMonitor | None = None
        if config.diagnostics:
            if self.out_dir is not None:  # kept across resumed sessions
                self.triad_log = JsonlSink(self.out_dir / "triad.jsonl", append=True)
            self.monitor = TriadMonitor(
                task_names=list(self.spec.task_names),
                every=config.diagnostics_every,
                sinks=[self.triad_log] if self.triad_log is not None else [],
            )
        self.mtl = MultiTaskBackward(
            self.model,
            config.method,
            num_tasks=self.spec.num_tasks,
            task_names=list(self.spec.task_names),
            check_finite=config.check_finite,
            monitor=self.monitor,
            **config.method_kwargs,
        )
        self.mtl.method.to(self.device)
        own = [p for p in self.mtl.method.parameters() if p.requires_grad]
        self.trainable = [p for p in self.model.parameters() if p.requires_grad] + own
        self.optimizer = self._make_optimizer()
        self.scheduler: Any = None
        if config.scheduler == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                self.optimizer, T_max=max(1, self.total_steps)
            )

        # progress state
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.permutation: Tensor | None = None
        self.history: list[dict[str, Any]] = []
        self.step_times: list[float] = []
        self.peak_memory = 0.0
        self.memory_measure = ""
        self.wall_s = 0.0
        self.sessions = 0
        self._loss_sums = [0.0] * self.spec.num_tasks
        self._loss_counts = [0] * self.spec.num_tasks
        self.checkpoints = (
            Resumable(
                self.out_dir / "checkpoints",
                kind=CHECKPOINT_KIND,
                format=CHECKPOINT_FORMAT,
                fingerprint=self.fingerprint(),
                keep=config.keep_checkpoints,
            )
            if self.out_dir is not None
            else None
        )
        self.resumed_from: Path | None = None

    # ------------------------------------------------------------------ setup helpers
    def _make_optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        if c.optimizer == "sgd":
            return torch.optim.SGD(
                self.trainable, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay
            )
        cls = torch.optim.AdamW if c.optimizer == "adamw" else torch.optim.Adam
        return cls(self.trainable, lr=c.lr, weight_decay=c.weight_decay)

    def fingerprint(self) -> dict[str, Any]:
        """What must match for a checkpoint to be resumed: the config and the model's shapes."""
        cfg = {k: v for k, v in self.config.to_dict().items() if k not in _COSMETIC}
        shapes = [list(p.shape) for p in self.model.parameters()]
        digest = hashlib.sha256(json.dumps(shapes).encode()).hexdigest()[:16]
        return {
            "config": json.loads(json.dumps(cfg, default=str)),
            "model": type(self.model).__name__,
            "parameter_shapes": digest,
            "tasks": list(self.spec.task_names),
            "train_size": len(self.train_source),
        }

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this run exactly (see the module docstring): the payload
        of a checkpoint, to which :meth:`save_checkpoint` adds the kind, the format and the
        :meth:`fingerprint` (:class:`~gradsurgery.runtime.resumable.Resumable`)."""
        return {
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "permutation": self.permutation,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "mtl": self.mtl.state_dict(),
            "rng": capture_rng_state(),
            "history": self.history,
            "loss_sums": list(self._loss_sums),
            "loss_counts": list(self._loss_counts),
            "step_times": torch.tensor(self.step_times, dtype=torch.float64),
            "peak_memory_mib": self.peak_memory,
            "memory_measure": self.memory_measure,
            "wall_s": self.wall_s,
            "sessions": self.sessions,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict` (whether a checkpoint may be continued at all is
        decided when it is read: :meth:`_resume`)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.mtl.load_state_dict(state["mtl"])
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self.permutation = state["permutation"]
        self.history = list(state["history"])
        self._loss_sums = [float(v) for v in state["loss_sums"]]
        self._loss_counts = [int(v) for v in state["loss_counts"]]
        self.step_times = state["step_times"].tolist()
        self.peak_memory = float(state["peak_memory_mib"])
        self.memory_measure = str(state["memory_measure"])
        self.wall_s = float(state["wall_s"])
        self.sessions = int(state["sessions"])
        restore_rng_state(state["rng"])

    def save_checkpoint(self) -> Path | None:
        """Write a checkpoint of the run as it is now (None without ``out_dir``)."""
        if self.checkpoints is None:
            return None
        return self.checkpoints.save(self.state_dict(), self.step)

    def _resume(self) -> bool:
        """Continue from the newest readable checkpoint in ``out_dir``, if any.

        Raises:
            ResumeError: (a ``ValueError``) the checkpoint is of another format or run
                configuration; the message lists the differences.
        """
        if self.checkpoints is None:
            return False
        found = self.checkpoints.load()
        if found is None:
            return False
        state, path = found
        self.load_state_dict(state)
        self.resumed_from = path
        return True

    # ------------------------------------------------------------------ training
    def _train_step(self, batch: Batch) -> tuple[StepResult, float]:
        start = time.perf_counter()
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        batch = batch_to(batch, self.device)
        if self.partitioned:
            result = self._backward_partitioned(batch)
        else:
            result = self._backward_shared(batch)
        if self.config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.trainable, self.config.grad_clip)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return result, time.perf_counter() - start

    def _backward_partitioned(self, batch: Batch) -> StepResult:
        """The task update of a task-partitioned batch, between the model's two hooks."""
        x, y, t = batch
        extra = self._step_inputs(t)
        result = self.mtl.backward_partitioned(self.loss_fn, x, y, t, *extra, task_ids=t)

        @torch.no_grad()
        def sample_losses() -> Tensor:
            return self.loss_fn(self.model, x, y, t, *extra)

        self._after_backward(sample_losses, t, extra)
        return result

    def _backward_shared(self, batch: Batch) -> StepResult:
        """The task update of a shared-input batch, between the model's two hooks."""
        x, targets = batch
        extra = self._step_inputs(None)
        z = None
        if self.config.representation:
            outputs, z = self.model(x, *extra, return_representation=True)
        else:
            outputs = self.model(x, *extra)
        losses = [
            fn(out, targets[name])
            for fn, out, name in zip(self.task_losses, outputs, self.spec.task_names, strict=True)
        ]
        result = self.mtl.backward(losses, representation=z)
        self._after_backward(lambda: torch.stack([v.detach() for v in losses]), None, extra)
        return result

    def _step_inputs(self, task_ids: Tensor | None) -> tuple[Tensor, ...]:
        """:meth:`MultiTaskModel.step_inputs` (none for a plain module)."""
        if isinstance(self.model, MultiTaskModel):
            return self.model.step_inputs(task_ids)
        return ()

    def _after_backward(
        self, losses: Callable[[], Tensor], task_ids: Tensor | None, inputs: tuple[Tensor, ...]
    ) -> None:
        """:meth:`MultiTaskModel.after_backward` (nothing for a plain module)."""
        if isinstance(self.model, MultiTaskModel):
            self.model.after_backward(losses, task_ids, inputs)

    @torch.no_grad()
    def evaluate(self) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
        """``(metrics, eval_loss)`` on the evaluation set: ``{task: {metric: v}}``, ``{task: loss}``."""
        was_training = self.model.training
        self.model.eval()
        evaluator = MultiTaskEvaluator(self.spec)
        m = self.spec.num_tasks
        sums = torch.zeros(m, dtype=torch.float64)
        counts = torch.zeros(m, dtype=torch.float64)
        for batch in self.eval_source.sequential(self.config.eval_batch_size):
            batch = batch_to(batch, self.device)
            if self.partitioned:
                x, y, t = batch
                out = self.model(x, t)
                evaluator.update(out, y, t)
                per_sample = self.loss_fn(self.model, x, y, t).double().cpu()
                sums.index_add_(0, t.cpu(), per_sample)
                counts.index_add_(0, t.cpu(), torch.ones_like(per_sample))
            else:
                x, targets = batch
                outputs = self.model(x)
                evaluator.update(list(outputs), targets)
                n = x.shape[0]
                for k, (fn, out, name) in enumerate(
                    zip(self.task_losses, outputs, self.spec.task_names, strict=True)
                ):
                    sums[k] += float(fn(out, targets[name])) * n
                    counts[k] += n
        self.model.train(was_training)
        losses = {
            name: finite_or_none(s / c) if c > 0 else None
            for name, s, c in zip(self.spec.task_names, sums.tolist(), counts.tolist(), strict=True)
        }
        return evaluator.compute(), losses  # type: ignore[return-value]

    def _record_train(
        self, result: StepResult, seconds: float, log: JsonlLog | None, tb: Any
    ) -> str:
        names = self.spec.task_names
        tasks = result.tasks.tolist()
        losses = _host(result.losses) or []
        weights = _host(result.weights)
        for k, v in zip(tasks, losses, strict=True):
            self._loss_sums[k] += v
            self._loss_counts[k] += 1
        loss_d = {names[k]: finite_or_none(v) for k, v in zip(tasks, losses, strict=True)}
        if log is not None and self.step % self.config.log_every == 0:
            row: dict[str, Any] = {
                "type": "train",
                "step": self.step,
                "epoch": self.epoch,
                "loss": loss_d,
                "time_s": seconds,
            }
            if weights is not None:
                row["weights"] = {
                    names[k]: finite_or_none(w) for k, w in zip(tasks, weights, strict=True)
                }
            log.write(row)
        if tb is not None:
            for name, value in loss_d.items():
                if value is not None:
                    tb.add_scalar(f"train/loss/{name}", value, self.step)
            if weights is not None:
                for k, w in zip(tasks, weights, strict=True):
                    tb.add_scalar(f"train/weight/{names[k]}", w, self.step)
            tb.add_scalar("time/step_ms", 1000 * seconds, self.step)
        shown = list(zip(tasks, losses, strict=True))[:4]
        return " ".join(f"{names[k]} loss {v:.3f}" for k, v in shown)

    def _run_eval(self, log: JsonlLog | None, tb: Any) -> dict[str, Any]:
        metrics, eval_loss = self.evaluate()
        train_loss = {  # mean of each task's training loss over the steps since the last evaluation
            name: finite_or_none(s / c) if c else None
            for name, s, c in zip(
                self.spec.task_names, self._loss_sums, self._loss_counts, strict=True
            )
        }
        self._loss_sums = [0.0] * self.spec.num_tasks
        self._loss_counts = [0] * self.spec.num_tasks
        entry = {
            "type": "eval",
            "step": self.step,
            "epoch": self.step / self.order.batches_per_epoch,
            "metrics": {
                t: {k: finite_or_none(v) for k, v in d.items()} for t, d in metrics.items()
            },
            "eval_loss": eval_loss,
            "train_loss": train_loss,
        }
        self.history.append(entry)
        if log is not None:
            log.write(entry)
        if tb is not None:
            for task, d in metrics.items():
                for k, v in d.items():
                    tb.add_scalar(f"eval/{task}/{k}", v, self.step)
        return entry

    def _eval_due(self, epoch_ended: bool) -> bool:
        if self.step >= self.total_steps:
            return True
        every = self.config.eval_every
        return epoch_ended if every is None else self.step % every == 0

    def fit(self) -> TrainResult:
        """Train to the budget (resuming from the newest checkpoint in ``out_dir`` if any)."""
        session = self._open_session()
        try:
            while self.step < self.total_steps:
                self._train_epoch(session)
        except StopTraining:
            pass
        finally:
            session.close()
            if self.monitor is not None:
                self.monitor.close()
        self._note_memory(session.memory)
        return self.result()

    def _open_session(self) -> _Session:
        """Resume (or seed a fresh run), then open this session's logs, cut back to its step."""
        resumed = self._resume()
        if not resumed:
            seed_everything(derive_seed(self.config.seed, "train"))
        self.sessions += 1
        log = JsonlLog(self.out_dir / "train.jsonl") if self.out_dir is not None else None
        tb = None
        if self.out_dir is not None and self.config.tensorboard:
            tb = tensorboard_writer(self.out_dir / "tensorboard", purge_step=self.step)
        if log is not None:
            log.truncate_after(self.step)
        if self.triad_log is not None:
            self.triad_log.truncate_after(self.mtl.step - 1)
        memory = PeakMemory(self.device)  # started after this session's first step
        start = time.perf_counter()
        progress = Progress(
            self.total_steps,
            initial=self.step,
            desc=f"{self.config.method} seed {self.config.seed}",
            enabled=self.config.progress,
        )
        return _Session(log=log, tb=tb, progress=progress, memory=memory, start=start)

    def _train_epoch(self, session: _Session) -> None:
        """The steps left in the current epoch, or in the budget when it ends first."""
        if self.permutation is None:
            self.permutation = self.order.permutation(self.epoch)
        remaining = self.order.batches(self.permutation, self.batch_in_epoch)
        loader_seed = derive_seed(self.config.seed, "loader", self.epoch, self.batch_in_epoch)
        for batch in self.train_source.iterate(remaining, loader_seed):
            if self._train_and_follow_up(batch, session):
                break

    def _train_and_follow_up(self, batch: Batch, session: _Session) -> bool:
        """One step, then its log row, the epoch's end, evaluation, checkpoint and callbacks.
        Returns whether the epoch or the budget ended with it."""
        result, seconds = self._train_step(batch)
        if not session.memory.started:
            session.memory.start()
        self.step += 1
        self.batch_in_epoch += 1
        self.step_times.append(seconds)
        postfix = self._record_train(result, seconds, session.log, session.tb)
        epoch_ended = self._end_epoch_if_done()
        session.progress.update(1, postfix)
        evaluated = self._eval_due(epoch_ended)
        if evaluated:
            self._run_eval(session.log, session.tb)
        if self._checkpoint_due(evaluated):
            self._note_memory(session.memory)
            self.wall_s += time.perf_counter() - session.start
            session.start = time.perf_counter()
            self.save_checkpoint()
        for callback in self.callbacks:
            callback(self, self.step)
        return self.step >= self.total_steps or epoch_ended

    def _end_epoch_if_done(self) -> bool:
        """At the epoch's last batch: move to the next epoch, tell the method; whether it ended."""
        if self.batch_in_epoch < self.order.batches_per_epoch:
            return False
        self.epoch += 1
        self.batch_in_epoch = 0
        self.permutation = None
        self.mtl.method.end_epoch()
        return True

    def _checkpoint_due(self, evaluated: bool) -> bool:
        every = self.config.checkpoint_every
        due = evaluated if every is None else self.step % every == 0
        return due or self.step >= self.total_steps

    def _note_memory(self, memory: PeakMemory) -> None:
        if memory.started:
            self.peak_memory = max(self.peak_memory, memory.peak_mib())
            self.memory_measure = memory.measure

    def result(self) -> TrainResult:
        """The :class:`TrainResult` of the run so far (its last evaluation)."""
        last = self.history[-1] if self.history else {"metrics": {}, "eval_loss": {}}
        times = self.step_times or [float("nan")]
        return TrainResult(
            final_metrics=last["metrics"],
            final_eval_loss=last["eval_loss"],
            history=self.history,
            steps=self.step,
            epochs=self.step / self.order.batches_per_epoch,
            time_per_step_ms=1000 * statistics.median(times),
            mean_time_per_step_ms=1000 * statistics.fmean(times),
            peak_memory_mib=self.peak_memory,
            memory_measure=self.memory_measure,
            wall_s=self.wall_s,
            sessions=self.sessions,
            diagnostics=self._triad_diagnostics(),
        )

    def _triad_diagnostics(self) -> dict[str, Any] | None:
        """The triad summary of the run: of every session's rows when they are logged."""
        if self.triad_log is not None:
            rows = JsonlLog.read(self.triad_log.path)
            if rows:
                _plot_triad(self.triad_log.path)
            return triad_summary(rows)
        return self.monitor.summary() if self.monitor is not None else None


def _plot_triad(jsonl: Path) -> None:
    try:
        from gradsurgery.diagnostics import plot_triad

        plot_triad(jsonl, jsonl.with_suffix(".png"))
    except Exception:  # a figure is a convenience; never fail a finished run over it
        pass
