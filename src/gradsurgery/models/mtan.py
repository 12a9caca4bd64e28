"""MTAN: the Multi-Task Attention Network (Liu, Johns & Davison, CVPR 2019).

A shared backbone (the "global feature pool") plus, for each task, a soft-attention module at every
stage that selects the task's features from the shared ones. At stage ``j`` with shared maps
``u^(j)`` (output of the stage's first layer) and ``p^(j)`` (the stage's output), task ``i``'s
attended features are (paper, eq. 1)

    a_i^(j) = h_i^(j)( g_i^(j)( [u^(j) ; f^(j)(â_i^(j-1))] ) ),     â_i^(j) = a_i^(j) ⊙ p^(j)

where ``[· ; ·]`` concatenates channels, ``g_i`` and ``h_i`` are task-specific ``1×1 conv → BN``
layers with ReLU and sigmoid activations (so ``a ∈ (0, 1)``), and ``f^(j)`` is a ``3×3 conv → BN →
ReLU`` layer *shared across tasks* that also matches the next stage's width, followed by the pooling
(encoder) or bilinear upsampling (decoder) that matches its resolution. At the first stage the
attention reads ``u^(1)`` alone.

Two variants:

* :class:`MTANSegNet`: the dense NYUv2/CityScapes model, attention at every encoder and decoder
  stage of :class:`~gradsurgery.models.segnet.SegNet`; the heads read the last attended decoder
  features. In the decoder, ``u`` is the stage's unpooled input, ``f`` is applied after upsampling
  the previous task features (the order of the authors' code).
* :class:`MTANClassifier`: an encoder-only VGG-style backbone with attention at every stage, then
  global average pooling and one linear head per task (the paper's image-classification variant
  uses VGG-16 / a wide ResNet backbone; here the stage layout is configurable and small).

Which parameters are shared: the backbone and every ``f^(j)``; each task owns its ``g``/``h``
attention layers and its head. There is no single shared representation that all heads read, so the
MGDA-UB-style engine does not apply (``provides_representation = False``).

Example:
    >>> import torch
    >>> model = MTANSegNet(num_classes=7, tasks=("segmentation", "depth"))
    >>> outputs, masks = model(torch.randn(2, 3, 32, 32), return_attention=True)
    >>> [y.shape[1] for y in outputs]
    [7, 1]
    >>> bool(all(((a > 0) & (a < 1)).all() for task in masks for a in task))
    True
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradsurgery.models.base import MultiTaskModel, Owned
from gradsurgery.models.segnet import DENSE_TASKS, SegNet, conv_bn_relu, dense_head

__all__ = ["AttentionModule", "MTANClassifier", "MTANSegNet"]


class AttentionModule(nn.Module):
    """Task ``i``'s mask at one stage: ``sigmoid(BN(conv1×1(relu(BN(conv1×1(input))))))``."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool = True) -> None:
        super().__init__()
        self.g = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1),
            nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity(),
            nn.ReLU(),
        )
        self.h = nn.Sequential(
            nn.Conv2d(out_channels, out_channels, 1),
            nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity(),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.h(self.g(x))


def _cat(u: Tensor, previous: Tensor | None) -> Tensor:
    return u if previous is None else torch.cat([u, previous], dim=1)


class MTANSegNet(MultiTaskModel):
    """MTAN on a SegNet backbone, for dense prediction.

    Args:
        num_classes: segmentation classes (13 for NYUv2).
        tasks: dense tasks, each one of ``"segmentation"``, ``"depth"``, ``"normal"``.
        in_channels: input channels.
        channels: SegNet stage widths (see :class:`~gradsurgery.models.segnet.SegNet`).
        convs_per_stage: SegNet layers per stage.
        batch_norm: BatchNorm in the backbone and attention modules.

    ``forward(x)`` returns the task outputs; ``forward(x, return_attention=True)`` returns
    ``(outputs, masks)`` with ``masks[i]`` the list of task ``i``'s attention masks, encoder stages
    first (shallow to deep), then decoder stages (deep to shallow).
    """

    def __init__(
        self,
        num_classes: int = 13,
        tasks: Sequence[str] = DENSE_TASKS,
        *,
        in_channels: int = 3,
        channels: Sequence[int] = (16, 32, 64, 128),
        convs_per_stage: Sequence[int] | None = None,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        self.backbone = SegNet(
            in_channels, channels, convs_per_stage=convs_per_stage, batch_norm=batch_norm
        )
        c = self.backbone.channels
        c_out = (c[0], *c[:-1])  # decoder stage j's output width
        depth = len(c)
        self.tasks = tuple(tasks)
        self.num_tasks = len(self.tasks)
        # shared f^(j): encoder, stage j -> width of stage j+1 (the last keeps its width)
        c_next = (*c[1:], c[-1])
        self.enc_shared = nn.ModuleList(
            conv_bn_relu(c[j], c_next[j], batch_norm) for j in range(depth)
        )
        # shared f^(j): decoder, upsampled task features (width c[j]) -> stage j's output width
        self.dec_shared = nn.ModuleList(
            conv_bn_relu(c[j], c_out[j], batch_norm) for j in range(depth)
        )
        self.enc_att = nn.ModuleList(
            nn.ModuleList(
                AttentionModule(c[j] if j == 0 else 2 * c[j], c[j], batch_norm)
                for j in range(depth)
            )
            for _ in self.tasks
        )
        self.dec_att = nn.ModuleList(
            nn.ModuleList(
                AttentionModule(c[j] + c_out[j], c_out[j], batch_norm) for j in range(depth)
            )
            for _ in self.tasks
        )
        self.heads = nn.ModuleList(dense_head(t, c[0], num_classes) for t in self.tasks)

    def _shared_members(self) -> Iterable[Owned]:
        return [self.backbone, self.enc_shared, self.dec_shared]

    def _task_members(self, task: int) -> Iterable[Owned]:
        return [self.enc_att[task], self.dec_att[task], self.heads[task]]

    def forward(
        self, x: Tensor, return_attention: bool = False
    ) -> list[Tensor] | tuple[list[Tensor], list[list[Tensor]]]:
        feats = self.backbone.features(x)
        depth = len(self.backbone.channels)
        outputs, masks = [], []
        for i in range(self.num_tasks):
            task_masks = []
            t: Tensor | None = None
            for j in range(depth):  # encoder, shallow to deep
                a = cast(nn.ModuleList, self.enc_att[i])[j](_cat(feats.enc_first[j], t))
                task_masks.append(a)
                t = F.max_pool2d(self.enc_shared[j](a * feats.enc_out[j]), 2, 2)
            assert t is not None
            for j in reversed(range(depth)):  # decoder, deep to shallow
                v = feats.dec_in[j]
                up = F.interpolate(t, size=v.shape[-2:], mode="bilinear", align_corners=True)
                att = cast(nn.ModuleList, self.dec_att[i])[j]
                a = att(torch.cat([v, self.dec_shared[j](up)], dim=1))
                task_masks.append(a)
                t = a * feats.dec_out[j]
            outputs.append(self.heads[i](t))
            masks.append(task_masks)
        return (outputs, masks) if return_attention else outputs


class MTANClassifier(MultiTaskModel):
    """MTAN for image classification: attention over an encoder-only VGG-style backbone.

    Stage ``j`` of the shared backbone is ``u = conv_bn_relu(in → channels[j])``, ``p`` = one more
    ``conv_bn_relu`` at the same width, then 2×2 max-pooling. Task ``i``'s attended features after
    the last stage are globally average-pooled and read by its linear head.

    Args:
        out_features: the number of outputs (classes) of each task.
        in_channels: input channels.
        channels: stage widths (each stage halves the resolution).
        batch_norm: BatchNorm in the backbone and attention modules.

    Example:
        >>> import torch
        >>> model = MTANClassifier([10, 5])
        >>> [y.shape for y in model(torch.randn(2, 3, 32, 32))]
        [torch.Size([2, 10]), torch.Size([2, 5])]
    """

    def __init__(
        self,
        out_features: Sequence[int],
        *,
        in_channels: int = 3,
        channels: Sequence[int] = (16, 32, 64),
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        c = tuple(channels)
        depth = len(c)
        self.num_tasks = len(out_features)
        self.channels = c
        widths_in = (in_channels, *c[:-1])
        self.first = nn.ModuleList(
            conv_bn_relu(widths_in[j], c[j], batch_norm) for j in range(depth)
        )
        self.second = nn.ModuleList(conv_bn_relu(c[j], c[j], batch_norm) for j in range(depth))
        c_next = (*c[1:], c[-1])
        self.shared_att = nn.ModuleList(
            conv_bn_relu(c[j], c_next[j], batch_norm) for j in range(depth)
        )
        self.att = nn.ModuleList(
            nn.ModuleList(
                AttentionModule(c[j] if j == 0 else 2 * c[j], c[j], batch_norm)
                for j in range(depth)
            )
            for _ in range(self.num_tasks)
        )
        self.heads = nn.ModuleList(nn.Linear(c[-1], out) for out in out_features)

    def _shared_members(self) -> Iterable[Owned]:
        return [self.first, self.second, self.shared_att]

    def _task_members(self, task: int) -> Iterable[Owned]:
        return [self.att[task], self.heads[task]]

    def forward(
        self, x: Tensor, return_attention: bool = False
    ) -> list[Tensor] | tuple[list[Tensor], list[list[Tensor]]]:
        us, ps = [], []
        h = x
        for first, second in zip(self.first, self.second, strict=True):
            u = first(h)
            p = second(u)
            us.append(u)
            ps.append(p)
            h = F.max_pool2d(p, 2, 2)
        outputs, masks = [], []
        for i in range(self.num_tasks):
            t: Tensor | None = None
            task_masks = []
            for j in range(len(self.channels)):
                a = cast(nn.ModuleList, self.att[i])[j](_cat(us[j], t))
                task_masks.append(a)
                t = F.max_pool2d(self.shared_att[j](a * ps[j]), 2, 2)
            assert t is not None
            outputs.append(self.heads[i](t.mean(dim=(2, 3))))
            masks.append(task_masks)
        return (outputs, masks) if return_attention else outputs
