"""Krum and Multi-Krum: keep the task gradients closest to their neighbours.

Blanchard, El Mhamdi, Guerraoui, Stainer. "Machine Learning with Adversaries: Byzantine Tolerant
Gradient Descent". NeurIPS 2017; as torchjd's ``Krum`` / ``KrumWeighting``
(``torchjd/aggregation/_krum.py``, checked, the test oracle).

Rule. With ``f = n_byzantine`` and the pairwise distances of the task gradients read off the
Gramian, ``D_ij = sqrt(K_ii + K_jj − 2 K_ij)``, each task's score is the sum of its distances to
its ``m − f − 2`` nearest other tasks,

    s_i = Σ_{j ∈ N_i} D_ij,

and the ``k = n_selected`` tasks of smallest score are averaged: ``w = (1/k) Σ_{i selected} e_i``,
``Δθ = wᵀ J`` (Krum: ``k = 1``, the single most central gradient; Multi-Krum: ``k > 1``).

Choices, and ours:

* Distances, not squared distances, in the score, as torchjd (``squared=True`` sums squared
  distances, the score as secondary descriptions of the paper state it; the paper itself was not
  checked here).
* Defaults ``n_byzantine = 0``, ``n_selected = 1`` (torchjd: ``n_byzantine`` has no default,
  ``n_selected = 1``). torchjd refuses fewer than ``f + 3`` tasks (or fewer than ``k``); here, for
  a step with few tasks present, the neighbour count is ``max(m − f − 2, 0)`` and ``k`` is
  ``min(k, m)`` (a single task: its own gradient).
* Ties. The distances are symmetrised (``(D + Dᵀ)/2``, so a mutual nearest pair has exactly equal
  scores whatever the rounding of the Gramian) and ties are broken by task position (a stable
  sort: the lower index wins; torchjd's ``topk`` leaves it unspecified). With ``m − f − 2 = 1`` a
  tie is the generic case (the two tasks of the closest pair have the same score), so the method
  is not permutation-equivariant.
* Task-specific parameters get their own task's gradient with weight 1 (as torchjd's
  ``mtl_backward``). Everything runs on the Gramian's device: no host synchronisation.

Example (g1 = (0, 0), g2 = (1, 0), g3 = (10, 0), f = 0: one neighbour each; scores 1, 1, 9: the
tie between tasks 1 and 2 goes to task 1):
    >>> import torch
    >>> from gradsurgery.methods.base import TaskStep
    >>> g = torch.tensor([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0]])
    >>> Krum()(TaskStep(torch.ones(3), torch.arange(3), 3, 0, gramian=g @ g.T)).weights
    tensor([1., 0., 0.])
"""

from __future__ import annotations

import torch
from torch import Tensor

from gradsurgery.methods.base import GramianWeighting, TaskStep
from gradsurgery.methods.registry import register

__all__ = ["Krum", "krum_scores"]


def krum_scores(gramian: Tensor, n_byzantine: int, squared: bool = False) -> Tensor:
    """``(m,)`` Krum scores: each task's summed distance to its ``max(m − f − 2, 0)`` nearest
    other tasks (squared distances with ``squared``)."""
    m = gramian.shape[0]
    norms = torch.diagonal(gramian)
    d2 = norms.unsqueeze(0) + norms.unsqueeze(1) - 2 * gramian
    d2 = (0.5 * (d2 + d2.T)).clamp_min(0.0)
    dist = d2 if squared else d2.sqrt()
    n_closest = max(m - n_byzantine - 2, 0)
    nearest = torch.sort(dist, dim=1).values.narrow(1, 1, n_closest) if m > 1 else dist[:, :0]
    return nearest.sum(dim=1)


@register(
    "krum",
    paper="Blanchard et al., Machine Learning with Adversaries: Byzantine Tolerant Gradient "
    "Descent, NeurIPS 2017 (torchjd's Krum)",
    rule="score s_i = Σ of distances to the m−f−2 nearest g_j; average the k lowest-score g_i",
)
class Krum(GramianWeighting):
    """Krum / Multi-Krum on the Gramian. See the module docstring.

    Args:
        n_byzantine: ``f``, the number of task gradients that may be adversarial.
        n_selected: ``k``, the number of task gradients averaged (1: Krum; more: Multi-Krum).
        squared: sum squared distances in the score (torchjd: plain distances).
    """

    #: ties between scores (generic with one neighbour) are broken by task position
    permutation_equivariant = False

    def __init__(self, n_byzantine: int = 0, n_selected: int = 1, squared: bool = False) -> None:
        super().__init__()
        if n_byzantine < 0:
            raise ValueError(f"n_byzantine must be non-negative, got {n_byzantine}")
        if n_selected < 1:
            raise ValueError(f"n_selected must be a positive integer, got {n_selected}")
        self.n_byzantine = int(n_byzantine)
        self.n_selected = int(n_selected)
        self.squared = bool(squared)

    def gramian_weights(self, gramian: Tensor, step: TaskStep) -> Tensor:
        m = gramian.shape[0]
        k = min(self.n_selected, m)
        scores = krum_scores(gramian, self.n_byzantine, self.squared)
        chosen = torch.sort(scores, stable=True).indices[:k]
        w = torch.zeros(m, dtype=gramian.dtype, device=gramian.device)
        return w.index_fill_(0, chosen, 1.0 / k)

    def extra_repr(self) -> str:
        return (
            f"n_byzantine={self.n_byzantine}, n_selected={self.n_selected}, squared={self.squared}"
        )
