"""Hand-made :class:`~gradsurgery.methods.base.TaskStep` s for the method tests."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from gradsurgery.methods.base import TaskStep

F64 = torch.float64


def loss_step(
    losses: Sequence[float] | torch.Tensor,
    tasks: Sequence[int] | torch.Tensor | None = None,
    num_tasks: int | None = None,
) -> TaskStep:
    """A loss-only step (float64 losses; tasks 0…m−1 and m tasks unless given)."""
    values = torch.as_tensor(losses, dtype=F64)
    m = values.shape[0]
    return TaskStep(
        losses=values,
        tasks=torch.arange(m) if tasks is None else torch.as_tensor(tasks),
        num_tasks=m if num_tasks is None else num_tasks,
        step=0,
    )


def gramian_step(
    gramian: torch.Tensor, tasks: torch.Tensor | None = None, num: int | None = None
) -> TaskStep:
    """A step carrying ``gramian`` (losses all 1, in its dtype)."""
    m = gramian.shape[0]
    tasks = torch.arange(m) if tasks is None else tasks
    return TaskStep(torch.ones(m, dtype=gramian.dtype), tasks, num or m, 0, gramian=gramian)
