"""STCH: smooth Tchebycheff scalarization of the log-normalized losses, after a warm-up.

Lin, Zhang, Yang, Liu, Wang, Zhang. "Smooth Tchebycheff Scalarization for Multi-Objective
Optimization". ICML 2024 (arXiv:2402.19078). The multi-task rule here is the one of LibMTL's
``LibMTL/weighting/STCH.py`` (checked; its docstring says it is modified from the authors' code,
``Xi-L/STCH``, ``STCH_MTL``, which was not checked here), with LibMTL's defaults (``config.py``:
``STCH_mu = 1.0``, ``STCH_warmup_epoch = 4``).

Rule. Tchebycheff scalarization minimizes the largest (weighted, shifted) objective; STCH replaces
the max by its smooth log-sum-exp upper bound with smoothing ``μ > 0``. In multi-task learning the
objectives are the log losses normalized by a reference point ``z`` (``z_i``: task ``i``'s mean
loss over one warm-up epoch, LibMTL's ``nadir_vector``), ``ℓ_i = log(L_i / z_i + ε)``, and the
update is the gradient of

    m · μ · log Σ_i exp(ℓ_i / μ)      (→ m · max_i ℓ_i as μ → 0; in between max ≤ ·/m ≤ max + μ log m),

i.e. the loss weighting ``Δθ = ∇ Σ_i w_i L_i`` with

    w_i = m · p_i / (L_i + ε z_i),      p = softmax(ℓ / μ),

evaluated at the step's loss values (``p`` sums to 1; as ``μ → 0`` it tends to the one-hot of the
largest ``ℓ_i``). Epochs ``e`` are counted from 0; with ``W = warmup_epochs``:

* ``e < W``: the warm-up minimizes ``Σ_i log(L_i + ε)``: ``w_i = 1 / (L_i + ε)``;
* ``e = W``: the same, and the losses are averaged per task into ``z``;
* ``e > W``: STCH with that ``z`` (fixed from then on).

Choices the paper leaves open, and ours:

* ``ε = 1e-20`` inside the logs, as LibMTL (``eps``). The losses must be positive (their logs
  are taken), as for any log-loss method.
* Epochs: closed every ``epoch_length`` steps (calls of the method) or when the loop calls
  :meth:`STCH.end_epoch` (as DWA; without ``epoch_length`` the method
  ``needs_epoch_boundaries``). Without epoch boundaries the method stays in the warm-up.
* ``m`` is the number of tasks present in the step (LibMTL: all tasks, always present), and the
  softmax runs over them. ``z_i`` averages the steps of epoch ``W`` where task ``i`` was present;
  a task never present then gets ``z_i = 1`` (its log loss unnormalized).
* The weights are computed in float32 (float64 for float64 losses) on the losses' device, from the
  detached loss values: no host synchronisation. The state (``nadir_sum``, ``nadir_count``, the
  epoch counters) is in ``state_dict``.

Example (after the warm-up, z = (1, 1), losses (e, 1), μ = 1: p = softmax(1, 0)):
    >>> import math, torch
    >>> p = torch.softmax(torch.tensor([1.0, 0.0]), 0)
    >>> w = stch_weights(torch.tensor([math.e, 1.0]), torch.ones(2), mu=1.0)
    >>> torch.allclose(w, 2 * p / torch.tensor([math.e, 1.0]))
    True
"""

from __future__ import annotations

import torch
from torch import Tensor

from gradsurgery.methods.base import Aggregation, LossWeighting, TaskStep
from gradsurgery.methods.epochs import EpochCounter
from gradsurgery.methods.registry import register
from gradsurgery.methods.task_state import TaskStateMixin, per_task

__all__ = ["STCH", "stch_objective", "stch_weights"]


def stch_objective(losses: Tensor, nadir: Tensor, mu: float, eps: float = 1e-20) -> Tensor:
    """``μ log Σ_i exp(log(L_i/z_i + ε) / μ)`` (without the factor ``m``)."""
    return mu * torch.logsumexp(torch.log(losses / nadir + eps) / mu, dim=0)


def stch_weights(losses: Tensor, nadir: Tensor, mu: float, eps: float = 1e-20) -> Tensor:
    """``(m,)`` loss weights ``w_i = ∂(m · stch_objective)/∂L_i = m p_i / (L_i + ε z_i)``."""
    p = torch.softmax(torch.log(losses / nadir + eps) / mu, dim=0)
    return losses.shape[0] * p / (losses + eps * nadir)


@register(
    "stch",
    paper="Lin et al., Smooth Tchebycheff Scalarization for Multi-Objective Optimization, ICML 2024",
    rule="after a log-loss warm-up: minimize m·μ·log Σ exp(log(L_i/z_i)/μ), z the warm-up mean loss",
)
class STCH(EpochCounter, TaskStateMixin, LossWeighting):
    """Smooth Tchebycheff scalarization (see the module docstring).

    Args:
        mu: smoothing ``μ > 0`` (LibMTL: 1.0).
        warmup_epochs: ``W``, epochs of log-loss training before ``z`` is measured (LibMTL: 4).
        epoch_length: steps per epoch; None to close epochs only with :meth:`end_epoch`.
        eps: ``ε`` inside the logs (LibMTL: 1e-20).
        num_tasks: the number of tasks (None: taken from the first step).
    """

    #: the weights are positive: ``1/L`` in the warm-up, ``m p / L`` after it
    single_task = "positive"

    _task_state_names = ("nadir_sum", "nadir_count")
    nadir_sum: Tensor | None
    nadir_count: Tensor | None

    def __init__(
        self,
        mu: float = 1.0,
        warmup_epochs: int = 4,
        epoch_length: int | None = None,
        eps: float = 1e-20,
        num_tasks: int | None = None,
    ) -> None:
        super().__init__()
        if mu <= 0:
            raise ValueError(f"mu must be positive, got {mu}")
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be non-negative, got {warmup_epochs}")
        if eps < 0:
            raise ValueError(f"eps must be non-negative, got {eps}")
        self.mu = float(mu)
        self.warmup_epochs = int(warmup_epochs)
        self.eps = float(eps)
        self._init_epochs(epoch_length)
        self._init_task_state(num_tasks)

    def _allocate(self, num_tasks: int, device: torch.device | None) -> None:
        self.nadir_sum = per_task(num_tasks, device)
        self.nadir_count = per_task(num_tasks, device)

    def _prepare(self, step: TaskStep) -> None:
        self._bind_to_step(step)
        assert self.nadir_sum is not None and self.nadir_count is not None
        if self.nadir_sum.device != step.losses.device:
            self.to(step.losses.device)
        if step.losses.dtype == torch.float64 and self.nadir_sum.dtype != torch.float64:
            self.nadir_sum = self.nadir_sum.double()
            self.nadir_count = self.nadir_count.double()

    @property
    def warming_up(self) -> bool:
        """Whether the current epoch trains on the log losses (``e ≤ W``)."""
        return self.epochs <= self.warmup_epochs

    def nadir(self, step: TaskStep) -> Tensor:
        """The present tasks' reference ``z`` (the mean loss of epoch ``W``; 1 where unseen)."""
        self._prepare(step)
        assert self.nadir_sum is not None and self.nadir_count is not None
        count = self.nadir_count[step.tasks]
        seen = count > 0
        return torch.where(seen, self.nadir_sum[step.tasks] / count.clamp_min(1), 1.0)

    def loss_weights(self, step: TaskStep) -> Tensor:
        self._prepare(step)
        assert self.nadir_sum is not None
        losses = step.losses.detach().to(self.nadir_sum.dtype)
        if self.warming_up:
            w = 1.0 / (losses + self.eps)
        else:
            w = stch_weights(losses, self.nadir(step), self.mu, self.eps)
        return w.to(step.losses.dtype)

    def forward(self, step: TaskStep) -> Aggregation:
        agg = super().forward(step)
        self._record(step)
        return agg

    def _record(self, step: TaskStep) -> None:
        assert self.nadir_sum is not None and self.nadir_count is not None
        if self.epochs == self.warmup_epochs:
            losses = step.losses.detach().to(self.nadir_sum.dtype)
            self.nadir_sum.index_add_(0, step.tasks, losses)
            self.nadir_count.index_add_(0, step.tasks, torch.ones_like(losses))
        self._count_step()

    def end_epoch(self) -> None:
        """Close the current epoch (the one of index ``W`` fixes ``z``)."""
        self._next_epoch()

    def extra_repr(self) -> str:
        return f"mu={self.mu}, warmup_epochs={self.warmup_epochs}, epoch_length={self.epoch_length}"
