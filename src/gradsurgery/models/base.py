"""The interface every multi-task model in :mod:`gradsurgery.models` implements.

A multi-task model is a plain :class:`torch.nn.Module` that also says which of its parameters are
*shared* between tasks and which belong to one task:

* :meth:`MultiTaskModel.shared_parameters` and :meth:`MultiTaskModel.task_specific_parameters`
  partition :meth:`~torch.nn.Module.parameters`: every parameter is in exactly one of the two, in
  ``parameters()`` order. Pass the first to ``MultiTaskBackward(model, method,
  shared=model.shared_parameters())`` rather than letting it infer the split from one step's
  gradients (inference calls a parameter shared when two tasks' gradients reach it, which is not
  always the architecture's intent, e.g. for routed blocks that one task happened to use).
* ``task_specific_parameters(i)`` lists task ``i``'s own parameters; the lists of all tasks are
  disjoint and together make ``task_specific_parameters()``.

Two call conventions (the class attribute :attr:`MultiTaskModel.task_conditioned` tells which):

* shared-input models, ``model(x) -> [y_1, ..., y_m]``: every sample is labelled for every task
  (hard parameter sharing, cross-stitch, MTAN, MMoE). Models that have one shared representation
  ``z`` read by all task heads (:attr:`MultiTaskModel.provides_representation`) also take
  ``model(x, return_representation=True) -> ([y_1, ..., y_m], z)``: hand ``z`` to
  ``MultiTaskBackward.backward(losses, representation=z)`` for the approximate, one-trunk-pass
  engine of MGDA-UB (Sener & Koltun, 2018).
* task-conditioned models, ``model(x, task_ids) -> y``: one output per sample, for
  task-partitioned batches (each sample belongs to one task; task-conditioned network, routing
  network). They run under ``torch.func.vmap`` (no ``F.one_hot``, no ``.item()``, no Python
  control flow on data), so ``MultiTaskBackward.backward_partitioned`` gets all ``m`` task
  gradients for about the cost of one backward pass.

Two per-step hooks let a model take part in its own training without the trainer knowing it (both
no-ops by default; :class:`~gradsurgery.experiments.Trainer` calls them for every model, on either
batch layout):

* :meth:`MultiTaskModel.step_inputs` — extra inputs of one training batch, drawn once before its
  forward passes and passed after the regular ones (``model(x, *inputs)``,
  ``model(x, task_ids, *inputs)``; the task-partitioned loss gets them as
  ``loss_fn(model, x, y, task_ids, *inputs)``), so that discrete choices are an input of the
  ``vmap``-ed forward pass, not a branch in it. A routing network samples its routes here.
* :meth:`MultiTaskModel.after_backward` — an auxiliary update after the task losses' backward
  pass and before the optimizer step, e.g. gradients of parameters that the task losses do not
  train. A routing network trains its routers by REINFORCE here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import ClassVar

from torch import Tensor, nn

__all__ = ["MultiTaskModel"]

Owned = nn.Module | Tensor


def _params_of(items: Iterable[Owned]) -> set[int]:
    ids: set[int] = set()
    for item in items:
        if isinstance(item, nn.Module):
            ids.update(id(p) for p in item.parameters())
        else:
            ids.add(id(item))
    return ids


class MultiTaskModel(nn.Module):
    """Base class: a module with ``num_tasks`` and a shared / task-specific parameter split.

    Subclasses set ``self.num_tasks`` and implement :meth:`_shared_members` (modules or parameters
    that are shared) and :meth:`_task_members` (those that belong to one task). Every parameter not
    listed as shared is task-specific; a parameter listed as shared is shared even when it also
    appears in a task's list.
    """

    #: ``forward(x, task_ids)`` with one output per sample (task-partitioned batches).
    task_conditioned: ClassVar[bool] = False
    #: ``forward(x, return_representation=True)`` returns ``(outputs, z)``.
    provides_representation: ClassVar[bool] = False

    num_tasks: int

    # -------------------------------------------------------------- to implement
    def _shared_members(self) -> Iterable[Owned]:
        raise NotImplementedError

    def _task_members(self, task: int) -> Iterable[Owned]:
        raise NotImplementedError

    # -------------------------------------------------------------- public
    def shared_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters shared between tasks, in ``parameters()`` order."""
        shared = _params_of(self._shared_members())
        return (p for p in self.parameters() if id(p) in shared)

    def task_specific_parameters(self, task: int | None = None) -> Iterator[nn.Parameter]:
        """Every non-shared parameter (``task=None``) or task ``task``'s own ones."""
        shared = _params_of(self._shared_members())
        if task is None:
            return (p for p in self.parameters() if id(p) not in shared)
        if not 0 <= task < self.num_tasks:
            raise IndexError(f"task must lie in [0, {self.num_tasks}), got {task}")
        own = _params_of(self._task_members(task)) - shared
        return (p for p in self.parameters() if id(p) in own)

    def num_parameters(self) -> dict[str, int]:
        """Element counts: ``{"total", "shared", "task_specific"}``."""
        shared = sum(p.numel() for p in self.shared_parameters())
        specific = sum(p.numel() for p in self.task_specific_parameters())
        return {"total": shared + specific, "shared": shared, "task_specific": specific}

    # -------------------------------------------------------------- training hooks
    def step_inputs(self, task_ids: Tensor | None) -> tuple[Tensor, ...]:
        """Extra inputs of one training step's forward passes (default: none).

        Called once per training batch before its forward passes; the result is passed to them
        after the regular inputs and to :meth:`after_backward`.

        Args:
            task_ids: ``(n,)`` each sample's task (task-partitioned batches); ``None`` for
                shared-input batches.
        """
        return ()

    def after_backward(
        self,
        losses: Callable[[], Tensor],
        task_ids: Tensor | None,
        inputs: tuple[Tensor, ...],
    ) -> None:
        """An auxiliary update after the task losses' backward pass, before the optimizer step
        (default: nothing). Gradients it accumulates into ``.grad`` are applied by that step.

        Args:
            losses: returns the batch's losses, without gradient, at the parameters of the
                backward pass: ``(n,)`` per sample for task-partitioned batches (computed again
                when called, with the same ``inputs``), ``(m,)`` per task for shared-input ones.
                Call it only if needed.
            task_ids: as given to :meth:`step_inputs`.
            inputs: what :meth:`step_inputs` returned for this batch.
        """
