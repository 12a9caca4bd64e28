"""FiLM task conditioning (Perez, Strub, de Vries, Dumoulin, Courville, AAAI 2018) for MT-SAC.

A learned task embedding ``e_t`` (a table of ``num_tasks × embedding_dim``) goes through a small
conditioning MLP that outputs, for every hidden layer ``l`` of the network, a per-unit scale and
shift; the layer computes

    ``h_l = ReLU((1 + Δγ_l(e_t)) ⊙ (W_l h_{l−1} + b_l) + β_l(e_t))``,

FiLM before the nonlinearity, as Perez et al. place it. The conditioner's output layer starts small
(orthogonal weights times ``init_scale = 0.1``, zero bias), so at initialization ``γ ≈ 1, β ≈ 0``:
the network starts close to the plain MLP, already task-dependent, and learns how much each task
modulates it (``init_scale=0`` starts exactly at the plain MLP, task-independent). The output layer is not modulated. The embedding lookup is a product with
the one-hot task vector (vmap-safe); a task's embedding row gets gradient only from its own samples.
Every parameter is shared by all tasks (the embedding table as a whole).

Multi-task RL ports differ in where FiLM goes (``mtrl`` modulates a small state encoder; the
``metaworld-algorithms`` port modulates an encoder after its activations and then an MLP reads
``[encoding ; e_t]``); here the whole torso is modulated. ``film_layers`` picks which hidden layers.

Example:
    >>> import torch
    >>> net = FiLMNetwork(5, 2, num_tasks=3, hidden=(8, 8))
    >>> x, t = torch.randn(4, 5), torch.tensor([0, 1, 2, 0])
    >>> net(x, t).shape
    torch.Size([4, 2])
    >>> plain = FiLMNetwork(5, 2, num_tasks=3, hidden=(8, 8), init_scale=0.0)
    >>> gamma, beta = plain.film_parameters(t)[0]   # layer 0 starts unmodulated
    >>> bool((gamma == 1).all()), bool((beta == 0).all())
    (True, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import Tensor, nn

from gradsurgery.models.layers import mlp, task_one_hot
from gradsurgery.rl.architectures import TaskNetwork, orthogonal_init, register_architecture

__all__ = ["FiLMNetwork"]


@register_architecture(
    "film",
    paper="Perez, Strub, de Vries, Dumoulin, Courville, AAAI 2018",
    summary="MLP whose hidden layers are scaled and shifted by a learned task embedding",
)
class FiLMNetwork(TaskNetwork):
    """An MLP whose hidden layers are FiLM-modulated by a learned task embedding.

    Args:
        in_features, out_features, num_tasks: see :class:`TaskNetwork`.
        hidden: hidden widths.
        embedding_dim: width of the task embedding.
        conditioner_hidden: hidden widths of the conditioning MLP.
        film_layers: indices of the hidden layers to modulate (None: all).
        init_scale: scale of the conditioner's output layer at initialization.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        num_tasks: int,
        *,
        hidden: Sequence[int] = (400, 400, 400),
        embedding_dim: int = 50,
        conditioner_hidden: Sequence[int] = (50,),
        film_layers: Sequence[int] | None = None,
        init_scale: float = 0.1,
    ) -> None:
        if not hidden:
            raise ValueError("FiLM needs at least one hidden layer")
        super().__init__(in_features, out_features, num_tasks)
        self.film_layers = tuple(range(len(hidden))) if film_layers is None else tuple(film_layers)
        if any(not 0 <= k < len(hidden) for k in self.film_layers):
            raise ValueError(f"film_layers must index the {len(hidden)} hidden layers")
        widths = [in_features, *hidden]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(widths))
        self.out = nn.Linear(widths[-1], out_features)
        self.embedding = nn.Parameter(torch.empty(num_tasks, embedding_dim))
        self._sizes = [hidden[k] for k in self.film_layers]
        self.conditioner = mlp(embedding_dim, conditioner_hidden, 2 * sum(self._sizes))
        orthogonal_init(self)
        nn.init.normal_(self.embedding, std=1.0)
        last = self.conditioner[-1]
        assert isinstance(last, nn.Linear)
        with torch.no_grad():
            last.weight.mul_(init_scale)
        nn.init.zeros_(last.bias)

    def film_parameters(self, task_ids: Tensor) -> list[tuple[Tensor, Tensor]]:
        """``(γ, β)`` of each modulated layer, each ``(N, width)``."""
        z = task_one_hot(task_ids, self.num_tasks, self.embedding.dtype)
        out = self.conditioner(torch.relu(z @ self.embedding))
        pairs, start = [], 0
        for size in self._sizes:
            d_gamma, beta = (
                out[..., start : start + size],
                out[..., start + size : start + 2 * size],
            )
            pairs.append((1.0 + d_gamma, beta))
            start += 2 * size
        return pairs

    def forward(self, x: Tensor, task_ids: Tensor) -> Tensor:
        films = dict(zip(self.film_layers, self.film_parameters(task_ids), strict=True))
        h = x
        for k, layer in enumerate(self.layers):
            h = layer(h)
            if k in films:
                gamma, beta = films[k]
                h = gamma * h + beta
            h = torch.relu(h)
        return self.out(h)
