"""Uncertainty weighting: learnable per-task log-variances (homoscedastic uncertainty).

Kendall, Gal, Cipolla. "Multi-Task Learning Using Uncertainty to Weigh Losses for Scene Geometry and
Semantics". CVPR 2018.

Rule. Each task ``i`` has a learnable ``s_i = log σ_i²``; the objective is

    L_total = Σ_i a_i e^{−s_i} L_i + b_i s_i

minimised jointly over the model and the ``s_i``. The paper derives ``a_i = ½`` for a Gaussian
(regression) likelihood and ``a_i = 1`` for a softmax (classification) likelihood, both with the
``log σ_i = ½ s_i`` term, i.e. ``b_i = ½`` (eqs. 7 and 10). Public code differs: the MTAN code
(``im2im_pred/utils.py``), LibMTL's ``UW.py`` and Nash-MTL's port use ``½ e^{−s} L + ½ s`` for every
task (checked); the *simple* form ``a_i = b_i = 1`` (``e^{−s} L + s``, the regression form times 2)
is the one attributed to the authors' example notebook (not checked here).

Choices the paper leaves open, and ours:

* ``kinds=None`` (default): the simple form ``e^{−s_i} L_i + s_i`` for every task. With
  ``kinds=["regression", "classification", ...]`` (one per task): the paper's per-task forms
  (regression ``½ e^{−s} L + ½ s``, classification ``e^{−s} L + ½ s``).
* Initialisation ``s_i = init`` (0 by default: every weight starts at 1).
* The ``s_i`` of all ``num_tasks`` tasks form one ``nn.Parameter``; a step uses (and updates) only
  the present tasks' entries: weights ``a_i e^{−s_i}`` and regularizer ``Σ_{i present} b_i s_i``.
* The weights carry autograd history, so ``MultiTaskBackward`` back-propagates ``Σ w_i L_i`` and the
  regularizer into the ``s_i`` too: ``∂/∂s_i = b_i − a_i e^{−s_i} L_i`` (``1 − L_i`` at ``s = 0`` in
  the simple form). **Put the method's parameters in an optimizer** — the same one as the model or
  a separate one — or the ``s_i`` never move::

      mtl = MultiTaskBackward(model, UncertaintyWeighting(num_tasks=3))
      opt = torch.optim.Adam([*model.parameters(), *mtl.method.parameters()], lr=1e-3)

  Give ``num_tasks`` at construction so that the parameter exists when the optimizer is built;
  without it the parameter is created at the first step (with a warning).
* The parameter stays on the device it was created on; when the losses live elsewhere the weights are
  moved (differentiably) to the losses' device each step. Move the method with the model
  (``mtl.method.to(device)``) before building the optimizer to avoid that copy.

Example (``s = 0``: weights 1, and the gradient of ``s_i`` is ``1 − L_i``):
    >>> import torch
    >>> from gradsurgery.methods.base import TaskStep
    >>> uw = UncertaintyWeighting(num_tasks=2)
    >>> step = TaskStep(losses=torch.tensor([0.5, 3.0]), tasks=torch.arange(2), num_tasks=2, step=0)
    >>> agg = uw(step)
    >>> agg.weights
    tensor([1., 1.], grad_fn=<MulBackward0>)
    >>> ((agg.weights * step.losses).sum() + agg.regularizer).backward()
    >>> uw.log_vars.grad
    tensor([ 0.5000, -2.0000])
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from gradsurgery.methods.base import Aggregation, LossWeighting, TaskStep
from gradsurgery.methods.registry import register
from gradsurgery.methods.task_state import TaskStateMixin

__all__ = ["UncertaintyWeighting"]

Kind = Literal["regression", "classification"]


@register(
    "uw",
    paper="Kendall, Gal, Cipolla, Multi-Task Learning Using Uncertainty to Weigh Losses, CVPR 2018",
    rule="minimise Σ_i e^{−s_i} L_i + s_i over the model and the learnable s_i = log σ_i²",
)
class UncertaintyWeighting(TaskStateMixin, LossWeighting):
    """Uncertainty weighting with learnable log-variances ``log_vars`` (see the module docstring).

    Args:
        num_tasks: the number of tasks (recommended: creates the parameter now).
        init: initial value of every ``s_i``.
        kinds: None for the simple form ``e^{−s} L + s``; or one of ``"regression"`` /
            ``"classification"`` per task for the paper's forms (implies ``num_tasks``).
    """

    _task_state_names = ("log_vars",)

    def __init__(
        self,
        num_tasks: int | None = None,
        init: float = 0.0,
        kinds: Sequence[Kind] | None = None,
    ) -> None:
        super().__init__()
        self.init = float(init)
        self.num_tasks = None
        self.log_vars: nn.Parameter | None
        self.register_parameter("log_vars", None)
        self._kinds: list[Kind] | None = None
        if kinds is not None:
            kinds = list(kinds)
            bad = [k for k in kinds if k not in ("regression", "classification")]
            if bad:
                raise ValueError(f"kinds must be 'regression' or 'classification', got {bad}")
            if num_tasks is not None and num_tasks != len(kinds):
                raise ValueError(f"{len(kinds)} kinds for {num_tasks} tasks")
            num_tasks = len(kinds)
            self._kinds = kinds
        # a_i (on e^{-s_i} L_i) and b_i (on s_i); constants, moved with the module
        self.register_buffer("_loss_scale", torch.empty(0), persistent=False)
        self.register_buffer("_reg_scale", torch.empty(0), persistent=False)
        if num_tasks is not None:
            self.bind(num_tasks)

    def _allocate(self, num_tasks: int, device: torch.device | None) -> None:
        self.log_vars = nn.Parameter(torch.full((num_tasks,), self.init, device=device))
        if self._kinds is None:
            a, b = [1.0] * num_tasks, [1.0] * num_tasks
        else:
            a = [0.5 if k == "regression" else 1.0 for k in self._kinds]
            b = [0.5] * num_tasks
        self._loss_scale = torch.tensor(a, device=device)
        self._reg_scale = torch.tensor(b, device=device)

    def _bind_to_step(self, step: TaskStep) -> None:
        if self.num_tasks is None:
            warnings.warn(
                "UncertaintyWeighting created its log-variances at the first step: an optimizer "
                "built before now does not contain them. Pass num_tasks=... at construction.",
                stacklevel=4,
            )
        super()._bind_to_step(step)

    def _terms(self, step: TaskStep) -> tuple[Tensor, Tensor]:
        """``(weights, regularizer)`` of the present tasks, on the losses' device."""
        self._bind_to_step(step)
        assert self.log_vars is not None
        idx = step.tasks.to(self.log_vars.device)
        s = self.log_vars.index_select(0, idx)
        w = self._loss_scale.index_select(0, idx) * torch.exp(-s)
        reg = (self._reg_scale.index_select(0, idx) * s).sum()
        device = step.losses.device
        return w.to(device), reg.to(device)

    def loss_weights(self, step: TaskStep) -> Tensor:
        return self._terms(step)[0]

    def forward(self, step: TaskStep) -> Aggregation:
        w, reg = self._terms(step)
        return Aggregation(weights=w, task_specific_weights=w, regularizer=reg)

    def extra_repr(self) -> str:
        form = "simple" if self._kinds is None else f"kinds={self._kinds}"
        return f"num_tasks={self.num_tasks}, init={self.init}, {form}"
