"""A SegNet encoder-decoder for dense prediction (NYUv2 / CityScapes-like), with dense task heads.

Badrinarayanan, Kendall, Cipolla, "SegNet", TPAMI 2017, in the multi-task layout that Liu, Johns &
Davison (MTAN, CVPR 2019) use on NYUv2 and CityScapes and that PCGrad, CAGrad, Nash-MTL and FAMO
reuse. Encoder stage ``j``: a first ``conv 3×3 → BN → ReLU`` to ``channels[j]`` (its output is what
MTAN calls ``u``), then more such layers at the same width (output ``p``), then a 2×2 max-pool that
keeps its indices. Decoder stage ``j`` (deepest first): max-unpool with encoder stage ``j``'s
indices, a first layer to ``channels[j-1]`` (``channels[0]`` at the top), then more layers. The
decoder's output (``channels[0]`` maps at the input resolution) is the shared representation.

Each task's head is ``conv 3×3 → conv 1×1`` (MTAN's prediction layer): segmentation predicts
``num_classes`` logits per pixel, depth 1 channel, surface normals 3 channels normalized to unit
length per pixel.

Choices:

* ``channels`` default ``(16, 32, 64, 128)`` (4 stages; 0.68M parameters with the 3 heads), small
  enough for a CPU; :data:`SEGNET_PAPER_CHANNELS` is MTAN's ``(64, 128, 256, 512, 512)`` (25.1M
  parameters with the 3 heads; MTAN on it has 44.2M, the MTAN paper's count). The input side should
  be divisible by ``2 ** len(channels)``.
* Layers per stage follow MTAN's code: 2 in the first two stages, 3 after, in both encoder and
  decoder (``convs_per_stage`` overrides it).
* Segmentation outputs are logits (MTAN's code returns ``log_softmax``); normals use
  ``F.normalize`` (an ``eps`` guards a zero vector, where MTAN's code divides by the norm).

Example:
    >>> import torch
    >>> model = segnet_multitask(num_classes=13)
    >>> seg, depth, normal = model(torch.randn(2, 3, 32, 32))
    >>> seg.shape, depth.shape, normal.shape
    (torch.Size([2, 13, 32, 32]), torch.Size([2, 1, 32, 32]), torch.Size([2, 3, 32, 32]))
    >>> torch.allclose(normal.norm(dim=1), torch.ones(2, 32, 32))
    True
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import cast

import torch.nn.functional as F
from torch import Tensor, nn

from gradsurgery.models.hard_sharing import HardParameterSharing

__all__ = [
    "DENSE_TASKS",
    "SEGNET_PAPER_CHANNELS",
    "DenseHead",
    "SegNet",
    "SegNetFeatures",
    "conv_bn_relu",
    "dense_head",
    "segnet_multitask",
]

#: MTAN's SegNet widths (NYUv2 / CityScapes experiments).
SEGNET_PAPER_CHANNELS = (64, 128, 256, 512, 512)
#: The dense tasks with ready-made heads.
DENSE_TASKS = ("segmentation", "depth", "normal")


def conv_bn_relu(in_channels: int, out_channels: int, batch_norm: bool = True) -> nn.Sequential:
    """``conv 3×3 (padding 1) → BatchNorm → ReLU``."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity(),
        nn.ReLU(),
    )


class _Stage(nn.Module):
    """A first layer (changing the width) then ``extra`` layers at the output width."""

    def __init__(self, in_channels: int, out_channels: int, extra: int, batch_norm: bool) -> None:
        super().__init__()
        self.first = conv_bn_relu(in_channels, out_channels, batch_norm)
        self.rest = nn.Sequential(
            *[conv_bn_relu(out_channels, out_channels, batch_norm) for _ in range(extra)]
        )


@dataclass
class SegNetFeatures:
    """Intermediate maps of one SegNet pass (lists are indexed by stage ``j``, shallow to deep).

    Attributes:
        enc_first: output of encoder stage ``j``'s first layer (MTAN's ``u``).
        enc_out: output of encoder stage ``j`` before pooling (MTAN's ``p``).
        dec_in: unpooled input of decoder stage ``j``.
        dec_out: output of decoder stage ``j``.
        output: the decoder's final output (``dec_out[0]``).
    """

    enc_first: list[Tensor]
    enc_out: list[Tensor]
    dec_in: list[Tensor]
    dec_out: list[Tensor]

    @property
    def output(self) -> Tensor:
        return self.dec_out[0]


class SegNet(nn.Module):
    """SegNet encoder-decoder: ``(n, in_channels, H, W) -> (n, channels[0], H, W)``."""

    def __init__(
        self,
        in_channels: int = 3,
        channels: Sequence[int] = (16, 32, 64, 128),
        *,
        convs_per_stage: Sequence[int] | None = None,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        channels = tuple(channels)
        if not channels:
            raise ValueError("channels must list at least one stage width")
        if convs_per_stage is None:
            convs_per_stage = [2 if j < 2 else 3 for j in range(len(channels))]
        if len(convs_per_stage) != len(channels) or min(convs_per_stage) < 1:
            raise ValueError("convs_per_stage needs one count (≥ 1) per stage")
        self.channels = channels
        self.out_channels = channels[0]
        widths_in = (in_channels, *channels[:-1])
        self.encoder = nn.ModuleList(
            _Stage(c_in, c, k - 1, batch_norm)
            for c_in, c, k in zip(widths_in, channels, convs_per_stage, strict=True)
        )
        widths_out = (channels[0], *channels[:-1])  # decoder stage j maps channels[j] -> these
        self.decoder = nn.ModuleList(
            _Stage(c, c_out, k - 1, batch_norm)
            for c, c_out, k in zip(channels, widths_out, convs_per_stage, strict=True)
        )

    def features(self, x: Tensor) -> SegNetFeatures:
        """One pass, keeping the maps that MTAN's attention modules read."""
        j_max = len(self.channels)
        enc_first, enc_out, indices = [], [], []
        h = x
        for stage in cast("Iterable[_Stage]", self.encoder):
            u = stage.first(h)
            p = stage.rest(u)
            enc_first.append(u)
            enc_out.append(p)
            h, idx = F.max_pool2d(p, 2, 2, return_indices=True)
            indices.append(idx)
        dec_in: list[Tensor] = [h] * j_max
        dec_out: list[Tensor] = [h] * j_max
        for j in reversed(range(j_max)):
            v = F.max_unpool2d(h, indices[j], (2, 2), (2, 2), output_size=enc_out[j].shape[-2:])
            stage = cast(_Stage, self.decoder[j])
            h = stage.rest(stage.first(v))
            dec_in[j], dec_out[j] = v, h
        return SegNetFeatures(enc_first, enc_out, dec_in, dec_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x).output


class DenseHead(nn.Module):
    """``conv 3×3 → conv 1×1`` per-pixel prediction, optionally unit-normalized over channels."""

    def __init__(self, in_channels: int, out_channels: int, normalize: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.pred = nn.Conv2d(in_channels, out_channels, 1)
        self.normalize = normalize

    def forward(self, z: Tensor) -> Tensor:
        y = self.pred(self.conv(z))
        return F.normalize(y, dim=1) if self.normalize else y


def dense_head(task: str, in_channels: int, num_classes: int = 13) -> DenseHead:
    """The head of a dense task: ``"segmentation"`` (``num_classes`` logits), ``"depth"`` (1) or
    ``"normal"`` (3, unit length)."""
    if task == "segmentation":
        return DenseHead(in_channels, num_classes)
    if task == "depth":
        return DenseHead(in_channels, 1)
    if task == "normal":
        return DenseHead(in_channels, 3, normalize=True)
    raise ValueError(f"unknown dense task {task!r}; expected one of {DENSE_TASKS}")


def segnet_multitask(
    num_classes: int = 13,
    tasks: Sequence[str] = DENSE_TASKS,
    *,
    in_channels: int = 3,
    channels: Sequence[int] = (16, 32, 64, 128),
    convs_per_stage: Sequence[int] | None = None,
    batch_norm: bool = True,
) -> HardParameterSharing:
    """A shared :class:`SegNet` with one :func:`dense_head` per task (13 classes: NYUv2; CityScapes
    uses 7 or 19 and ``tasks=("segmentation", "depth")``)."""
    trunk = SegNet(in_channels, channels, convs_per_stage=convs_per_stage, batch_norm=batch_norm)
    heads = [dense_head(t, trunk.out_channels, num_classes) for t in tasks]
    return HardParameterSharing(trunk, heads)
