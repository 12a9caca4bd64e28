"""Cross-stitch networks (Misra, Shrivastava, Gupta & Hebert, CVPR 2016).

One network ("column") per task, all of the same layout; after each stage a *cross-stitch unit*
replaces every column's activations by a learned linear combination of all columns' activations
(paper, eq. 1, written for ``m`` tasks):

    x̃_i = Σ_j α_ij x_j        (per channel: α_ij is a vector over channels)

The paper places units after the pooling layers and the fully connected layers of two AlexNets,
i.e. after every stage, and not after the last (task-specific) prediction layer; so do we: a unit
after every stage, then each column's head.

Choices:

* Initialization (paper §3.3, their best setting): ``α_ii = alpha_same = 0.9`` and the off-diagonal
  entries share the rest, ``α_ij = (1 − alpha_same)/(m − 1)``, so each row is a convex
  combination.
* ``per_channel=True`` (default) learns one ``m × m`` matrix per channel of the stage output
  (dimension 1), as in widely used reimplementations; ``False`` learns one ``m × m`` matrix per unit.
* The paper trains the units with a much larger learning rate than the columns (10²–10³×, their
  ablation): :meth:`CrossStitchNetwork.cross_stitch_parameters` gives them for a separate
  optimizer parameter group.

Which parameters are shared. The cross-stitch units are shared; each column and its head are
task ``i``'s (``task_specific_parameters(i)``). Note that once off-diagonal ``α`` are nonzero,
task ``j``'s loss *does* reach column ``i`` through the units: ``MultiTaskBackward`` then gives
the columns the plain (task-weighted) sum of all tasks' gradients, without surgery. To apply the
method to the columns too, build with ``share_columns=True`` (only the heads are task-specific).

Example:
    >>> import torch
    >>> model = cross_stitch_mlp(6, [2, 3], hidden=(8, 8))
    >>> [y.shape for y in model(torch.randn(4, 6))]
    [torch.Size([4, 2]), torch.Size([4, 3])]
    >>> model.units[0].matrix()[:, :, 0]
    tensor([[0.9000, 0.1000],
            [0.1000, 0.9000]], grad_fn=<SelectBackward0>)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import cast

import torch
from torch import Tensor, nn

from gradsurgery.models.base import MultiTaskModel, Owned
from gradsurgery.models.layers import mlp_width
from gradsurgery.models.lenet import lenet_head, lenet_trunk

__all__ = ["CrossStitchNetwork", "CrossStitchUnit", "cross_stitch_lenet", "cross_stitch_mlp"]


class CrossStitchUnit(nn.Module):
    """Mix ``m`` same-shaped activations: ``out_i = Σ_j α_ij x_j``.

    Args:
        num_tasks: ``m``.
        channels: the size of dimension 1 of the activations for per-channel ``α`` (None: one
            scalar per pair).
        alpha_same: the initial ``α_ii``; off-diagonal entries start at ``(1 − α_ii)/(m − 1)``.
    """

    def __init__(
        self, num_tasks: int, channels: int | None = None, alpha_same: float = 0.9
    ) -> None:
        super().__init__()
        m = num_tasks
        other = (1.0 - alpha_same) / (m - 1) if m > 1 else 0.0
        init = torch.full((m, m), other)
        init.fill_diagonal_(alpha_same)
        self.channels = channels
        width = channels if channels is not None else 1
        self.alpha = nn.Parameter(init.unsqueeze(-1).repeat(1, 1, width))

    def matrix(self) -> Tensor:
        """``(m, m, channels or 1)``: ``α_ij`` (per channel)."""
        return self.alpha

    def forward(self, xs: Sequence[Tensor]) -> list[Tensor]:
        x = torch.stack(list(xs))  # (m, n, C, ...)
        alpha: Tensor = self.alpha
        if self.channels is not None:
            if x.dim() < 3 or x.shape[2] != self.channels:
                raise ValueError(
                    f"expected activations with {self.channels} channels in dimension 1, got "
                    f"shape {tuple(x.shape[1:])}"
                )
            alpha = alpha.reshape(*alpha.shape, *([1] * (x.dim() - 3)))  # (m, m, C, 1, ...)
            mixed = torch.einsum("ij...,jn...->in...", alpha, x)
        else:
            mixed = torch.einsum("ij,jn...->in...", alpha[..., 0], x)
        return list(mixed.unbind(0))


class CrossStitchNetwork(MultiTaskModel):
    """``m`` columns of stages with a cross-stitch unit after every stage, then one head per task.

    Args:
        columns: ``columns[i]`` is task ``i``'s list of stages (modules); all columns have the same
            number of stages with matching output shapes.
        heads: one head per task, applied to its column's last (mixed) output.
        channels: the output width (dimension 1) of each stage, for per-channel units.
        per_channel: per-channel ``α`` (requires ``channels``) or one ``α`` per column pair.
        alpha_same: initial ``α_ii``.
        share_columns: count the columns as shared parameters (see the module docstring).
    """

    def __init__(
        self,
        columns: Sequence[Sequence[nn.Module]],
        heads: Sequence[nn.Module],
        *,
        channels: Sequence[int] | None = None,
        per_channel: bool = True,
        alpha_same: float = 0.9,
        share_columns: bool = False,
    ) -> None:
        super().__init__()
        m = len(columns)
        if m < 1 or len(heads) != m:
            raise ValueError(f"need one head per column, got {m} columns and {len(heads)} heads")
        depth = len(columns[0])
        if any(len(col) != depth for col in columns):
            raise ValueError("every column must have the same number of stages")
        if per_channel and (channels is None or len(channels) != depth):
            raise ValueError("per_channel units need the output width of every stage: channels=")
        self.num_tasks = m
        self.share_columns = share_columns
        self.columns = nn.ModuleList(nn.ModuleList(col) for col in columns)
        self.units = nn.ModuleList(
            CrossStitchUnit(m, channels[s] if per_channel and channels else None, alpha_same)
            for s in range(depth)
        )
        self.heads = nn.ModuleList(heads)

    def _shared_members(self) -> Iterable[Owned]:
        return [self.units, self.columns] if self.share_columns else [self.units]

    def _task_members(self, task: int) -> Iterable[Owned]:
        return [self.columns[task], self.heads[task]]

    def cross_stitch_parameters(self) -> Iterator[nn.Parameter]:
        """The units' ``α`` (for a parameter group with its own learning rate)."""
        return self.units.parameters()

    def forward(self, x: Tensor) -> list[Tensor]:
        hs: list[Tensor] = [x] * self.num_tasks
        for s, unit in enumerate(self.units):
            columns = cast("Iterable[nn.ModuleList]", self.columns)
            hs = unit([col[s](h) for col, h in zip(columns, hs, strict=True)])
        return [head(h) for head, h in zip(self.heads, hs, strict=True)]


def cross_stitch_mlp(
    in_features: int,
    out_features: Sequence[int],
    *,
    hidden: Sequence[int] = (256, 256),
    activation: Callable[[], nn.Module] = nn.ReLU,
    per_channel: bool = True,
    alpha_same: float = 0.9,
    share_columns: bool = False,
) -> CrossStitchNetwork:
    """One MLP column per task (a stage = ``Linear → activation``) and a linear head each."""
    widths_in = (in_features, *hidden[:-1])
    columns = [
        [
            nn.Sequential(nn.Linear(a, b), activation())
            for a, b in zip(widths_in, hidden, strict=True)
        ]
        for _ in out_features
    ]
    width = mlp_width(in_features, hidden)
    heads = [nn.Linear(width, out) for out in out_features]
    return CrossStitchNetwork(
        columns,
        heads,
        channels=list(hidden),
        per_channel=per_channel,
        alpha_same=alpha_same,
        share_columns=share_columns,
    )


def cross_stitch_lenet(
    num_tasks: int = 2,
    num_classes: int = 10,
    *,
    in_channels: int = 1,
    input_size: int = 28,
    dropout: float = 0.5,
    per_channel: bool = True,
    alpha_same: float = 0.9,
    share_columns: bool = False,
) -> CrossStitchNetwork:
    """Cross-stitched MultiMNIST LeNets: one :func:`~gradsurgery.models.lenet.lenet_trunk` column
    per task, cut into its three stages (conv-pool, conv-pool, fully connected), units after each,
    then a :func:`~gradsurgery.models.lenet.lenet_head` per task."""
    columns = []
    for _ in range(num_tasks):
        layers = list(lenet_trunk(in_channels, input_size, dropout=dropout))
        cut1 = 3  # conv, pool, relu
        cut2 = next(k for k, layer in enumerate(layers) if isinstance(layer, nn.Flatten))
        columns.append(
            [
                nn.Sequential(*layers[:cut1]),
                nn.Sequential(*layers[cut1:cut2]),
                nn.Sequential(*layers[cut2:]),
            ]
        )
    heads = [lenet_head(50, num_classes, dropout) for _ in range(num_tasks)]
    return CrossStitchNetwork(
        columns,
        heads,
        channels=[10, 20, 50],
        per_channel=per_channel,
        alpha_same=alpha_same,
        share_columns=share_columns,
    )
