"""GLS: the geometric loss strategy, minimizing the geometric mean of the task losses.

Chennupati, Sistu, Yogamani, Rawashdeh. "MultiNet++: Multi-Stream Feature Aggregation and
Geometric Loss Strategy for Multi-Task Learning". CVPR 2019 Workshops. Checked against LibMTL's
``LibMTL/weighting/GLS.py`` (which says it is implemented by LibMTL's authors: it back-propagates
``torch.pow(losses.prod(), 1/m)``); the paper's own code was not checked.

Rule. The objective is the geometric mean of the ``m`` losses,

    L_GLS = (Π_i L_i)^(1/m),

so the update is the loss weighting ``Δθ = ∇ Σ_i w_i L_i`` with

    w_i = ∂L_GLS/∂L_i = L_GLS / (m · L_i),

evaluated at the step's loss values. A task with a small loss gets a large weight (the objective is
``exp`` of the mean log loss, so every task's *relative* progress counts alike); the weights are
invariant to scaling any one loss's values up to that task's ``1/L_i`` (``w_i L_i = L_GLS / m`` for
every ``i``: Euler's identity ``Σ_i w_i L_i = L_GLS``, the geometric mean being 1-homogeneous).

Choices the paper leaves open, and ours:

* The weights are computed as ``w_i = exp(mean_j log a_j − log a_i) / m · sign(L_i)`` with
  ``a_i = max(|L_i|, tiny)`` (``tiny``: the dtype's smallest normal number), in float32 (float64
  for float64 losses) from the detached losses: no product that overflows or underflows with many
  tasks, and ``w = 1`` exactly with one task. For positive losses this is the rule above. The
  geometric mean of non-positive losses is not defined (LibMTL's ``pow`` returns NaN there); here
  a negative loss gets the weights of the geometric mean of ``|L_i|`` (it is driven towards 0, as a
  log-loss weighting ``1/L_i`` would drive it) and a zero loss counts as ``tiny``: the update stays
  finite, but the method is meant for positive losses.
* ``m`` is the number of tasks present in the step (the paper: all tasks, always present).
* LibMTL reports ``L_i / (m Π_j L_j)`` as the batch weights (a logged quantity only; its update is
  the gradient of ``L_GLS``, as here).

The method is stateless. ``scale_degree = 1`` (the weights depend on the losses only), one task is
plain training (``w = 1``), and it is permutation-equivariant.

Example (losses (1, 4): L_GLS = 2, w = (2/2·1, 2/2·4) = (1, 0.25)):
    >>> import torch
    >>> gls_weights(torch.tensor([1.0, 4.0]))
    tensor([1.0000, 0.2500])
"""

from __future__ import annotations

import torch
from torch import Tensor

from gradsurgery.methods.base import LossWeighting, TaskStep
from gradsurgery.methods.registry import register

__all__ = ["GLS", "gls_weights"]


def gls_weights(losses: Tensor) -> Tensor:
    """``(m,)`` weights ``w_i = ∂(Π_j L_j)^(1/m)/∂L_i = (Π_j L_j)^(1/m) / (m L_i)`` (see the module
    docstring for non-positive losses), in ``losses``' dtype (computed in at least float32)."""
    dtype = torch.float64 if losses.dtype == torch.float64 else torch.float32
    x = losses.detach().to(dtype)
    log_a = x.abs().clamp_min(torch.finfo(dtype).tiny).log()
    sign = torch.where(x < 0, -1.0, 1.0).to(dtype)
    w = torch.exp(log_a.mean() - log_a) * sign / x.shape[0]
    return w.to(losses.dtype)


@register(
    "gls",
    paper="Chennupati et al., MultiNet++: Multi-Stream Feature Aggregation and Geometric Loss "
    "Strategy for Multi-Task Learning, CVPR 2019 Workshops",
    rule="minimize the geometric mean (Π L_i)^(1/m): w_i = (Π L_j)^(1/m) / (m L_i)",
)
class GLS(LossWeighting):
    """Geometric loss strategy (see the module docstring). No arguments, no state."""

    def loss_weights(self, step: TaskStep) -> Tensor:
        return gls_weights(step.losses)
