"""FAMO: Fast Adaptive Multitask Optimization.

Liu, Liu, Ye, Stone, Liu. "FAMO: Fast Adaptive Multitask Optimization". NeurIPS 2023; checked against
the official code (Cranial-XIX/FAMO: ``famo.py`` and ``methods/weight_methods.py``).

Rule. FAMO keeps task logits ``ξ`` (one per task, 0 at the start) and ``z = softmax(ξ)``. With
``D_i = L_i − b_i + ε`` (``b`` the per-task lower bounds ``min_losses``, 0 by default; ``ε = 1e-8``)
the model's update direction is

    d = c Σ_i (z_i / D_i) ∇L_i,        c = (Σ_j z_j / D_j)^{-1},

the gradient of ``c Σ_i z_i log D_i`` with ``c`` held constant: a loss weighting with weights
``w_i = c z_i / D_i`` (they sum to 1). After the model step, with the losses ``L'`` measured at the
new parameters, ``δ_i = log D_i − log D'_i`` and the logits take one step of Adam (lr ``β``, L2
weight decay ``γ``, as ``torch.optim.Adam([ξ], lr=β, weight_decay=γ)`` in the official code) on the
gradient ``∇_ξ (z(ξ)ᵀ δ) = z ⊙ (δ − zᵀδ)``. Everything is O(1) in the model size: no per-task
gradient is ever computed.

Where the new losses come from:

* ``famo.update(new_losses)`` — the official code's way: after ``optimizer.step()``, one extra
  forward pass on the *same* batch under ``torch.no_grad()``, then ``update``.
* ``auto_update=True`` (default): when ``update`` was not called, the next step's losses (another
  batch) serve as ``L'`` — no extra forward pass, at the price of batch noise in ``δ``. The update is
  applied at the start of the next call, before its weights are computed.

Choices the paper leaves open, and ours:

* ``γ`` defaults to 1e-3 (the paper's Algorithm 2 and LibMTL); the official ``famo.py`` example uses
  1e-2 and its ``weight_methods.py`` 1e-5. ``β = 0.025`` everywhere.
* ``D_i`` is clamped at ``ε`` (a loss below its bound would make ``log D`` undefined); a zero loss
  gives ``D = ε``, no NaN.
* Absent tasks. ``z`` is the softmax over the present tasks' logits; the logit update uses the
  tasks present both when the weights were computed and in ``L'`` (a softmax over them), and the
  Adam moments and bias corrections are per task, so an absent task's logit and moments do not
  move. With every task always present this is exactly ``torch.optim.Adam``.
* ``update`` accepts the ``(m,)`` losses of the tasks of the last step, or the ``(M,)`` vector of all
  tasks (entries of tasks absent from the last step are ignored).
* Gradient accumulation (several ``backward`` calls per optimizer step): each call counts as a
  step for ``auto_update``; use ``auto_update=False`` and call :meth:`FAMO.update` once per
  optimizer step instead.
* The MTRL file of the official repository multiplies by ``c`` instead of dividing; we follow the
  paper and ``famo.py`` (weights sum to 1).

Example (two tasks, ξ = 0: w ∝ 1/L):
    >>> import torch
    >>> from gradsurgery.methods.base import TaskStep
    >>> famo = FAMO(num_tasks=2)
    >>> step = TaskStep(losses=torch.tensor([1.0, 3.0]), tasks=torch.arange(2), num_tasks=2, step=0)
    >>> famo(step).weights
    tensor([0.7500, 0.2500])
    >>> famo.update(torch.tensor([0.5, 2.7]))   # task 0 improved more: its logit goes down
    >>> bool(famo.logits[0] < famo.logits[1])
    True
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from gradsurgery.methods.base import Aggregation, LossWeighting, TaskStep
from gradsurgery.methods.masked_adam import masked_adam_step
from gradsurgery.methods.registry import register
from gradsurgery.methods.task_state import TaskStateMixin, per_task

__all__ = ["FAMO"]


@register(
    "famo",
    paper="Liu et al., FAMO: Fast Adaptive Multitask Optimization, NeurIPS 2023",
    rule="w_i = c z_i/L_i, z = softmax(ξ), c = 1/Σ z_j/L_j; ξ ← Adam step on ∇_ξ z(ξ)ᵀ(log L − log L')",
)
class FAMO(TaskStateMixin, LossWeighting):
    """FAMO (see the module docstring).

    Args:
        num_tasks: the number of tasks (None: taken from the first step).
        lr: ``β``, the logits' Adam learning rate.
        weight_decay: ``γ``, the logits' L2 regularisation.
        min_losses: lower bounds ``b`` of the losses (a scalar or one per task).
        eps: ``ε`` added to ``L − b``.
        auto_update: use the next step's losses when :meth:`update` was not called.
        betas, adam_eps: the logits' Adam hyperparameters (torch defaults).
    """

    _task_state_names = (
        "logits",
        "exp_avg",
        "exp_avg_sq",
        "adam_steps",
        "min_losses",
        "prev_losses",
        "prev_present",
    )

    def __init__(
        self,
        num_tasks: int | None = None,
        lr: float = 0.025,
        weight_decay: float = 1e-3,
        min_losses: float | Tensor = 0.0,
        eps: float = 1e-8,
        auto_update: bool = True,
        betas: tuple[float, float] = (0.9, 0.999),
        adam_eps: float = 1e-8,
    ) -> None:
        super().__init__()
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be non-negative, got {weight_decay}")
        if eps <= 0:
            raise ValueError(f"eps must be positive, got {eps}")
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.eps = float(eps)
        self.auto_update = auto_update
        self.betas = (float(betas[0]), float(betas[1]))
        self.adam_eps = float(adam_eps)
        self._init_min = torch.as_tensor(min_losses, dtype=torch.float32).detach().clone()
        self.pending = False  # losses of a weighted step are waiting for their update
        if self._init_min.dim() == 1 and num_tasks is None:
            num_tasks = self._init_min.shape[0]
        self._init_task_state(num_tasks)

    def _allocate(self, num_tasks: int, device: torch.device | None) -> None:
        self.logits = per_task(num_tasks, device)
        self.exp_avg = per_task(num_tasks, device)
        self.exp_avg_sq = per_task(num_tasks, device)
        self.adam_steps = torch.zeros(num_tasks, dtype=torch.long, device=device)
        if self._init_min.dim() == 1 and self._init_min.shape[0] != num_tasks:
            raise ValueError(f"{self._init_min.shape[0]} min_losses for {num_tasks} tasks")
        self.min_losses = (
            self._init_min.to(dtype=torch.float32, device=device).expand(num_tasks).clone()
        )
        self.prev_losses = per_task(num_tasks, device)
        self.prev_present = torch.zeros(num_tasks, dtype=torch.bool, device=device)

    def set_min_losses(self, min_losses: float | Tensor) -> None:
        """Set the per-task lower bounds ``b`` (a scalar or one value per task)."""
        if self.num_tasks is None:
            self._init_min = torch.as_tensor(min_losses, dtype=torch.float32).detach().clone()
            return
        assert self.min_losses is not None
        value = torch.as_tensor(min_losses, dtype=torch.float32, device=self.min_losses.device)
        self.min_losses.copy_(value.detach().expand(self.num_tasks))

    def _prepare(self, step: TaskStep) -> None:
        self._bind_to_step(step)
        assert self.logits is not None
        if self.logits.device != step.losses.device:
            self.to(step.losses.device)

    def _log_gap(self, losses: Tensor) -> Tensor:
        """``log D = log(max(L − b, 0) + ε)`` for all ``M`` tasks (float32)."""
        assert self.min_losses is not None
        return ((losses - self.min_losses).clamp_min(0) + self.eps).log()

    def _full(self, step: TaskStep) -> tuple[Tensor, Tensor]:
        """The ``(M,)`` loss vector (zeros for absent tasks) and the ``(M,)`` presence mask."""
        assert self.num_tasks is not None
        losses = torch.zeros(self.num_tasks, device=step.losses.device)
        losses[step.tasks] = step.losses.detach().float()
        present = torch.zeros(self.num_tasks, dtype=torch.bool, device=step.losses.device)
        present[step.tasks] = True
        return losses, present

    def loss_weights(self, step: TaskStep) -> Tensor:
        """``w_i = c z_i / D_i`` over the present tasks (does not change the state)."""
        self._prepare(step)
        assert self.logits is not None and self.min_losses is not None
        z = torch.softmax(self.logits[step.tasks], dim=0)
        gap = (step.losses.detach().float() - self.min_losses[step.tasks]).clamp_min(0) + self.eps
        ratio = z / gap
        return (ratio / ratio.sum()).to(step.losses.dtype)

    def forward(self, step: TaskStep) -> Aggregation:
        self._prepare(step)
        losses, present = self._full(step)
        if self.pending and self.auto_update:
            self._update_logits(losses, present)
        agg = super().forward(step)
        assert self.prev_losses is not None and self.prev_present is not None
        self.prev_losses.copy_(losses)
        self.prev_present.copy_(present)
        self.pending = True
        return agg

    @torch.no_grad()
    def update(self, new_losses: Tensor) -> None:
        """Update the logits from the losses measured after the model step.

        Args:
            new_losses: ``(m,)`` losses of the last step's tasks, in their order, or ``(M,)``
                losses of all tasks; detached or not (no graph is kept).
        """
        if not self.pending:
            raise RuntimeError("FAMO.update() needs a weighted step first (or was already called)")
        assert self.prev_present is not None and self.num_tasks is not None
        new_losses = torch.as_tensor(new_losses).detach().float().to(self.prev_present.device)
        present = self.prev_present.clone()
        if new_losses.dim() != 1:
            raise ValueError(f"new_losses must be a vector, got shape {tuple(new_losses.shape)}")
        if new_losses.shape[0] == self.num_tasks:
            full = new_losses
        else:
            idx = present.nonzero().flatten()
            if new_losses.shape[0] != idx.shape[0]:
                raise ValueError(
                    f"expected {idx.shape[0]} losses (the last step's tasks) or {self.num_tasks}, "
                    f"got {new_losses.shape[0]}"
                )
            full = torch.zeros_like(self.prev_losses).index_copy_(0, idx, new_losses)
        self._update_logits(full, present)

    @torch.no_grad()
    def _update_logits(self, new_losses: Tensor, new_present: Tensor) -> None:
        """One Adam step of the logits with ``δ = log D(prev) − log D(new)`` on the common tasks."""
        assert self.prev_losses is not None and self.prev_present is not None
        assert self.logits is not None and self.exp_avg is not None
        assert self.exp_avg_sq is not None and self.adam_steps is not None
        both = self.prev_present & new_present
        delta = self._log_gap(self.prev_losses) - self._log_gap(new_losses)
        delta = torch.where(both, delta, torch.zeros_like(delta))
        z = torch.softmax(torch.where(both, self.logits, float("-inf")), dim=0)
        z = torch.where(both, z, torch.zeros_like(z))  # also clears the NaN of an empty set
        grad = z * (delta - (z * delta).sum())  # ∇_ξ zᵀδ, the softmax's vector-Jacobian product
        masked_adam_step(
            self.logits,
            grad,
            both,
            self.exp_avg,
            self.exp_avg_sq,
            self.adam_steps,
            lr=self.lr,
            betas=self.betas,
            eps=self.adam_eps,
            weight_decay=self.weight_decay,
        )
        self.pending = False

    def get_extra_state(self) -> dict[str, Any]:
        return {"pending": self.pending}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.pending = bool(state["pending"])

    def extra_repr(self) -> str:
        return (
            f"lr={self.lr}, weight_decay={self.weight_decay}, eps={self.eps}, "
            f"auto_update={self.auto_update}"
        )
