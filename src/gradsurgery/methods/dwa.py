"""Dynamic Weight Average (DWA).

Liu, Johns, Davison. "End-to-End Multi-Task Learning with Attention". CVPR 2019 (MTAN), eq. (7);
checked against the authors' code (lorenmt/mtan, ``im2im_pred/utils.py``).

Rule. With ``L̄_i(e)`` the training loss of task ``i`` averaged over epoch ``e``, the weights during
epoch ``t`` are

    r_i = L̄_i(t−1) / L̄_i(t−2),      w_i(t) = m · exp(r_i / T) / Σ_j exp(r_j / T),

with temperature ``T = 2``, and ``w_i = 1`` during the first two epochs (no ratio yet). A task whose
loss falls more slowly gets a larger weight; the weights sum to ``m``.

The method sees steps, not epochs. It keeps per-task running sums of the losses in buffers and closes
an epoch either every ``epoch_length`` steps (calls of the method) or when the loop calls
:meth:`DynamicWeightAverage.end_epoch` (:meth:`Method.end_epoch
<gradsurgery.methods.base.Method.end_epoch>`, the loops' epoch-boundary hook). With neither, no epoch
ever closes and every weight stays 1: without ``epoch_length`` the method says
``needs_epoch_boundaries`` and a loop that never signals them refuses it
(:func:`~gradsurgery.methods.base.refuse_without_epoch_boundaries`).

What an epoch is, per loop:

* the supervised :class:`~gradsurgery.experiments.trainer.Trainer`: one pass over the training data
  (it calls ``end_epoch`` after the epoch's last batch);
* the MT-SAC runner (:mod:`gradsurgery.rl.runner`): one episode of the vector env, i.e.
  ``max_episode_steps`` vector steps (Meta-World's training episodes all end together, by the time
  limit); ``MTSAC.end_epoch`` closes the epoch of each of its methods (critic, actor, temperature)
  after the update of an episode boundary's step. ``L̄_i`` is then the mean of the last episode's
  update losses; the first learning episode after the warm-up may be partial.

Choices the paper leaves open, and ours:

* Per-task state, keyed by task index. ``L̄_i(e)`` averages the losses of the steps where task ``i``
  was present. An epoch in which a task never appeared leaves that task's history unchanged (its
  ratio compares the last two epochs in which it did appear).
* A task with fewer than two epochs of history has ``r_i = 1`` — so at the start every weight is
  exactly 1, as in the paper; later the softmax runs over the present tasks only and ``m`` is the
  number of present tasks.
* ``L̄_i(t−2) = 0`` gives ``r_i = 1`` (no rate can be measured) instead of a division by zero.
* The running sums are float64 when the losses are (float32 otherwise), on the losses' device.
* ``epoch_length`` counts calls of the method (one per optimizer step, as MultiTaskBackward calls
  it; with gradient accumulation every ``backward`` call counts). With both ``epoch_length`` and
  :meth:`end_epoch`, an explicit call closes the epoch early and restarts the step count.

Example (two closed epochs with losses (1, 1) then (0.5, 1): r = (0.5, 1)):
    >>> import torch
    >>> from gradsurgery.methods.base import TaskStep
    >>> dwa = DynamicWeightAverage(num_tasks=2, epoch_length=1)
    >>> for losses in ([1.0, 1.0], [0.5, 1.0]):
    ...     _ = dwa(TaskStep(losses=torch.tensor(losses), tasks=torch.arange(2), num_tasks=2, step=0))
    >>> step = TaskStep(losses=torch.tensor([0.4, 0.9]), tasks=torch.arange(2), num_tasks=2, step=2)
    >>> w = dwa.loss_weights(step)   # 2·softmax((0.5, 1)/2)
    >>> torch.allclose(w, 2 * torch.softmax(torch.tensor([0.25, 0.5]), 0))
    True
"""

from __future__ import annotations

import torch
from torch import Tensor

from gradsurgery.methods.base import Aggregation, LossWeighting, TaskStep
from gradsurgery.methods.epochs import EpochCounter
from gradsurgery.methods.registry import register
from gradsurgery.methods.task_state import TaskStateMixin, per_task

__all__ = ["DynamicWeightAverage"]


@register(
    "dwa",
    paper="Liu, Johns, Davison, End-to-End Multi-Task Learning with Attention (MTAN), CVPR 2019",
    rule="w_i = m·softmax_i(r/T), r_i = L̄_i(t−1)/L̄_i(t−2) of epoch-averaged losses; T = 2",
)
class DynamicWeightAverage(EpochCounter, TaskStateMixin, LossWeighting):
    """Dynamic Weight Average (see the module docstring).

    Args:
        num_tasks: the number of tasks (None: taken from the first step).
        temperature: ``T`` (2 in the paper).
        epoch_length: steps per epoch; None to close epochs only with :meth:`end_epoch`.
    """

    _task_state_names = ("epoch_sum", "epoch_count", "last_avg", "prev_avg", "epochs_seen")

    def __init__(
        self,
        num_tasks: int | None = None,
        temperature: float = 2.0,
        epoch_length: int | None = None,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = float(temperature)
        self._init_epochs(epoch_length)
        self._init_task_state(num_tasks)

    def _allocate(self, num_tasks: int, device: torch.device | None) -> None:
        self.epoch_sum = per_task(num_tasks, device)  # Σ of the losses in the current epoch
        self.epoch_count = per_task(num_tasks, device)  # steps with the task present
        self.last_avg = per_task(num_tasks, device)  # L̄_i(t−1)
        self.prev_avg = per_task(num_tasks, device)  # L̄_i(t−2)
        self.epochs_seen = torch.zeros(num_tasks, dtype=torch.long, device=device)

    def _prepare(self, step: TaskStep) -> None:
        self._bind_to_step(step)
        assert self.epoch_sum is not None
        device = step.losses.device
        if self.epoch_sum.device != device:
            self.to(device)
        if step.losses.dtype == torch.float64 and self.epoch_sum.dtype != torch.float64:
            for name in ("epoch_sum", "epoch_count", "last_avg", "prev_avg"):
                setattr(self, name, getattr(self, name).double())

    def loss_weights(self, step: TaskStep) -> Tensor:
        """The weights of the current epoch (from the history; does not record the losses)."""
        self._prepare(step)
        assert self.last_avg is not None and self.prev_avg is not None
        assert self.epochs_seen is not None
        t = step.tasks
        last, prev = self.last_avg[t], self.prev_avg[t]
        known = (self.epochs_seen[t] >= 2) & (prev > 0)
        ratio = torch.where(known, last / torch.where(known, prev, torch.ones_like(prev)), 1.0)
        w = step.m * torch.softmax(ratio / self.temperature, dim=0)
        return w.to(step.losses.dtype)

    def forward(self, step: TaskStep) -> Aggregation:
        agg = super().forward(step)  # weights from the history before this step's losses
        self.record(step)
        return agg

    def record(self, step: TaskStep) -> None:
        """Add this step's losses to the running epoch sums (closing the epoch when it is full)."""
        self._prepare(step)
        assert self.epoch_sum is not None and self.epoch_count is not None
        losses = step.losses.detach().to(self.epoch_sum.dtype)
        self.epoch_sum.index_add_(0, step.tasks, losses)
        self.epoch_count.index_add_(0, step.tasks, torch.ones_like(losses))
        self._count_step()

    def end_epoch(self) -> None:
        """Close the current epoch: its per-task average becomes ``L̄(t−1)``."""
        self.steps_in_epoch = 0
        if self.num_tasks is None:
            return
        assert self.epoch_sum is not None and self.epoch_count is not None
        assert self.last_avg is not None and self.prev_avg is not None
        assert self.epochs_seen is not None
        seen = self.epoch_count > 0
        avg = self.epoch_sum / self.epoch_count.clamp_min(1)
        self.prev_avg = torch.where(seen, self.last_avg, self.prev_avg)
        self.last_avg = torch.where(seen, avg, self.last_avg)
        self.epochs_seen += seen.long()
        self.epoch_sum.zero_()
        self.epoch_count.zero_()
        self._next_epoch()

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, epoch_length={self.epoch_length}"
