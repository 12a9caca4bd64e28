"""The reductions that make :class:`~gradsurgery.backward.MultiTaskBackward` exact under data
parallelism (``DistributedDataParallel``, or a bare model with a ``torch.distributed`` group).

Definition. Rank ``r`` holds ``c_{i,r}`` samples of task ``i`` and its mean loss ``L_{i,r}`` over
them (a shared-input batch: ``c_{i,r} = 1`` for every task present on the rank). The global task
loss is the mean over all ranks' samples, ``L_i = Σ_r c_{i,r} L_{i,r} / C_i`` with
``C_i = Σ_r c_{i,r}``, and its gradient ``g_i = Σ_r c_{i,r} g_{i,r} / C_i``. For a shared-input
batch of equal local size that is the plain mean over ranks, ``g_i = (1/R) Σ_r g_{i,r}``: what
DDP's averaging makes of ``loss.backward()``. (Local batches of different sizes: the plain mean is
not the mean over the global batch; weight each rank's losses yourself.) Tasks with ``C_i = 0`` are
absent from the step.

:func:`reduce_rows` turns one rank's :class:`~gradsurgery.engines.per_task_gradients.SplitGradients`
into the global rows with two all-reduces: the ``M × P`` count-weighted rows of the shared
parameters in one flat buffer of the gradients' dtype (``M`` = every task for a task-partitioned
batch, the ``m`` tasks otherwise; ``P`` = the number of shared entries), and an ``M × 3`` float64
buffer of the count-weighted losses, the counts and the task-specific squared norms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn

from gradsurgery.engines.per_task_gradients import SplitGradients, accumulate
from gradsurgery.jacobian import TaskJacobian

__all__ = [
    "DataParallel",
    "DistributedMode",
    "GlobalTasks",
    "broadcast_seed",
    "find_ddp",
    "group_size",
]

DistributedMode = Literal["exact", "local"]


def group_size(group: Any = None) -> int:
    """The number of processes of ``group`` (1 without an initialised process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return int(dist.get_world_size(group))


def _collective_device(group: Any = None) -> torch.device:
    """Where a small collective's tensor must live (NCCL: the current CUDA device)."""
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_seed(seed: int, group: Any = None) -> int:
    """Rank 0's ``seed`` on every rank of ``group`` (``seed`` itself without a group of two or
    more processes). A collective: every rank must call it, in the same order."""
    if group_size(group) < 2:
        return seed
    t = torch.tensor([seed], dtype=torch.int64, device=_collective_device(group))
    src = dist.get_global_rank(group, 0) if group is not None else 0
    dist.broadcast(t, src=src, group=group)
    return int(t.item())


def find_ddp(model: object) -> list[nn.parallel.DistributedDataParallel]:
    """The ``DistributedDataParallel`` modules in ``model`` (itself included)."""
    if not isinstance(model, nn.Module):
        return []
    return [m for m in model.modules() if isinstance(m, nn.parallel.DistributedDataParallel)]


@dataclass(frozen=True)
class GlobalTasks:
    """The global per-task quantities of one step, identical on every rank.

    Attributes:
        losses: ``(m_g,)`` global task losses.
        tasks: ``(m_g,)`` the tasks present on some rank, ascending.
        local_pos: ``(m_l,)`` the position in ``tasks`` of each of this rank's rows.
        local_scale: ``(m_l,)`` ``c_{j,r} / C_j`` of each of this rank's rows.
        specific_sq: ``(m_g,)`` summed squared norms of the task-specific gradients (for the
            finite check only: a NaN or inf on any rank is one here on every rank).
        rows: the global rows of the shared parameters (None: the losses only were reduced).
    """

    losses: Tensor
    tasks: Tensor
    local_pos: Tensor
    local_scale: Tensor
    specific_sq: Tensor
    rows: TaskJacobian | None = None


class DataParallel:
    """The process group a :class:`~gradsurgery.backward.MultiTaskBackward` reduces over.

    Args:
        group: the process group (None: the default group).
        ddp: the ``DistributedDataParallel`` modules of the model (empty: a bare model).
        mode: ``"exact"`` (the method sees the global per-task gradients) or ``"local"``
            (approximate: each rank's method sees its own, and the update is averaged).
    """

    def __init__(
        self,
        group: Any,
        ddp: Sequence[nn.parallel.DistributedDataParallel],
        mode: DistributedMode = "exact",
    ) -> None:
        if mode not in ("exact", "local"):
            raise ValueError(f"distributed must be 'exact' or 'local', got {mode!r}")
        self.group = group
        self.ddp = list(ddp)
        self.mode: DistributedMode = mode
        self.world_size = group_size(group)

    @classmethod
    def detect(cls, model: object, group: Any, mode: DistributedMode) -> DataParallel | None:
        """A DataParallel when ``model`` is DDP-wrapped or a group of two or more processes is
        initialised; None otherwise (one process: nothing to reduce)."""
        ddp = find_ddp(model)
        if group is None and len(ddp) == 1:
            group = ddp[0].process_group
        if group_size(group) < 2:
            return None
        return cls(group, ddp, mode)

    def all_reduce_(self, t: Tensor) -> Tensor:
        """Sum ``t`` over the ranks in place and return it."""
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self.group)
        return t

    # ------------------------------------------------------------------ per-task quantities
    def reduce_tasks(
        self,
        losses: Tensor,
        tasks: Tensor,
        counts: Tensor,
        num_tasks: int,
        specific_sq: Tensor | None = None,
        rows: TaskJacobian | None = None,
    ) -> GlobalTasks:
        """The global losses (and rows of the shared parameters, when given) from this rank's
        ``(m_l,)`` losses of ``tasks`` over ``counts`` samples each. Two all-reduces with rows,
        one without; one host read (which tasks are present anywhere)."""
        device = losses.device
        c = counts.to(device=device, dtype=torch.float64)
        small = torch.zeros(num_tasks, 3, dtype=torch.float64, device=device)
        small[tasks, 0] = c * losses.double()
        small[tasks, 1] = c
        if specific_sq is not None:
            small[tasks, 2] = specific_sq.double()
        big = None
        if rows is not None:
            m_l = rows.num_tasks
            flat = torch.cat([b.reshape(m_l, -1) for b in rows.blocks], dim=1)
            big = torch.zeros(num_tasks, flat.shape[1], dtype=flat.dtype, device=flat.device)
            big[tasks.to(flat.device)] = flat * c.to(flat.device, flat.dtype).unsqueeze(1)
            self.all_reduce_(big)
        self.all_reduce_(small)
        total = small[:, 1]
        present = total > 0
        tasks_g = present.nonzero().flatten()  # the one host read
        pos = torch.cumsum(present.long(), 0) - 1
        scale = c / total.index_select(0, tasks)
        global_rows = None
        if big is not None and rows is not None:
            denom = total.index_select(0, tasks_g).to(big.device, big.dtype).unsqueeze(1)
            mean = big.index_select(0, tasks_g.to(big.device)) / denom
            global_rows = TaskJacobian(_unflatten(mean, rows.blocks))
        return GlobalTasks(
            losses=(small[tasks_g, 0] / total[tasks_g]).to(losses.dtype),
            tasks=tasks_g,
            local_pos=pos.index_select(0, tasks),
            local_scale=scale,
            specific_sq=small[tasks_g, 2].float(),
            rows=global_rows,
        )

    def reduce_specific(
        self,
        split: SplitGradients,
        layout: Sequence[Tensor],
        weights: Tensor,
    ) -> None:
        """Accumulate into ``.grad`` the global combination of the task-specific gradients:
        ``Σ_i w_i g_i`` over the global tasks, from this rank's rows weighted by ``weights``
        (``(m_l,)``: each row's ``w_i · c_{i,r} / C_i``). One all-reduce of the combined update
        over ``layout`` (every task-specific parameter; its size is theirs, not ``m`` times)."""
        if not layout:
            return
        offsets: dict[int, int] = {}
        size = 0
        for p in layout:
            offsets[id(p)] = size
            size += p.numel()
        ref = layout[0]
        dtype = torch.promote_types(ref.dtype, weights.dtype) if ref.is_floating_point() else None
        flat = torch.zeros(size, dtype=dtype or ref.dtype, device=ref.device)
        pieces: list[tuple[Tensor, Tensor]] = []
        if split.specific is not None:
            combined = split.specific.combine(weights.detach())
            pieces.extend(zip(split.specific_params, combined, strict=True))
        if split.owned is not None:
            pieces.extend(zip(split.owned.params, split.owned.scaled_(weights), strict=True))
        for p, g in pieces:
            start = offsets[id(p)]
            flat[start : start + p.numel()] += g.reshape(-1).to(flat.dtype)
        self.all_reduce_(flat)
        accumulate(list(layout), _unflatten_params(flat, layout))

    def average_grads_(self, params: Sequence[Tensor]) -> None:
        """Average the ``.grad`` of ``params`` over the ranks: one all-reduce of one flat buffer
        (with one flag per parameter: a ``.grad`` that is None on every rank stays None; one
        host read). Exact also under gradient accumulation: the part of ``.grad`` accumulated
        earlier is identical on every rank, and its average is itself."""
        if not params:
            return
        ref = next((p.grad for p in params if p.grad is not None), None)
        dtype = ref.dtype if ref is not None else params[0].dtype
        device = params[0].device
        parts = [
            (
                p.grad.reshape(-1).to(dtype)
                if p.grad is not None
                else p.new_zeros(p.numel(), dtype=dtype)
            )
            for p in params
        ]
        flags = torch.tensor([p.grad is not None for p in params], dtype=dtype, device=device)
        flat = self.all_reduce_(torch.cat([*[t.to(device) for t in parts], flags]))
        flat[: -len(params)] /= self.world_size
        had = flat[-len(params) :].ne(0).tolist()
        for p, g, h in zip(
            params, _unflatten_params(flat[: -len(params)], params), had, strict=True
        ):
            if not h:
                continue
            if p.grad is None:
                p.grad = g.to(p.dtype)
            else:
                p.grad.copy_(g)


def _unflatten(flat: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    """``(m, P)`` rows back into blocks shaped as ``like`` (``(m_l, *shape)`` each)."""
    out, start = [], 0
    for b in like:
        n = math.prod(b.shape[1:])
        out.append(flat[:, start : start + n].reshape(flat.shape[0], *b.shape[1:]))
        start += n
    return out


def _unflatten_params(flat: Tensor, params: Sequence[Tensor]) -> list[Tensor]:
    out, start = [], 0
    for p in params:
        out.append(flat[start : start + p.numel()].view(p.shape))
        start += p.numel()
    return out
