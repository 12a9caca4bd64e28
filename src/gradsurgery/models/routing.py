"""Routing networks (Rosenbaum, Klinger & Riemer, ICLR 2018), with per-task (dispatched) routers.

A routing network has ``L`` routed layers of ``k`` function blocks each. For every sample, a
router picks one block per layer and the sample goes through the chosen blocks in turn. The paper
trains the router by multi-agent reinforcement learning with one agent per task ("dispatched"
routing: the task id selects the agent) and tabular policies whose state is the (task, layer) pair;
the function blocks are trained by backpropagating the task loss through the chosen path. The
PCGrad paper's CIFAR-100 20-task comparison (§5.1) uses this architecture. The CIFAR-MTL network of
the authors' public code has a shared trunk of four ``conv 3×3 (32) → ReLU → max-pool 2`` stages
and three routed fully connected layers (width 48); :func:`routing_cifar` builds it.

Here:

* Policy: task ``i`` has a learnable table of logits ``θ_i ∈ R^{L×k}`` (initialized to zero, a
  uniform policy); ``π_i(b | l) = softmax(θ_i[l])_b``.
* :meth:`RoutingNetwork.route` samples a path per sample in training mode and takes the most
  probable block per layer in eval mode (``greedy=`` overrides).
* The router update is REINFORCE, kept out of the task losses: :meth:`RoutingNetwork.router_loss`
  of each sample's reward (``−loss`` or correctness, the paper's final reward) is backpropagated
  into the policy tables only. The model's training hooks (:class:`~.base.MultiTaskModel`) do
  both steps for any trainer that calls them: :meth:`RoutingNetwork.step_inputs` samples the
  routes of the batch, :meth:`RoutingNetwork.after_backward` runs the REINFORCE update with reward
  ``−loss``. The gradients that the
  task losses send to the model's parameters are therefore exactly the per-task loss gradients
  (the tables receive none from them). Baseline: a per-task running mean of the reward (momentum
  ``baseline_momentum``), subtracted from each return to reduce variance; the paper does not
  specify one.
* The paper's collaboration reward (a per-action bonus ``ρ`` times how often the chosen block has
  been used, encouraging agents to share blocks) is available as ``collaboration=ρ`` (default 0;
  the authors' example code uses 0.3). Usage frequencies are a running average over all tasks.
  The return of layer ``l``'s action is the final reward plus the bonuses of layers ``≥ l``.
* Routed layers are linear blocks with ReLU between them. Each block is its own ``nn.Linear``; the
  forward pass applies all of a layer's blocks in one matrix product and keeps each sample's chosen
  block's output (:func:`~gradsurgery.models.layers.gathered_linear`; ``k``× the flops of one
  block, cheap at these widths), so there is no data-dependent control flow
  and the model runs under ``torch.func.vmap``: the discrete decisions are an *input* of the forward
  pass (``routes``), not a branch in it. Pass the sampled routes in the batch::

      def loss_fn(model, x, t, y, routes):   # one loss per sample
          return F.cross_entropy(model(x, t, routes), y, reduction="none")

      routes = model.route(task_ids)          # (n, L), sampled in training mode
      mtl.backward_partitioned(loss_fn, x, task_ids, y, routes, task_ids=task_ids)
      with torch.no_grad():
          rewards = -loss_fn(model, x, task_ids, y, routes)   # or 1[correct]
      model.router_loss(task_ids, routes, rewards).backward()  # grads of the tables only

  Without ``routes`` the forward pass routes by itself (sampling in training mode, with
  Gumbel-max noise that ``vmap`` can draw), which is fine for evaluation but leaves the REINFORCE
  update no record of the path taken.
* A BatchNorm trunk in training mode (``routing_cifar(batch_norm=True)``, as in the authors' code)
  couples the samples of a batch: ``TaskPartitionedJacobian`` then falls back to its exact loop.

Which parameters are shared: the trunk and every function block (any task may route through any
block); task ``i`` owns its policy table (``router_parameters()``; trained by
:meth:`RoutingNetwork.router_loss` only). :meth:`RoutingNetwork.network_parameters` is everything
else.

Example:
    >>> import torch
    >>> model = RoutingNetwork(8, 5, num_tasks=3, hidden=(16,), num_blocks=4)
    >>> task_ids = torch.tensor([0, 1, 2, 2])
    >>> routes = model.route(task_ids)          # (n, L) block indices, L = 2 routed layers
    >>> model(torch.randn(4, 8), task_ids, routes).shape
    torch.Size([4, 5])
    >>> loss = model.router_loss(task_ids, routes, rewards=torch.tensor([1.0, 0.0, 1.0, 0.0]))
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradsurgery.models.base import MultiTaskModel, Owned
from gradsurgery.models.layers import gathered_linear

__all__ = ["RoutingNetwork", "routing_cifar"]


class RoutingNetwork(MultiTaskModel):
    """Per-task routed fully connected layers on an optional shared trunk.

    Args:
        in_features: width of the routed layers' input (the trunk's output width).
        out_features: output width (the last routed layer's).
        num_tasks: ``m``.
        trunk: shared module applied before routing (None: the identity).
        hidden: widths of the routed hidden layers; ``L = len(hidden) + 1`` routed layers.
        num_blocks: function blocks per routed layer, ``k`` (default: ``num_tasks``).
        collaboration: the collaboration-reward coefficient ``ρ``.
        baseline_momentum: momentum of the per-task reward baseline and block-usage averages.
    """

    task_conditioned = True

    baseline: Tensor
    baseline_seen: Tensor
    usage: Tensor

    def __init__(
        self,
        in_features: int,
        out_features: int,
        num_tasks: int,
        *,
        trunk: nn.Module | None = None,
        hidden: Sequence[int] = (48, 48),
        num_blocks: int | None = None,
        collaboration: float = 0.0,
        baseline_momentum: float = 0.9,
    ) -> None:
        super().__init__()
        k = num_tasks if num_blocks is None else num_blocks
        if k < 1:
            raise ValueError(f"num_blocks must be at least 1, got {k}")
        if not 0.0 <= baseline_momentum < 1.0:
            raise ValueError(f"baseline_momentum must lie in [0, 1), got {baseline_momentum}")
        self.num_tasks = num_tasks
        self.num_blocks = k
        self.trunk = trunk if trunk is not None else nn.Identity()
        widths = [in_features, *hidden, out_features]
        self.blocks = nn.ModuleList(
            nn.ModuleList(nn.Linear(a, b) for _ in range(k)) for a, b in itertools.pairwise(widths)
        )
        self.num_layers = len(self.blocks)
        self.policy_logits = nn.ParameterList(
            nn.Parameter(torch.zeros(self.num_layers, k)) for _ in range(num_tasks)
        )
        self.collaboration = collaboration
        self.baseline_momentum = baseline_momentum
        self.register_buffer("baseline", torch.zeros(num_tasks))
        self.register_buffer("baseline_seen", torch.zeros(num_tasks, dtype=torch.bool))
        self.register_buffer("usage", torch.full((self.num_layers, k), 1.0 / k))

    # -------------------------------------------------------------- parameter split
    def _shared_members(self) -> Iterable[Owned]:
        return [self.trunk, self.blocks]

    def _task_members(self, task: int) -> Iterable[Owned]:
        return [self.policy_logits[task]]

    def router_parameters(self) -> Iterator[nn.Parameter]:
        """The per-task policy tables (trained by :meth:`router_loss`)."""
        return iter(self.policy_logits)

    def network_parameters(self) -> Iterator[nn.Parameter]:
        """Everything but the policy tables: the trunk and the function blocks."""
        router = {id(p) for p in self.policy_logits}
        return (p for p in self.parameters() if id(p) not in router)

    # -------------------------------------------------------------- routing
    def policy(self) -> Tensor:
        """``(m, L, k)`` each task's block probabilities per routed layer."""
        return torch.stack(list(self.policy_logits)).softmax(dim=-1)

    def route(
        self,
        task_ids: Tensor,
        *,
        greedy: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """``(n, L)`` the block index per sample and routed layer.

        Sampled from each sample's task policy in training mode, the most probable block in eval
        mode; ``greedy`` overrides the mode.
        """
        logits = torch.stack(list(self.policy_logits)).detach()[task_ids]  # (n, L, k)
        if greedy is None:
            greedy = not self.training
        if greedy:
            return logits.argmax(dim=-1)
        u = torch.rand(logits.shape, generator=generator, dtype=logits.dtype, device=logits.device)
        gumbel = -torch.log(-torch.log(u.clamp(torch.finfo(u.dtype).tiny, 1.0)))
        return (logits + gumbel).argmax(dim=-1)  # Gumbel-max: a sample of softmax(logits)

    def forward(self, x: Tensor, task_ids: Tensor, routes: Tensor | None = None) -> Tensor:
        """Route each sample through its blocks: ``(n, ...) -> (n, out_features)``.

        Args:
            x: inputs.
            task_ids: ``(n,)`` each sample's task.
            routes: ``(n, L)`` block indices (default: :meth:`route` of ``task_ids``).
        """
        if routes is None:
            routes = self.route(task_ids)
        h = self.trunk(x).flatten(1)
        for layer, blocks in enumerate(self.blocks):
            h = gathered_linear(h, routes[:, layer], cast(nn.ModuleList, blocks))
            if layer < self.num_layers - 1:
                h = F.relu(h)
        return h

    def router_loss(
        self,
        task_ids: Tensor,
        routes: Tensor,
        rewards: Tensor,
        *,
        update_statistics: bool = True,
    ) -> Tensor:
        """REINFORCE loss of the routers for one batch; its gradient reaches the policy tables only.

        ``−mean_n Σ_l (R_nl − b_{t_n}) log π_{t_n}(routes[n, l] | l)``, with ``R_nl`` the sample's
        reward plus the collaboration bonuses of layers ``≥ l`` and ``b`` the per-task baseline.
        With ``update_statistics`` the baseline and the block-usage averages are then updated with
        this batch (tasks absent from it keep their baseline).

        Args:
            task_ids: ``(n,)`` each sample's task.
            routes: ``(n, L)`` the blocks taken (from :meth:`route`).
            rewards: ``(n,)`` each sample's final reward (e.g. ``−loss`` or ``1[correct]``).
        """
        n = task_ids.shape[0]
        if routes.shape != (n, self.num_layers) or rewards.shape != (n,):
            raise ValueError(
                f"expected routes ({n}, {self.num_layers}) and rewards ({n},), got "
                f"{tuple(routes.shape)} and {tuple(rewards.shape)}"
            )
        log_policy = torch.stack(list(self.policy_logits)).log_softmax(dim=-1)  # (m, L, k)
        layers = torch.arange(self.num_layers, device=routes.device)
        chosen = log_policy[task_ids.unsqueeze(1), layers.unsqueeze(0), routes]  # (n, L)
        rewards = rewards.detach().to(chosen.dtype)
        returns = rewards.unsqueeze(1).expand(n, self.num_layers)
        if self.collaboration != 0.0:
            bonus = self.collaboration * self.usage.to(chosen.dtype)[layers.unsqueeze(0), routes]
            returns = returns + bonus.flip(1).cumsum(1).flip(1)  # bonuses of layers >= l
        baseline = torch.where(
            self.baseline_seen[task_ids], self.baseline.to(chosen.dtype)[task_ids], 0.0
        )
        advantage = returns - baseline.unsqueeze(1)
        loss = -(advantage * chosen).sum(dim=1).mean()
        if update_statistics:
            self._update_statistics(task_ids, routes, rewards)
        return loss

    # -------------------------------------------------------------- training hooks
    def step_inputs(self, task_ids: Tensor | None) -> tuple[Tensor, ...]:
        """``(routes,)``: the batch's sampled :meth:`route` (task-partitioned batches only)."""
        if task_ids is None:
            raise ValueError("a routing network trains on task-partitioned batches (task ids)")
        return (self.route(task_ids),)

    def after_backward(
        self,
        losses: Callable[[], Tensor],
        task_ids: Tensor | None,
        inputs: tuple[Tensor, ...],
    ) -> None:
        """REINFORCE step of the routers with reward ``−loss`` of each sample along its route:
        :meth:`router_loss` backpropagated into the policy tables."""
        if task_ids is None:
            raise ValueError("a routing network trains on task-partitioned batches (task ids)")
        (routes,) = inputs
        with torch.no_grad():
            rewards = -losses()
        self.router_loss(task_ids, routes, rewards).backward()

    @torch.no_grad()
    def _update_statistics(self, task_ids: Tensor, routes: Tensor, rewards: Tensor) -> None:
        beta = self.baseline_momentum
        m = self.num_tasks
        counts = torch.bincount(task_ids, minlength=m).to(self.baseline.dtype)
        sums = torch.zeros(m, dtype=self.baseline.dtype, device=self.baseline.device)
        sums.index_add_(0, task_ids, rewards.to(sums.dtype))
        present = counts > 0
        means = sums / counts.clamp_min(1.0)
        updated = torch.where(self.baseline_seen, beta * self.baseline + (1 - beta) * means, means)
        self.baseline.copy_(torch.where(present, updated, self.baseline))
        self.baseline_seen |= present
        freq = F.one_hot(routes, self.num_blocks).to(self.usage.dtype).mean(dim=0)  # (L, k)
        self.usage.mul_(beta).add_((1 - beta) * freq)


def routing_cifar(
    num_tasks: int = 20,
    classes_per_task: int = 5,
    *,
    in_channels: int = 3,
    input_size: int = 32,
    conv_channels: int = 32,
    conv_layers: int = 4,
    hidden: Sequence[int] = (48, 48),
    num_blocks: int | None = None,
    batch_norm: bool = False,
    collaboration: float = 0.0,
) -> RoutingNetwork:
    """The CIFAR-MTL routing network: a shared conv trunk (``conv_layers`` × ``conv 3×3 → ReLU →
    max-pool 2``, ``conv_channels`` wide, then BatchNorm if ``batch_norm``) and routed fully
    connected layers to ``classes_per_task`` logits (CIFAR-100: 20 superclass tasks of 5 classes).
    """
    layers: list[nn.Module] = []
    c_in, side = in_channels, input_size
    for _ in range(conv_layers):
        layers += [nn.Conv2d(c_in, conv_channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        c_in, side = conv_channels, side // 2
    if side < 1:
        raise ValueError(f"input_size {input_size} is too small for {conv_layers} pooling stages")
    if batch_norm:
        layers.append(nn.BatchNorm2d(conv_channels))
    layers.append(nn.Flatten())
    return RoutingNetwork(
        conv_channels * side * side,
        classes_per_task,
        num_tasks,
        trunk=nn.Sequential(*layers),
        hidden=hidden,
        num_blocks=num_blocks,
        collaboration=collaboration,
    )
