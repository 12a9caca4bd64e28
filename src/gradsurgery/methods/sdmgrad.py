"""SDMGrad: stochastic direction-oriented multi-objective gradient, single-sample form on the Gramian.

Xiao, Ban, Ji, "Direction-oriented Multi-objective Learning: Simple and Provable Stochastic
Algorithms", NeurIPS 2023. Checked against LibMTL's ``LibMTL/weighting/SDMGrad.py`` (which says it
is modified from the official code, ``OptMN-Lab/sdmgrad``) and the ``sdmgrad`` function of the
official repository's toy experiment (``experiments/toy/toy.py``); the official NYUv2/Cityscapes
and Meta-World code (``methods/weight_methods.py``, ``mtrl_files/sdmgrad.py``) was not checked.

Rule (LibMTL's). With three independent samples of the task gradients ``G_ζ, G_ξ₁, G_ξ₂``
(``m × d``), the preference direction the average gradient ``g₀ = (1/m) Σ_i g_i`` and the
regularisation ``λ ≥ 0``, the weights ``w ∈ Δ`` (kept from step to step, ``w = 1/m`` at first) take
``niter`` projected heavy-ball steps on

    ½ wᵀ Ǩ w + λ wᵀ Ǩ 1/m,    Ǩ = G_ξ₁ G_ξ₂ᵀ / s²,   s = mean_i √(Ǩ_ii)  (clamped at 0),

i.e. ``w ← Π_Δ(w − η b)``, ``b ← μ b + (Ǩ w + λ Ǩ 1/m)`` (``torch.optim.SGD`` with ``lr = η``,
``momentum = μ``, created afresh each step, so ``b`` starts at 0 every step), and the update is

    Δθ = (G_ζᵀ w + λ g₀) / (1 + λ).

That is the direction-oriented MGDA of the paper: ``w`` minimises ``½‖Gw + λ g₀‖²`` over the simplex
(the constant ``½λ²‖g₀‖²`` dropped), and the update leans towards ``g₀`` by ``λ``.

Adaptation (not in the paper): our engine computes one set of task gradients per step, so all
three samples are that one: ``G_ζ = G_ξ₁ = G_ξ₂ = J``, ``Ǩ = K/s²`` with ``K`` the Gramian, and the
update is ``wᵀJ`` with weights ``(w + λ/m)/(1 + λ)``. The paper's unbiased estimate of the ``w``
gradient needs the two independent ``ξ`` samples; with one the estimate is biased (as in MGDA). In
LibMTL the heads accumulate the three samples' gradients (three backward passes, not averaged);
here each head gets its own gradient once (weight 1).

Choices the paper leaves open, and ours:

* ``λ = 0.3``, ``niter = 20``, ``η = 5``, ``μ = 0.5``: LibMTL's defaults (``SDMGrad_lamda``,
  ``SDMGrad_niter``, and the fixed SGD settings in its code). The official toy uses ``η = 10`` on
  the un-halved objective ``‖Gw + λ g₀‖²`` (``η = 20`` in our scale) and ``s`` with ``+ 1e-4`` under
  the square root; the paper's per-experiment values were not checked here. At ``η = 5`` the inner
  loop is not a contraction for typical Gramians (heavy ball is stable for ``η L < 2(1 + μ)``,
  ``L`` the largest eigenvalue of ``Ǩ`` on the simplex's directions, often ≈ 1–2 after the
  normalisation): ``w`` bounces between faces of ``Δ``, and we observed a ``1e-8`` change of ``Ǩ``
  (LibMTL's epsilon) grow to O(1) changes of ``w`` within four steps of 20 iterations. We keep
  LibMTL's value for faithfulness; ``lr ≲ 1`` makes ``w`` converge to the minimiser.
* The normalisation: LibMTL divides by ``s² + 1e-8``; we divide by ``s²`` where it is positive (a
  zero Gramian gives ``Ǩ = 0``), so that the weights are scale-free and the update is exactly
  linear in the gradients (``scale_degree = 1``); the two agree unless ``‖g_i‖ ≲ 1e-3``.
* Tasks absent from a step: their ``w`` is left as it is; the present tasks' ``w`` is renormalised
  onto their simplex, updated, and written back scaled to its previous total (as in
  :mod:`gradsurgery.methods.modo`).
* Where it runs (``placement``, :mod:`gradsurgery.methods.host`): ``niter`` iterations of a few tiny
  ops each are ``O(niter)`` kernel launches on an accelerator, so by default they run on the host
  in float64 (one synchronisation: the Gramian's and ``w``'s copy); ``"device"``: on the device,
  no synchronisation. ``w`` is kept in float64 and is the method's state (``state_dict``).

Example (orthogonal gradients of equal norm: w stays uniform, the update is g₀):
    >>> import torch
    >>> from gradsurgery.methods.base import TaskStep
    >>> K = torch.eye(2, dtype=torch.float64)
    >>> SDMGrad()(TaskStep(torch.ones(2), torch.arange(2), 2, 0, gramian=K)).weights
    tensor([0.5000, 0.5000], dtype=torch.float64)
"""

from __future__ import annotations

import torch
from torch import Tensor

from gradsurgery.methods.base import GramianWeighting, TaskStep
from gradsurgery.methods.host import HostSolver, Placement, check_placement, placed
from gradsurgery.methods.modo import restrict_simplex
from gradsurgery.methods.registry import register
from gradsurgery.methods.simplex import project_simplex
from gradsurgery.methods.task_state import TaskStateMixin, per_task

__all__ = ["SDMGrad", "sdmgrad_weights"]


def sdmgrad_weights(
    gramian: Tensor,
    w: Tensor,
    lamda: float = 0.3,
    niter: int = 20,
    lr: float = 5.0,
    momentum: float = 0.5,
) -> tuple[Tensor, Tensor]:
    """SDMGrad's inner loop from ``w`` (on the simplex): ``(weights of J, the new w)``."""
    m = gramian.shape[0]
    k = 0.5 * (gramian + gramian.T)
    s2 = k.diagonal().clamp_min(0).sqrt().mean().square()
    safe = torch.where(s2 > 0, s2, torch.ones_like(s2))
    kn = torch.where(s2 > 0, k / safe, torch.zeros_like(k))
    kg = kn.mean(dim=1)
    w = w.to(k.dtype)
    buf = torch.zeros_like(w)
    for _ in range(niter):
        buf = momentum * buf + (kn @ w + lamda * kg)
        w = project_simplex(w - lr * buf)
    return (w + lamda / m) / (1 + lamda), w


@register(
    "sdmgrad",
    paper="Xiao, Ban, Ji, Direction-oriented Multi-objective Learning: Simple and Provable "
    "Stochastic Algorithms (SDMGrad), NeurIPS 2023",
    rule="w ← niter projected heavy-ball steps on ½‖Gw + λg₀‖² over Δ (K/s²); "
    "Δθ = (Gᵀw + λg₀)/(1+λ); one sample per step here",
)
class SDMGrad(TaskStateMixin, HostSolver, GramianWeighting):
    """SDMGrad with one gradient sample per step (see the module docstring).

    Args:
        lamda: ``λ ≥ 0``, the pull towards the average gradient (LibMTL: 0.3).
        niter: the projected steps on ``w`` per training step (LibMTL: 20).
        lr, momentum: ``η`` and ``μ`` of those steps (LibMTL: 5 and 0.5).
        num_tasks: the number of tasks (None: taken from the first step).
        placement: ``"auto"`` (host, float64), ``"host"`` or ``"device"``.
    """

    _task_state_names = ("w",)

    def __init__(
        self,
        lamda: float = 0.3,
        niter: int = 20,
        lr: float = 5.0,
        momentum: float = 0.5,
        num_tasks: int | None = None,
        placement: Placement = "auto",
    ) -> None:
        super().__init__()
        if lamda < 0:
            raise ValueError(f"lamda must be non-negative, got {lamda}")
        if niter < 1:
            raise ValueError(f"niter must be at least 1, got {niter}")
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.lamda = float(lamda)
        self.niter = int(niter)
        self.lr = float(lr)
        self.momentum = float(momentum)
        self.placement = check_placement(placement)
        self._init_task_state(num_tasks)

    def _allocate(self, num_tasks: int, device: torch.device | None) -> None:
        self.w = per_task(num_tasks, device, 1.0 / num_tasks, dtype=torch.float64)

    @torch.no_grad()
    def gramian_weights(self, gramian: Tensor, step: TaskStep) -> Tensor:
        self._bind_to_step(step)
        assert self.w is not None
        if self.w.device != gramian.device:
            self.to(gramian.device)
        w, mass = restrict_simplex(self.w, step.tasks)
        weights, new_w = placed(self.placement, self._solve, gramian, w)
        self.w[step.tasks] = new_w.to(torch.float64) * mass
        return weights.to(gramian.dtype)

    def _solve(self, gramian: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
        return sdmgrad_weights(gramian, w, self.lamda, self.niter, self.lr, self.momentum)

    def extra_repr(self) -> str:
        return f"lamda={self.lamda}, niter={self.niter}, placement={self.placement!r}"
