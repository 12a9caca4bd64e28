"""Small building blocks shared by the architectures (all of them ``torch.func.vmap``-safe).

Public: the supervised models of :mod:`gradsurgery.models` and the reinforcement-learning networks
of :mod:`gradsurgery.rl` build on them.

Example:
    >>> import torch
    >>> net = mlp(3, [8, 8], 2)
    >>> net(torch.randn(4, 3)).shape, mlp_width(3, [8, 8])
    (torch.Size([4, 2]), 8)
    >>> task_one_hot(torch.tensor([0, 2]), 3, torch.float32)
    tensor([[1., 0., 0.],
            [0., 0., 1.]])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

__all__ = ["ParallelLinear", "gathered_linear", "mlp", "mlp_width", "task_one_hot"]


def mlp(
    in_features: int,
    hidden: Sequence[int],
    out_features: int | None = None,
    *,
    activation: Callable[[], nn.Module] = nn.ReLU,
    dropout: float = 0.0,
) -> nn.Sequential:
    """``Linear → activation (→ Dropout)`` per hidden width, then an optional output ``Linear``.

    Without ``out_features`` the result ends with the last hidden activation (a trunk or an
    expert); with it, with a plain linear layer (a head).
    """
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), activation()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = h
    if out_features is not None:
        layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def mlp_width(in_features: int, hidden: Sequence[int]) -> int:
    """The output width of ``mlp(in_features, hidden)`` (no output layer)."""
    return hidden[-1] if len(hidden) else in_features


def task_one_hot(task_ids: Tensor, num_tasks: int, dtype: torch.dtype) -> Tensor:
    """``(n, num_tasks)`` one-hot rows built by comparison.

    ``torch.nn.functional.one_hot`` checks its input with ``.item()`` and therefore cannot run
    under ``torch.func.vmap``; a comparison against ``arange`` can.
    """
    arange = torch.arange(num_tasks, device=task_ids.device)
    return (task_ids.unsqueeze(-1) == arange).to(dtype)


def gathered_linear(x: Tensor, index: Tensor, layers: Iterable[nn.Module]) -> Tensor:
    """Apply ``layers[index[n]]`` to row ``x[n]``: ``(n, in) -> (n, out)``.

    Every layer is applied to every row in one matrix product, ``(n, k, out)``, and each row keeps
    its own layer's output (a gather, no Python branching on ``index``): this runs under ``vmap``,
    and the backward of the gather sends exactly zero gradient to the layers a row did not use.
    It costs ``k`` times the flops of one layer but only ``n·k·out`` memory (gathering the weights
    per row instead would take ``n·in·out``). Every layer must be an ``nn.Linear`` (an
    ``nn.ModuleList`` of them is fine) with the same shape and a bias.
    """
    linears = [_linear(layer) for layer in layers]
    weight = torch.stack([layer.weight for layer in linears])  # (k, out, in)
    bias = torch.stack([layer.bias for layer in linears])  # (k, out)
    every = torch.einsum("ni,koi->nko", x, weight) + bias  # (n, k, out)
    pick = index.reshape(-1, 1, 1).expand(-1, 1, every.shape[-1])
    return every.gather(1, pick).squeeze(1)


def _linear(layer: nn.Module) -> nn.Linear:
    if not isinstance(layer, nn.Linear) or layer.bias is None:
        raise TypeError(f"gathered_linear needs nn.Linear layers with a bias, got {layer!r}")
    return layer


class ParallelLinear(nn.Module):
    """``k`` parallel linear maps, one batched weight ``(k, in, out)``: ``(N, k, in) -> (N, k, out)``,
    or a shared ``(N, in)`` input for all ``k``. Weights start orthogonal (each ``in × out``
    block), biases at zero."""

    def __init__(self, k: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(k, in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(k, out_features))
        for j in range(k):
            nn.init.orthogonal_(self.weight.data[j])

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == self.weight.dim() - 1:  # same input for every map
            return torch.einsum("ni,kio->nko", x, self.weight) + self.bias
        return torch.einsum("nki,kio->nko", x, self.weight) + self.bias
