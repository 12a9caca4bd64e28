"""Actor and twin-critic networks for multi-task SAC, in every supported architecture.

Every *task network* maps ``(x, task_ids) -> (n, out)``: ``x`` is the observation (actor) or the
observation concatenated with the action (critic), ``task_ids`` the ``(n,)`` long task index of each
row. Architectures (``SACConfig.architecture``, registered in
:mod:`gradsurgery.rl.architectures`):

* ``"mlp"`` — :class:`OneHotMLP`: the multi-task SAC baseline of Meta-World (Yu et al. 2019): the
  input is ``[x ; one-hot(task)]`` and an MLP (3×400 by default). Every parameter is shared.
* ``"multihead"`` — :class:`MultiHeadMLP`: the same trunk with one output layer per task,
  selected per sample by its task id (the heads are the task-specific parameters).
* ``"softmod"`` — :class:`~gradsurgery.rl.soft_modularization.SoftModularNetwork` (Yang et al.
  2020).
* ``"care"`` — :class:`~gradsurgery.rl.care.CARENetwork` (Sodhani et al. 2021).
* ``"film"`` — :class:`~gradsurgery.rl.film.FiLMNetwork` (Perez et al. 2018 conditioning).

The actor (:class:`Actor`) and each of the two Q-functions (:class:`TwinCritic`) are separate
task networks with their own parameters (soft modularization: their own routers; CARE: their own
encoders and context encoder). Both are :class:`~gradsurgery.models.base.MultiTaskModel`\\ s, so
``MultiTaskBackward`` reads the shared / task-specific split from them, and both run under
``torch.func.vmap``: one-hot vectors are built by comparison (``F.one_hot`` calls ``.item()``),
per-task heads are applied by a gather, and there is no Python control flow on data. Task ``i``'s
output never reads another task's head parameters, so their gradients from task ``i`` are exactly 0.

Initialization: linear layers get orthogonal weights and zero biases (as the ``mtrl`` code of
Sodhani et al. and Kurin et al. does); architecture modules document their own exceptions.

The policy is a tanh-squashed Gaussian. The actor's raw log-std output is squashed into
``[lo, hi]`` (default ``[-20, 2]``) by ``lo + (hi − lo)(tanh(x) + 1)/2`` — the ``mtrl`` code's
choice; other MT-SAC code clamps instead. :func:`squashed_gaussian` takes the standard-normal noise as
an argument, so that a loss built on it is a pure function of its inputs (vmap-safe, reproducible).

Example:
    >>> import torch
    >>> actor = build_actor("multihead", obs_dim=5, action_dim=2, num_tasks=3, hidden_sizes=(16,))
    >>> mean, log_std = actor(torch.randn(4, 5), torch.tensor([0, 1, 2, 0]))
    >>> mean.shape, log_std.shape
    (torch.Size([4, 2]), torch.Size([4, 2]))
    >>> critic = build_critic("mlp", obs_dim=5, action_dim=2, num_tasks=3, hidden_sizes=(16,))
    >>> [q.shape for q in critic(torch.randn(4, 5), torch.randn(4, 2), torch.tensor([0, 1, 2, 0]))]
    [torch.Size([4]), torch.Size([4])]
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradsurgery.models.base import MultiTaskModel, Owned
from gradsurgery.models.layers import gathered_linear, mlp, mlp_width, task_one_hot
from gradsurgery.rl.architectures import (
    TaskNetwork,
    build_task_network,
    orthogonal_init,
    register_architecture,
)

__all__ = [
    "Actor",
    "MultiHeadMLP",
    "OneHotMLP",
    "TaskNetwork",
    "TwinCritic",
    "build_actor",
    "build_critic",
    "build_task_network",
    "orthogonal_init",
    "squashed_gaussian",
]

_LOG_2PI = math.log(2.0 * math.pi)


@register_architecture(
    "mlp", paper="Yu et al. 2019 (Meta-World MT-SAC)", summary="MLP of [x ; one-hot(task)]"
)
class OneHotMLP(TaskNetwork):
    """``MLP([x ; one-hot(task)])``: every parameter is shared by all tasks.

    Args:
        in_features, out_features, num_tasks: see :class:`TaskNetwork`.
        hidden: hidden widths (ReLU after each).
    """

    def __init__(
        self, in_features: int, out_features: int, num_tasks: int, hidden: Sequence[int]
    ) -> None:
        super().__init__(in_features, out_features, num_tasks)
        self.net = mlp(in_features + num_tasks, hidden, out_features)
        orthogonal_init(self)

    def forward(self, x: Tensor, task_ids: Tensor) -> Tensor:
        z = task_one_hot(task_ids, self.num_tasks, x.dtype)
        return self.net(torch.cat([x, z], dim=-1))


@register_architecture(
    "multihead",
    paper="Yu et al. 2019 (Meta-World MT-SAC)",
    summary="shared trunk, one output layer per task",
)
class MultiHeadMLP(TaskNetwork):
    """A shared trunk and one output layer per task, picked by the sample's task id.

    Args:
        in_features, out_features, num_tasks: as :class:`OneHotMLP`.
        hidden: the trunk's hidden widths; the heads are single linear layers on top.
        one_hot_input: also feed ``one-hot(task)`` to the trunk (default: Meta-World's multi-task
            observation includes it).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        num_tasks: int,
        hidden: Sequence[int],
        *,
        one_hot_input: bool = True,
    ) -> None:
        if not hidden:
            raise ValueError("a multi-head network needs at least one hidden layer")
        super().__init__(in_features, out_features, num_tasks)
        self.one_hot_input = one_hot_input
        width_in = in_features + (num_tasks if one_hot_input else 0)
        self.trunk = mlp(width_in, hidden)
        width = mlp_width(width_in, hidden)
        self.heads = nn.ModuleList(nn.Linear(width, out_features) for _ in range(num_tasks))
        orthogonal_init(self)

    def _shared_members(self) -> Iterable[Owned]:
        return [self.trunk]

    def _task_members(self, task: int) -> Iterable[Owned]:
        return [self.heads[task]]

    def forward(self, x: Tensor, task_ids: Tensor) -> Tensor:
        if self.one_hot_input:
            x = torch.cat([x, task_one_hot(task_ids, self.num_tasks, x.dtype)], dim=-1)
        return gathered_linear(self.trunk(x), task_ids, self.heads)


def squashed_gaussian(mean: Tensor, log_std: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
    """A reparameterized sample of ``tanh(N(mean, exp(log_std)²))`` and its log-density.

    ``u = mean + exp(log_std) · noise``, ``a = tanh(u)``,
    ``log π(a) = Σ_k [−noise_k²/2 − log_std_k − log(2π)/2 − log(1 − tanh(u_k)²)]``, with the last term
    computed stably as ``2 (log 2 − u − softplus(−2u))`` (exact; no ``1e-6`` inside the log as some
    ports add).

    Returns:
        ``(action (n, A), log_prob (n,))``.
    """
    u = mean + log_std.exp() * noise
    gauss = (-0.5 * noise.square() - log_std).sum(-1) - 0.5 * _LOG_2PI * noise.shape[-1]
    log_det = (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)
    return torch.tanh(u), gauss - log_det


class Actor(MultiTaskModel):
    """Tanh-Gaussian policy: a task network with ``2·action_dim`` outputs (mean, raw log-std).

    Args:
        net: the task network (``out_features == 2 * action_dim``).
        log_std_bounds: the log-std range ``(lo, hi)``.
    """

    task_conditioned = True

    def __init__(
        self, net: TaskNetwork, log_std_bounds: tuple[float, float] = (-20.0, 2.0)
    ) -> None:
        super().__init__()
        if net.out_features % 2:
            raise ValueError("the actor network must output 2·action_dim values")
        self.net = net
        self.num_tasks = net.num_tasks
        self.action_dim = net.out_features // 2
        self.log_std_bounds = (float(log_std_bounds[0]), float(log_std_bounds[1]))

    def _shared_members(self) -> Iterable[Owned]:
        return list(self.net.shared_parameters())

    def _task_members(self, task: int) -> Iterable[Owned]:
        return list(self.net.task_specific_parameters(task))

    def forward(self, obs: Tensor, task_ids: Tensor) -> tuple[Tensor, Tensor]:
        """``(mean, log_std)`` of the pre-tanh Gaussian, each ``(n, action_dim)``."""
        out = self.net(obs, task_ids)
        mean, raw = out[..., : self.action_dim], out[..., self.action_dim :]
        lo, hi = self.log_std_bounds
        log_std = lo + 0.5 * (hi - lo) * (torch.tanh(raw) + 1.0)
        return mean, log_std

    def sample(self, obs: Tensor, task_ids: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        """``(action, log_prob)`` for the given standard-normal ``noise`` (see
        :func:`squashed_gaussian`)."""
        mean, log_std = self(obs, task_ids)
        return squashed_gaussian(mean, log_std, noise)


class TwinCritic(MultiTaskModel):
    """Two Q-functions ``Q_k(s, a, task)`` with separate parameters (clipped double Q).

    Args:
        q1, q2: task networks with input width ``obs_dim + action_dim`` and one output.
    """

    task_conditioned = True

    def __init__(self, q1: TaskNetwork, q2: TaskNetwork) -> None:
        super().__init__()
        if q1.out_features != 1 or q2.out_features != 1:
            raise ValueError("each Q network must have one output")
        self.q1, self.q2 = q1, q2
        self.num_tasks = q1.num_tasks

    def _shared_members(self) -> Iterable[Owned]:
        return [*self.q1.shared_parameters(), *self.q2.shared_parameters()]

    def _task_members(self, task: int) -> Iterable[Owned]:
        return [*self.q1.task_specific_parameters(task), *self.q2.task_specific_parameters(task)]

    def forward(self, obs: Tensor, action: Tensor, task_ids: Tensor) -> tuple[Tensor, Tensor]:
        x = torch.cat([obs, action], dim=-1)
        return self.q1(x, task_ids).squeeze(-1), self.q2(x, task_ids).squeeze(-1)


def build_actor(
    architecture: str,
    obs_dim: int,
    action_dim: int,
    num_tasks: int,
    hidden_sizes: Sequence[int] = (400, 400, 400),
    *,
    log_std_bounds: tuple[float, float] = (-20.0, 2.0),
    task_names: Sequence[str] | None = None,
    **kwargs: Any,
) -> Actor:
    net = build_task_network(
        architecture,
        obs_dim,
        2 * action_dim,
        num_tasks,
        hidden_sizes,
        task_names=task_names,
        **kwargs,
    )
    return Actor(net, log_std_bounds)


def build_critic(
    architecture: str,
    obs_dim: int,
    action_dim: int,
    num_tasks: int,
    hidden_sizes: Sequence[int] = (400, 400, 400),
    *,
    task_names: Sequence[str] | None = None,
    **kwargs: Any,
) -> TwinCritic:
    def one() -> TaskNetwork:
        return build_task_network(
            architecture,
            obs_dim + action_dim,
            1,
            num_tasks,
            hidden_sizes,
            task_names=task_names,
            **kwargs,
        )

    return TwinCritic(one(), one())
