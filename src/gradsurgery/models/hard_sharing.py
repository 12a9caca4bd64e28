"""Hard parameter sharing: one shared trunk, one head per task.

The classic multi-task architecture (Caruana, 1997): ``z = trunk(x)`` is shared by every task and
task ``i`` predicts ``y_i = head_i(z)``. The trunk's parameters are shared, each head's belong to
its task. ``z`` is the shared representation that the MGDA-UB-style engine differentiates::

    outputs, z = model(x, return_representation=True)
    losses = [loss_fn(y, t) for y, t in zip(outputs, targets)]
    mtl.backward(losses, representation=z)    # approximate: one pass through the trunk

Ready-made trunks: :func:`hard_sharing_mlp` here, and in their own modules the MultiMNIST LeNet
(:mod:`gradsurgery.models.lenet`), a small ResNet for 3×32×32 (:mod:`gradsurgery.models.resnet`)
and a SegNet encoder-decoder for dense prediction (:mod:`gradsurgery.models.segnet`).

Example:
    >>> import torch
    >>> model = hard_sharing_mlp(8, [3, 1], hidden=(16,))
    >>> [y.shape for y in model(torch.randn(5, 8))]
    [torch.Size([5, 3]), torch.Size([5, 1])]
    >>> model.num_parameters()
    {'total': 212, 'shared': 144, 'task_specific': 68}
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from torch import Tensor, nn

from gradsurgery.models.base import MultiTaskModel, Owned
from gradsurgery.models.layers import mlp, mlp_width

__all__ = ["HardParameterSharing", "hard_sharing_mlp"]


class HardParameterSharing(MultiTaskModel):
    """A shared ``trunk`` followed by one head per task.

    Args:
        trunk: any module mapping the input to the shared representation ``z``.
        heads: one module per task, each mapping ``z`` to that task's output.

    ``forward(x)`` returns the list of task outputs; ``forward(x, return_representation=True)``
    returns ``(outputs, z)``. :meth:`representation` and :meth:`task_outputs` are the two halves.
    """

    provides_representation = True

    def __init__(self, trunk: nn.Module, heads: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(heads) < 1:
            raise ValueError("at least one head is needed")
        self.trunk = trunk
        self.heads = nn.ModuleList(heads)
        self.num_tasks = len(heads)

    def _shared_members(self) -> Iterable[Owned]:
        return [self.trunk]

    def _task_members(self, task: int) -> Iterable[Owned]:
        return [self.heads[task]]

    def representation(self, x: Tensor) -> Tensor:
        """The shared representation ``z = trunk(x)``."""
        return self.trunk(x)

    def task_outputs(self, z: Tensor) -> list[Tensor]:
        """Every head applied to ``z``."""
        return [head(z) for head in self.heads]

    def forward(
        self, x: Tensor, return_representation: bool = False
    ) -> list[Tensor] | tuple[list[Tensor], Tensor]:
        z = self.representation(x)
        outputs = self.task_outputs(z)
        return (outputs, z) if return_representation else outputs


def hard_sharing_mlp(
    in_features: int,
    out_features: Sequence[int],
    *,
    hidden: Sequence[int] = (256, 256),
    head_hidden: Sequence[int] = (),
    dropout: float = 0.0,
) -> HardParameterSharing:
    """An MLP trunk (``Linear → ReLU`` per width in ``hidden``) and an MLP head per task.

    Args:
        in_features: input width.
        out_features: the output width of each task (its length is the number of tasks).
        hidden: trunk widths.
        head_hidden: hidden widths inside each head (empty: a linear head).
        dropout: dropout after every hidden activation.
    """
    trunk = mlp(in_features, hidden, dropout=dropout)
    width = mlp_width(in_features, hidden)
    heads = [mlp(width, head_hidden, out, dropout=dropout) for out in out_features]
    return HardParameterSharing(trunk, heads)
