"""DB-MTL: dual balancing, log losses and gradient magnitudes normalized to the largest.

Lin, Ye, Xu, Shi, Zhang, Kwok. "Dual-Balancing for Multi-Task Learning". 2023 (arXiv:2308.12029).
The rule here is the one of LibMTL's ``LibMTL/weighting/DB_MTL.py`` (checked), with LibMTL's
defaults (``config.py``: ``DB_beta = 0.9``, ``DB_beta_sigma = 0``; checked). The paper's text
itself was not checked here.

Rule. *Loss-scale balancing*: every task is trained on its log loss, whose gradient is
``g_i = ∇ log(L_i + ε) = ∇L_i / (L_i + ε)``, so a task's loss scale does not matter.
*Gradient-magnitude balancing*: an exponential moving average of each task's (log-loss) gradient,

    ĝ_i ← g_i + β_t (ĝ_i − g_i) = β_t ĝ_i + (1 − β_t) g_i,      β_t = β / t^σ,      ĝ_i(0) = 0,

is rescaled to the largest of the averages' norms, and the shared update is

    Δθ = Σ_i α_i ĝ_i,      α_i = max_j ‖ĝ_j‖ / ‖ĝ_i‖,

so every task contributes a vector of the same norm ``max_j ‖ĝ_j‖``. Task ``i``'s own parameters
get the gradient of its log loss, ``∇L_i / (L_i + ε)`` (LibMTL back-propagates the log losses into
them; only the shared parameters' gradients are replaced).

Choices the paper leaves open, and ours:

* State: ``ĝ`` is an ``M × d`` buffer (``d``: the number of shared parameter entries, known at
  the first step), in float32 (float64 for float64 gradients), in ``state_dict`` with each task's
  step count ``t_i``. LibMTL counts ``t`` globally; here ``t_i`` counts the steps where task ``i``
  was present and an absent task's average is left unchanged (the same with every task present).
* ``ε = 1e-8`` in the log as LibMTL. The weights ``1/(L_i + ε)`` are applied to the per-task
  gradients (no log is taken): a non-positive loss (the log of which is not defined) still gives
  a finite update, but the method is meant for positive losses.
* ``α_i``: LibMTL divides by ``‖ĝ_i‖ + 1e-8``; here by ``‖ĝ_i‖`` itself, with ``α_i = 0`` where
  ``ĝ_i = 0`` (a task without gradient contributes nothing either way). This keeps the update
  1-homogeneous in the gradients at every scale (``scale_degree = 1``); the two differ only for
  averages of norm comparable to 1e-8.
* One task: ``Δθ = ĝ_1``, a momentum on ``∇ log L_1`` over past steps (at the first step
  ``(1 − β) ∇L_1 / L_1``), not a positive multiple of the current gradient: the method declares
  ``single_task = None`` (no claim).
* Needs the per-task gradients (``requires == "jacobian"``): ``ĝ`` averages gradients taken at
  past parameters, which no Gramian of the current step determines. It reads ``J`` as one
  ``m × d`` copy; no host synchronisation.
* Not composable with a loss weighting: rescaling every task to the largest norm would (all but)
  cancel the weighting's per-task weights.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from gradsurgery.jacobian import TaskJacobian, gramian_dtype
from gradsurgery.methods.base import JacobianAggregator, TaskStep
from gradsurgery.methods.registry import register
from gradsurgery.methods.task_state import TaskStateMixin, per_task

__all__ = ["DBMTL", "db_mtl_update"]


def db_mtl_update(averages: Tensor) -> Tensor:
    """``Σ_i α_i ĝ_i`` with ``α_i = max_j ‖ĝ_j‖ / ‖ĝ_i‖`` (0 where ``ĝ_i = 0``), for ``(m, d)``
    averages."""
    norms = averages.norm(dim=1)
    alpha = torch.where(norms > 0, norms.max() / torch.where(norms > 0, norms, 1.0), 0.0)
    return alpha @ averages


@register(
    "db_mtl",
    paper="Lin et al., Dual-Balancing for Multi-Task Learning, 2023 (arXiv:2308.12029)",
    rule="EMA ĝ_i of ∇log L_i; Δθ = Σ_i (max_j ‖ĝ_j‖ / ‖ĝ_i‖) ĝ_i; β = 0.9",
)
class DBMTL(TaskStateMixin, JacobianAggregator):
    """DB-MTL (see the module docstring).

    Args:
        beta: ``β`` of the moving average (LibMTL: 0.9).
        beta_sigma: ``σ`` of ``β_t = β / t^σ`` (LibMTL: 0, a constant ``β``).
        eps: ``ε`` of ``log(L + ε)`` (LibMTL: 1e-8).
        num_tasks: the number of tasks (None: taken from the first step).
    """

    single_task = None
    not_composable = (
        "its gradient-magnitude balancing rescales every task to the largest norm, which would "
        "cancel a weighting's per-task weights"
    )

    _task_state_names = ("task_steps", "grad_buffer")
    task_steps: Tensor | None
    grad_buffer: Tensor | None

    def __init__(
        self,
        beta: float = 0.9,
        beta_sigma: float = 0.0,
        eps: float = 1e-8,
        num_tasks: int | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must lie in [0, 1), got {beta}")
        if beta_sigma < 0:
            raise ValueError(f"beta_sigma must be non-negative, got {beta_sigma}")
        if eps < 0:
            raise ValueError(f"eps must be non-negative, got {eps}")
        self.beta = float(beta)
        self.beta_sigma = float(beta_sigma)
        self.eps = float(eps)
        self._init_task_state(num_tasks)

    def _allocate(self, num_tasks: int, device: torch.device | None) -> None:
        self.task_steps = per_task(num_tasks, device)
        self.grad_buffer = torch.zeros(num_tasks, 0, device=device)  # width set at the first step

    def _prepare(self, step: TaskStep, jacobian: TaskJacobian) -> None:
        self._bind_to_step(step)
        assert self.grad_buffer is not None
        dtype, d = gramian_dtype(jacobian.dtype), jacobian.num_params
        if self.grad_buffer.shape[1] == 0:
            self.grad_buffer = self.grad_buffer.new_zeros(self.grad_buffer.shape[0], d)
        elif self.grad_buffer.shape[1] != d:
            raise ValueError(
                f"DBMTL was set up for {self.grad_buffer.shape[1]} shared entries, not {d}"
            )
        if self.grad_buffer.device != jacobian.device:
            self.to(jacobian.device)
        if dtype == torch.float64 and self.grad_buffer.dtype != torch.float64:
            self.grad_buffer = self.grad_buffer.double()
            self.task_steps = self.task_steps.double() if self.task_steps is not None else None

    def _log_factors(self, step: TaskStep, like: Tensor) -> Tensor:
        """``1 / (L_i + ε)``: the log loss's gradient is the loss's, times this."""
        return 1.0 / (step.losses.detach().to(device=like.device, dtype=like.dtype) + self.eps)

    def aggregate(self, jacobian: TaskJacobian, step: TaskStep) -> list[Tensor]:
        self._prepare(step, jacobian)
        assert self.grad_buffer is not None and self.task_steps is not None
        buf = self.grad_buffer
        tasks = step.tasks.to(buf.device)
        g = jacobian.matrix().to(buf.dtype) * self._log_factors(step, buf)[:, None]
        t = self.task_steps[tasks] + 1
        beta = (self.beta / t.pow(self.beta_sigma)).to(buf.dtype)[:, None]
        averages = g + beta * (buf[tasks] - g)
        buf.index_copy_(0, tasks, averages)
        self.task_steps.index_copy_(0, tasks, t)
        return jacobian.split(db_mtl_update(averages))

    def task_specific_weights(self, step: TaskStep) -> Tensor:
        return self._log_factors(step, step.losses.detach()).to(step.losses.dtype)

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        saved = state_dict.get(prefix + "grad_buffer")
        if isinstance(saved, Tensor) and self.num_tasks is None:
            self.bind(int(saved.shape[0]), device=saved.device)
        buf = self.grad_buffer
        if isinstance(saved, Tensor) and buf is not None and buf.shape != saved.shape:
            self.grad_buffer = buf.new_zeros(saved.shape)  # the width is set at the first step
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, beta_sigma={self.beta_sigma}, eps={self.eps}"
