"""Multi-task soft actor-critic with any multi-task method on each of its three losses.

One update (:meth:`MTSAC.update`) takes a task-balanced batch (:class:`~gradsurgery.rl.replay.SACBatch`,
``B`` transitions of each of the ``m`` tasks) and makes one gradient step on each of: the twin
critics, the actor, the temperature; then a soft target update. Each loss is split per task,
``L_i`` = mean over task ``i``'s samples of a per-sample loss (times ``1/m`` with
``task_loss_scale="mean"``), and handed to :meth:`MultiTaskBackward.backward_partitioned
<gradsurgery.backward.MultiTaskBackward.backward_partitioned>` with the configured method. A
method that needs per-task gradients (PCGrad, MGDA, ...) gets all ``m`` of them from one vectorized
backward pass over task segments (``torch.func.vmap``); the unitary scalarization (``"sum"``) is
exactly one backward pass of ``Σ_i L_i``.

Per-sample losses (``i`` the sample's task, ``w_i`` its task weight, see below):

* critic: ``w_i [(Q_1(s, a) − y)² + (Q_2(s, a) − y)²]`` with the target, computed without gradient,
  ``y = r̃ + γ (1 − terminated) [min_k Q̄_k(s', a') − α_i log π(a' | s')]``, ``a' ~ π(· | s')``,
  ``Q̄`` the target critics; ``r̃ = r / σ_i`` with reward normalization; with Q-target clipping
  ``y ← min(y, r_max,i / σ_i / (1 − γ))``;
* actor (critic frozen, updated critic as in ``mtrl``): ``w_i [α_i log π(ã | s) − min_k Q_k(s, ã)]``,
  ``ã = tanh(μ + σ ε)`` reparameterized;
* temperature: ``−α_i (log π(ã | s) + H̄) · (1/m if task_loss_scale="mean")`` with ``log π``
  detached (the actor's, before its step) and ``α_i = exp(log α_i)`` (as ``mtrl`` and Kurin et al.;
  other code differentiates ``log α`` itself). ``α_i`` is per task or shared (``per_task_alpha``).

Task weights ``w_i``: ``1/m`` (``task_loss_scale="mean"``: then ``Σ_i L_i`` is the batch mean that
single-network MT-SAC code minimizes) or 1 (``"sum"``), times ``m · softmax(−log α)_i`` with soft
modularization's reweighting.

Choices:

* Reparameterization noise is drawn *outside* the loss, from the agent's own generator, and passed
  in the batch: the per-sample actor loss is then a pure function of (parameters, batch), which is
  what ``vmap`` over task segments needs (no ``randomness`` mode to pick) and makes an update
  reproducible from the agent's state.
* The temperature step needs ``log π(ã | s)`` of the pre-update actor for the same noise. On the
  unitary path it is an auxiliary output of the actor loss's own forward pass
  (:meth:`MTSAC.actor_objective` returns :class:`ActorLoss`, per-sample losses and ``log π``);
  when the actor's method needs per-task gradients (its forward runs under ``vmap``, where an
  auxiliary output would be batched), it is computed in the no-gradient pass that evaluates the TD
  target, as one batched actor forward over ``[s' ; s]`` — no extra call.
* With ``per_task_alpha`` the temperatures share no parameter, so a method has nothing to combine:
  the temperature step is then always the plain sum (``apply_method_to`` is ignored for it).
* The critic is frozen (``requires_grad_(False)``) during the actor step; gradients reach the actor
  through the action only.

Example:
    >>> import torch
    >>> from gradsurgery.rl import MTSAC, SACConfig
    >>> cfg = SACConfig(hidden_sizes=(32, 32), batch_size_per_task=4, method="pcgrad", seed=0)
    >>> agent = MTSAC(cfg, obs_dim=5, action_dim=2, num_tasks=3)
    >>> replay = agent.make_replay(capacity_per_task=100)
    >>> for _ in range(5):
    ...     replay.add(torch.arange(3), torch.randn(3, 5), torch.rand(3, 2) * 2 - 1, torch.randn(3),
    ...                torch.randn(3, 5), torch.zeros(3))
    >>> info = agent.update(replay.sample(4, torch.Generator().manual_seed(0)))
    >>> sorted(k for k in info if "/" not in k)[:4]
    ['actor_loss', 'alpha', 'alpha_loss', 'critic_loss']
    >>> agent.act(torch.randn(3, 5), torch.arange(3)).shape
    torch.Size([3, 2])
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from gradsurgery.backward import MultiTaskBackward, StepResult
from gradsurgery.engines.task_partitioned import TaskBatch
from gradsurgery.models.base import MultiTaskModel, Owned
from gradsurgery.models.layers import task_one_hot
from gradsurgery.rl.config import SACConfig
from gradsurgery.rl.networks import Actor, TwinCritic, build_actor, build_critic
from gradsurgery.rl.replay import MultiTaskReplay, SACBatch
from gradsurgery.rl.reward_normalization import RewardNormalizer
from gradsurgery.rl.update_metrics import UpdateMetrics

__all__ = ["MTSAC", "ActorLoss", "Temperature"]


class Temperature(MultiTaskModel):
    """``log α``: one entry per task, or one shared by all tasks.

    ``forward(task_ids) -> (n,)`` the ``log α`` of each sample's task (vmap-safe).
    """

    task_conditioned = True

    def __init__(self, num_tasks: int, per_task: bool, init_temperature: float) -> None:
        super().__init__()
        self.num_tasks = num_tasks
        self.per_task = per_task
        size = num_tasks if per_task else 1
        self.log_alpha = nn.Parameter(torch.full((size,), math.log(init_temperature)))

    def _shared_members(self) -> list[Owned]:
        return [self.log_alpha]

    def _task_members(self, task: int) -> list[Owned]:
        return []

    def forward(self, task_ids: Tensor) -> Tensor:
        if self.per_task:
            return task_one_hot(task_ids, self.num_tasks, self.log_alpha.dtype) @ self.log_alpha
        return torch.zeros_like(task_ids, dtype=self.log_alpha.dtype) + self.log_alpha[0]

    def alphas(self) -> Tensor:
        """``(m,)`` current ``α`` of every task (detached)."""
        a = self.log_alpha.detach().exp()
        return a if self.per_task else a.expand(self.num_tasks)


class ActorLoss(NamedTuple):
    """What the actor loss computes: the per-sample losses and, as an auxiliary output, the
    detached ``log π(ã | s)`` that the temperature step reads."""

    losses: Tensor  # (n,)
    log_pi: Tensor  # (n,), no gradient


class _WithAux:
    """``loss_fn(module, *batch) -> (losses, aux)`` as the ``(n,)`` loss function that
    ``MultiTaskBackward.backward_partitioned`` takes: :meth:`backward` runs the step and returns
    its result with the aux of the call.

    Eager path only (a method without per-task gradients: the loss runs once, outside ``vmap``).
    One instance per loss, kept by the agent, so that ``torch.compile`` (``SACConfig.compile``)
    sees the same function at every update.
    """

    def __init__(self, loss_fn: Callable[..., tuple[Tensor, Tensor]]) -> None:
        self.loss_fn = loss_fn
        self._aux: Tensor | None = None

    def __call__(self, module: nn.Module, *batch: Tensor) -> Tensor:
        losses, self._aux = self.loss_fn(module, *batch)
        return losses

    def backward(
        self, engine: MultiTaskBackward, *batch: Tensor, **split: Any
    ) -> tuple[StepResult, Tensor]:
        if engine.needs_task_gradients:
            raise RuntimeError("auxiliary outputs are read on the eager path only")
        self._aux = None
        try:
            result = engine.backward_partitioned(self, *batch, **split)
            aux = self._aux
        finally:
            self._aux = None
        assert aux is not None
        return result, aux


class MTSAC:
    """Multi-task SAC (see the module docstring).

    Args:
        config: the settings.
        obs_dim: observation width (Meta-World: 39; the task id is given separately).
        action_dim: action width.
        num_tasks: ``m``.

    Attributes:
        actor, critic, critic_target, temperature: the modules.
        actor_optimizer, critic_optimizer, alpha_optimizer: their Adam optimizers.
        backward: ``{"actor", "critic", "alpha"}`` → the :class:`MultiTaskBackward` of each loss.
        reward_normalizer: per-task reward statistics (give it to the replay buffer:
            :meth:`make_replay`).
        last_results: the :class:`~gradsurgery.backward.StepResult` of each component's last step
            (per-task losses, method weights, Gramian) for diagnostics.
    """

    def __init__(self, config: SACConfig, obs_dim: int, action_dim: int, num_tasks: int) -> None:
        if obs_dim < 1 or action_dim < 1 or num_tasks < 1:
            raise ValueError("obs_dim, action_dim and num_tasks must be positive")
        if config.task_names is not None and len(config.task_names) != num_tasks:
            raise ValueError(
                f"config has {len(config.task_names)} task names for {num_tasks} tasks"
            )
        self.config = config
        self.obs_dim, self.action_dim, self.num_tasks = obs_dim, action_dim, num_tasks
        self.device = config.torch_device
        self.dtype = config.torch_dtype
        seed = config.seed if config.seed is not None else int(torch.randint(0, 2**62, (1,)).item())
        # Networks are built under a fixed seed so that the same config gives the same agent.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            arch = {"task_names": config.task_names, **config.architecture_kwargs}
            self.actor: Actor = build_actor(
                config.architecture,
                obs_dim,
                action_dim,
                num_tasks,
                config.hidden_sizes,
                log_std_bounds=config.log_std_bounds,
                **arch,
            )
            self.critic: TwinCritic = build_critic(
                config.architecture, obs_dim, action_dim, num_tasks, config.hidden_sizes, **arch
            )
        self.temperature = Temperature(num_tasks, config.per_task_alpha, config.init_temperature)
        for module in (self.actor, self.critic, self.temperature):
            module.to(self.device, self.dtype)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.reward_normalizer = RewardNormalizer(num_tasks, self.device)
        self.target_entropy = config.resolved_target_entropy(action_dim)

        self.backward: dict[str, MultiTaskBackward] = {}
        for name, module in (
            ("critic", self.critic),
            ("actor", self.actor),
            ("alpha", self.temperature),
        ):
            use_method = name in config.apply_method_to and not (
                name == "alpha" and config.per_task_alpha
            )
            method, kwargs = (
                (config.method, dict(config.method_kwargs)) if use_method else ("sum", {})
            )
            self.backward[name] = MultiTaskBackward(
                module,
                method,
                num_tasks=num_tasks,
                task_names=config.task_names,
                strategy=config.strategy,
                check_finite=config.check_finite,
                compile=config.compile,
                **kwargs,
            )
            self.backward[name].method.to(self.device)

        def groups(module: nn.Module, name: str, decay: float) -> list[dict[str, Any]]:
            own = [p for p in self.backward[name].method.parameters() if p.requires_grad]
            out: list[dict[str, Any]] = [
                {"params": list(module.parameters()), "weight_decay": decay}
            ]
            if own:
                out.append({"params": own, "weight_decay": 0.0})
            return out

        lr, alpha_lr = config.lr, config.alpha_lr if config.alpha_lr is not None else config.lr
        fused = True if config.fused_adam else None  # None: torch's default implementation
        self.actor_optimizer = torch.optim.Adam(
            groups(self.actor, "actor", config.actor_weight_decay), lr=lr, fused=fused
        )
        self.critic_optimizer = torch.optim.Adam(
            groups(self.critic, "critic", 0.0), lr=lr, fused=fused
        )
        self.alpha_optimizer = torch.optim.Adam(
            groups(self.temperature, "alpha", 0.0), lr=alpha_lr, fused=fused
        )

        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.act_generator = torch.Generator(device=self.device).manual_seed(seed + 1)
        self.num_updates = 0
        self.last_results: dict[str, StepResult] = {}
        self._actor_with_aux = _WithAux(self.actor_objective)
        self._layouts: dict[int, TaskBatch] = {}

    # ------------------------------------------------------------------ helpers
    def make_replay(self, capacity_per_task: int) -> MultiTaskReplay:
        """A replay buffer whose reward statistics are this agent's (saved with the agent)."""
        return MultiTaskReplay(
            self.num_tasks,
            capacity_per_task,
            self.obs_dim,
            self.action_dim,
            self.device,
            dtype=self.dtype,
            reward_normalizer=self.reward_normalizer,
        )

    def layout(self, batch: SACBatch) -> dict[str, Any]:
        """How the batch is split by task, as ``backward_partitioned`` keywords: a fixed
        balanced layout for a replay sample (no host synchronisation), else its task ids."""
        b = batch.per_task
        if b is None or b * self.num_tasks != len(batch):
            return {"task_ids": batch.task_ids.to(self.device, torch.long)}
        if b not in self._layouts:
            self._layouts[b] = TaskBatch.balanced(
                self.num_tasks, b, device=self.device, dtype=self.dtype
            )
        return {"layout": self._layouts[b]}

    @property
    def alphas(self) -> Tensor:
        """``(m,)`` current temperatures."""
        return self.temperature.alphas()

    def task_weights(self) -> Tensor:
        """``(m,)`` the per-task weights ``w_i`` of the actor and critic losses."""
        m = self.num_tasks
        w = torch.full(
            (m,),
            1.0 / m if self.config.task_loss_scale == "mean" else 1.0,
            device=self.device,
            dtype=self.dtype,
        )
        if self.config.task_reweighting == "softmax_neg_log_alpha":
            w = w * m * torch.softmax(-self.temperature.log_alpha.detach(), dim=0)
        return w

    def end_epoch(self) -> None:
        """The loop's epoch boundary, passed to the method of each loss (critic, actor,
        temperature): :meth:`Method.end_epoch <gradsurgery.methods.base.Method.end_epoch>`. The
        runner (:mod:`gradsurgery.rl.runner`) calls it at every episode boundary of the vector env,
        after that step's update; DWA closes its epoch there (a no-op for most methods). A loop
        that drives :meth:`update` itself should call it too, or use a method that does not need it
        (:attr:`needs_epoch_boundaries`)."""
        for engine in self.backward.values():
            engine.method.end_epoch()

    @property
    def needs_epoch_boundaries(self) -> bool:
        """Whether the method of any loss needs :meth:`end_epoch` (DWA without ``epoch_length``)."""
        return any(engine.method.needs_epoch_boundaries for engine in self.backward.values())

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def act(
        self,
        obs: Tensor | np.ndarray,
        task_ids: Tensor | np.ndarray | Sequence[int] | int,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> Tensor | np.ndarray:
        """Actions for a batch of observations.

        Args:
            obs: ``(n, obs_dim)`` (or one ``(obs_dim,)`` observation), numpy or torch.
            task_ids: ``(n,)`` task of each row (or one int for all rows).
            deterministic: the policy's mode ``tanh(μ)`` (evaluation) instead of a sample.
            generator: the noise source (default: the agent's own exploration generator, saved in
                its state; a generator on another device than the agent's also works).

        Returns:
            ``(n, action_dim)`` actions in ``[-1, 1]`` (``(action_dim,)`` for one observation):
            a float32 numpy array for numpy input, else a tensor on ``obs``'s device and dtype.
        """
        as_numpy = not isinstance(obs, Tensor)
        out_device = obs.device if isinstance(obs, Tensor) else None
        out_dtype = obs.dtype if isinstance(obs, Tensor) and obs.is_floating_point() else None
        o = torch.as_tensor(np.asarray(obs) if as_numpy else obs).to(self.device, self.dtype)
        single = o.dim() == 1
        if single:
            o = o.unsqueeze(0)
        t = torch.as_tensor(np.asarray(task_ids) if not isinstance(task_ids, Tensor) else task_ids)
        t = t.to(self.device, torch.long).reshape(-1)
        if t.numel() == 1 and o.shape[0] != 1:
            t = t.expand(o.shape[0])
        if t.shape[0] != o.shape[0]:
            raise ValueError(f"{t.shape[0]} task ids for {o.shape[0]} observations")
        mean, log_std = self.actor(o, t)
        if deterministic:
            action = torch.tanh(mean)
        else:
            g = generator if generator is not None else self.act_generator
            noise = torch.randn(mean.shape, generator=g, device=g.device, dtype=mean.dtype)
            action = torch.tanh(mean + log_std.exp() * noise.to(mean.device))
        if single:
            action = action.squeeze(0)
        if as_numpy:
            return action.cpu().numpy().astype(np.float32)
        return action.to(out_device, out_dtype or action.dtype)

    # ------------------------------------------------------------------ losses (per sample)
    def _critic_loss(
        self,
        critic: TwinCritic,
        obs: Tensor,
        actions: Tensor,
        task_ids: Tensor,
        y: Tensor,
        w: Tensor,
    ) -> Tensor:
        q1, q2 = critic(obs, actions, task_ids)
        return w * ((q1 - y).square() + (q2 - y).square())

    def _actor_terms(
        self, actor: Actor, obs: Tensor, task_ids: Tensor, noise: Tensor, alpha: Tensor, w: Tensor
    ) -> tuple[Tensor, Tensor]:
        action, log_pi = actor.sample(obs, task_ids, noise)
        q1, q2 = self.critic(obs, action, task_ids)
        return w * (alpha * log_pi - torch.minimum(q1, q2)), log_pi

    def actor_objective(
        self, actor: Actor, obs: Tensor, task_ids: Tensor, noise: Tensor, alpha: Tensor, w: Tensor
    ) -> ActorLoss:
        """The per-sample actor loss and the detached ``log π`` of its actions."""
        losses, log_pi = self._actor_terms(actor, obs, task_ids, noise, alpha, w)
        return ActorLoss(losses, log_pi.detach())

    def _actor_loss(
        self, actor: Actor, obs: Tensor, task_ids: Tensor, noise: Tensor, alpha: Tensor, w: Tensor
    ) -> Tensor:
        """The per-sample actor loss alone (the vectorized path: no auxiliary output)."""
        return self._actor_terms(actor, obs, task_ids, noise, alpha, w)[0]

    def _alpha_loss(
        self, temperature: Temperature, task_ids: Tensor, log_pi: Tensor, w: Tensor
    ) -> Tensor:
        return -w * temperature(task_ids).exp() * (log_pi + self.target_entropy)

    # ------------------------------------------------------------------ update
    def update(self, batch: SACBatch) -> UpdateMetrics:
        """One step on the critics, the actor and the temperature, then the soft target update.

        No host synchronisation (with a replay sample's batch and ``check_finite`` ``"lazy"`` or
        ``False``): the statistics stay on the device until they are read.

        Returns:
            a mapping of floats, read from the device at the first look
            (:class:`~gradsurgery.rl.update_metrics.UpdateMetrics`): ``critic_loss``, ``actor_loss``, ``alpha_loss`` (each the objective ``Σ_i L_i``),
            ``alpha`` (mean over tasks, after the step), ``entropy`` (``−mean log π``), ``target_q``
            (mean TD target), ``reward`` (mean reward as used, i.e. normalized); with
            ``log_per_task`` also ``alpha/i``, ``critic_loss/i``, ``actor_loss/i``.
        """
        cfg = self.config
        b = batch.to(self.device)
        obs, next_obs = b.obs.to(self.dtype), b.next_obs.to(self.dtype)
        actions, task_ids = b.actions.to(self.dtype), b.task_ids.to(torch.long)
        not_done = 1.0 - b.terminated.to(self.dtype)
        rewards = b.rewards.to(self.dtype)
        n = task_ids.shape[0]
        if cfg.reward_normalization or cfg.q_target_clip:
            sigma, r_max = self._reward_stats(b, task_ids)
            if cfg.reward_normalization:
                rewards = rewards / sigma
        log_alpha = self.temperature(task_ids).detach()
        alpha = log_alpha.exp()
        w_task = self.task_weights()
        w = w_task[task_ids]
        noise = torch.randn(
            2 * n, self.action_dim, generator=self.generator, device=self.device, dtype=self.dtype
        )
        noise_next, noise_pi = noise[:n], noise[n:]
        actor_vectorized = self.backward["actor"].needs_task_gradients
        split = self.layout(b)

        # -- critic
        with torch.no_grad():
            if actor_vectorized:  # also log π(ã|s) for the temperature step, in the same pass
                both, log_pi_both = self.actor.sample(
                    torch.cat([next_obs, obs]), torch.cat([task_ids, task_ids]), noise
                )
                next_action, next_log_pi, log_pi_now = both[:n], log_pi_both[:n], log_pi_both[n:]
            else:
                next_action, next_log_pi = self.actor.sample(next_obs, task_ids, noise_next)
                log_pi_now = None
            tq1, tq2 = self.critic_target(next_obs, next_action, task_ids)
            y = rewards + cfg.gamma * not_done * (torch.minimum(tq1, tq2) - alpha * next_log_pi)
            if cfg.q_target_clip:
                scale = sigma if cfg.reward_normalization else torch.ones_like(sigma)
                y = torch.minimum(y, r_max / scale / (1.0 - cfg.gamma))
        self.critic_optimizer.zero_grad(set_to_none=True)
        res_c = self.backward["critic"].backward_partitioned(
            self._critic_loss, obs, actions, task_ids, y, w, **split
        )
        self._clip(self.critic)
        self.critic_optimizer.step()

        # -- actor (critic frozen)
        self.actor_optimizer.zero_grad(set_to_none=True)
        self.critic.requires_grad_(False)
        actor_batch = (obs, task_ids, noise_pi, alpha, w)
        try:
            if log_pi_now is None:  # eager: log π is the actor loss's auxiliary output
                res_a, log_pi_now = self._actor_with_aux.backward(
                    self.backward["actor"], *actor_batch, **split
                )
            else:
                res_a = self.backward["actor"].backward_partitioned(
                    self._actor_loss, *actor_batch, **split
                )
        finally:
            self.critic.requires_grad_(True)
        assert log_pi_now.shape == (n,)
        self._clip(self.actor)
        self.actor_optimizer.step()

        # -- temperature
        w_alpha = torch.full_like(w, 1.0 / self.num_tasks if cfg.task_loss_scale == "mean" else 1.0)
        self.alpha_optimizer.zero_grad(set_to_none=True)
        res_t = self.backward["alpha"].backward_partitioned(
            self._alpha_loss, task_ids, log_pi_now, w_alpha, **split
        )
        self.alpha_optimizer.step()

        # -- targets
        with torch.no_grad():
            src: list[Tensor] = list(self.critic.parameters())
            dst: list[Tensor] = list(self.critic_target.parameters())
            torch._foreach_lerp_(dst, src, cfg.tau)
        self.num_updates += 1
        self.last_results = {"critic": res_c, "actor": res_a, "alpha": res_t}
        return self._info(res_c, res_a, res_t, log_pi_now, y, rewards)

    def _reward_stats(self, b: SACBatch, task_ids: Tensor) -> tuple[Tensor, Tensor]:
        if b.reward_scale is not None and b.reward_max is not None:
            return b.reward_scale.to(self.dtype), b.reward_max.to(self.dtype)
        norm = self.reward_normalizer
        if bool((norm.count[task_ids.unique()] == 0).any()):
            raise RuntimeError(
                "reward normalization / Q-target clipping is on, but this batch carries no reward "
                "statistics and the agent has seen no reward of some of its tasks: build the replay "
                "buffer with agent.make_replay(...) (or pass reward_normalizer=agent.reward_normalizer)"
            )
        return norm.std(task_ids).to(self.dtype), norm.max(task_ids).to(self.dtype)

    def _clip(self, module: nn.Module) -> None:
        if self.config.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(module.parameters(), self.config.max_grad_norm)

    def _info(
        self,
        res_c: StepResult,
        res_a: StepResult,
        res_t: StepResult,
        log_pi: Tensor,
        y: Tensor,
        rewards: Tensor,
    ) -> UpdateMetrics:
        alphas = self.alphas
        values = [
            res_c.losses.sum(),
            res_a.losses.sum(),
            res_t.losses.sum(),
            alphas.mean(),
            -log_pi.mean(),
            y.mean(),
            rewards.mean(),
        ]
        names = [
            "critic_loss",
            "actor_loss",
            "alpha_loss",
            "alpha",
            "entropy",
            "target_q",
            "reward",
        ]
        scalars = torch.stack(values).to(torch.float64)
        if not self.config.log_per_task:
            return UpdateMetrics(names, scalars)
        m = self.num_tasks
        per_task = torch.full((3, m), float("nan"), dtype=torch.float64, device=alphas.device)
        per_task[0] = alphas.to(torch.float64)
        per_task[1, res_c.tasks] = res_c.losses.to(torch.float64)
        per_task[2, res_a.tasks] = res_a.losses.to(torch.float64)
        for key in ("alpha", "critic_loss", "actor_loss"):
            names.extend(f"{key}/{i}" for i in range(m))
        return UpdateMetrics(names, torch.cat([scalars, per_task.flatten()]))

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training exactly: networks, targets, optimizers, the
        methods' states, temperatures, reward statistics, generators, the update count."""
        return {
            "config": self.config.to_dict(),
            "dims": {
                "obs_dim": self.obs_dim,
                "action_dim": self.action_dim,
                "num_tasks": self.num_tasks,
            },
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "temperature": self.temperature.state_dict(),
            "actor_optimizer": self.actor_optimizer.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "alpha_optimizer": self.alpha_optimizer.state_dict(),
            "backward": {k: v.state_dict() for k, v in self.backward.items()},
            "reward_normalizer": self.reward_normalizer.state_dict(),
            "generator": self.generator.get_state(),
            "act_generator": self.act_generator.get_state(),
            "num_updates": self.num_updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        dims = state["dims"]
        mine = {"obs_dim": self.obs_dim, "action_dim": self.action_dim, "num_tasks": self.num_tasks}
        if dims != mine:
            raise ValueError(f"state is for {dims}, this agent is {mine}")
        saved = SACConfig.from_dict(state["config"])
        if (saved.architecture, saved.hidden_sizes, saved.per_task_alpha) != (
            self.config.architecture,
            self.config.hidden_sizes,
            self.config.per_task_alpha,
        ):
            raise ValueError(
                "state was saved with another architecture, widths or temperature sharing"
            )
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        self.temperature.load_state_dict(state["temperature"])
        self.actor_optimizer.load_state_dict(state["actor_optimizer"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        self.alpha_optimizer.load_state_dict(state["alpha_optimizer"])
        for k, v in self.backward.items():
            v.load_state_dict(state["backward"][k])
        self.reward_normalizer.load_state_dict(state["reward_normalizer"])
        self.generator.set_state(state["generator"])
        self.act_generator.set_state(state["act_generator"])
        self.num_updates = int(state["num_updates"])
