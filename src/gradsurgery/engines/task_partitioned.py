"""All per-task gradients of a task-partitioned batch from one vectorized pass.

When each sample belongs to exactly one task (Meta-World with a one-hot task input, a
task-conditioned network), task ``i``'s loss ``L_i`` is the mean of the per-sample losses of task
``i``'s samples and depends on no other sample. The ``m`` task gradients then cost what one backward
pass costs: the work is that of ``∇ Σ_i L_i``, only split by task. We compute them with
``torch.func``: the batch is grouped into an ``(m, n_max, ...)`` tensor of task segments and
``vmap(grad(segment loss))`` runs over the segments, with the module's parameters swapped in by
``functional_call``.

Choices:

* Unequal task counts: segments are padded to the largest count ``n_max``; padded positions repeat
  a real sample of the same task and get weight 0, so ``L_i`` is exactly the mean over task ``i``'s
  own samples. Padding costs compute in proportion to the imbalance, never correctness.
* Tasks absent from the batch have no loss: they are left out of the result (``tasks`` lists the
  present ones).
* Dropout runs with independent masks per segment (``vmap(randomness="different")``).
* ``torch.nn.functional.one_hot`` cannot run under ``vmap`` (it validates its input with ``.item()``):
  put one-hot task vectors in the batch, or build them by comparison,
  ``(task[:, None] == torch.arange(m)).float()``. Otherwise the fallback below is used.
* BatchNorm in training mode normalizes over the whole batch, coupling the tasks' samples, and
  updates running statistics in place: vmap cannot express either. Such modules, and any model
  ``vmap`` fails on (data-dependent control flow, ``.item()``), use the exact fallback instead: one
  forward of the whole batch and one ``autograd.grad`` per task (``strategy="loop"``). With
  ``strategy="auto"`` the switch is announced by a warning saying why; ``strategy="vmap"`` raises.

The user's loss function is written against the module as usual::

    def loss_fn(model, x, y):  # one loss per sample: reduction="none"
        return F.cross_entropy(model(x), y, reduction="none")

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Linear(3, 1)
    >>> x, y = torch.randn(6, 3), torch.randn(6, 1)
    >>> task_ids = torch.tensor([0, 1, 0, 2, 1, 0])
    >>> engine = TaskPartitionedJacobian(model)
    >>> grads = engine(lambda mod, x, y: ((mod(x) - y) ** 2).squeeze(1), (x, y), task_ids, 3)
    >>> grads.jacobian.blocks[0].shape   # (tasks, *weight.shape)
    torch.Size([3, 1, 3])
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap

from gradsurgery.engines.per_task_gradients import PerTaskGradients
from gradsurgery.engines.shared_input import SharedInputJacobian
from gradsurgery.errors import LossShapeError
from gradsurgery.jacobian import TaskJacobian

__all__ = [
    "PerSampleLossFn",
    "TaskBatch",
    "TaskPartitionedJacobian",
    "function_key",
    "group_by_task",
]

#: ``loss_fn(module, *batch) -> (n,)`` per-sample losses.
PerSampleLossFn = Callable[..., Tensor]
Strategy = Literal["auto", "vmap", "loop"]


class TaskBatch:
    """Which samples of a task-partitioned batch belong to which task: its *layout*.

    Three ways to make one:

    * ``TaskBatch(task_ids, num_tasks)``: group a batch of any order by its ``(n,)`` task ids.
      The counts per task decide the shapes, so this reads them on the host: one host
      synchronisation on an accelerator.
    * :meth:`TaskBatch.contiguous` (``counts``): the batch holds task 0's samples first, then
      task 1's, ..., with the counts known on the host (zeros for absent tasks). No host
      synchronisation; build it once and pass it as ``layout=`` every step.
    * :meth:`TaskBatch.balanced` (``num_tasks``, ``per_task``): the same with equal counts, as a
      task-balanced replay sample. Its segments are plain views of the batch (no gather at all).

    Attributes:
        num_tasks: ``M``, the number of tasks.
        n: the batch size.
        tasks: ``(m,)`` present task indices, ascending.
        counts: ``(m,)`` number of samples of each present task.
        n_max: the largest count (the segment length).
        index: ``(m, n_max)`` row ``k`` lists the batch positions of task ``tasks[k]``, padded by
            repeating its last sample; None when the batch is already in segment order
            (:meth:`balanced`): then a segment is a view.
        weights: ``(m, n_max)`` ``1/count`` at real positions, 0 at padding.
        task_ids: ``(n,)`` the task id of every sample.
    """

    index: Tensor | None

    def __init__(
        self, task_ids: Tensor, num_tasks: int, dtype: torch.dtype = torch.float32
    ) -> None:
        if task_ids.dim() != 1:
            raise ValueError(f"task_ids must be a 1-D tensor, got shape {tuple(task_ids.shape)}")
        if task_ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise TypeError(f"task_ids must be an integer tensor, got {task_ids.dtype}")
        if task_ids.numel() == 0:
            raise ValueError("the batch is empty")
        task_ids = task_ids.long()
        counts_all = torch.bincount(task_ids.clamp_min(0), minlength=num_tasks)
        # The one host sync, for validation and shapes: the counts plus the smallest id.
        stats = torch.cat([counts_all, task_ids.min().view(1)]).tolist()
        low, counts_list = stats[-1], stats[:-1]
        if low < 0 or len(counts_list) > num_tasks:
            bad = low if low < 0 else len(counts_list) - 1
            raise ValueError(f"task_ids must lie in [0, {num_tasks}), got the id {bad}")
        device = task_ids.device
        present = [c > 0 for c in counts_list]
        m = sum(present)
        self._init_common(num_tasks, task_ids.shape[0], counts_list, device)
        # The present tasks, ascending, found on the device (no host-to-device copy).
        self.tasks = torch.argsort((counts_all == 0).to(torch.int8), stable=True)[:m]
        self.counts = counts_all.index_select(0, self.tasks)
        order = torch.argsort(task_ids, stable=True)
        starts = (torch.cumsum(counts_all, 0) - counts_all).index_select(0, self.tasks)
        r = torch.arange(self.n_max, device=device)
        offsets = torch.minimum(r.unsqueeze(0), (self.counts - 1).unsqueeze(1))
        self.index = order[starts.unsqueeze(1) + offsets]
        real = r.unsqueeze(0) < self.counts.unsqueeze(1)
        self.weights = real.to(dtype) / self.counts.unsqueeze(1).to(dtype)
        self.task_ids = task_ids

    def _init_common(
        self, num_tasks: int, n: int, counts_list: Sequence[int], device: torch.device
    ) -> None:
        self.num_tasks = num_tasks
        self.n = n
        self.present = [t for t, c in enumerate(counts_list) if c > 0]
        self.counts_list = [c for c in counts_list if c > 0]
        self.n_max = max(self.counts_list)
        self.device = device

    @classmethod
    def contiguous(
        cls,
        counts: Sequence[int],
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> TaskBatch:
        """The layout of a batch sorted by task: ``counts[t]`` samples of task ``t``, in order.

        Everything is computed from the host-side ``counts`` (one transfer when the layout is
        built, none when it is used).
        """
        counts = [int(c) for c in counts]
        if not counts or any(c < 0 for c in counts) or sum(counts) == 0:
            raise ValueError(f"counts must be non-negative with a positive sum, got {counts}")
        self = cls.__new__(cls)
        device = torch.device(device) if device is not None else torch.device("cpu")
        self._init_common(len(counts), sum(counts), counts, device)
        m = len(self.present)
        balanced = m == len(counts) and len(set(self.counts_list)) == 1
        n_max = self.n_max
        starts = [sum(counts[:t]) for t in self.present]
        if balanced:
            index = None
        else:
            index = torch.tensor(
                [
                    [s + min(r, c - 1) for r in range(n_max)]
                    for s, c in zip(starts, self.counts_list, strict=True)
                ]
            )
        weights = torch.tensor(
            [[1.0 / c if r < c else 0.0 for r in range(n_max)] for c in self.counts_list],
            dtype=torch.float64,
        ).to(dtype)
        ids = torch.cat([torch.full((c,), t) for t, c in enumerate(counts) if c > 0])
        self.tasks = torch.tensor(self.present).to(device)
        self.counts = torch.tensor(self.counts_list).to(device)
        self.index = index.to(device) if index is not None else None
        self.weights = weights.to(device)
        self.task_ids = ids.to(device)
        return self

    @classmethod
    def balanced(
        cls,
        num_tasks: int,
        per_task: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> TaskBatch:
        """The layout of ``per_task`` samples of every task, task 0's first (a replay sample)."""
        if num_tasks < 1 or per_task < 1:
            raise ValueError(f"need num_tasks ≥ 1 and per_task ≥ 1, got {num_tasks}, {per_task}")
        return cls.contiguous([per_task] * num_tasks, device=device, dtype=dtype)

    @property
    def m(self) -> int:
        return len(self.present)

    def segments(self, t: Tensor) -> Tensor:
        """``(m, n_max, ...)``: ``t``'s samples grouped by task (a view for a balanced layout)."""
        if self.index is None:
            return t.view(self.m, self.n_max, *t.shape[1:])
        return t[self.index]

    def segment_means(self, per_sample: Tensor) -> Tensor:
        """``(m,)`` mean of ``per_sample`` over each present task's samples (differentiable)."""
        if self.index is None:
            return per_sample.view(self.m, self.n_max).mean(dim=1)
        sums = torch.zeros(self.num_tasks, dtype=per_sample.dtype, device=per_sample.device)
        sums = sums.index_add(0, self.task_ids, per_sample)
        return sums[self.tasks] / self.counts.to(per_sample.dtype)

    def check_batch(self, batch: Sequence[Tensor]) -> None:
        """Raise unless every tensor of ``batch`` has the layout's sample dimension first."""
        for k, t in enumerate(batch):
            if t.dim() == 0 or t.shape[0] != self.n:
                raise ValueError(
                    f"batch tensor {k} has shape {tuple(t.shape)}; every batch tensor must have "
                    f"the sample dimension first, of size {self.n} (the number of task ids)"
                )


def group_by_task(
    task_ids: Tensor, num_tasks: int, dtype: torch.dtype = torch.float32
) -> TaskBatch:
    """Group a batch by task id (see :class:`TaskBatch`)."""
    return TaskBatch(task_ids, num_tasks, dtype)


class _ParameterSwap:
    """Puts given tensors in place of a module's trainable parameters while ``loss_fn`` runs.

    What ``torch.func.functional_call`` does, without its per-call walk over the module tree:
    the slots (every submodule attribute that holds one of the parameters, tied ones included)
    are found once, and a call only assigns and restores them. Modules whose parameters are
    produced by ``torch.nn.utils.parametrize`` are left to ``functional_call``.
    """

    def __init__(self, module: nn.Module, params: Sequence[Tensor]) -> None:
        self.module = module
        index = {id(p): k for k, p in enumerate(params)}
        self.slots: list[tuple[dict[str, nn.Parameter | None], str, int]] = []
        self.plain = True
        for sub in module.modules():
            if hasattr(sub, "parametrizations"):
                self.plain = False
            for name, p in sub._parameters.items():
                if p is not None and id(p) in index:
                    self.slots.append((sub._parameters, name, index[id(p)]))
        self.names = [n for n, p in module.named_parameters() if p.requires_grad]

    def __call__(
        self, loss_fn: PerSampleLossFn, tensors: Sequence[Tensor], batch: Sequence[Tensor]
    ) -> Tensor:
        if not self.plain:
            out: Tensor = functional_call(
                _LossModule(self.module, loss_fn),
                {"model." + n: t for n, t in zip(self.names, tensors, strict=True)},
                tuple(batch),
            )
            return out
        saved = [(table, name, table[name]) for table, name, _ in self.slots]
        try:
            for table, name, k in self.slots:
                table[name] = tensors[k]  # type: ignore[assignment]  # plain tensors, on purpose
            return loss_fn(self.module, *batch)
        finally:
            for table, name, original in saved:
                table[name] = original


class _LossModule(nn.Module):
    """Holds the user's module so that ``functional_call`` swaps its parameters inside ``loss_fn``."""

    def __init__(self, module: nn.Module, loss_fn: PerSampleLossFn) -> None:
        super().__init__()
        self.model = module
        self.loss_fn = loss_fn

    def forward(self, *batch: Tensor) -> Tensor:
        return self.loss_fn(self.model, *batch)


def check_per_sample(losses: Tensor, n: int) -> None:
    if losses.shape != (n,):
        raise LossShapeError(
            f"loss_fn must return one loss per sample, shape ({n},), got {tuple(losses.shape)}; "
            "use reduction='none' and reduce any other dimensions"
        )


class TaskPartitionedJacobian:
    """Per-task gradients of ``module``'s trainable parameters for a task-partitioned batch.

    Args:
        module: the model. Its trainable parameters (``requires_grad``) are differentiated. A
            model compiled by ``torch.compile`` is differentiated through its original module
            by a per-task gradient function that is compiled itself (``compile`` defaults to
            on for it): the vectorized pass is not run eagerly, and the model's own compiled
            calls are left as they are (its parameters are never swapped under its cache).
        strategy: ``"auto"`` (vmap, falling back to the loop with a warning), ``"vmap"`` or
            ``"loop"``.
        compile: compile the vectorized per-task gradient function with ``torch.compile``
            (``True``, or a dict of ``torch.compile`` options): one compilation per loss
            function and batch layout (pass the *same* ``loss_fn`` every step: a new lambda
            each step would compile each step), then one fused graph per call instead of the
            functorch transforms' per-op dispatch. None: on for a compiled model, off
            otherwise. If compiling fails the engine says why and runs eagerly.
    """

    def __init__(
        self,
        module: nn.Module,
        strategy: Strategy = "auto",
        compile: bool | dict[str, Any] | None = None,
    ) -> None:
        if strategy not in ("auto", "vmap", "loop"):
            raise ValueError(f"strategy must be 'auto', 'vmap' or 'loop', got {strategy!r}")
        original = getattr(module, "_orig_mod", None)
        if isinstance(module, torch._dynamo.eval_frame.OptimizedModule) and isinstance(
            original, nn.Module
        ):
            module = original
            compile = True if compile is None else compile
        self.module = module
        self.named_params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        if not self.named_params:
            raise ValueError("the module has no trainable parameters")
        self._swap = _ParameterSwap(module, self.params)
        self.compile: bool | dict[str, Any] = (
            bool(compile) if not isinstance(compile, dict) else compile
        )
        self._compiled: dict[tuple[Any, ...], Callable[..., Any]] = {}
        self.strategy: Strategy = strategy
        reason = _vmap_obstacle(module)
        if reason is not None and strategy != "loop":
            if strategy == "vmap":
                raise ValueError(f"cannot vectorize over task segments: {reason}")
            self._fall_back(reason)

    @property
    def params(self) -> list[Tensor]:
        return [p for _, p in self.named_params]

    def _fall_back(self, reason: str) -> None:
        warnings.warn(
            f"task-partitioned gradients: {reason}; using the exact but slower path instead "
            "(one forward of the whole batch, one autograd.grad per task)",
            stacklevel=3,
        )
        self.strategy = "loop"

    def __call__(
        self,
        loss_fn: PerSampleLossFn,
        batch: Sequence[Tensor],
        task_ids: Tensor | TaskBatch,
        num_tasks: int,
    ) -> PerTaskGradients:
        """Per-task mean losses and their gradients.

        Args:
            loss_fn: ``loss_fn(module, *batch) -> (n,)`` per-sample losses.
            batch: tensors whose first dimension is the sample dimension ``n``.
            task_ids: ``(n,)`` integer task id of each sample, or a :class:`TaskBatch`.
            num_tasks: the number of tasks ``M`` (ids lie in ``[0, M)``).
        """
        batch = tuple(batch)
        if isinstance(task_ids, TaskBatch):
            groups = task_ids
        else:
            dtype = self.params[0].dtype if self.params[0].is_floating_point() else torch.float32
            groups = TaskBatch(task_ids, num_tasks, dtype)
        groups.check_batch(batch)
        if self.strategy == "loop":
            return self._loop(loss_fn, batch, groups)
        try:
            return self._vmap(loss_fn, batch, groups)
        except LossShapeError:
            raise
        except Exception as e:  # vmap cannot run this model: say why, then use the exact loop
            if self.strategy == "vmap":
                raise
            self._fall_back(f"torch.func.vmap failed ({type(e).__name__}: {e})")
            return self._loop(loss_fn, batch, groups)

    def _vmap(
        self, loss_fn: PerSampleLossFn, batch: tuple[Tensor, ...], groups: TaskBatch
    ) -> PerTaskGradients:
        params = tuple(p.detach() for p in self.params)
        segments = [groups.segments(t) for t in batch]
        per_task = self._per_task_function(loss_fn, groups.n_max, len(segments))
        try:
            grads, losses = per_task(params, groups.weights, *segments)
        except LossShapeError:
            raise
        except Exception as e:
            if not self.compile:
                raise
            warnings.warn(
                f"task-partitioned gradients: torch.compile failed ({type(e).__name__}: {e}); "
                "computing them without compiling",
                stacklevel=4,
            )
            self.compile = False
            per_task = self._per_task_function(loss_fn, groups.n_max, len(segments))
            grads, losses = per_task(params, groups.weights, *segments)
        return PerTaskGradients(
            losses.detach(), groups.tasks, TaskJacobian(list(grads)), params=self.params
        )

    def _per_task_function(
        self, loss_fn: PerSampleLossFn, n_max: int, num_inputs: int
    ) -> Callable[..., Any]:
        """``vmap(grad_and_value(segment loss))`` over the segments, compiled if asked (once per
        loss function and layout)."""
        if self.compile:
            key = (function_key(loss_fn), n_max, num_inputs)
            if key not in self._compiled:
                options = self.compile if isinstance(self.compile, dict) else {}
                self._compiled[key] = torch.compile(
                    self._vectorized(loss_fn, n_max, num_inputs, traced=True), **options
                )
            return self._compiled[key]
        return self._vectorized(loss_fn, n_max, num_inputs, traced=False)

    def _vectorized(
        self, loss_fn: PerSampleLossFn, n_max: int, num_inputs: int, traced: bool
    ) -> Callable[..., Any]:
        swap, module, names = self._swap, self.module, [n for n, _ in self.named_params]

        def segment_loss(params: tuple[Tensor, ...], weights: Tensor, *segment: Tensor) -> Tensor:
            if traced:  # functional_call is what torch.compile traces through
                per_sample = functional_call(
                    _LossModule(module, loss_fn),
                    {"model." + n: p for n, p in zip(names, params, strict=True)},
                    segment,
                )
            else:
                per_sample = swap(loss_fn, params, segment)
            check_per_sample(per_sample, n_max)
            total: Tensor = (per_sample * weights.to(per_sample.dtype)).sum()
            return total

        in_dims = (None, 0, *([0] * num_inputs))
        return vmap(grad_and_value(segment_loss), in_dims=in_dims, randomness="different")

    def _loop(
        self, loss_fn: PerSampleLossFn, batch: tuple[Tensor, ...], groups: TaskBatch
    ) -> PerTaskGradients:
        per_sample = loss_fn(self.module, *batch)
        check_per_sample(per_sample, groups.n)
        losses = groups.segment_means(per_sample)
        return SharedInputJacobian(self.params)(losses, groups.tasks)


def function_key(fn: Callable[..., Any]) -> tuple[int, ...]:
    """Identity of a loss function, a bound method by its function and instance (a new bound
    method object is made at every attribute access)."""
    owner, func = getattr(fn, "__self__", None), getattr(fn, "__func__", None)
    if owner is not None and func is not None:
        return (id(func), id(owner))
    return (id(fn),)


def _vmap_obstacle(module: nn.Module) -> str | None:
    """Why ``module`` cannot be vectorized over task segments, or None."""
    for name, sub in module.named_modules():
        if isinstance(sub, nn.modules.batchnorm._BatchNorm) and sub.training:
            where = f"'{name}'" if name else "the model"
            return (
                f"{where} is a {type(sub).__name__} in training mode, which normalizes across "
                "tasks' samples and updates running statistics in place"
            )
    return None
