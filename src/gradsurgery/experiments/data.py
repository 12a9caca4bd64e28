"""Batches for training and evaluation, in an order that can be resumed mid-epoch.

The order of epoch ``e`` is ``randperm(n)`` drawn from a generator seeded with
``derive_seed(seed, "epoch", e)`` (:class:`EpochOrder`): a pure function of the seed and the epoch,
independent of every global generator. A checkpoint stores the epoch, the index of the next batch
in it and the permutation itself; resuming takes the remaining batches of that permutation, so the
resumed run sees exactly the batches the uninterrupted run would have seen.

Fetching (:class:`BatchSource`). In-memory datasets (:class:`~gradsurgery.data.TensorMultiTaskDataset`,
:class:`~gradsurgery.data.TaskPartitionedDataset`) are indexed directly, a whole batch at a time
(no ``DataLoader``, no per-item collation: the embedded benchmarks spend microseconds per batch).
Other datasets go through a ``torch.utils.data.DataLoader`` whose ``batch_sampler`` is the list of
remaining batches and whose ``generator`` is seeded per epoch (it seeds the workers). Random
augmentation inside ``__getitem__`` (NYUv2/CityScapes ``augment=True``) draws from torch's global
generator in the main process with ``num_workers=0`` (restored on resume: exact), and from per-worker
generators otherwise (a mid-epoch resume then replays different augmentations for the rest of that
epoch: not bit-exact).

Batches have the datasets' item layout: shared-input ``(x, {task: target})``, task-partitioned
``(x, y, task_ids)``.

:func:`restrict_tasks` keeps a subset of the tasks (single-task baselines): the spec, the targets
and, for task-partitioned data, the samples, with task ids renumbered ``0..k-1``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from gradsurgery.data import (
    BenchmarkSpec,
    MultiTaskDataset,
    TaskPartitionedDataset,
    TensorMultiTaskDataset,
)
from gradsurgery.runtime.seeding import derive_seed

__all__ = ["Batch", "BatchSource", "EpochOrder", "batch_to", "restrict_tasks", "sub_spec"]

Batch = tuple[Any, ...]


class EpochOrder:
    """Which samples make each batch of each epoch.

    Args:
        num_samples: dataset size ``n``.
        batch_size: samples per batch.
        seed: the run's seed (epoch ``e`` uses ``derive_seed(seed, "epoch", e)``).
        shuffle: False keeps ``0..n-1`` every epoch.
        drop_last: drop the last, smaller batch of each epoch (True by default: BatchNorm and the
            per-task statistics of a step stay well defined).
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        seed: int,
        *,
        shuffle: bool = True,
        drop_last: bool = True,
    ) -> None:
        if num_samples < 1:
            raise ValueError("the training set is empty")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if drop_last and batch_size > num_samples:
            raise ValueError(
                f"batch_size {batch_size} exceeds the {num_samples} training samples "
                "(with drop_last no batch would remain)"
            )
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last

    @property
    def batches_per_epoch(self) -> int:
        n, b = self.num_samples, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def permutation(self, epoch: int) -> Tensor:
        """``(n,)`` int64: the sample order of ``epoch``."""
        if not self.shuffle:
            return torch.arange(self.num_samples)
        g = torch.Generator().manual_seed(derive_seed(self.seed, "epoch", epoch))
        return torch.randperm(self.num_samples, generator=g)

    def batches(self, permutation: Tensor, start: int = 0) -> list[Tensor]:
        """Index tensors of the batches ``start, start + 1, ...`` of an epoch's permutation."""
        b = self.batch_size
        return [permutation[i * b : (i + 1) * b] for i in range(start, self.batches_per_epoch)]


def batch_to(batch: Batch, device: torch.device | str) -> Batch:
    """Move every tensor of a batch (dicts of tensors included) to ``device``."""

    def move(v: Any) -> Any:
        if isinstance(v, Tensor):
            return v.to(device, non_blocking=True)
        if isinstance(v, dict):
            return {k: move(t) for k, t in v.items()}
        return v

    return tuple(move(v) for v in batch)


class BatchSource:
    """Fetches batches of a multi-task dataset by index (see the module docstring)."""

    def __init__(self, dataset: MultiTaskDataset, *, num_workers: int = 0) -> None:
        self.dataset = dataset
        self.spec: BenchmarkSpec = dataset.spec
        self.num_workers = num_workers
        self.in_memory = isinstance(dataset, TensorMultiTaskDataset | TaskPartitionedDataset)

    def __len__(self) -> int:
        return len(self.dataset)

    def fetch(self, index: Tensor) -> Batch:
        """One batch of an in-memory dataset."""
        ds = self.dataset
        if isinstance(ds, TensorMultiTaskDataset):
            return ds.input_batch(index), ds.target_batch(index)
        if isinstance(ds, TaskPartitionedDataset):
            return ds.input_batch(index), ds.labels[index], ds.task_ids[index]
        raise TypeError(f"{type(ds).__name__} is not an in-memory dataset")

    def iterate(self, batches: Sequence[Tensor], loader_seed: int = 0) -> Iterator[Batch]:
        """The batches of the given index tensors, in order."""
        if self.in_memory:
            for index in batches:
                yield self.fetch(index)
            return
        if not batches:
            return
        loader = DataLoader(
            self.dataset,
            batch_sampler=[index.tolist() for index in batches],
            num_workers=self.num_workers,
            generator=torch.Generator().manual_seed(loader_seed),
        )
        yield from (tuple(b) for b in loader)

    def sequential(self, batch_size: int) -> Iterator[Batch]:
        """Every sample once, in order (evaluation)."""
        n = len(self.dataset)
        index = torch.arange(n)
        yield from self.iterate([index[i : i + batch_size] for i in range(0, n, batch_size)])


def sub_spec(spec: BenchmarkSpec, tasks: Sequence[int]) -> BenchmarkSpec:
    """The spec of a subset of the tasks, in the given order."""
    if not tasks:
        raise ValueError("at least one task must be kept")
    for k in tasks:
        if not 0 <= k < spec.num_tasks:
            raise IndexError(f"task index {k} out of range for {spec.num_tasks} tasks")
    return BenchmarkSpec(
        spec.name,
        tuple(spec.tasks[k] for k in tasks),
        spec.layout,
        spec.input_shape,
        spec.description,
    )


class _SharedTaskSubset(MultiTaskDataset):
    """A shared-input dataset that returns only some tasks' targets (for lazily loaded data)."""

    def __init__(self, base: Dataset[Any], spec: BenchmarkSpec) -> None:
        self.base = base
        self.spec = spec

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        x, targets = self.base[index]
        return x, {name: targets[name] for name in self.spec.task_names}


def restrict_tasks(dataset: MultiTaskDataset, tasks: Sequence[int]) -> MultiTaskDataset:
    """The dataset restricted to ``tasks`` (indices into ``dataset.spec.tasks``)."""
    spec = sub_spec(dataset.spec, tasks)
    if isinstance(dataset, TensorMultiTaskDataset):
        targets = {name: dataset.targets[name] for name in spec.task_names}
        return TensorMultiTaskDataset(dataset.inputs, targets, spec, dataset.transform)
    if isinstance(dataset, TaskPartitionedDataset):
        lookup = torch.full((dataset.spec.num_tasks,), -1, dtype=torch.int64)
        lookup[torch.as_tensor(list(tasks))] = torch.arange(len(tasks))
        new_ids = lookup[dataset.task_ids]
        keep = new_ids >= 0
        return TaskPartitionedDataset(
            dataset.inputs[keep],
            dataset.labels[keep],
            new_ids[keep],
            spec,
            dataset.transform,
        )
    if dataset.spec.partitioned:
        raise TypeError(
            f"restrict_tasks: task-partitioned {type(dataset).__name__} is not supported "
            "(only TaskPartitionedDataset)"
        )
    return _SharedTaskSubset(dataset, spec)
