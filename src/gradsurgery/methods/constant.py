"""Constant: fixed, user-given task weights (linear scalarization), the baseline of every comparison.

torchjd's ``Constant`` aggregator (``torchjd/aggregation/_constant.py``, checked): the update is a
linear combination of the task gradients with pre-determined weights, ``Δθ = Σ_i w_i g_i``.

Rule. With weights ``w`` given once, over all ``num_tasks`` tasks,

    Δθ = ∇ Σ_i w_i L_i,

one backward pass (a loss weighting: no per-task gradient is computed).

Choices, and ours:

* Task-specific parameters get ``w_i ∇L_i`` (the gradient of the weighted sum; a head trains on its
  loss with the same weight as the trunk). torchjd's aggregator only combines the shared
  parameters' Jacobian (under its ``mtl_backward`` a head gets its own loss's gradient, weight 1);
  for ``w = 1`` the two agree.
* ``weights=None`` (the default): every weight 1, i.e. the sum. The weights may be any finite
  numbers, as torchjd; a zero or negative weight makes the one-task claim ``single_task =
  "positive"`` false for that task (the claim holds for positive weights).
* With tasks absent from a step the present tasks keep their own weights as given (no rescaling):
  the weighted sum of the losses that are there.
* The weights are a buffer (in ``state_dict``), copied to the losses' device and dtype: no host
  synchronisation.

Example:
    >>> import torch
    >>> from gradsurgery.methods.base import TaskStep
    >>> step = TaskStep(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0, 2, 3]), 4, 0)
    >>> Constant([0.5, 9.0, 2.0, 1.0]).loss_weights(step)
    tensor([0.5000, 2.0000, 1.0000])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from gradsurgery.methods.base import LossWeighting, TaskStep
from gradsurgery.methods.registry import register

__all__ = ["Constant"]


@register(
    "constant",
    paper="(baseline) fixed user weights; torchjd's Constant aggregator",
    rule="Δθ = ∇ Σ_i w_i L_i with fixed, user-given w (default 1)",
)
class Constant(LossWeighting):
    """Fixed task weights. See the module docstring.

    Args:
        weights: ``(num_tasks,)`` weights, one per task (present or not); None: all 1.
    """

    #: the weights belong to task positions
    permutation_equivariant = False
    #: ``w_1 g_1`` with one task: a positive multiple for a positive weight
    single_task = "positive"

    weights: Tensor | None

    def __init__(self, weights: Tensor | Sequence[float] | None = None) -> None:
        super().__init__()
        t = None
        if weights is not None:
            t = torch.as_tensor(weights, dtype=torch.float64).detach().clone()
            if t.dim() != 1 or t.numel() == 0:
                raise ValueError(f"weights must be a non-empty vector, got shape {tuple(t.shape)}")
            if not bool(torch.isfinite(t).all()):
                raise ValueError("weights must be finite")
        self.register_buffer("weights", t)

    def loss_weights(self, step: TaskStep) -> Tensor:
        if self.weights is None:
            return torch.ones_like(step.losses)
        if self.weights.shape != (step.num_tasks,):
            raise ValueError(
                f"{self.weights.numel()} weights for {step.num_tasks} tasks (one weight per task, "
                "present or not)"
            )
        w = self.weights.to(dtype=step.losses.dtype, device=step.losses.device)
        if step.m == step.num_tasks:
            return w
        return w.index_select(0, step.tasks.to(w.device))

    def extra_repr(self) -> str:
        return "weights=1" if self.weights is None else f"weights={self.weights.tolist()}"
