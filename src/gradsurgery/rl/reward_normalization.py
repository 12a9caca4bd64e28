"""Per-task reward normalization at sampling time (Kurin et al., NeurIPS 2022).

Kurin et al. keep, per task, running moments of every reward *added to the replay buffer* and divide
the rewards of a *sampled* batch by the task's standard deviation. Normalizing in the environment
instead would give the same state different rewards depending on when it was visited; normalizing
at sampling time rescales the whole buffer of a task alike. Their code (the ``mtrl`` fork shipped with
the paper) is the reference for the details, which we follow:

* Statistic: the standard deviation of the *rewards* (not of returns):
  ``σ_i = sqrt(E[r²] − E[r]² + 1e-8)`` over all rewards of task ``i`` seen so far, including those
  already evicted from the ring buffer (the moments are running averages, never recomputed).
* Rewards are only divided, not centred: ``r̃ = r / σ_i``.
* Q-target clipping (optional) uses the task's largest reward seen so far, ``r_max,i``:
  ``y ≤ r_max,i / σ_i / (1 − γ)``, the largest discounted return a task can have.
* A task with no reward yet has ``σ = 1`` (nothing to normalize) and ``r_max = +inf`` (no clip).

The moments are float64 buffers, so that millions of updates keep their precision.

Example (rewards 1 and 5 for task 0: mean 3, E[r²] = 13, σ = 2; task 1 has none: σ = 1):
    >>> import torch
    >>> norm = RewardNormalizer(num_tasks=2)
    >>> norm.update(torch.tensor([0, 0]), torch.tensor([1.0, 5.0]))
    >>> norm.std(torch.tensor([0, 1]))
    tensor([2.0000, 1.0000], dtype=torch.float64)
    >>> norm.normalize(torch.tensor([5.0]), torch.tensor([0]))
    tensor([2.5000])
    >>> norm.max().tolist()
    [5.0, inf]
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["RewardNormalizer"]

_EPS = 1e-8


class RewardNormalizer(nn.Module):
    """Running per-task reward moments; divides sampled rewards by the task's std.

    Args:
        num_tasks: number of tasks.
        device: where the statistics live (that of the replay buffer).
    """

    count: Tensor
    mean: Tensor
    sq_mean: Tensor
    max_reward: Tensor

    def __init__(self, num_tasks: int, device: torch.device | str | None = None) -> None:
        super().__init__()
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
        self.num_tasks = num_tasks
        zeros = torch.zeros(num_tasks, dtype=torch.float64, device=device)
        self.register_buffer("count", zeros.clone())
        self.register_buffer("mean", zeros.clone())
        self.register_buffer("sq_mean", zeros.clone())
        self.register_buffer("max_reward", torch.full_like(zeros, -torch.inf))

    @torch.no_grad()
    def update(self, task_ids: Tensor, rewards: Tensor) -> None:
        """Fold a batch of ``(n,)`` rewards of tasks ``task_ids`` into the running moments.

        Exactly the sequential running average ``m ← m·c/(c+1) + r/(c+1)`` over the rewards, in
        any order: the batch's per-task sums are added at once.
        """
        ids = task_ids.reshape(-1).to(self.count.device, torch.long)
        r = rewards.reshape(-1).to(self.count.device, torch.float64)
        if ids.shape != r.shape:
            raise ValueError(f"{ids.numel()} task ids for {r.numel()} rewards")
        if ids.numel() == 0:
            return
        m = self.num_tasks
        n_new = torch.zeros(m, dtype=torch.float64, device=ids.device).index_add_(
            0, ids, torch.ones_like(r)
        )
        s1 = torch.zeros_like(n_new).index_add_(0, ids, r)
        s2 = torch.zeros_like(n_new).index_add_(0, ids, r * r)
        total = self.count + n_new
        safe = total.clamp_min(1.0)
        self.mean.copy_((self.mean * self.count + s1) / safe)
        self.sq_mean.copy_((self.sq_mean * self.count + s2) / safe)
        self.count.copy_(total)
        batch_max = torch.full_like(n_new, -torch.inf).scatter_reduce(
            0, ids, r, reduce="amax", include_self=True
        )
        self.max_reward.copy_(torch.maximum(self.max_reward, batch_max))

    def std(self, task_ids: Tensor | None = None) -> Tensor:
        """``σ`` per task (float64), ``sqrt(E[r²] − E[r]² + 1e-8)``; 1 for tasks with no reward."""
        var = (self.sq_mean - self.mean.square()).clamp_min(0.0)
        sigma = torch.where(self.count > 0, (var + _EPS).sqrt(), torch.ones_like(var))
        return sigma if task_ids is None else sigma[task_ids.to(sigma.device, torch.long)]

    def max(self, task_ids: Tensor | None = None) -> Tensor:
        """Largest reward seen per task (float64); ``+inf`` for tasks with no reward (no clip)."""
        seen = torch.where(
            self.count > 0, self.max_reward, torch.full_like(self.max_reward, torch.inf)
        )
        return seen if task_ids is None else seen[task_ids.to(seen.device, torch.long)]

    def normalize(self, rewards: Tensor, task_ids: Tensor) -> Tensor:
        """``r / σ_task`` in ``rewards``' dtype and device."""
        sigma = self.std(task_ids).to(rewards.device, rewards.dtype)
        return rewards / sigma.reshape(rewards.shape)

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}"
