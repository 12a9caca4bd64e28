"""What an engine returns: one step's per-task losses and per-task gradients.

Shared parameters (or the shared representation) have one gradient per task: rows of a
:class:`~gradsurgery.jacobian.TaskJacobian`. A task-specific parameter (a head) gets gradient from
one task only; its other rows would be zeros, so an engine that knows the owner keeps its one
gradient instead (:class:`OwnedGradients`): no ``m``-fold memory, no ``O(m)`` zero fills, norms
and combinations over zeros.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from gradsurgery.jacobian import TaskJacobian

__all__ = ["OwnedGradients", "PerTaskGradients", "SplitGradients", "accumulate"]


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
    """Per-task losses and gradients of the tasks present in one step, and where they belong.

    A caller asks :meth:`split` for the rows a method combines and a
    :meth:`SplitGradients.write_back` of the result: it needs no knowledge of an engine's layout.

    Attributes:
        losses: ``(m,)`` detached task losses.
        tasks: ``(m,)`` long tensor, the index of each row among all tasks.
        jacobian: per-task gradients, one block per entry of ``params``, rows in the order of
            ``tasks``. Parameters a task's loss does not reach get zero rows.
        owned: task-specific gradients kept once each, for parameters the engine left out of
            ``jacobian`` (None: none).
        params: the tensor each block of ``jacobian`` is the gradient of (empty: not told).
        shared: which blocks are the method's rows (None: the engine cannot tell; the caller says
            in :meth:`split`).
        representation: set when block 0 is ``∂L_i/∂z`` of this shared representation ``z``
            (``params[0]``); the combined signal then goes back through it into ``trunk``.
        trunk: the parameters upstream of ``representation`` (None: every leaf it reaches).
    """

    losses: Tensor
    tasks: Tensor
    jacobian: TaskJacobian
    owned: OwnedGradients | None = field(default=None)
    params: Sequence[Tensor] = ()
    shared: Sequence[bool] | None = None
    representation: Tensor | None = None
    trunk: Sequence[Tensor] | None = None

    def reached_by_several(self) -> list[bool]:
        """Per block: whether two or more tasks give it a nonzero gradient (one host read)."""
        return [r >= 2 for r in self.reach_counts()]

    def reach_counts(self) -> list[int]:
        """Per block: how many tasks give it a nonzero gradient (one host read)."""
        m = self.jacobian.num_tasks
        blocks = self.jacobian.blocks
        reached = torch.stack([b.reshape(m, -1).ne(0).any(dim=1).sum() for b in blocks])
        return [int(r) for r in reached.tolist()]

    def split(self, shared: Sequence[bool] | None = None) -> SplitGradients:
        """The method's rows and the rest. ``shared``: which blocks are shared, when the engine
        did not say (``self.shared``); None: all of them."""
        mask = list(self.shared if self.shared is not None else shared or [])
        if not mask:
            mask = [True] * len(self.jacobian.blocks)
        blocks = self.jacobian.blocks
        params = list(self.params)
        if len(params) != len(blocks):
            raise ValueError(f"{len(params)} parameters for {len(blocks)} Jacobian blocks")
        rows = [b for b, s in zip(blocks, mask, strict=True) if s]
        if not rows:
            raise ValueError("no parameter is shared between tasks: nothing for the method to do")
        specific = [b for b, s in zip(blocks, mask, strict=True) if not s]
        return SplitGradients(
            losses=self.losses,
            tasks=self.tasks,
            rows=TaskJacobian(rows),
            targets=[p for p, s in zip(params, mask, strict=True) if s],
            specific=TaskJacobian(specific) if specific else None,
            specific_params=[p for p, s in zip(params, mask, strict=True) if not s],
            owned=self.owned if self.owned is not None and len(self.owned) else None,
            representation=self.representation,
            trunk=self.trunk,
        )


@dataclass(frozen=True)
class SplitGradients:
    """One step's gradients split for a method: the rows it combines, and the rest.

    Attributes:
        losses, tasks: as in :class:`PerTaskGradients`.
        rows: the per-task rows the method sees (the shared parameters', or ``∂L_i/∂z``).
        targets: the tensor of each block of ``rows`` (the representation itself when
            ``representation`` is set).
        specific: per-task rows of task-specific parameters (None: none).
        specific_params: the parameter of each block of ``specific``.
        owned: task-specific gradients kept once each (None: none).
        representation, trunk: as in :class:`PerTaskGradients`.
    """

    losses: Tensor
    tasks: Tensor
    rows: TaskJacobian
    targets: list[Tensor]
    specific: TaskJacobian | None
    specific_params: list[Tensor]
    owned: OwnedGradients | None
    representation: Tensor | None
    trunk: Sequence[Tensor] | None

    @property
    def approximate(self) -> bool:
        """True when the rows are of a shared representation (MGDA-UB style)."""
        return self.representation is not None

    def specific_sq_norms(self, owner_index: Callable[[list[int]], Tensor]) -> list[Tensor]:
        """``(m,)`` squared norms of each task's gradients outside ``rows`` (none, one or two
        vectors). ``owner_index`` makes the device tensor of the owners of ``owned``."""
        m = self.rows.num_tasks
        out = []
        if self.specific is not None:
            out.append(_row_sq_norms(self.specific))
        if self.owned is not None:
            out.append(self.owned.row_sq_norms(owner_index(self.owned.owners), m))
        return out

    def specific_reach(self, only: set[int] | None = None) -> dict[int, int]:
        """How many tasks give each task-specific parameter a nonzero gradient, keyed by the
        parameter's ``id`` (those in ``only`` when given; one host read, none when nothing is
        asked). A task-specific parameter reached by two or more tasks is really shared."""
        params: list[Tensor] = []
        flags: list[Tensor] = []
        m = self.rows.num_tasks
        if self.specific is not None:
            for p, b in zip(self.specific_params, self.specific.blocks, strict=True):
                if only is None or id(p) in only:
                    params.append(p)
                    flags.append(b.reshape(m, -1).ne(0).any(dim=1).sum())
        counts = {id(p): 0 for p in params}
        owned: list[Tensor] = []
        if self.owned is not None:
            for p, g in zip(self.owned.params, self.owned.grads, strict=True):
                if only is None or id(p) in only:
                    owned.append(p)
                    flags.append(g.ne(0).any().to(torch.long))
        if not flags:
            return counts
        values = torch.stack([f.to(flags[0].device) for f in flags]).tolist()
        for p, v in zip([*params, *owned], values, strict=True):
            counts[id(p)] = counts.get(id(p), 0) + int(v)
        return counts

    def specific_overlap(self) -> list[Tensor]:
        """The task-specific parameters that two or more tasks give a nonzero gradient *on the
        same entries* (one host read): really shared. (A packed tensor whose rows each belong
        to one task, such as ``heads[task]``, is not.)"""
        m = self.rows.num_tasks
        hits: dict[int, Tensor] = {}
        params: dict[int, Tensor] = {}
        if self.specific is not None:
            for p, b in zip(self.specific_params, self.specific.blocks, strict=True):
                params[id(p)] = p
                hits[id(p)] = b.reshape(m, -1).ne(0).sum(dim=0)
        if self.owned is not None:
            for p, g in zip(self.owned.params, self.owned.grads, strict=True):
                params[id(p)] = p
                hit = g.reshape(-1).ne(0).to(torch.long)
                hits[id(p)] = hits[id(p)] + hit if id(p) in hits else hit
        if not hits:
            return []
        keys = list(hits)
        flags = torch.stack([hits[k].max().ge(2).to(hits[keys[0]].device) for k in keys])
        return [params[k] for k, f in zip(keys, flags.tolist(), strict=True) if f]

    def write_back(self, update: Sequence[Tensor], task_specific_weights: Tensor) -> None:
        """Accumulate the combined ``update`` of ``rows`` (one tensor per block) and each task's
        own gradients weighted by ``task_specific_weights`` into ``.grad``, as
        ``Tensor.backward`` does. With a representation, ``update`` goes back through it."""
        if self.representation is not None:
            torch.autograd.backward(
                self.representation,
                grad_tensors=update[0],
                inputs=list(self.trunk) if self.trunk else None,
            )
        else:
            accumulate(self.targets, update)
        if self.specific is not None:
            accumulate(self.specific_params, self.specific.combine(task_specific_weights.detach()))
        if self.owned is not None:
            accumulate(self.owned.params, self.owned.scaled_(task_specific_weights))


def _row_sq_norms(jac: TaskJacobian) -> Tensor:
    m = jac.num_tasks
    total = 0 + jac.blocks[0].reshape(m, -1).float().pow(2).sum(dim=1)  # as Python's sum() did
    for b in jac.blocks[1:]:
        total = total + b.reshape(m, -1).float().pow(2).sum(dim=1)
    return total


def accumulate(params: Sequence[Tensor], grads: Sequence[Tensor]) -> None:
    """Add ``grads`` into ``.grad`` as ``Tensor.backward`` does (set when None, else add)."""
    for p, g in zip(params, grads, strict=True):
        if g.dtype != p.dtype:
            g = g.to(p.dtype)
        if g.shape != p.shape:
            g = g.reshape(p.shape)
        if p.grad is None:
            p.grad = g
        else:
            p.grad.add_(g)
