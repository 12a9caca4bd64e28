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
:mod:`gradsurgery.models`) declares it itself. Otherwise the first step with at least two tasks decides: a parameter that receives
a nonzero gradient from two or more tasks is shared (with ``representation=``: a parameter upstream
of the representation is shared).

Errors. A NaN or infinite loss, or gradient, raises :class:`~gradsurgery.errors.NonFiniteError`
naming the task and leaves ``.grad`` untouched. That check costs one host synchronisation per
step; ``check_finite="lazy"`` reads its result one step later instead (no synchronisation; the
error then comes one step late, see :mod:`gradsurgery.finite`), and ``check_finite=False`` turns it
off: do that under a float16 ``GradScaler``, which must see the infs to skip the step.

Host synchronisations. With a task-balanced or task-sorted batch whose counts the caller knows
(``layout=TaskBatch.balanced(m, n)``), a loss-weighting step and the gradient engines issue none
(with ``check_finite="lazy"`` or ``False``); methods that solve a small problem on the Gramian read
it on the host once per step (their docstrings say so).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from gradsurgery.engines.graph import reachable_leaves
from gradsurgery.engines.per_task_gradients import PerTaskGradients
from gradsurgery.engines.representation import RepresentationJacobian
from gradsurgery.engines.shared_input import SharedInputJacobian
from gradsurgery.engines.task_partitioned import (
    Strategy,
    TaskBatch,
    TaskPartitionedJacobian,
    check_per_sample,
    function_key,
)
from gradsurgery.errors import LossShapeError
from gradsurgery.finite import CheckFinite, FiniteCheck
from gradsurgery.jacobian import TaskJacobian
from gradsurgery.methods.base import Aggregation, Method, TaskStep
from gradsurgery.methods.registry import create_method

if TYPE_CHECKING:
    from gradsurgery.diagnostics.monitor import TriadMonitor

__all__ = ["MultiTaskBackward", "StepResult"]

ParamsLike = nn.Module | Iterable[Tensor]


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
        **method_kwargs: Any,
    ) -> None:
        self.module = params if isinstance(params, nn.Module) else None
        self.params = _unique_trainable(params)
        if not self.params:
            raise ValueError("no trainable parameters were given")
        self.method = create_method(method, **method_kwargs)
        self._shared: list[bool] | None = None
        declared = getattr(params, "shared_parameters", None)
        if shared is None and callable(declared):
            shared = list(declared())  # a model that declares its own split
        if shared is not None:
            shared_ids = {id(p) for p in _unique_trainable(shared)}
            known = {id(p) for p in self.params}
            if not shared_ids <= known:
                raise ValueError("every shared parameter must also be in `params`")
            self._shared = [id(p) in shared_ids for p in self.params]
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
        losses: Tensor | Sequence[Tensor],
        *,
        representation: Tensor | None = None,
        present: Tensor | Sequence[bool] | None = None,
    ) -> StepResult:
        """Use instead of ``losses.sum().backward()`` for a shared-input batch.

        Args:
            losses: the ``M`` task losses: a list of scalars or an ``(M,)`` vector. Each task's
                gradient flows through its own graph only for a list and for ``torch.stack`` of
                the scalars; another vector is differentiated entry by entry through the op that
                made it, which also visits the other tasks' branches (with zero gradients).
            representation: the shared representation ``z`` that all heads read. When given, the
                Gramian is that of ``∂L_i/∂z`` (approximate, one trunk pass; MGDA-UB style).
            present: ``(M,)`` booleans; tasks marked False are left out of this step (their loss
                entries are ignored, whatever their value).
        """
        vector, items = _as_loss_vector(losses)
        num_tasks = self._resolve_num_tasks(vector.shape[0])
        tasks = _present_indices(present, num_tasks, vector.device)
        if tasks is None:
            tasks = torch.arange(num_tasks, device=vector.device)
        else:
            vector = vector.index_select(0, tasks)
            items = [items[k] for k in tasks.tolist()] if items is not None else None
        if not vector.requires_grad:
            raise ValueError("the losses do not require grad: nothing to differentiate")
        if not self.needs_task_gradients:
            return self._backward_weighted_sum(vector, tasks)
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
        groups = self._layout(task_ids, layout)
        groups.check_batch(batch)
        if not self.needs_task_gradients:
            per_sample = self._per_sample_losses(loss_fn, batch)
            check_per_sample(per_sample, groups.n)
            return self._backward_weighted_sum(groups.segment_means(per_sample), groups.tasks)
        if self._partitioned is None:
            self._partitioned = TaskPartitionedJacobian(self.module, self.strategy, self.compile)
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

    def flush(self) -> None:
        """Finish the checks still pending under ``check_finite="lazy"`` (raising
        :class:`~gradsurgery.errors.NonFiniteError` if one failed); a no-op otherwise."""
        self._finite.flush()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "num_tasks": self.num_tasks,
            "shared": list(self._shared) if self._shared is not None else None,
            "method": self.method.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
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
            raise LossShapeError(f"expected {self.num_tasks} task losses, got {m}")
        return m

    def _task_label(self, task: int) -> str:
        if self.task_names is not None:
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
        self._check(losses, tasks, [])
        agg = self.method(self._task_step(losses.detach(), tasks, None, None, False, live=losses))
        assert agg.weights is not None
        total = (agg.weights.to(losses.dtype) * losses).sum()
        if agg.regularizer is not None:
            total = total + agg.regularizer
        torch.autograd.backward(
            total
        )  # exactly loss.backward() of the weighted total: .grad wherever it reaches
        return self._finish(losses, tasks, agg, None, False)

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
        self._shared = grads.reached_by_several()
        return self._shared

    def _apply(self, grads: PerTaskGradients) -> StepResult:
        split = grads.split(self._shared_blocks(grads))
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
        return self._finish(losses, tasks, agg, gramian, split.approximate)

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


def _as_loss_vector(losses: Tensor | Sequence[Tensor]) -> tuple[Tensor, list[Tensor] | None]:
    """The ``(M,)`` loss vector, and the individual scalar losses when given as a sequence."""
    items = None
    if not isinstance(losses, Tensor):
        items = list(losses)
        for k, item in enumerate(items):
            if not isinstance(item, Tensor) or item.numel() != 1:
                raise LossShapeError(f"loss {k} is not a scalar tensor")
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
