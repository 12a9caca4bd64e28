"""CARE: contextual attention-based representations (Sodhani, Zhang, Pineau, ICML 2021).

* Context: each task's text description goes through a frozen pretrained sentence encoder (here a
  shipped table, :mod:`gradsurgery.rl.task_embeddings`) and a learned MLP, giving ``z_ctx``.
* A mixture of ``k`` state encoders (MLPs) gives ``z_enc^1 … z_enc^k``.
* Attention over the encoders from the context, with no gradient into the context through it:

  - ``attention="dot"`` (the paper's description, "an attention score between ``z_enc^j`` and
    ``z_context``"): ``α_j = softmax_j(z_enc^j · stopgrad(z_ctx) / T)``, state-dependent;
  - ``attention="context_mlp"`` (the authors' ``mtrl`` code): ``α = softmax(MLP(stopgrad(z_ctx)) / T)``,
    one weighting per task.

* ``z_enc = Σ_j α_j z_enc^j``; the actor or critic torso (an MLP, 3×400 by default) reads
  ``[z_enc ; z_ctx]``.

Sizes follow the ``mtrl`` configuration: encoders of 2 layers of width 50 with 50-d outputs,
``k = 6`` for MT10 (the paper's choice; 10 for MT50), context ``z_ctx`` of width 50 from the 384-d
sentence embedding through 100-50-50 hidden layers (``mtrl``: a 768-d RoBERTa embedding through a
100-50 projection and a 50-50 trunk). ``T = 1``.

Differences from ``mtrl``: there the actor's state encoder is tied to the critic's and trained by
the critic loss only, and the context encoder is trained by the critic loss only; here the actor
and each Q-function own their encoders and context encoder, each trained by its own loss (the
architecture is the same, the SAC-AE-style weight tying is not reproduced). With
``task_names=None`` or tasks without a shipped description, the context input is one-hot (a
warning says so).

Every parameter is shared by all tasks; the description table is a buffer (not trained).

Example:
    >>> import torch
    >>> net = CARENetwork(5, 2, num_tasks=2, hidden=(16,), task_names=["reach-v3", "push-v3"])
    >>> net(torch.randn(3, 5), torch.tensor([0, 1, 1])).shape
    torch.Size([3, 2])
    >>> alpha = net.attention_weights(torch.randn(3, 5), torch.tensor([0, 1, 1]))
    >>> alpha.shape, bool(torch.allclose(alpha.sum(-1), torch.ones(3)))
    (torch.Size([3, 6]), True)
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Literal

import torch
from torch import Tensor, nn

from gradsurgery.models.layers import ParallelLinear, mlp, task_one_hot
from gradsurgery.rl.architectures import TaskNetwork, orthogonal_init, register_architecture
from gradsurgery.rl.task_embeddings import task_embedding_table

__all__ = ["CARENetwork"]


class _Encoders(nn.Module):
    """``k`` parallel MLP encoders: ``(N, in) -> (N, k, out)`` (ReLU between layers, none after)."""

    def __init__(self, k: int, in_features: int, hidden: Sequence[int], out_features: int) -> None:
        super().__init__()
        widths = [in_features, *hidden, out_features]
        self.layers = nn.ModuleList(ParallelLinear(k, a, b) for a, b in pairwise(widths))

    def forward(self, x: Tensor) -> Tensor:
        h = self.layers[0](x)
        for layer in self.layers[1:]:
            h = layer(torch.relu(h))
        return h


@register_architecture(
    "care",
    paper="Sodhani, Zhang, Pineau, ICML 2021",
    summary="mixture of state encoders attended by a task-description context",
)
class CARENetwork(TaskNetwork):
    """CARE's mixture of encoders with context attention, then an MLP torso.

    Args:
        in_features, out_features, num_tasks: see :class:`TaskNetwork`.
        hidden: torso hidden widths.
        task_names: task names for the description embeddings (None: one-hot context input).
        num_encoders: ``k``.
        encoder_hidden: hidden widths of each state encoder.
        feature_dim: width of each ``z_enc^j`` (and of ``z_ctx`` for ``attention="dot"``).
        context_hidden: hidden widths of the context MLP.
        context_dim: width of ``z_ctx``.
        attention: ``"dot"`` or ``"context_mlp"`` (see the module docstring).
        attention_hidden: hidden widths of the attention MLP (``"context_mlp"`` only).
        temperature: softmax temperature ``T``.
    """

    uses_task_names = True

    def __init__(
        self,
        in_features: int,
        out_features: int,
        num_tasks: int,
        *,
        hidden: Sequence[int] = (400, 400, 400),
        task_names: Sequence[str] | None = None,
        num_encoders: int = 6,
        encoder_hidden: Sequence[int] = (50,),
        feature_dim: int = 50,
        context_hidden: Sequence[int] = (100, 50, 50),
        context_dim: int = 50,
        attention: Literal["dot", "context_mlp"] = "dot",
        attention_hidden: Sequence[int] = (50,),
        temperature: float = 1.0,
    ) -> None:
        if attention not in ("dot", "context_mlp"):
            raise ValueError(f"attention must be 'dot' or 'context_mlp', got {attention!r}")
        if attention == "dot" and feature_dim != context_dim:
            raise ValueError("attention='dot' needs feature_dim == context_dim")
        if num_encoders < 1 or temperature <= 0:
            raise ValueError("need num_encoders >= 1 and a positive temperature")
        if task_names is not None and len(task_names) != num_tasks:
            raise ValueError(f"{len(task_names)} task names for {num_tasks} tasks")
        super().__init__(in_features, out_features, num_tasks)
        self.attention, self.temperature = attention, float(temperature)
        table = task_embedding_table(task_names) if task_names is not None else torch.eye(num_tasks)
        self.register_buffer("descriptions", table)
        self.context = mlp(table.shape[1], context_hidden, context_dim)
        self.encoders = _Encoders(num_encoders, in_features, encoder_hidden, feature_dim)
        self.attend = (
            mlp(context_dim, attention_hidden, num_encoders) if attention == "context_mlp" else None
        )
        self.torso = mlp(feature_dim + context_dim, hidden, out_features)
        orthogonal_init(self)

    descriptions: Tensor

    def _context(self, task_ids: Tensor, dtype: torch.dtype) -> Tensor:
        # one-hot @ table instead of an index, so that vmap sees no data-dependent gather issue
        z = task_one_hot(task_ids, self.num_tasks, dtype)
        return self.context(z @ self.descriptions.to(dtype))

    def _weights(self, enc: Tensor, ctx: Tensor) -> Tensor:
        c = ctx.detach()
        # "dot": the paper's score z_enc^j · z_ctx; "context_mlp": mtrl's MLP of the context alone
        scores = (enc * c.unsqueeze(-2)).sum(-1) if self.attend is None else self.attend(c)
        return torch.softmax(scores / self.temperature, dim=-1)

    def attention_weights(self, x: Tensor, task_ids: Tensor) -> Tensor:
        """``(N, k)`` attention over the encoders."""
        return self._weights(self.encoders(x), self._context(task_ids, x.dtype))

    def forward(self, x: Tensor, task_ids: Tensor) -> Tensor:
        ctx = self._context(task_ids, x.dtype)
        enc = self.encoders(x)  # (N, k, feature_dim)
        alpha = self._weights(enc, ctx)
        z_enc = (alpha.unsqueeze(-1) * enc).sum(dim=-2)
        return self.torso(torch.cat([z_enc, ctx], dim=-1))
