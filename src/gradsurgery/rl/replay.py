"""A task-balanced multi-task replay buffer: one ring buffer per task, stored as tensors.

Each task ``i`` has its own ring of ``capacity_per_task`` transitions (when full, the oldest
transition *of that task* is overwritten), so a frequent task never evicts a rare one. A sample holds
exactly ``B`` transitions of every task, uniformly from that task's ring, grouped by task in
task-id order: the layout :meth:`MultiTaskBackward.backward_partitioned
<gradsurgery.backward.MultiTaskBackward.backward_partitioned>` expects.

Storage is ``(num_tasks, capacity, dim)`` tensors on ``device`` (a GPU keeps sampling on the GPU).
``add`` takes numpy arrays or tensors from a vector of environments; several environments may run
the same task.

Reward statistics for Kurin et al.'s normalization (:class:`~gradsurgery.rl.reward_normalization.
RewardNormalizer`) are updated on every ``add``; pass the agent's normalizer
(``MultiTaskReplay(..., reward_normalizer=agent.reward_normalizer)``, or use
:meth:`MTSAC.make_replay <gradsurgery.rl.sac.MTSAC.make_replay>`) so that they are saved with the
agent; otherwise the buffer keeps its own. Samples carry each transition's ``σ`` and ``r_max`` *at
sampling time*; the rewards themselves are raw.

Example:
    >>> import torch
    >>> rb = MultiTaskReplay(num_tasks=2, capacity_per_task=4, obs_dim=3, action_dim=1)
    >>> rb.add(torch.tensor([0, 1]), torch.zeros(2, 3), torch.zeros(2, 1), torch.tensor([1.0, 2.0]),
    ...        torch.zeros(2, 3), torch.tensor([False, False]))
    >>> len(rb), rb.sizes.tolist()
    (2, [1, 1])
    >>> batch = rb.sample(3, torch.Generator().manual_seed(0))
    >>> batch.task_ids.tolist(), batch.rewards.tolist()
    ([0, 0, 0, 1, 1, 1], [1.0, 1.0, 1.0, 2.0, 2.0, 2.0])
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gradsurgery.rl.reward_normalization import RewardNormalizer

__all__ = ["MultiTaskReplay", "SACBatch"]


def _host_array(x: Any) -> np.ndarray | None:
    """Task ids as a host array when they are on the host (numpy, an int, a CPU tensor)."""
    if isinstance(x, Tensor):
        return x.detach().numpy() if x.device.type == "cpu" else None
    return np.asarray(x)


ArrayLike = Tensor | np.ndarray


@dataclass(frozen=True)
class SACBatch:
    """A batch of transitions, grouped by task (row order: task 0's samples, then task 1's, ...).

    Attributes:
        obs: ``(n, obs_dim)``.
        actions: ``(n, action_dim)``.
        rewards: ``(n,)`` raw rewards.
        next_obs: ``(n, obs_dim)``.
        terminated: ``(n,)`` 1.0 where the episode truly ended (not time-limit truncation).
        task_ids: ``(n,)`` long.
        reward_scale: ``(n,)`` the task's reward std σ at sampling time (None: unknown).
        reward_max: ``(n,)`` the task's largest reward so far (None: unknown).
        per_task: when every task has exactly this many rows, in task order (as
            :meth:`MultiTaskReplay.sample` makes them), so that the agent can use a fixed layout
            (:meth:`TaskBatch.balanced <gradsurgery.engines.task_partitioned.TaskBatch.balanced>`)
            instead of grouping the task ids (no host synchronisation); None: unknown.
    """

    obs: Tensor
    actions: Tensor
    rewards: Tensor
    next_obs: Tensor
    terminated: Tensor
    task_ids: Tensor
    reward_scale: Tensor | None = None
    reward_max: Tensor | None = None
    per_task: int | None = None

    def __len__(self) -> int:
        return self.task_ids.shape[0]

    def to(self, device: torch.device | str) -> SACBatch:
        moved: dict[str, Any] = {
            f.name: (v.to(device) if isinstance(v, Tensor) else v)
            for f in fields(self)
            for v in [getattr(self, f.name)]
        }
        return SACBatch(**moved)


class MultiTaskReplay:
    """Per-task ring buffers with task-balanced sampling.

    Args:
        num_tasks: ``m``.
        capacity_per_task: ring size of each task.
        obs_dim: observation width (as the agent sees it).
        action_dim: action width.
        device: where the transitions are stored and sampled.
        dtype: float dtype of the stored transitions.
        reward_normalizer: the statistics to update on ``add`` (the agent's); None: a private one.
    """

    def __init__(
        self,
        num_tasks: int,
        capacity_per_task: int,
        obs_dim: int,
        action_dim: int,
        device: torch.device | str = "cpu",
        *,
        dtype: torch.dtype = torch.float32,
        reward_normalizer: RewardNormalizer | None = None,
    ) -> None:
        if num_tasks < 1 or capacity_per_task < 1:
            raise ValueError("num_tasks and capacity_per_task must be positive")
        self.num_tasks = num_tasks
        self.capacity = capacity_per_task
        self.obs_dim = obs_dim
        self.action_dim = action_dim
        self.device = torch.device(device)
        self.dtype = dtype
        shape = (num_tasks, capacity_per_task)
        kw: dict[str, Any] = {"device": self.device, "dtype": dtype}
        self.obs = torch.zeros(*shape, obs_dim, **kw)
        self.next_obs = torch.zeros(*shape, obs_dim, **kw)
        self.actions = torch.zeros(*shape, action_dim, **kw)
        self.rewards = torch.zeros(shape, **kw)
        self.terminated = torch.zeros(shape, **kw)
        self.ptr = torch.zeros(num_tasks, dtype=torch.long, device=self.device)
        self.size = torch.zeros(num_tasks, dtype=torch.long, device=self.device)
        if reward_normalizer is not None and reward_normalizer.num_tasks != num_tasks:
            raise ValueError("the reward normalizer is for a different number of tasks")
        self.reward_normalizer = reward_normalizer or RewardNormalizer(num_tasks, self.device)
        self._every_task_filled = False  # sizes only grow (a reset or a load clears this)

    # ------------------------------------------------------------------ adding
    def add(
        self,
        task_ids: ArrayLike | int,
        obs: ArrayLike,
        actions: ArrayLike,
        rewards: ArrayLike | float,
        next_obs: ArrayLike,
        terminated: ArrayLike | bool,
    ) -> None:
        """Store ``n`` transitions (one per environment of a vector; a single one also works).

        Args:
            task_ids: ``(n,)`` task of each transition.
            obs, next_obs: ``(n, obs_dim)``.
            actions: ``(n, action_dim)``.
            rewards: ``(n,)``.
            terminated: ``(n,)`` true terminations (use ``terminated``, not ``truncated``, of a
                gymnasium step: a time limit is not a terminal state).
        """

        def rows(n: int) -> list[Tensor]:  # obs, next_obs, actions, rewards, terminated
            return [
                self._tensor(obs, self.dtype).reshape(n, self.obs_dim),
                self._tensor(next_obs, self.dtype).reshape(n, self.obs_dim),
                self._tensor(actions, self.dtype).reshape(n, self.action_dim),
                self._tensor(rewards, self.dtype).reshape(n),
                self._tensor(terminated, self.dtype).reshape(n),
            ]

        host_ids = _host_array(task_ids)
        if host_ids is not None:
            ids = host_ids.reshape(-1)
            self._add_host_ids(ids, rows(ids.shape[0]))
        else:
            device_ids = self._tensor(task_ids, torch.long).reshape(-1)
            self._add_device_ids(device_ids, rows(device_ids.shape[0]))

    def _add_device_ids(self, ids: Tensor, rows: list[Tensor]) -> None:
        """``add`` with task ids on the device: the bookkeeping is done there."""
        n = ids.shape[0]
        o, no, a, r, d = rows
        if n == 0:
            return
        if bool(((ids < 0) | (ids >= self.num_tasks)).any()):
            raise ValueError(f"task ids must lie in [0, {self.num_tasks})")
        counts = torch.bincount(ids, minlength=self.num_tasks)
        # Position of each row among the rows of its own task in this call (0, 1, ...).
        order = torch.argsort(ids, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.empty_like(ids)
        rank[order] = torch.arange(n, device=self.device) - starts[ids[order]]
        # More than `capacity` rows of one task in one call: only the last `capacity` survive, as
        # if added one by one (this also keeps the written slots distinct).
        keep = rank >= counts[ids] - self.capacity
        self._write(ids[keep], rank[keep], counts, o[keep], no[keep], a[keep], r[keep], d[keep])
        self.reward_normalizer.update(ids, r)

    def _add_host_ids(self, ids: np.ndarray, rows: list[Tensor]) -> None:
        """``add`` with task ids on the host (numpy, a CPU tensor, an int): the bookkeeping is
        done there, and the data reaches the device by non-blocking copies (no host sync)."""
        n = ids.shape[0]
        if n == 0:
            return
        if ids.min() < 0 or ids.max() >= self.num_tasks:
            raise ValueError(f"task ids must lie in [0, {self.num_tasks})")
        ids = ids.astype(np.int64, copy=False)
        counts = np.bincount(ids, minlength=self.num_tasks)
        order = np.argsort(ids, kind="stable")
        starts = np.cumsum(counts) - counts
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n) - starts[ids[order]]
        keep = rank >= counts[ids] - self.capacity
        device_ids = self._tensor(ids, torch.long)
        r = rows[3]
        if keep.all():
            kept_ids, kept_rank = device_ids, self._tensor(rank, torch.long)
        else:
            where = self._tensor(np.flatnonzero(keep), torch.long)
            kept_ids, kept_rank = device_ids[where], self._tensor(rank[keep], torch.long)
            rows = [t[where] for t in rows]
        self._write(kept_ids, kept_rank, self._tensor(counts, torch.long), *rows)
        self.reward_normalizer.update(device_ids, r)

    def _write(
        self,
        ids: Tensor,
        rank: Tensor,
        counts: Tensor,
        o: Tensor,
        no: Tensor,
        a: Tensor,
        r: Tensor,
        d: Tensor,
    ) -> None:
        """Write the kept rows at their slots and advance the rings."""
        slot = (self.ptr[ids] + rank) % self.capacity
        self.obs[ids, slot] = o
        self.next_obs[ids, slot] = no
        self.actions[ids, slot] = a
        self.rewards[ids, slot] = r
        self.terminated[ids, slot] = d
        self.ptr = (self.ptr + counts) % self.capacity
        self.size = torch.clamp(self.size + counts, max=self.capacity)

    def _tensor(self, x: Any, dtype: torch.dtype) -> Tensor:
        """``x`` on the buffer's device; host data goes by a non-blocking copy from pinned
        memory to an accelerator (no host synchronisation)."""
        if isinstance(x, Tensor) and x.device.type != "cpu":
            return x.detach().to(self.device, dtype)
        host = x.detach() if isinstance(x, Tensor) else torch.from_numpy(np.asarray(x))
        host = host.to(dtype)
        if self.device.type == "cpu":
            return host
        return host.pin_memory().to(self.device, non_blocking=True)

    # ------------------------------------------------------------------ sampling
    def sample(self, batch_per_task: int, generator: torch.Generator | None = None) -> SACBatch:
        """``batch_per_task`` transitions of every task, uniformly (with replacement) from each
        task's ring; grouped by task in task-id order.

        Args:
            batch_per_task: ``B``.
            generator: the random source (on CPU or on the buffer's device); None: torch's global
                RNG.

        Raises:
            ValueError: when a task has no transition yet.
        """
        if batch_per_task < 1:
            raise ValueError(f"batch_per_task must be >= 1, got {batch_per_task}")
        if not self._every_task_filled:  # a host read, until every task has a transition
            empty = (self.size == 0).nonzero().flatten().tolist()
            if empty:
                raise ValueError(
                    f"cannot sample a task-balanced batch: tasks {empty} have no transition yet"
                )
            self._every_task_filled = True
        m, b = self.num_tasks, batch_per_task
        rng_device = generator.device if generator is not None else self.device
        u = torch.rand(m, b, generator=generator, device=rng_device).to(self.device)
        # floor(u · size) < size; the clamp guards against u rounding to 1 in float32.
        idx = torch.minimum((u * self.size.unsqueeze(1)).long(), (self.size - 1).unsqueeze(1))
        rows = torch.arange(m, device=self.device).unsqueeze(1).expand(m, b)
        task_ids = rows.reshape(-1)
        norm = self.reward_normalizer
        return SACBatch(
            obs=self.obs[rows, idx].reshape(m * b, self.obs_dim),
            actions=self.actions[rows, idx].reshape(m * b, self.action_dim),
            rewards=self.rewards[rows, idx].reshape(-1),
            next_obs=self.next_obs[rows, idx].reshape(m * b, self.obs_dim),
            terminated=self.terminated[rows, idx].reshape(-1),
            task_ids=task_ids,
            reward_scale=norm.std(task_ids).to(self.device, self.dtype),
            reward_max=norm.max(task_ids).to(self.device, self.dtype),
            per_task=b,
        )

    # ------------------------------------------------------------------ sizes
    def __len__(self) -> int:
        return int(self.size.sum())

    @property
    def sizes(self) -> Tensor:
        """``(num_tasks,)`` number of stored transitions per task."""
        return self.size.clone()

    def task_size(self, task: int) -> int:
        return int(self.size[task])

    # ------------------------------------------------------------------ state
    def state_dict(self, include_data: bool = True) -> dict[str, Any]:
        """Pointers, sizes and reward statistics; the transitions too with ``include_data``
        (``capacity · (2·obs_dim + action_dim + 2)`` floats per task: large).

        Only each ring's filled prefix ``[:max size]`` is saved.
        """
        state: dict[str, Any] = {
            "num_tasks": self.num_tasks,
            "capacity": self.capacity,
            "obs_dim": self.obs_dim,
            "action_dim": self.action_dim,
            "ptr": self.ptr.cpu(),
            "size": self.size.cpu(),
            "reward_normalizer": {
                k: v.cpu() for k, v in self.reward_normalizer.state_dict().items()
            },
            "has_data": include_data,
        }
        if include_data:
            filled = int(self.size.max()) if self.num_tasks else 0
            for name in ("obs", "next_obs", "actions", "rewards", "terminated"):
                # a copy, not a view: torch.save writes a view's whole underlying storage
                state[name] = getattr(self, name)[:, :filled].to("cpu", copy=True)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("num_tasks", "capacity", "obs_dim", "action_dim"):
            if state[key] != getattr(self, key):
                raise ValueError(
                    f"replay state has {key}={state[key]}, this buffer {getattr(self, key)}"
                )
        self.reward_normalizer.load_state_dict(state["reward_normalizer"])
        self._every_task_filled = False
        if not state["has_data"]:
            # Statistics only: the buffer restarts empty.
            self.ptr.zero_()
            self.size.zero_()
            return
        self.ptr.copy_(state["ptr"])
        self.size.copy_(state["size"])
        for name in ("obs", "next_obs", "actions", "rewards", "terminated"):
            data = state[name]
            getattr(self, name)[:, : data.shape[1]] = data.to(self.device, self.dtype)
