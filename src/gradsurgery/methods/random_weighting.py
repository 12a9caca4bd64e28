"""Random: torchjd's ``Random`` aggregator, softmax weights of a fresh standard normal draw.

torchjd's ``Random`` / ``RandomWeighting`` (``torchjd/aggregation/_random.py``, checked), which cites
Algorithm 2 of Lin et al., "Reasonable Effectiveness of Random Weighting: A Litmus Test for
Multi-Task Learning", TMLR 2022 (arXiv:2111.10603).

Rule. Every step, independently of everything else,

    λ̃ ~ N(0, I_m),    w = softmax(λ̃),    Δθ = wᵀ J = Σ_i w_i g_i

on the shared parameters.

How it differs from ``rlw`` (``distribution="normal"``, the same draw): ``rlw`` is the loss
weighting ``∇ Σ_i w_i L_i``, one backward pass, where each head gets ``w_i ∇L_i``. This is the
aggregator as torchjd applies it: it combines the rows of the shared parameters' Jacobian, and each
head gets its own task's gradient with weight 1 (as under torchjd's ``mtl_backward``). It therefore
needs the per-task gradients (here their Gramian, which it does not read: a Gramian method costs
what ``requires == "gramian"`` costs); use ``rlw`` when only the loss weighting is wanted.

Choices, and ours:

* The draw is made from the method's own generators
  (:class:`~gradsurgery.methods.generators.DeviceGenerators`, saved in ``state_dict``) on the
  Gramian's device, in float64 for a float64 Gramian and float32 otherwise (torchjd draws from
  torch's global stream in the matrix's dtype): on the CPU, ``Random(seed=s)`` on a float64 Gramian
  makes torchjd's draw after ``torch.manual_seed(s)``. No host synchronisation.
* With tasks absent from a step the draw is over the present tasks.

Example:
    >>> import torch
    >>> from gradsurgery.methods.base import TaskStep
    >>> K = torch.eye(3, dtype=torch.float64)
    >>> w = Random(seed=0)(TaskStep(torch.ones(3), torch.arange(3), 3, 0, gramian=K)).weights
    >>> bool((w > 0).all()), round(float(w.sum()), 6)
    (True, 1.0)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from gradsurgery.methods.base import GramianWeighting, TaskStep
from gradsurgery.methods.generators import DeviceGenerators
from gradsurgery.methods.registry import register

__all__ = ["Random"]


@register(
    "random",
    paper="torchjd's Random aggregator (Lin et al., Reasonable Effectiveness of Random Weighting, "
    "TMLR 2022, Alg. 2)",
    rule="each step w = softmax(λ̃), λ̃ ~ N(0, I); Δθ = Σ_i w_i g_i, heads get their own gradient",
)
class Random(GramianWeighting):
    """torchjd's Random aggregator. See the module docstring.

    Args:
        seed: seed of the method's generators (None: ``torch.initial_seed()``, read without
            drawing from the global stream).
    """

    #: the random weights are drawn by task position
    permutation_equivariant = False

    def __init__(self, seed: int | None = None) -> None:
        super().__init__()
        self.generators = DeviceGenerators(seed)

    def gramian_weights(self, gramian: Tensor, step: TaskStep) -> Tensor:
        dtype = torch.float64 if gramian.dtype == torch.float64 else torch.float32
        gen = self.generators.get(gramian.device)
        draw = torch.randn(step.m, generator=gen, dtype=dtype, device=gramian.device)
        return torch.softmax(draw, dim=0).to(gramian.dtype)

    def get_extra_state(self) -> dict[str, Any]:
        return {"generators": self.generators.state()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.generators.load(state["generators"])
