"""Auxiliary-task mode: use an auxiliary loss only where its gradient agrees with the main task's.

Du, Czarnecki, Jayakumar, Farajtabar, Pascanu, Lakshminarayanan. "Adapting Auxiliary Losses Using
Gradient Similarity". arXiv:1812.02224, 2018, Algorithm 1; checked against the public
``GradCosine`` baseline of AuxiLearn / Nash-MTL (``cosine > 0`` test).

Rule. One task is the main task (index ``main``); the others are auxiliaries. On the shared
parameters, with ``g_main`` and ``g_a`` the task gradients,

    unweighted:  Δθ = g_main + Σ_a 1[cos(g_main, g_a) > 0] g_a
    weighted:    Δθ = g_main + Σ_a max(0, cos(g_main, g_a)) g_a

so the weights are ``w_main = 1`` and ``w_a`` = the gate. The cosines come from the Gramian:
``cos = K_{main,a} / sqrt(K_{main,main} K_{a,a})``. Task-specific parameters (each task's head) get
their own task's gradient with weight 1, as in Algorithm 1.

Choices the paper leaves open, and ours:

* A zero gradient (main or auxiliary) has cosine 0: the auxiliary is left out (both modes).
* The main task absent from a step (``main_absent``): ``"sum"`` (default) uses every present task
  with weight 1 — nothing to compare against, so the step is plain unitary scalarization;
  ``"zero"`` gives the shared parameters no update from the auxiliaries (heads still train);
  ``"raise"`` raises ``ValueError``. ``"sum"`` and ``"zero"`` need no host synchronisation.
* ``main`` is an index among all ``num_tasks`` tasks, matched against ``TaskStep.tasks``.

Example (g_main = (1, 0), an aligned aux (1, 1) and a conflicting aux (−1, 1)):
    >>> import torch
    >>> from gradsurgery.methods.base import TaskStep
    >>> g = torch.tensor([[1.0, 0.0], [1.0, 1.0], [-1.0, 1.0]])
    >>> step = TaskStep(losses=torch.ones(3), tasks=torch.arange(3), num_tasks=3, step=0,
    ...                 gramian=g @ g.T)
    >>> AuxiliaryGradientSimilarity(main=0)(step).weights
    tensor([1., 1., 0.])
    >>> AuxiliaryGradientSimilarity(main=0, mode="weighted")(step).weights
    tensor([1.0000, 0.7071, 0.0000])
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from gradsurgery.methods.base import GramianWeighting, TaskStep
from gradsurgery.methods.registry import register

__all__ = ["AuxiliaryGradientSimilarity", "auxiliary_weights"]

Mode = Literal["unweighted", "weighted"]
MainAbsent = Literal["sum", "zero", "raise"]


def auxiliary_weights(gramian: Tensor, is_main: Tensor, mode: Mode = "unweighted") -> Tensor:
    """``(m,)`` weights: 1 for the main row, the cosine gate for the others.

    Args:
        gramian: ``(m, m)`` Gramian of the present tasks' gradients.
        is_main: ``(m,)`` booleans, True at the main task's row (all False when it is absent: then
            every auxiliary gets 0).
        mode: ``"unweighted"`` (gate 1[cos > 0]) or ``"weighted"`` (gate max(0, cos)).
    """
    sel = is_main.to(gramian.dtype)
    dots = sel @ gramian  # K_{main, i} (zeros when the main task is absent)
    main_sq = sel @ gramian.diagonal()
    prod = main_sq * gramian.diagonal()
    ok = prod > 0
    cos = torch.where(ok, dots / torch.where(ok, prod, torch.ones_like(prod)).sqrt(), 0.0)
    cos = cos.clamp(-1.0, 1.0)
    gate = (cos > 0).to(gramian.dtype) if mode == "unweighted" else cos.clamp_min(0)
    return torch.where(is_main, torch.ones_like(gate), gate)


@register(
    "auxiliary",
    paper="Du et al., Adapting Auxiliary Losses Using Gradient Similarity, 2018",
    rule="Δθ = g_main + Σ_a gate_a g_a, gate = 1[cos(g_main, g_a) > 0] or max(0, cos)",
)
class AuxiliaryGradientSimilarity(GramianWeighting):
    """Main task plus cosine-gated auxiliary tasks (see the module docstring).

    Args:
        main: index of the main task among all tasks.
        mode: ``"unweighted"`` or ``"weighted"``.
        main_absent: what a step without the main task does: ``"sum"``, ``"zero"`` or ``"raise"``.
    """

    #: the main task is singled out
    permutation_equivariant = False

    def __init__(
        self, main: int = 0, mode: Mode = "unweighted", main_absent: MainAbsent = "sum"
    ) -> None:
        super().__init__()
        if main < 0:
            raise ValueError(f"main must be a task index (≥ 0), got {main}")
        if mode not in ("unweighted", "weighted"):
            raise ValueError(f"mode must be 'unweighted' or 'weighted', got {mode!r}")
        if main_absent not in ("sum", "zero", "raise"):
            raise ValueError(f"main_absent must be 'sum', 'zero' or 'raise', got {main_absent!r}")
        self.main = int(main)
        self.mode: Mode = mode
        self.main_absent: MainAbsent = main_absent

    def gramian_weights(self, gramian: Tensor, step: TaskStep) -> Tensor:
        if self.main >= step.num_tasks:
            raise ValueError(f"main task {self.main} is not among the {step.num_tasks} tasks")
        is_main = step.tasks.to(gramian.device) == self.main
        w = auxiliary_weights(gramian, is_main, self.mode)
        if self.main_absent == "raise":
            if not bool(is_main.any()):
                raise ValueError(f"the main task {self.main} is absent from this step")
            return w
        fallback = torch.ones_like(w) if self.main_absent == "sum" else torch.zeros_like(w)
        return torch.where(is_main.any(), w, fallback)

    def extra_repr(self) -> str:
        return f"main={self.main}, mode={self.mode!r}, main_absent={self.main_absent!r}"
