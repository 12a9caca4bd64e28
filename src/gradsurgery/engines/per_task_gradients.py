"""What an engine returns: one step's per-task losses and per-task gradients.

Shared parameters (or the shared representation) have one gradient per task: rows of a
:class:`~gradsurgery.jacobian.TaskJacobian`. A task-specific parameter (a head) gets gradient from
one task only; its other rows would be zeros, so an engine that knows the owner keeps its one
gradient instead (:class:`OwnedGradients`): no ``m``-fold memory, no ``O(m)`` zero fills, norms
and combinations over zeros.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from gradsurgery.jacobian import TaskJacobian

__all__ = ["OwnedGradients", "PerTaskGradients"]


@dataclass(frozen=True)
class OwnedGradients:
    """Gradients of parameters that each belong to one task.

    Attributes:
        params: the parameters.
        grads: ``grads[k]`` is the gradient of its owner's loss with respect to ``params[k]``.
        owners: ``owners[k]`` is the row (position among the step's tasks) of that owner.
    """

    params: list[Tensor]
    grads: list[Tensor]
    owners: list[int]

    def __post_init__(self) -> None:
        if not len(self.params) == len(self.grads) == len(self.owners):
            raise ValueError("OwnedGradients needs one gradient and one owner per parameter")

    def __len__(self) -> int:
        return len(self.params)

    def row_sq_norms(self, owners: Tensor, m: int) -> Tensor:
        """``(m,)`` squared gradient norm of each task's own parameters (``owners``: a device
        tensor of :attr:`owners`): a few kernels, whatever the number of parameters."""
        norms = torch.stack(torch._foreach_norm(self.grads)).float()
        return torch.zeros(m, device=norms.device).index_add(0, owners, norms.square())

    def scaled_(self, weights: Tensor) -> list[Tensor]:
        """``grads[k] *= weights[owner_k]`` in place (one fused multiply, no copies: the
        gradients are the engine's own temporaries) and returns them."""
        if self.grads:
            w = weights.detach()
            torch._foreach_mul_(
                self.grads,
                [w[row].to(g.dtype) for g, row in zip(self.grads, self.owners, strict=True)],
            )
        return self.grads


@dataclass(frozen=True)
class PerTaskGradients:
    """Per-task losses and gradients of the tasks present in one step.

    Attributes:
        losses: ``(m,)`` detached task losses.
        tasks: ``(m,)`` long tensor, the index of each row among all tasks.
        jacobian: per-task gradients, one block per parameter the engine was given, rows in the
            order of ``tasks``. Parameters a task's loss does not reach get zero rows. (The
            representation engine: block 0 is ``∂L_i/∂z``, see
            :class:`~gradsurgery.engines.representation.RepresentationJacobian`.)
        owned: task-specific gradients kept once each, for parameters the engine left out of
            ``jacobian`` (None: none).
    """

    losses: Tensor
    tasks: Tensor
    jacobian: TaskJacobian
    owned: OwnedGradients | None = field(default=None)
