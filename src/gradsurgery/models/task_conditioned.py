"""A single network conditioned on a one-hot task encoding (PCGrad paper, §2.1).

Yu et al. (NeurIPS 2020) write a multi-task model as one network ``f_θ(y | x, z_i)`` where ``z_i``
is a one-hot encoding of task ``i``; all of ``θ`` is shared, and each sample of a batch belongs to
one task. Here:

* MLP trunk (``in_features`` an int): the input is ``[x ; z_i]``, then ``Linear → ReLU`` layers.
* Conv trunk (``in_features`` a ``(C, H, W)`` tuple): ``z_i`` is broadcast to ``m`` constant
  planes appended to the image's channels, then ``conv 3×3 → ReLU → max-pool 2`` stages
  (``channels``), flattened, then the ``hidden`` ``Linear → ReLU`` layers.
* Output layer: ``head="shared"``, one linear layer for all tasks (everything is shared, the
  paper's formulation); or ``head="per_task"``, one linear layer per task, selected per sample by
  its task id (a multi-head network; the heads are then task-specific).

``forward(x, task_ids) -> (n, out_features)``. It runs under ``torch.func.vmap``: the one-hot is
built by comparison (``torch.nn.functional.one_hot`` calls ``.item()``), every per-task head
is applied and each sample keeps its own task's output (a gather), and there is no Python control
flow on data. So
``MultiTaskBackward.backward_partitioned`` (``TaskPartitionedJacobian``) takes its vectorized path.

Example:
    >>> import torch
    >>> model = TaskConditionedNetwork(5, 3, num_tasks=4, hidden=(16, 16))
    >>> model(torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 0, 1])).shape
    torch.Size([6, 3])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from gradsurgery.models.base import MultiTaskModel, Owned
from gradsurgery.models.layers import gathered_linear, mlp, mlp_width, task_one_hot

__all__ = ["TaskConditionedNetwork"]

HeadKind = Literal["shared", "per_task"]


class TaskConditionedNetwork(MultiTaskModel):
    """``f_θ(y | x, z_i)``: one network, one-hot task input, shared or per-task output layer.

    Args:
        in_features: input width (MLP trunk) or ``(C, H, W)`` image shape (conv trunk).
        out_features: output width.
        num_tasks: ``m``.
        hidden: widths of the fully connected layers of the trunk.
        channels: conv-stage widths (conv trunk only).
        head: ``"shared"`` or ``"per_task"`` output layer.
        activation: the trunk's nonlinearity.
        dropout: dropout after every fully connected hidden layer.
    """

    task_conditioned = True

    def __init__(
        self,
        in_features: int | Sequence[int],
        out_features: int,
        num_tasks: int,
        *,
        hidden: Sequence[int] = (256, 256),
        channels: Sequence[int] = (32, 64),
        head: HeadKind = "per_task",
        activation: Callable[[], nn.Module] = nn.ReLU,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if head not in ("shared", "per_task"):
            raise ValueError(f"head must be 'shared' or 'per_task', got {head!r}")
        self.num_tasks = num_tasks
        self.head_kind: HeadKind = head
        self.conv: nn.Sequential | None = None
        if isinstance(in_features, int):
            width = in_features + num_tasks
        else:
            c, h, w = in_features
            layers: list[nn.Module] = []
            c_in = c + num_tasks
            for c_out in channels:
                layers += [nn.Conv2d(c_in, c_out, 3, padding=1), activation(), nn.MaxPool2d(2)]
                c_in = c_out
                h, w = h // 2, w // 2
            if h < 1 or w < 1:
                raise ValueError(
                    f"image {tuple(in_features)} is too small for {len(channels)} pooling stages"
                )
            layers.append(nn.Flatten())
            self.conv = nn.Sequential(*layers)
            width = c_in * h * w
        self.body = mlp(width, hidden, activation=activation, dropout=dropout)
        width = mlp_width(width, hidden)
        if head == "shared":
            self.head = nn.Linear(width, out_features)
        else:
            self.heads = nn.ModuleList(nn.Linear(width, out_features) for _ in range(num_tasks))

    def _trunk_modules(self) -> list[nn.Module]:
        return [m for m in (self.conv, self.body) if m is not None]

    def _shared_members(self) -> Iterable[Owned]:
        shared = self._trunk_modules()
        return [*shared, self.head] if self.head_kind == "shared" else shared

    def _task_members(self, task: int) -> Iterable[Owned]:
        return [self.heads[task]] if self.head_kind == "per_task" else []

    def features(self, x: Tensor, task_ids: Tensor) -> Tensor:
        """The trunk's output for each (sample, task) pair."""
        z = task_one_hot(task_ids, self.num_tasks, x.dtype)
        if self.conv is None:
            return self.body(torch.cat([x, z], dim=1))
        planes = z[:, :, None, None].expand(-1, -1, *x.shape[-2:])
        return self.body(self.conv(torch.cat([x, planes], dim=1)))

    def forward(self, x: Tensor, task_ids: Tensor) -> Tensor:
        h = self.features(x, task_ids)
        if self.head_kind == "shared":
            return self.head(h)
        return gathered_linear(h, task_ids, list(self.heads))
