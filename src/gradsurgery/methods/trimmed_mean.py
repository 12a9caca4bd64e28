"""Trimmed mean: the coordinate-wise trimmed mean of the task gradients.

Yin, Chen, Ramchandran, Bartlett. "Byzantine-Robust Distributed Learning: Towards Optimal
Statistical Rates". ICML 2018 (the coordinate-wise trimmed mean); as torchjd's ``TrimmedMean``
(``torchjd/aggregation/_trimmed_mean.py``, checked, the test oracle).

Rule. For every coordinate ``k`` of the shared parameters, sort the ``m`` task gradients' entries
``g_1[k], …, g_m[k]``, drop the ``t`` largest and the ``t`` smallest (``t = trim_number``) and
average the ``m − 2t`` that remain:

    Δθ[k] = (1 / (m − 2t)) Σ_{j = t+1}^{m−t} g_(j)[k],

``g_(j)[k]`` the ``j``-th smallest. ``t = 0`` is the mean; ``m = 2t + 1`` the coordinate-wise
median. The update is not a weighting of the rows of ``J`` (each coordinate keeps different tasks),
so the method needs the per-task gradients themselves (a
:class:`~gradsurgery.methods.base.JacobianAggregator`, as GradDrop) and works block by block (one
sorted ``m × block`` temporary).

Choices, and ours:

* ``trim_number`` defaults to 1 (torchjd has no default). torchjd refuses a matrix of fewer than
  ``2t + 1`` rows; here the trim is lowered to ``t' = min(t, ⌊(m − 1)/2⌋)`` for that step, so that
  at least one value remains (with tasks absent from a step, or a single task: the plain gradient)
  instead of a training run stopping on a step with few tasks present.
* Task-specific parameters get their own task's gradient with weight 1 (as torchjd's
  ``mtl_backward``).
* The average is taken in at least float32 (half-precision blocks are averaged in float32 and
  returned in their dtype). No host synchronisation.

Example (m = 3, t = 1: the median of every coordinate):
    >>> import torch
    >>> trimmed_mean_block(torch.tensor([[1.0, -5.0], [2.0, 0.0], [10.0, 3.0]]), 1)
    tensor([2., 0.])
"""

from __future__ import annotations

import torch
from torch import Tensor

from gradsurgery.jacobian import TaskJacobian, gramian_dtype
from gradsurgery.methods.base import JacobianAggregator, TaskStep
from gradsurgery.methods.registry import register

__all__ = ["TrimmedMean", "trimmed_mean_block"]


def trimmed_mean_block(block: Tensor, trim_number: int) -> Tensor:
    """The trimmed mean over dimension 0 of ``block`` (``(m, *shape)``), trimming
    ``min(trim_number, (m − 1) // 2)`` values at each end; in ``block``'s dtype."""
    m = block.shape[0]
    t = min(trim_number, (m - 1) // 2)
    kept = block if t == 0 else torch.sort(block, dim=0).values.narrow(0, t, m - 2 * t)
    return kept.mean(dim=0, dtype=gramian_dtype(block.dtype)).to(block.dtype)


@register(
    "trimmed_mean",
    paper="Yin et al., Byzantine-Robust Distributed Learning, ICML 2018 (torchjd's TrimmedMean)",
    rule="per coordinate: drop the t largest and t smallest task entries, average the rest",
)
class TrimmedMean(JacobianAggregator):
    """Coordinate-wise trimmed mean of the task gradients. See the module docstring.

    Args:
        trim_number: ``t``, the number of largest and of smallest entries dropped per coordinate.
    """

    def __init__(self, trim_number: int = 1) -> None:
        super().__init__()
        if trim_number < 0:
            raise ValueError(f"trim_number must be non-negative, got {trim_number}")
        self.trim_number = int(trim_number)

    def aggregate(self, jacobian: TaskJacobian, step: TaskStep) -> list[Tensor]:
        return [trimmed_mean_block(block, self.trim_number) for block in jacobian.blocks]

    def extra_repr(self) -> str:
        return f"trim_number={self.trim_number}"
