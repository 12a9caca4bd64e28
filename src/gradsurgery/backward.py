"""``MultiTaskBackward``: a drop-in replacement for ``loss.backward()`` with ``m`` task losses.

It computes what the chosen method needs (nothing, the Gramian, or the per-task gradients), asks the
method for an :class:`~gradsurgery.methods.base.Aggregation`, and accumulates the result into the
parameters' ``.grad`` exactly where ``loss.backward()`` would. Everything after that is the user's
own loop: any ``torch.optim`` optimizer and scheduler, parameter groups, gradient clipping,
``GradScaler``.

Shared-input batch (every sample feeds every task's loss)::

    mtl = MultiTaskBackward(model, "pcgrad", shared=model.trunk)
    for x, ys in loader:
        optimizer.zero_grad()
        losses = [F.cross_entropy(h, y) for h, y in zip(model(x), ys)]
        mtl.backward(losses)            # instead of sum(losses).backward()
        optimizer.step()

Task-partitioned batch (each sample belongs to one task), about one backward pass for all ``m``::

    mtl = MultiTaskBackward(model, "pcgrad", num_tasks=10)
    mtl.backward_partitioned(loss_fn, x, y, task_ids=task_ids)  # loss_fn(model, x, y) -> (n,)

Which parameters are shared: pass ``shared=`` (a module or parameters); the others in ``params`` are
task-specific. A model with a ``shared_parameters()`` method (every model in
:mod:`gradsurgery.models`) declares it itself. Otherwise the first step with at least two tasks
decides: a parameter that receives a nonzero gradient from two or more tasks is shared, from
exactly one task task-specific (with ``representation=``: a parameter upstream of the
representation is shared). The rules after that:

* A declared split is checked once against the first gradient step: a parameter declared
  task-specific that several tasks give a gradient on the same entries (a positional embedding
  outside ``shared=model.trunk``) is warned about, once, by name; it gets the plain sum of the
  tasks' gradients. (Rows of a packed ``heads[task]`` tensor, one task each, are not.)
* An inferred parameter that no task reached with a nonzero gradient (a zero-initialised LoRA or
  ReZero adapter) is task-specific for now and looked at again on the next steps (one host read
  each, at most 10 steps): it becomes shared once two tasks reach it.
* The trainable set is followed: when a parameter's ``requires_grad`` flips or a parameter is
  added to the module, the split is applied again (declared) or inferred again (inferred), so a
  parameter unfrozen after construction gets its ``.grad``.
* A trainable parameter that the losses reach but that is in neither set (left out of ``params``)
  is warned about once, at the first shared-input step (one walk of the autograd graph, no device
  op): ``loss.backward()`` would train it, ``MultiTaskBackward`` writes no ``.grad`` for it.

Distributed data parallelism (a model wrapped in ``DistributedDataParallel``, or a bare model
with an initialised ``torch.distributed`` group of two or more processes; ``process_group=``
chooses the group, default a DDP model's or the default group). Every method gets exactly what it
would get on one process from the global batch, and every rank gets the same ``.grad``:

* The per-task gradient is that of the global batch's task loss. A task-partitioned batch: task
  ``i``'s loss on one process is the mean over its samples of the global batch, so rank ``r``'s
  rows (mean over its ``c_{i,r}`` samples) are reduced as ``Σ_r c_{i,r} g_{i,r} / Σ_r c_{i,r}``;
  the counts are all-reduced too, a task absent on a rank is weighted 0 there, and a task absent
  on every rank is absent from the step. A shared-input batch: every rank's loss is a mean over its
  local batch, assumed of equal size, so the reduction is the plain mean over ranks (DDP's meaning
  of ``loss.backward()``: the mean over ranks of each rank's gradient). With local batches of
  different sizes that is not the global batch's mean: weight each rank's losses yourself.
* Gramian and Jacobian methods: the per-task gradients come from ``torch.autograd.grad``, which
  does not fire DDP's hooks; the rows of the shared parameters are all-reduced in one flat buffer
  of the gradients' dtype, ``m × P`` entries per step (``m`` tasks, ``M`` = every task for a
  task-partitioned batch; ``P`` shared entries: ``m × P × 4`` bytes in float32), with a small
  ``m × 3`` float64 all-reduce of the losses, counts and finite-check norms (and one host read of
  which tasks are present). The method then runs on identical inputs on every rank (so stateful
  methods keep identical state), the update is written to ``.grad`` directly (no backward: DDP
  does not reduce a second time), and the task-specific parameters get one all-reduce of their
  combined update (their own size, not ``m`` times it). Keep ``find_unused_parameters=False``
  (the default): the DDP forward is never followed by a DDP backward.
* Loss-weighting methods: the losses (and counts) are all-reduced first (``m × 3`` float64), so
  the weights and the method's state are identical on every rank; then one backward of each
  rank's ``Σ_i w_i (R c_{i,r} / C_i) L_{i,r}``, which DDP averages as usual (a bare model: one
  all-reduce of ``.grad``, its size).
* Random draws (PCGrad's orders, RLW's weights, GradDrop's masks): a method's generators default
  to rank 0's ``torch.initial_seed()``, broadcast when the method is made (every rank must make
  its methods in the same order), so every rank draws alike.
* ``distributed="local"`` (approximate): each rank applies the method to its own shard's task
  gradients and the update is averaged (one all-reduce of ``.grad``); stateful methods then keep
  per-rank state. Exact only for linear methods (``"sum"``).
* Refused (:class:`~gradsurgery.errors.DistributedUnsupportedError`): ``representation=`` (the
  Gramian of ``∂L/∂z`` is of each rank's own representation), and ``"gradnorm"`` and
  ``"cosreg"`` in the exact mode (they differentiate the gradients of the rank's own live
  losses). An inferred shared/task-specific split is inferred on each rank from its own
  gradients: declare ``shared=`` under data parallelism.

Checkpoints. A method's own parameters (uncertainty weighting's log-variances) are in
:meth:`MultiTaskBackward.parameters` (give them to the optimizer) and move with
:meth:`MultiTaskBackward.to`; :meth:`MultiTaskBackward.state_dict` carries them with the
method's buffers and random streams, the step and the split::

    optimizer = torch.optim.Adam([*model.parameters(), *mtl.parameters()])
    torch.save({"model": model.state_dict(), "mtl": mtl.state_dict(),
                "optimizer": optimizer.state_dict()}, path)
    ...
    ckpt = torch.load(path)
    model.load_state_dict(ckpt["model"]); mtl.load_state_dict(ckpt["mtl"])
    optimizer.load_state_dict(ckpt["optimizer"])

(Under Lightning: save ``mtl.state_dict()`` in ``on_save_checkpoint`` and load it in
``on_load_checkpoint``.) Random methods (PCGrad's order, RLW, GradDrop) draw from their own
generators, seeded by ``seed=`` or else by ``torch.initial_seed()``: they never draw from, or
change, torch's global random stream.

Errors. A NaN or infinite loss, or gradient, raises :class:`~gradsurgery.errors.NonFiniteError`
naming the task and leaves ``.grad`` untouched. That check costs one host synchronisation per
step; ``check_finite="lazy"`` reads its result one step later instead (no synchronisation; the
error then comes one step late, see :mod:`gradsurgery.finite`), and ``check_finite=False`` turns it
off: do that under a float16 ``GradScaler``, which must see the infs to skip the step (the
error's message says so). Losses may be a mapping ``{name: loss}``: the names become the task
names; every error about a task's loss names the task.

Host synchronisations. With a task-balanced or task-sorted batch whose counts the caller knows
(``layout=TaskBatch.balanced(m, n)``), a loss-weighting step and the gradient engines issue none
(with ``check_finite="lazy"`` or ``False``); methods that solve a small problem on the Gramian read
it on the host once per step (their docstrings say so).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from gradsurgery.distributed import DataParallel, DistributedMode
from gradsurgery.engines.graph import reachable_leaf_tensors, reachable_leaves
from gradsurgery.engines.per_task_gradients import PerTaskGradients, SplitGradients, accumulate
from gradsurgery.engines.representation import RepresentationJacobian
from gradsurgery.engines.shared_input import SharedInputJacobian
from gradsurgery.engines.task_partitioned import (
    Strategy,
    TaskBatch,
    TaskPartitionedJacobian,
    check_per_sample,
    function_key,
)
from gradsurgery.errors import DistributedUnsupportedError, DoubleBackwardError, LossShapeError
from gradsurgery.finite import CheckFinite, FiniteCheck
from gradsurgery.jacobian import TaskJacobian
from gradsurgery.methods.base import Aggregation, Method, TaskStep
from gradsurgery.methods.registry import create_method

if TYPE_CHECKING:
    from gradsurgery.diagnostics.monitor import TriadMonitor

__all__ = ["MultiTaskBackward", "StepResult"]

ParamsLike = nn.Module | Iterable[Tensor]
Losses = Tensor | Sequence[Tensor] | Mapping[str, Tensor]

#: methods that differentiate the live losses' own gradients (refused under exact data parallelism)
_LOCAL_GRADIENT_METHODS = frozenset({"gradnorm", "cosreg"})

#: steps over which a parameter that no task's gradient has reached yet (a zero-initialised
#: adapter) is looked at again before it is left task-specific
_UNDECIDED_STEPS = 10


@dataclass(frozen=True)
class StepResult:
    """What one call did, for logging. Tensors are detached; rows are the present tasks.

    Attributes:
        losses: ``(m,)`` task losses.
        tasks: ``(m,)`` task indices.
        weights: ``(m,)`` weights of the shared update (None for methods returning an update).
        task_specific_weights: ``(m,)`` weights of each task's own gradient on its specific params.
        gramian: ``(m, m)`` Gramian of the shared task gradients, when computed.
        approximate: True when the Gramian is of a shared representation (MGDA-UB style).
    """

    losses: Tensor
    tasks: Tensor
    weights: Tensor | None
    task_specific_weights: Tensor
    gramian: Tensor | None
    approximate: bool


class MultiTaskBackward:
    """Combine ``m`` task losses' gradients with a multi-task method and write them to ``.grad``.

    Args:
        params: every trainable parameter the losses should update: an ``nn.Module`` (required for
            :meth:`backward_partitioned`) or an iterable of tensors.
        method: a registered method name (``"pcgrad"``, ``"sum"``, ...) or a
            :class:`~gradsurgery.methods.base.Method` instance.
        shared: the shared parameters (a module or tensors), a subset of ``params``. None: inferred
            at the first step (see the module docstring).
        num_tasks: the number of tasks (required for :meth:`backward_partitioned`; otherwise taken
            from the first loss vector).
        task_names: names used in error messages and diagnostics.
        check_finite: raise :class:`~gradsurgery.errors.NonFiniteError` on a NaN/inf loss or
            gradient: ``True`` (before ``.grad`` is written; one host sync per step),
            ``"lazy"`` (read one step later, no sync; call :meth:`flush` after the last step) or
            ``False``.
        monitor: a :class:`~gradsurgery.diagnostics.monitor.TriadMonitor` that records the
            tragic-triad statistics on its steps (``every``): on those steps even ``"sum"``
            computes per-task gradients (the same update, summed in another order).
        strategy: how :meth:`backward_partitioned` vectorizes (``"auto"``, ``"vmap"``, ``"loop"``).
        compile: compile :meth:`backward_partitioned`'s vectorized per-task gradient function
            with ``torch.compile`` (True, or a dict of its options; None: on when ``params`` is
            a compiled model, off otherwise). See
            :class:`~gradsurgery.engines.task_partitioned.TaskPartitionedJacobian`.
        distributed: under data parallelism, ``"exact"`` (the method sees the per-task gradients
            of the global batch) or ``"local"`` (approximate: each rank's method sees its own
            shard's, and the update is averaged). See the module docstring.
        process_group: the group to reduce over (None: a DDP model's, else the default group).
        **method_kwargs: passed to the method when ``method`` is a name.

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 0.0]))
        >>> mtl = MultiTaskBackward([w], "pcgrad", shared=[w])
        >>> losses = torch.stack([w @ torch.tensor([1.0, 0.0]), w @ torch.tensor([-1.0, 1.0])])
        >>> _ = mtl.backward(losses)   # g1 = (1, 0), g2 = (-1, 1) conflict: both are projected
        >>> w.grad
        tensor([0.5000, 1.5000])
    """

    def __init__(
        self,
        params: ParamsLike,
        method: str | Method = "pcgrad",
        *,
        shared: ParamsLike | None = None,
        num_tasks: int | None = None,
        task_names: Sequence[str] | None = None,
        check_finite: CheckFinite = True,
        monitor: TriadMonitor | None = None,
        strategy: Strategy = "auto",
        compile: bool | dict[str, Any] | None = None,
        distributed: DistributedMode = "exact",
        process_group: Any = None,
        **method_kwargs: Any,
    ) -> None:
        self.module = params if isinstance(params, nn.Module) else None
        # kept whole (frozen tensors too) so that a change of the trainable set is seen
        self._param_source: nn.Module | list[Tensor] = (
            params if isinstance(params, nn.Module) else list(params)
        )
        self.params = _unique_trainable(self._param_source)
        if not self.params:
            raise ValueError("no trainable parameters were given")
        self._param_ids = [id(p) for p in self.params]
        self.method = create_method(method, **method_kwargs)
        self._shared: list[bool] | None = None
        inner = params.module if isinstance(params, DistributedDataParallel) else params
        declared = getattr(inner, "shared_parameters", None)
        if shared is None and callable(declared):
            shared = list(declared())  # a model that declares its own split
        self._shared_source: nn.Module | list[Tensor] | None = None
        if shared is not None:
            self._shared_source = shared if isinstance(shared, nn.Module) else list(shared)
            self._shared = self._declared_mask()
        # parameters of an inferred split that no task reached yet (looked at again), and
        # whether a declared split is still to be checked against the gradients (once)
        self._undecided: set[int] = set()
        self._undecided_steps = 0
        self._check_declared = self._shared is not None
        self._warned: set[int] = set()
        if num_tasks is not None and num_tasks < 1:
            raise ValueError(f"num_tasks must be at least 1, got {num_tasks}")
        if task_names is not None and num_tasks is not None and len(task_names) != num_tasks:
            raise ValueError(f"{len(task_names)} task names for {num_tasks} tasks")
        self.num_tasks = (
            num_tasks
            if num_tasks is not None
            else (len(task_names) if task_names is not None else None)
        )
        self.task_names = list(task_names) if task_names is not None else None
        self._loss_keys: list[Any] | None = None  # the keys of mapping losses, in task order
        if self.num_tasks is not None:
            self.method.bind(self.num_tasks, self.params[0].device)
        self._finite = FiniteCheck(check_finite, self._task_label)
        self.monitor = monitor
        self.strategy: Strategy = strategy
        self.compile = compile
        self._partitioned: TaskPartitionedJacobian | None = None
        self._owner_indices: dict[tuple[tuple[int, ...], str], Tensor] = {}
        self._compiled_losses: dict[tuple[int, ...], Callable[..., Tensor]] = {}
        self.step = 0
        self._dp = DataParallel.detect(params, process_group, distributed)
        self._check_distributed()
        self._row_counts: Tensor | None = None  # samples per row of a task-partitioned step
        self._outside_checked = False

    # ------------------------------------------------------------------ public entry points
    @property
    def shared_params(self) -> list[Tensor] | None:
        """The shared parameters (None until inferred)."""
        if self._shared is None:
            return None
        return [p for p, s in zip(self.params, self._shared, strict=True) if s]

    @property
    def needs_task_gradients(self) -> bool:
        """Whether the next step computes per-task gradients: always for methods that need the
        Gramian or the Jacobian; for loss-weighting methods only on the steps a ``monitor``
        records (``step % monitor.every == 0``), the other steps staying one backward pass."""
        if self.method.requires != "losses":
            return True
        return self.monitor is not None and self.step % self.monitor.every == 0

    def backward(
        self,
        losses: Losses,
        *,
        representation: Tensor | None = None,
        present: Tensor | Sequence[bool] | None = None,
    ) -> StepResult:
        """Use instead of ``losses.sum().backward()`` for a shared-input batch.

        Args:
            losses: the ``M`` task losses: a list of scalars, an ``(M,)`` vector, or a mapping
                ``{task name: scalar}`` (its keys name the tasks at the first step and must be
                the same, in any order, at every later one). Each task's
                gradient flows through its own graph only for a list and for ``torch.stack`` of
                the scalars; another vector is differentiated entry by entry through the op that
                made it, which also visits the other tasks' branches (with zero gradients).
            representation: the shared representation ``z`` that all heads read. When given, the
                Gramian is that of ``∂L_i/∂z`` (approximate, one trunk pass; MGDA-UB style).
            present: ``(M,)`` booleans; tasks marked False are left out of this step (their loss
                entries are ignored, whatever their value).
        """
        self._refresh_params()
        if isinstance(losses, Mapping):
            losses = self._ordered(losses)
        vector, items = _as_loss_vector(losses, self._task_label)
        num_tasks = self._resolve_num_tasks(vector.shape[0])
        constant = _constant_entries(vector, items)
        tasks = _present_indices(present, num_tasks, vector.device)
        if tasks is None:
            tasks = torch.arange(num_tasks, device=vector.device)
            kept = list(range(num_tasks))
        else:
            kept = tasks.tolist()
            vector = vector.index_select(0, tasks)
            items = [items[k] for k in kept] if items is not None else None
        if not vector.requires_grad:
            raise ValueError("the losses do not require grad: nothing to differentiate")
        if not self._outside_checked:
            self._warn_outside_params(vector)
        for k in kept:
            if k in constant:
                raise ValueError(
                    f"{self._task_label(k)}: the loss does not require grad (detached, or "
                    "computed without the parameters), so it cannot be differentiated; leave "
                    "the task out of this step with present= instead"
                )
        if not self.needs_task_gradients:
            return self._backward_weighted_sum(vector, tasks)
        self._row_counts = None
        if representation is not None and self._dp is not None:
            raise DistributedUnsupportedError(
                "representation= under data parallelism: the Gramian of dL/dz is of this rank's "
                "own samples' representation, which no reduction of fixed size makes global; "
                "leave representation= out (the exact per-task gradients are reduced instead)"
            )
        per_task = items if items is not None else vector
        if representation is None:
            grads = SharedInputJacobian(self.params, self._shared)(per_task, tasks)
        else:
            specific = self._specific_for_representation(representation)
            engine = RepresentationJacobian(specific, trunk=self.shared_params or None)
            grads = engine(per_task, representation, tasks)
        return self._apply(grads)

    def backward_partitioned(
        self,
        loss_fn: Callable[..., Tensor],
        *batch: Tensor,
        task_ids: Tensor | None = None,
        layout: TaskBatch | None = None,
    ) -> StepResult:
        """Use for a task-partitioned batch: ``L_i`` is the mean loss over task ``i``'s samples.

        Args:
            loss_fn: ``loss_fn(module, *batch) -> (n,)`` one loss per sample.
            *batch: tensors with the sample dimension first.
            task_ids: ``(n,)`` integer task id of each sample, in ``[0, num_tasks)``, any order.
                Grouping them reads the counts per task on the host (one host synchronisation).
            layout: instead of ``task_ids``, the batch's layout when the caller knows it: a
                :class:`~gradsurgery.engines.task_partitioned.TaskBatch` made once with
                ``TaskBatch.balanced(num_tasks, per_task)`` or ``TaskBatch.contiguous(counts)``
                (samples sorted by task) and passed every step: no host synchronisation.
        """
        if self.module is None:
            raise TypeError(
                "backward_partitioned needs the model: construct MultiTaskBackward(model, ...) "
                "with the nn.Module rather than its parameters"
            )
        if self.num_tasks is None:
            raise ValueError("backward_partitioned needs num_tasks (task ids alone cannot tell it)")
        self._refresh_params()
        groups = self._layout(task_ids, layout)
        groups.check_batch(batch)
        if not self.needs_task_gradients:
            per_sample = self._per_sample_losses(loss_fn, batch)
            check_per_sample(per_sample, groups.n)
            self._row_counts = groups.counts
            return self._backward_weighted_sum(groups.segment_means(per_sample), groups.tasks)
        self._row_counts = groups.counts
        if self._partitioned is None:
            module = self.module
            if isinstance(module, DistributedDataParallel):  # vmap the model itself, not DDP
                module = module.module
            self._partitioned = TaskPartitionedJacobian(module, self.strategy, self.compile)
            if [id(p) for p in self._partitioned.params] != [id(p) for p in self.params]:
                raise RuntimeError("internal: module parameters changed since construction")
        grads = self._partitioned(loss_fn, batch, groups, self.num_tasks)
        return self._apply(grads)

    def _per_sample_losses(
        self, loss_fn: Callable[..., Tensor], batch: tuple[Tensor, ...]
    ) -> Tensor:
        """``loss_fn(module, *batch)``; with ``compile``, through ``torch.compile`` (once per loss
        function; eagerly, with a warning, if compiling fails)."""
        assert self.module is not None
        if not self.compile:
            return loss_fn(self.module, *batch)
        key = function_key(loss_fn)
        fn = self._compiled_losses.get(key)
        if fn is None:
            module, options = self.module, self.compile if isinstance(self.compile, dict) else {}
            fn = self._compiled_losses[key] = torch.compile(
                lambda *b: loss_fn(module, *b), **options
            )
        try:
            return fn(*batch)
        except Exception as e:
            warnings.warn(
                f"torch.compile of the loss function failed ({type(e).__name__}: {e}); running "
                "it without compiling",
                stacklevel=3,
            )
            self.compile = False
            return loss_fn(self.module, *batch)

    def _warn_outside_params(self, losses: Tensor) -> None:
        """Once, at the first shared-input step: warn about trainable parameters that the losses
        reach but that are not in ``params`` (they would train under ``loss.backward()`` and get
        no ``.grad`` here). One walk of the graph, no device op."""
        self._outside_checked = True
        mine = {id(p) for p in self.params}
        outside = [
            t
            for t in reachable_leaf_tensors(losses)
            if isinstance(t, nn.Parameter) and id(t) not in mine
        ]
        if outside:
            shapes = ", ".join(str(tuple(t.shape)) for t in outside[:8])
            warnings.warn(
                f"{len(outside)} trainable parameter(s) reached by the losses are not in params "
                f"(shapes {shapes}{', ...' if len(outside) > 8 else ''}): they get no .grad from "
                "MultiTaskBackward; pass them (or the whole model) if they should train, or set "
                "requires_grad=False",
                stacklevel=3,
            )

    def flush(self) -> None:
        """Finish the checks still pending under ``check_finite="lazy"`` (raising
        :class:`~gradsurgery.errors.NonFiniteError` if one failed); a no-op otherwise."""
        self._finite.flush()

    # ------------------------------------------------------------------ the method's own state
    def parameters(self) -> Iterator[Tensor]:
        """The method's own trainable parameters (uncertainty weighting's log-variances; none for
        most methods): hand them to the optimizer beside the model's,
        ``torch.optim.Adam([*model.parameters(), *mtl.parameters()])``."""
        return (p for p in self.method.parameters() if p.requires_grad)

    def to(self, *args: Any, **kwargs: Any) -> MultiTaskBackward:
        """Move (or cast) the method's parameters and buffers, as ``nn.Module.to``; returns self.
        The model is the caller's to move."""
        self.method.to(*args, **kwargs)
        return self

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs besides the model and the optimizer: the step, the
        shared/task-specific split, and the method's parameters, buffers and random streams.
        Save it beside the model's: ``torch.save({"model": model.state_dict(), "mtl":
        mtl.state_dict(), "optimizer": optimizer.state_dict()}, path)``."""
        return {
            "step": self.step,
            "num_tasks": self.num_tasks,
            "shared": list(self._shared) if self._shared is not None else None,
            "method": self.method.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (in place: an optimizer holding :meth:`parameters` keeps
        them)."""
        shared = state["shared"]
        if shared is not None and len(shared) != len(self.params):
            raise ValueError(
                f"state has {len(shared)} parameters, this MultiTaskBackward has {len(self.params)}"
            )
        if self.num_tasks is not None and state["num_tasks"] not in (None, self.num_tasks):
            raise ValueError(f"state is for {state['num_tasks']} tasks, not {self.num_tasks}")
        self.method.load_state_dict(state["method"])
        self.step = int(state["step"])
        self.num_tasks = state["num_tasks"] if state["num_tasks"] is not None else self.num_tasks
        self._shared = list(shared) if shared is not None else self._shared

    # ------------------------------------------------------------------ internals
    def _resolve_num_tasks(self, m: int) -> int:
        if self.num_tasks is None:
            self.num_tasks = m
            self.method.bind(m, self.params[0].device)
        elif m != self.num_tasks:
            message = f"expected {self.num_tasks} task losses, got {m}"
            if self.task_names is not None:
                if m < self.num_tasks:
                    missing = ", ".join(repr(n) for n in self.task_names[m:])
                    message += f": matched by position, {missing} missing"
                else:
                    message += f" (the tasks are {', '.join(map(repr, self.task_names))})"
            raise LossShapeError(message)
        return m

    def _ordered(self, losses: Mapping[Any, Tensor]) -> list[Tensor]:
        """Mapping losses as a list in task order (fixed at the first step, checked after)."""
        by_name = {str(key): key for key in losses}
        if self._loss_keys is None:
            if self.task_names is None:
                if self.num_tasks is not None and len(by_name) != self.num_tasks:
                    raise LossShapeError(
                        f"expected {self.num_tasks} task losses, got {len(by_name)}: "
                        f"{', '.join(map(repr, by_name))}"
                    )
                self.task_names = list(by_name)
            names = self.task_names
        else:
            names = [str(key) for key in self._loss_keys]
        missing = [n for n in names if n not in by_name]
        extra = [n for n in by_name if n not in set(names)]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing {', '.join(map(repr, missing))}")
            if extra:
                parts.append(f"unexpected {', '.join(map(repr, extra))}")
            raise LossShapeError(
                f"the task losses' keys must be the tasks {', '.join(map(repr, names))}: "
                + "; ".join(parts)
            )
        self._loss_keys = [by_name[n] for n in names]
        return [losses[key] for key in self._loss_keys]

    def _declared_mask(self) -> list[bool]:
        assert self._shared_source is not None
        shared_ids = {id(p) for p in _unique_trainable(self._shared_source)}
        if not shared_ids <= set(self._param_ids):
            raise ValueError("every shared parameter must also be in `params`")
        return [id(p) in shared_ids for p in self.params]

    def _refresh_params(self) -> None:
        """Follow a change of the trainable set (``requires_grad`` flipped, parameters added):
        a declared split is applied to the new set (and checked again at the next gradient
        step), an inferred one is inferred again. One pass over the parameters, no device op."""
        current = _unique_trainable(self._param_source)
        ids = [id(p) for p in current]
        if ids == self._param_ids:
            return
        if not current:
            raise ValueError("no trainable parameters are left")
        self.params, self._param_ids = current, ids
        self._partitioned = None
        self._undecided, self._undecided_steps = set(), 0
        if self._shared_source is not None:
            self._shared = self._declared_mask()
            self._check_declared = True
        else:
            self._shared = None

    def _param_name(self, p: Tensor) -> str:
        if self.module is not None:
            for name, q in self.module.named_parameters():
                if q is p:
                    return name
        k = self._param_ids.index(id(p))
        return f"params[{k}] (shape {tuple(p.shape)})"

    def _check_distributed(self) -> None:
        """Refuse what cannot be exact under data parallelism: methods that differentiate this
        rank's own live losses' gradients (their weights would differ between ranks)."""
        if self._dp is None or self._dp.mode == "local":
            return
        name = self.method.name or type(self.method).__name__
        if name in _LOCAL_GRADIENT_METHODS:
            raise DistributedUnsupportedError(
                f"method {name!r} differentiates the gradients of this rank's own losses (a "
                "double backward of the live losses), which no reduction of the losses or "
                "gradients makes those of the global batch. Use distributed='local' "
                "(approximate: each rank's weights, the update averaged), or another method"
            )

    def _counts(self, m: int, device: torch.device) -> Tensor:
        """Samples behind each local row: the task counts of a task-partitioned batch, else 1."""
        if self._row_counts is not None:
            return self._row_counts
        return torch.ones(m, dtype=torch.long, device=device)

    def _task_label(self, task: int) -> str:
        if self.task_names is not None and 0 <= task < len(self.task_names):
            return f"task {self.task_names[task]!r} (index {task})"
        return f"task {task}"

    def _layout(self, task_ids: Tensor | None, layout: TaskBatch | None) -> TaskBatch:
        assert self.num_tasks is not None
        if (task_ids is None) == (layout is None):
            raise TypeError("backward_partitioned takes exactly one of task_ids= and layout=")
        if layout is None:
            assert task_ids is not None
            param = self.params[0]
            dtype = param.dtype if param.is_floating_point() else torch.float32
            return TaskBatch(task_ids, self.num_tasks, dtype)
        if not isinstance(layout, TaskBatch):
            raise TypeError(f"layout must be a TaskBatch, got {type(layout).__name__}")
        if layout.num_tasks != self.num_tasks:
            raise ValueError(f"the layout has {layout.num_tasks} tasks, not {self.num_tasks}")
        return layout

    def _check(self, losses: Tensor, tasks: Tensor, grad_sq_norms: Sequence[Tensor]) -> None:
        """Raise NonFiniteError naming the first task with a NaN/inf loss or gradient."""
        self._finite(self.step, losses, tasks, grad_sq_norms)

    def _backward_weighted_sum(self, losses: Tensor, tasks: Tensor) -> StepResult:
        """Loss-weighting methods: one backward pass of ``Σ_i w_i L_i``."""
        if self._dp is not None and self._dp.mode == "exact":
            return self._backward_weighted_sum_dp(losses, tasks, self._dp)
        self._check(losses, tasks, [])
        agg = self.method(self._task_step(losses.detach(), tasks, None, None, False, live=losses))
        assert agg.weights is not None
        total = (agg.weights.to(losses.dtype) * losses).sum()
        if agg.regularizer is not None:
            total = total + agg.regularizer
        # exactly loss.backward() of the weighted total: .grad wherever it reaches
        with self._double_backward(agg):
            torch.autograd.backward(total)
        if self._dp is not None:  # distributed="local": average the update (DDP: its own)
            own = list(self.parameters())
            self._dp.average_grads_(own if self._dp.ddp else [*self.params, *own])
        return self._finish(losses, tasks, agg, None, False)

    def _backward_weighted_sum_dp(
        self, losses: Tensor, tasks: Tensor, dp: DataParallel
    ) -> StepResult:
        """The same step under data parallelism: the method sees the global losses (one small
        all-reduce), so its weights and state are identical on every rank; each rank's live
        losses are weighted ``R · c_{i,r} / C_i`` so that averaging over the ``R`` ranks (DDP's
        reduction, or one all-reduce of ``.grad`` for a bare model) gives the global gradient."""
        assert self.num_tasks is not None
        g = dp.reduce_tasks(
            losses.detach(), tasks, self._counts(losses.shape[0], losses.device), self.num_tasks
        )
        self._check(g.losses, g.tasks, [])
        agg = self.method(self._task_step(g.losses, g.tasks, None, None, False, live=None))
        assert agg.weights is not None
        w = agg.weights.to(losses.dtype)
        scale = (g.local_scale * dp.world_size).to(losses.dtype)
        total = (w.detach().index_select(0, g.local_pos) * scale * losses).sum()
        if w.requires_grad:  # the method's own weights: through the global losses (identical)
            total = total + (w * g.losses.detach()).sum()
        if agg.regularizer is not None:  # of the method's own parameters only here: identical
            total = total + agg.regularizer
        with self._double_backward(agg):
            torch.autograd.backward(total)
        if not dp.ddp:  # DDP averaged the model's .grad in that backward; a bare model's: here
            dp.average_grads_(self.params)
        return self._finish(g.losses, g.tasks, agg, None, False)

    @contextlib.contextmanager
    def _double_backward(self, agg: Aggregation) -> Iterator[None]:
        """Name the fix when a method's regularizer (differentiated through the task gradients:
        a double backward) meets an op without a double backward."""
        try:
            yield
        except RuntimeError as e:
            text = str(e)
            if agg.regularizer is None or not (
                "derivative for" in text and "not implemented" in text
            ):
                raise
            raise DoubleBackwardError(
                f"method {self.method.name or type(self.method).__name__!r} differentiates "
                "through the task gradients (a double backward), and an op of the model has no "
                f"double backward: {text}. For torch.nn.functional.scaled_dot_product_attention "
                "(also inside nn.MultiheadAttention and nn.Transformer*) the fused kernels have "
                "none: run the forward pass under `with torch.nn.attention.sdpa_kernel("
                "torch.nn.attention.SDPBackend.MATH):`, or use a method that does not "
                "differentiate through the gradients"
            ) from e

    def _task_step(
        self,
        losses: Tensor,
        tasks: Tensor,
        gramian: Tensor | None,
        jacobian: TaskJacobian | None,
        approximate: bool,
        live: Tensor | None = None,
        representation: Tensor | None = None,
    ) -> TaskStep:
        assert self.num_tasks is not None
        return TaskStep(
            losses=losses,
            tasks=tasks,
            num_tasks=self.num_tasks,
            step=self.step,
            gramian=gramian,
            jacobian=jacobian,
            approximate=approximate,
            live_losses=live,
            shared_params=self.shared_params,
            representation=representation,
        )

    def _specific_for_representation(self, representation: Tensor) -> list[Tensor]:
        if self._shared is None:
            upstream = reachable_leaves(representation)
            self._shared = [id(p) in upstream for p in self.params]
        return [p for p, s in zip(self.params, self._shared, strict=True) if not s]

    def _shared_blocks(self, grads: PerTaskGradients) -> list[bool] | None:
        """Which of an engine's blocks are shared, when the engine cannot tell: the user's split,
        else inferred (and remembered) from which blocks two or more tasks reach."""
        if grads.shared is not None or self._shared is not None:
            return self._shared
        if grads.jacobian.num_tasks < 2:  # with a single task nothing can be told apart: later
            return None
        counts = grads.reach_counts()
        self._shared = [c >= 2 for c in counts]
        # no task reached it (a zero-initialised adapter): task-specific for now, looked at again
        self._undecided = {id(p) for p, c in zip(self.params, counts, strict=True) if c == 0}
        self._undecided_steps = 0
        return self._shared

    def _review_split(self, split: SplitGradients) -> None:
        """Check the split against this step's gradients (before they are written): a declared
        split once after (re)building it, warning on task-specific parameters that several
        tasks reach; an inferred split's undecided parameters while they stay undecided (at
        most ``_UNDECIDED_STEPS`` steps). One host read on those steps only."""
        if self._shared is None or split.approximate:
            return
        if self._check_declared:
            self._check_declared = False
            several = [p for p in split.specific_overlap() if id(p) not in self._warned]
            if several:
                self._warned.update(id(p) for p in several)
                warnings.warn(
                    "declared task-specific (not in `shared`) but given a gradient by several "
                    f"tasks on the same entries: {', '.join(self._param_name(p) for p in several)}. Their gradient "
                    "is the plain sum of the tasks', not the method's combination; add them to "
                    "`shared=` (a parameter used by every task, such as a positional embedding "
                    "outside the trunk, is shared)",
                    stacklevel=4,
                )
        elif self._undecided:
            counts = split.specific_reach(self._undecided)
            self._undecided_steps += 1
            for k, p in enumerate(self.params):
                c = counts.get(id(p), 0)
                if id(p) in self._undecided and c > 0:
                    self._undecided.discard(id(p))
                    self._shared[k] = c >= 2  # shared from the next step on
            if self._undecided_steps >= _UNDECIDED_STEPS:
                self._undecided = set()

    def _apply(self, grads: PerTaskGradients) -> StepResult:
        split = grads.split(self._shared_blocks(grads))
        self._review_split(split)
        if self._dp is not None and self._dp.mode == "exact":
            return self._apply_dp(split, self._dp)
        losses, tasks = split.losses, split.tasks
        gramian = split.rows.gramian()
        sq_norms = split.specific_sq_norms(lambda owners: self._owner_index(owners, losses.device))
        self._check(losses, tasks, [gramian.diagonal(), *sq_norms])

        jacobian = split.rows if self.method.requires == "jacobian" else None
        rep = split.representation.detach() if split.representation is not None else None
        step = self._task_step(
            losses, tasks, gramian, jacobian, split.approximate, representation=rep
        )
        agg = self.method(step)
        weights = agg.weights.detach() if agg.weights is not None else None
        update = split.rows.combine(weights) if weights is not None else agg.update
        assert update is not None
        split.write_back(update, agg.task_specific_weights)
        self._backward_extras(agg, losses)
        if self._dp is not None:  # distributed="local": average the update
            self._dp.average_grads_([*self.params, *self.parameters()])
        return self._finish(losses, tasks, agg, gramian, split.approximate)

    def _apply_dp(self, split: SplitGradients, dp: DataParallel) -> StepResult:
        """:meth:`_apply` on the global batch: the shared rows (and losses) all-reduced before
        the method, the task-specific gradients' combination after it. ``.grad`` is written
        directly (no backward: DDP's hooks never fire)."""
        assert self.num_tasks is not None
        losses = split.losses
        sq_norms = split.specific_sq_norms(lambda owners: self._owner_index(owners, losses.device))
        specific_sq = torch.stack(sq_norms).sum(dim=0) if sq_norms else None
        counts = self._counts(losses.shape[0], losses.device)
        g = dp.reduce_tasks(losses, split.tasks, counts, self.num_tasks, specific_sq, split.rows)
        assert g.rows is not None
        gramian = g.rows.gramian()
        self._check(g.losses, g.tasks, [gramian.diagonal(), g.specific_sq])
        jacobian = g.rows if self.method.requires == "jacobian" else None
        agg = self.method(self._task_step(g.losses, g.tasks, gramian, jacobian, False))
        # a regularizer here is of the method's own parameters (no live losses were given):
        # computed from the global losses, identical on every rank
        weights = agg.weights.detach() if agg.weights is not None else None
        update = g.rows.combine(weights) if weights is not None else agg.update
        assert update is not None
        accumulate(split.targets, update)
        targets = {id(p) for p in split.targets}
        layout = [p for p in self.params if id(p) not in targets]
        tsw = agg.task_specific_weights.detach().to(g.local_scale.device)
        local = tsw.index_select(0, g.local_pos) * g.local_scale.to(tsw.dtype)
        dp.reduce_specific(split, layout, local)
        self._backward_extras(agg, g.losses)
        return self._finish(g.losses, g.tasks, agg, gramian, False)

    def _owner_index(self, owners: list[int], device: torch.device) -> Tensor:
        """The owners of owned gradients as a device tensor, made once per distinct list (a
        host-to-device copy, so not every step)."""
        key = (tuple(owners), str(device))
        index = self._owner_indices.get(key)
        if index is None:
            index = self._owner_indices[key] = torch.tensor(owners, device=device)
        return index

    def _backward_extras(self, agg: Aggregation, losses: Tensor) -> None:
        """Gradients the combined update does not carry: a method's own learnable weights (through
        ``Σ_i w_i L_i`` with the losses held constant) and the method's regularizer."""
        own = [p for p in self.method.parameters() if p.requires_grad]
        terms = []
        if own and agg.weights is not None and agg.weights.requires_grad:
            terms.append((agg.weights * losses.detach().to(agg.weights.dtype)).sum())
        if agg.regularizer is not None:
            terms.append(agg.regularizer)
        if terms:
            targets = [*self.params, *own]
            with self._double_backward(agg):
                torch.autograd.backward(torch.stack(terms).sum(), inputs=targets)

    def _finish(
        self,
        losses: Tensor,
        tasks: Tensor,
        agg: Aggregation,
        gramian: Tensor | None,
        approximate: bool,
    ) -> StepResult:
        weights = agg.weights.detach() if agg.weights is not None else None
        if self.monitor is not None and gramian is not None:
            self.monitor.record(self.step, gramian, losses.detach(), tasks, weights)
        self.step += 1
        return StepResult(
            losses=losses.detach(),
            tasks=tasks,
            weights=weights,
            task_specific_weights=agg.task_specific_weights.detach(),
            gramian=gramian,
            approximate=approximate,
        )


def _unique_trainable(params: ParamsLike) -> list[Tensor]:
    items = params.parameters() if isinstance(params, nn.Module) else params
    out, seen = [], set()
    for p in items:
        if not isinstance(p, Tensor):
            raise TypeError(f"expected tensors or a module, got {type(p).__name__}")
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def _as_loss_vector(
    losses: Tensor | Sequence[Tensor], label: Callable[[int], str]
) -> tuple[Tensor, list[Tensor] | None]:
    """The ``(M,)`` loss vector, and the individual scalar losses when given as a sequence."""
    items = None
    if not isinstance(losses, Tensor):
        items = list(losses)
        for k, item in enumerate(items):
            if not isinstance(item, Tensor):
                raise LossShapeError(
                    f"{label(k)}: the loss is not a tensor (got {type(item).__name__})"
                )
            if item.numel() != 1:
                raise LossShapeError(
                    f"{label(k)}: the loss is not a scalar tensor (shape {tuple(item.shape)})"
                )
        items = [item.reshape(()) for item in items]
        if not items:
            raise LossShapeError("no task losses were given")
        losses = torch.stack(items)
    if losses.dim() != 1 or losses.numel() == 0:
        raise LossShapeError(
            f"expected a non-empty vector of task losses, got shape {tuple(losses.shape)}"
        )
    if not losses.is_floating_point():
        raise LossShapeError(f"losses must be floating point, got {losses.dtype}")
    return losses, items


def _constant_entries(vector: Tensor, items: list[Tensor] | None) -> set[int]:
    """The tasks whose loss has no graph (detached or constant): from the scalars, or from the
    ``torch.stack`` that made the vector (another vector cannot tell; no device op either way)."""
    if items is not None:
        return {k for k, item in enumerate(items) if not item.requires_grad}
    fn = vector.grad_fn
    if fn is None or type(fn).__name__ != "StackBackward0":
        return set()
    edges = fn.next_functions
    if len(edges) != vector.shape[0]:
        return set()
    return {k for k, (node, _) in enumerate(edges) if node is None}


def _present_indices(
    present: Tensor | Sequence[bool] | None, num_tasks: int, device: torch.device
) -> Tensor | None:
    if present is None:
        return None
    mask = torch.as_tensor(present, dtype=torch.bool)
    if mask.shape != (num_tasks,):
        raise ValueError(f"`present` must have shape ({num_tasks},), got {tuple(mask.shape)}")
    idx = mask.cpu().nonzero().flatten()
    if idx.numel() == 0:
        raise ValueError("no task is present in this step")
    return idx.to(device)
