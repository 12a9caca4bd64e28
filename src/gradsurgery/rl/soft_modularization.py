"""Soft modularization (Yang, Xu, Wu, Wang: "Multi-Task Reinforcement Learning with Soft
Modularization", NeurIPS 2020).

A base network of ``L`` layers of ``n`` modules; a routing network decides, per sample, how much
each module of layer ``l`` reads from each module of layer ``l − 1``:

* observation embedding ``f(x)`` (an MLP, ``x`` the state, or state and action for a critic) and
  task embedding ``h(z)`` (a linear map of the task's one-hot ``z``), of the same width ``D``;
* routing input ``e = g(ReLU(f(x) ⊙ h(z)))``, ``g`` an MLP of ``num_gating_layers`` layers of
  width ``gating_hidden``;
* layer-1 routing weights ``p^1 = softmax(W_d^1 ReLU(e))`` reshaped ``n × n`` (softmax over the
  source modules); layer ``l`` weights condition on all previous ones:
  ``p^l = softmax(W_d^l ReLU((W_u^l [p^1; …; p^{l−1}]) ⊙ e))``; the last routing vector
  ``p^L ∈ Δ^n`` (same form) weights the last layer's modules;
* modules: ``g^1_j = W^1_j ReLU(f(x))``; ``g^l_j = W^l_j ReLU(Σ_k p^{l−1}_{jk} g^{l−1}_k)``;
  output ``= W_out ReLU(Σ_j p^L_j g^L_j)``.

The paper's equations leave details open; we follow the authors' code (``ModularGatedCascadeCondNet``
in their ``Soft-Module`` repository), as the ``metaworld-algorithms`` reimplementation also notes:
the routing of layer ``l`` conditions on the routing weights of *all* earlier layers (not only
``l − 1``); the ReLU comes after the weighted sum (not inside it); the final module outputs are
combined by an extra routing vector ``p^L``; ``f(x)``'s last layer has no activation before the
product with ``h(z)``. Sizes of their configurations: base ``f`` 400-400 (``base_hidden``), task
embedding 400 (one linear layer), gating 2 layers of 256; MT10 "shallow" ``L = n = 2``, modules of
256; the deep configuration (their MT50 runs) ``L = n = 4``, modules of 128 — the default here.

The actor and each Q-function build their own instance, so each has its own router (as in the
paper). The ``n`` modules of a layer are one batched weight ``(n, in, out)`` (an ``einsum``), not
``n`` separate layers; that is the same function. Routing output layers start with small uniform
weights (±3e-3, zero bias: near-uniform routing at initialization, as the authors' code does), the
rest orthogonally. Every parameter is shared by all tasks.

Example:
    >>> import torch
    >>> net = SoftModularNetwork(5, 2, num_tasks=3, base_hidden=(16, 16), embedding_dim=16,
    ...                          num_layers=2, num_modules=2, module_hidden=8, gating_hidden=8)
    >>> net(torch.randn(4, 5), torch.tensor([0, 1, 2, 0])).shape
    torch.Size([4, 2])
    >>> p, last = net.routing(torch.randn(4, 5), torch.tensor([0, 1, 2, 0]))
    >>> len(p), p[0].shape, last.shape   # one n×n matrix per inner layer, then the output routing
    (1, torch.Size([4, 2, 2]), torch.Size([4, 2]))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from gradsurgery.models.layers import ParallelLinear, mlp, task_one_hot
from gradsurgery.rl.architectures import TaskNetwork, orthogonal_init, register_architecture

__all__ = ["SoftModularNetwork"]


@register_architecture(
    "softmod",
    paper="Yang, Xu, Wu, Wang, NeurIPS 2020",
    summary="soft modularization: modules routed per sample by the task and state",
)
class SoftModularNetwork(TaskNetwork):
    """The soft-modularized network (see the module docstring).

    Args:
        in_features, out_features, num_tasks: see :class:`TaskNetwork`.
        base_hidden: widths of the observation embedding ``f`` (its last width is ``D``).
        embedding_dim: width of the task embedding ``h(z)`` (must equal ``base_hidden[-1]``;
            None: that width).
        num_layers: ``L ≥ 2`` layers of modules.
        num_modules: ``n`` modules per layer.
        module_hidden: width of every module's output.
        gating_hidden: width of the routing MLP ``g``.
        num_gating_layers: depth of ``g`` (0: ``e = f(x) ⊙ h(z)``).
    """

    hidden_argument = None  # its sizes are base_hidden, module_hidden, ...

    def __init__(
        self,
        in_features: int,
        out_features: int,
        num_tasks: int,
        *,
        base_hidden: Sequence[int] = (400, 400),
        embedding_dim: int | None = None,
        num_layers: int = 4,
        num_modules: int = 4,
        module_hidden: int = 128,
        gating_hidden: int = 256,
        num_gating_layers: int = 2,
    ) -> None:
        if num_layers < 2:
            raise ValueError("soft modularization needs num_layers >= 2")
        if num_modules < 1 or not base_hidden:
            raise ValueError("need at least one module and one base layer")
        d = base_hidden[-1]
        if embedding_dim is not None and embedding_dim != d:
            raise ValueError(f"embedding_dim ({embedding_dim}) must equal base_hidden[-1] ({d})")
        super().__init__(in_features, out_features, num_tasks)
        self.num_layers, self.num_modules = num_layers, num_modules
        # f(x): Linear+ReLU layers, the last one without activation (multiplied by h(z) first).
        self.base = mlp(in_features, base_hidden[:-1], d)
        self.task_embedding = nn.Linear(num_tasks, d)
        gating: list[nn.Module] = []
        width = d
        for k in range(num_gating_layers):
            if k:
                gating.append(nn.ReLU())
            gating.append(nn.Linear(width, gating_hidden))
            width = gating_hidden
        self.gating = nn.Sequential(*gating)
        n2 = num_modules * num_modules
        self.route_first = nn.Linear(width, n2)
        # Layers 2..L-1 (n×n each) and the output routing (n), conditioned on earlier weights.
        self.route_cond = nn.ModuleList(nn.Linear(k * n2, width) for k in range(1, num_layers))
        self.route_out = nn.ModuleList(
            [*(nn.Linear(width, n2) for _ in range(num_layers - 2)), nn.Linear(width, num_modules)]
        )
        self.modules_in = ParallelLinear(num_modules, d, module_hidden)
        self.modules_deep = nn.ModuleList(
            ParallelLinear(num_modules, module_hidden, module_hidden) for _ in range(num_layers - 1)
        )
        self.last = nn.Linear(module_hidden, out_features)
        orthogonal_init(self)
        for layer in [self.route_first, *self.route_out]:
            nn.init.uniform_(layer.weight, -3e-3, 3e-3)
            nn.init.zeros_(layer.bias)

    def routing(self, x: Tensor, task_ids: Tensor) -> tuple[list[Tensor], Tensor]:
        """The routing weights: ``L − 1`` matrices ``(N, n, n)`` (row ``j``: how module ``j`` of
        the next layer mixes this layer's modules) and the output routing ``(N, n)``."""
        return self._route(self.base(x), task_ids)

    def _route(self, f: Tensor, task_ids: Tensor) -> tuple[list[Tensor], Tensor]:
        n = self.num_modules
        z = task_one_hot(task_ids, self.num_tasks, f.dtype)
        e = self.gating(torch.relu(self.task_embedding(z) * f))
        first = torch.softmax(self.route_first(torch.relu(e)).unflatten(-1, (n, n)), dim=-1)
        probs = [first]
        flat = [first.flatten(-2)]
        for cond, out in zip(self.route_cond, self.route_out, strict=True):
            h = torch.relu(cond(torch.cat(flat, dim=-1)) * e)
            logits = out(h)
            if logits.shape[-1] == n * n:
                p = torch.softmax(logits.unflatten(-1, (n, n)), dim=-1)
                probs.append(p)
                flat.append(p.flatten(-2))
            else:
                return probs, torch.softmax(logits, dim=-1)
        raise AssertionError("unreachable: the last routing layer outputs n weights")

    def forward(self, x: Tensor, task_ids: Tensor) -> Tensor:
        f = self.base(x)
        probs, last = self._route(f, task_ids)
        g = self.modules_in(torch.relu(f))  # (N, n, h)
        for p, layer in zip(probs, self.modules_deep, strict=True):
            g = layer(torch.relu(torch.einsum("njk,nkh->njh", p, g)))
        out = torch.relu((last.unsqueeze(-1) * g).sum(dim=-2))
        return self.last(out)
