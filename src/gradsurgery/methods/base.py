"""The aggregation interface every multi-task method plugs into.

A method sees one training step's per-task information, :class:`TaskStep`, and returns an
:class:`Aggregation`: how to combine the task gradients of the *shared* parameters, and how to weight
each task's own gradient on its *task-specific* parameters.

There are three kinds, by what they need (``Method.requires``), cheapest first:

* :class:`LossWeighting` (``"losses"``): weights from the loss values alone (unitary scalarization,
  uncertainty weighting, DWA, RLW, FAMO). No per-task gradients are computed: the update is one
  backward pass of ``Σ_i w_i L_i``.
* :class:`GramianWeighting` (``"gramian"``): weights from the ``m × m`` Gramian ``K = J Jᵀ`` (PCGrad,
  MGDA, IMTL-G, CAGrad, Nash-MTL, UPGrad, ...). The update on shared parameters is ``wᵀ J``; the method
  never touches ``J`` and allocates ``O(m²)`` memory of its own.
* :class:`JacobianAggregator` (``"jacobian"``): methods that act entry-wise on ``J`` (GradDrop); they
  return the update itself.

Methods are ``torch.nn.Module``\\ s so that learnable weights (uncertainty weighting) are parameters a
user can hand to an optimizer, and running statistics live in buffers: ``state_dict`` /
``load_state_dict`` carry all of a method's state.

Epoch boundaries. A method whose state advances per epoch rather than per step (DWA) gets
:meth:`Method.end_epoch` from the training loop at every epoch boundary: the supervised
:class:`~gradsurgery.experiments.trainer.Trainer` at the end of every pass over the data, the MT-SAC
runner (:mod:`gradsurgery.rl.runner`, through ``MTSAC.end_epoch``) at every episode boundary of the
vector env (every ``max_episode_steps`` steps). A method that would not work without them says so
with :attr:`Method.needs_epoch_boundaries`; a loop that never calls :meth:`Method.end_epoch` refuses
it with :func:`refuse_without_epoch_boundaries` instead of silently training with constant weights.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from gradsurgery.jacobian import TaskJacobian

__all__ = [
    "Aggregation",
    "GramianWeighting",
    "JacobianAggregator",
    "LossWeighting",
    "Method",
    "Requirement",
    "SingleTask",
    "TaskStep",
    "refuse_without_epoch_boundaries",
]

Requirement = Literal["losses", "gramian", "jacobian"]
SingleTask = Literal["exact", "positive"]


@dataclass(frozen=True)
class TaskStep:
    """What a method may look at in one step. Only tasks present in the step are included.

    Attributes:
        losses: ``(m,)`` detached loss values of the present tasks.
        tasks: ``(m,)`` long tensor: index of each present task among all ``num_tasks`` tasks
            (stateful methods key their per-task state by it).
        num_tasks: the total number of tasks ``M ≥ m``.
        step: how many updates were made before this one (0 at the first).
        gramian: ``(m, m)`` Gramian of the shared parameters' task gradients, when computed.
        jacobian: the per-task gradients themselves, when the engine materializes them.
        approximate: True when ``gramian``/``jacobian`` are of a shared representation rather than
            of the shared parameters (MGDA-UB style).
        live_losses: the ``(m,)`` losses *with* their autograd graph, for loss-weighting methods
            that differentiate through it (GradNorm, gradient regularizers). Only given to methods
            with ``requires == "losses"``, before the backward pass; None otherwise.
        shared_params: the shared parameters, in the order of the Jacobian's blocks (when known).
        representation: the detached shared representation ``z`` when ``approximate`` (GradDrop's
            sign correction reads its values); None otherwise.
    """

    losses: Tensor
    tasks: Tensor
    num_tasks: int
    step: int
    gramian: Tensor | None = None
    jacobian: TaskJacobian | None = None
    approximate: bool = False
    live_losses: Tensor | None = None
    shared_params: Sequence[Tensor] | None = None
    representation: Tensor | None = None

    @property
    def m(self) -> int:
        return self.losses.shape[0]


@dataclass(frozen=True)
class Aggregation:
    """A method's answer.

    Attributes:
        weights: ``(m,)``: the shared parameters get ``wᵀ J``. ``None`` when ``update`` is given.
        task_specific_weights: ``(m,)``: task ``i``'s specific parameters get ``c_i ∇L_i``.
        update: parameter-shaped tensors for the shared parameters, for methods that do not reduce to
            a weighting of the rows of ``J``.
        regularizer: a scalar added to the objective: the ``log σ`` term of uncertainty weighting
            (it reaches the method's own parameters), or a penalty on the model (gradient cosine
            regularization). It is differentiated into the model's and the method's parameters.
    """

    task_specific_weights: Tensor
    weights: Tensor | None = None
    update: list[Tensor] | None = None
    regularizer: Tensor | None = None

    def __post_init__(self) -> None:
        if (self.weights is None) == (self.update is None):
            raise ValueError("an Aggregation has exactly one of `weights` and `update`")


class Method(nn.Module):
    """Base class of all multi-task methods. Subclasses set ``requires`` and implement ``forward``."""

    requires: ClassVar[Requirement]
    #: Short registry name, set by :func:`gradsurgery.methods.registry.register`.
    name: ClassVar[str] = ""

    # What the method claims, checked for every registered method by the conformance suite
    # (tests/methods/test_conformance.py). A method without one of these properties says so here.
    #: Reordering the tasks (their losses, gradients and state alike) leaves the update unchanged.
    #: False for methods that single out a task or draw random numbers by task position.
    permutation_equivariant: ClassVar[bool] = True
    #: ``k`` such that scaling every task gradient by ``s > 0`` (the loss values unchanged) scales
    #: the update by ``s**k``; None: no such law.
    scale_degree: ClassVar[int | None] = 1
    #: With a single task, the update is that task's gradient (``"exact"``) or a positive multiple
    #: of it, on the shared and on the task's own parameters (``"positive"``); None: no claim
    #: (a method with memory of past gradients, DB-MTL: the conformance suite then checks only
    #: that the update is finite).
    single_task: ClassVar[SingleTask | None] = "exact"
    #: Why the method cannot be a part of a composition ``"weighting+gradient"``
    #: (:class:`~gradsurgery.methods.composed.Composed`); None: it can.
    not_composable: ClassVar[str | None] = None

    @property
    def host_syncs(self) -> int | None:
        """The host synchronisations one step of this method makes by design (0 here; the Gramian
        solvers that solve on the host make one, see :mod:`gradsurgery.methods.host`; None: a
        data-dependent number, documented by the method)."""
        return 0

    @property
    def needs_epoch_boundaries(self) -> bool:
        """Whether the method only works when the loop calls :meth:`end_epoch` at its epoch
        boundaries (False here; DWA without ``epoch_length``: its weights change only there)."""
        return False

    def end_epoch(self) -> None:
        """The loop's epoch boundary: the trainer calls it at the end of every epoch, the MT-SAC
        runner at every episode boundary (see the module docstring). No-op by default."""

    @abstractmethod
    def forward(self, step: TaskStep) -> Aggregation: ...

    def bind(self, num_tasks: int, device: torch.device | str | None = None) -> None:
        """Called with the number of tasks as soon as it is known, before the first step, so that
        methods with per-task parameters can create them before the user builds an optimizer.
        Stateless methods ignore it."""

    def __call__(self, step: TaskStep) -> Aggregation:  # typed alias of nn.Module.__call__
        out: Aggregation = super().__call__(step)
        return out


def refuse_without_epoch_boundaries(method: Method, loop: str) -> None:
    """Raise ``ValueError`` when ``method`` needs epoch boundaries: for a loop (named by ``loop``)
    that never calls :meth:`Method.end_epoch`.

    Example:
        >>> from gradsurgery.methods import DynamicWeightAverage
        >>> refuse_without_epoch_boundaries(DynamicWeightAverage(epoch_length=10), "my loop")
        >>> refuse_without_epoch_boundaries(DynamicWeightAverage(), "my loop")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: DynamicWeightAverage needs epoch boundaries (end_epoch()), which my loop never signals; ...
    """
    if method.needs_epoch_boundaries:
        raise ValueError(
            f"{type(method).__name__} needs epoch boundaries (end_epoch()), which {loop} never "
            f"signals; without them its weights never change. Give it a fixed epoch length "
            f"(DWA: epoch_length=N steps) or call end_epoch() from the loop"
        )


class LossWeighting(Method):
    """A method whose weights depend only on loss values; shared and specific parameters alike get
    ``∇(Σ_i w_i L_i)``."""

    requires: ClassVar[Requirement] = "losses"

    @abstractmethod
    def loss_weights(self, step: TaskStep) -> Tensor:
        """``(m,)`` weights of the present tasks' losses."""

    def forward(self, step: TaskStep) -> Aggregation:
        w = self.loss_weights(step)
        return Aggregation(weights=w, task_specific_weights=w)


class GramianWeighting(Method):
    """A method whose shared update is ``wᵀ J`` with ``w`` a function of the Gramian (and losses).

    Task-specific parameters get their own task's gradient with the weights of
    :meth:`task_specific_weights` (1 by default: each head trains on its own loss, as in the PCGrad
    paper).
    """

    requires: ClassVar[Requirement] = "gramian"

    @abstractmethod
    def gramian_weights(self, gramian: Tensor, step: TaskStep) -> Tensor:
        """``(m,)`` weights from the ``(m, m)`` Gramian."""

    def forward(self, step: TaskStep) -> Aggregation:
        if step.gramian is None:
            raise ValueError(f"{type(self).__name__} needs the Gramian of the task gradients")
        w = self.gramian_weights(step.gramian, step)
        return Aggregation(weights=w, task_specific_weights=self.task_specific_weights(step))

    def task_specific_weights(self, step: TaskStep) -> Tensor:
        """``(m,)`` weights of each task's own gradient on its task-specific parameters."""
        return torch.ones_like(step.losses)


class JacobianAggregator(Method):
    """A method that needs the per-task gradients themselves and returns the shared update."""

    requires: ClassVar[Requirement] = "jacobian"

    @abstractmethod
    def aggregate(self, jacobian: TaskJacobian, step: TaskStep) -> list[Tensor]:
        """Parameter-shaped update tensors, one per block of ``jacobian``."""

    def forward(self, step: TaskStep) -> Aggregation:
        if step.jacobian is None:
            raise ValueError(f"{type(self).__name__} needs the per-task gradients (Jacobian)")
        update = self.aggregate(step.jacobian, step)
        return Aggregation(update=update, task_specific_weights=self.task_specific_weights(step))

    def task_specific_weights(self, step: TaskStep) -> Tensor:
        """``(m,)`` weights of each task's own gradient on its task-specific parameters."""
        return torch.ones_like(step.losses)
