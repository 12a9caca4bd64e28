"""GradNorm: gradient normalization for adaptive loss balancing.

Chen, Badrinarayanan, Lee, Rabinovich. "GradNorm: Gradient Normalization for Adaptive Loss Balancing
in Deep Multitask Networks". ICML 2018, Algorithm 1.

Rule. Learnable weights ``w_i`` (1 at the start), the model trains on ``Σ_i w_i L_i``. At the last
shared layer ``W``:

    G_i = ‖∇_W w_i L_i‖ = w_i ‖∇_W L_i‖,   Ḡ = mean_i G_i,
    L̃_i = L_i / L_i(0),   r_i = L̃_i / mean_j L̃_j,
    L_grad = Σ_i | G_i − Ḡ r_i^α |          (targets Ḡ r_i^α held constant)

Each step the weights take one step of their own optimizer on ``∇_w L_grad`` and are renormalised so
that ``Σ_i w_i = m``; the model's parameters get ``∇ Σ_i w_i(t) L_i`` with the weights *before* that
update (Algorithm 1 computes both gradients, then updates both).

Choices the paper leaves open, and ours:

* ``∇_w L_grad`` in closed form: with ``w_i > 0``, ``∂G_i/∂w_i = ‖∇_W L_i‖``, so
  ``∂L_grad/∂w_i = sign(G_i − Ḡ r_i^α) ‖∇_W L_i‖`` — exact, and no ``create_graph`` is needed. The
  norms cost ``m`` backward passes *down to ``W`` only* (``autograd.grad(L_i, W, retain_graph=True)``
  on ``TaskStep.live_losses``); the trunk below ``W`` is not traversed.
* ``W``: the ``layer`` argument (a parameter, several, or a module: all its parameters). Without it,
  the last shared parameter with two or more dimensions (a weight matrix / kernel) in
  ``TaskStep.shared_params`` order, i.e. pass ``shared=`` to ``MultiTaskBackward``. When the engine
  computed the Gramian (``requires`` is ``"losses"`` but a monitor forced per-task gradients) and no
  live losses are given, the norms come from its diagonal: all shared parameters (as LibMTL does).
* The weights' optimizer lives inside the method: Adam (default; ``lr=0.025``) or plain SGD
  (``optimizer="sgd"``), its state in buffers. The paper gives no learning rate for the weights.
* ``α = 1.5`` (the paper's NYUv2 value; 0.12 for its toy). ``L_i(0)`` is task ``i``'s loss at the
  first step where it is present, or ``initial_losses`` when given; ``L_i(0) = 0`` gives ``L̃_i = 1``.
* Positivity: after the step every weight is clamped at ``min_weight`` (1e-4), then the present
  tasks' weights are rescaled to keep their sum (``m`` with every task present, the paper's
  ``Σ w = T``). Absent tasks' weights and optimizer moments do not move.
* The weights step once per call (per ``backward``, so per micro-batch under gradient
  accumulation).
* With one present task there is nothing to balance: weight unchanged (``L_grad = 0``).

Example (two tasks, equal gradient norms and losses: no change):
    >>> import torch
    >>> from gradsurgery.methods.base import TaskStep
    >>> W = torch.nn.Parameter(torch.eye(2))
    >>> x = torch.tensor([1.0, 1.0])
    >>> losses = torch.stack([(W @ x)[0], (W @ x)[1]])
    >>> gn = GradNorm(num_tasks=2, layer=W)
    >>> step = TaskStep(losses=losses.detach(), tasks=torch.arange(2), num_tasks=2, step=0,
    ...                 live_losses=losses)
    >>> gn(step).weights
    tensor([1., 1.])
    >>> gn.weights
    tensor([1., 1.])
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from gradsurgery.methods.base import LossWeighting, TaskStep
from gradsurgery.methods.masked_adam import masked_adam_step
from gradsurgery.methods.registry import register
from gradsurgery.methods.task_state import TaskStateMixin, per_task

__all__ = ["GradNorm", "gradnorm_weight_gradient", "last_shared_weight"]

OptimizerName = Literal["adam", "sgd"]


def gradnorm_weight_gradient(
    weights: Tensor, grad_norms: Tensor, loss_ratios: Tensor, alpha: float
) -> Tensor:
    """``∇_w L_grad`` for positive ``weights`` (targets held constant).

    Args:
        weights: ``(m,)`` current weights ``w_i > 0``.
        grad_norms: ``(m,)`` ``‖∇_W L_i‖`` (unweighted).
        loss_ratios: ``(m,)`` ``L̃_i = L_i / L_i(0)``.
        alpha: the asymmetry ``α``.
    """
    g = weights * grad_norms
    mean_ratio = loss_ratios.mean()
    r = torch.where(mean_ratio > 0, loss_ratios / mean_ratio.clamp_min(1e-30), 1.0)
    target = g.mean() * r.pow(alpha)
    return torch.sign(g - target) * grad_norms


def last_shared_weight(shared: Sequence[Tensor]) -> list[Tensor]:
    """The last parameter with ``dim ≥ 2`` (a weight matrix or kernel), else the last one."""
    if not shared:
        raise ValueError("no shared parameters to choose GradNorm's layer from")
    for p in reversed(shared):
        if p.dim() >= 2:
            return [p]
    return [shared[-1]]


@register(
    "gradnorm",
    paper="Chen et al., GradNorm: Gradient Normalization for Adaptive Loss Balancing, ICML 2018",
    rule="w ← step on Σ_i |w_i‖∇_W L_i‖ − Ḡ r_i^α|, renormalised to Σ w = m; model gets ∇ Σ w_i L_i",
)
class GradNorm(TaskStateMixin, LossWeighting):
    """GradNorm (see the module docstring).

    Args:
        num_tasks: the number of tasks (None: taken from the first step).
        alpha: the asymmetry ``α``.
        lr: learning rate of the weights' optimizer.
        optimizer: ``"adam"`` or ``"sgd"``.
        layer: the last shared layer ``W``: a parameter, an iterable of them or a module (not
            registered in the method: it stays the model's). None: chosen from the shared params.
        initial_losses: ``(num_tasks,)`` ``L_i(0)``; None: each task's first observed loss.
        min_weight: floor of every weight before renormalisation.
        betas, adam_eps: Adam hyperparameters.
    """

    #: the weights' own optimizer step depends on the gradient norms through Adam's ``eps`` (and
    #: plainly on them with ``optimizer="sgd"``)
    scale_degree = None

    _task_state_names = (
        "weights",
        "initial_losses",
        "has_initial",
        "exp_avg",
        "exp_avg_sq",
        "adam_steps",
    )

    def __init__(
        self,
        num_tasks: int | None = None,
        alpha: float = 1.5,
        lr: float = 0.025,
        optimizer: OptimizerName = "adam",
        layer: nn.Module | Tensor | Iterable[Tensor] | None = None,
        initial_losses: Tensor | Sequence[float] | None = None,
        min_weight: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        adam_eps: float = 1e-8,
    ) -> None:
        super().__init__()
        if optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if min_weight <= 0:
            raise ValueError(f"min_weight must be positive, got {min_weight}")
        self.alpha = float(alpha)
        self.lr = float(lr)
        self.optimizer = optimizer
        self.min_weight = float(min_weight)
        self.betas = (float(betas[0]), float(betas[1]))
        self.adam_eps = float(adam_eps)
        # a plain list: the layer stays the model's, out of this module's parameters and state
        self._layer: list[Tensor] | None = _as_param_list(layer) if layer is not None else None
        self._init_losses = (
            torch.as_tensor(initial_losses, dtype=torch.float32).detach().clone()
            if initial_losses is not None
            else None
        )
        if num_tasks is None and self._init_losses is not None:
            num_tasks = self._init_losses.shape[0]
        self._init_task_state(num_tasks)

    def _allocate(self, num_tasks: int, device: torch.device | None) -> None:
        self.weights = per_task(num_tasks, device, 1.0)
        self.initial_losses = per_task(num_tasks, device)
        self.has_initial = torch.zeros(num_tasks, dtype=torch.bool, device=device)
        if self._init_losses is not None:
            if self._init_losses.shape != (num_tasks,):
                raise ValueError(f"initial_losses must have shape ({num_tasks},)")
            self.initial_losses.copy_(self._init_losses)
            self.has_initial.fill_(True)
        self.exp_avg = per_task(num_tasks, device)
        self.exp_avg_sq = per_task(num_tasks, device)
        self.adam_steps = torch.zeros(num_tasks, dtype=torch.long, device=device)

    def layer_params(self, step: TaskStep) -> list[Tensor]:
        """The parameters ``W`` whose gradient norms GradNorm balances."""
        if self._layer is not None:
            return self._layer
        if step.shared_params is None:
            raise ValueError(
                "GradNorm needs the last shared layer: pass layer=... to GradNorm, or tell "
                "MultiTaskBackward which parameters are shared (shared=...)"
            )
        return last_shared_weight(step.shared_params)

    def grad_norms(self, step: TaskStep) -> Tensor:
        """``(m,)`` ``‖∇_W L_i‖`` of the present tasks (float32, on the losses' device)."""
        if step.live_losses is None:
            if step.gramian is not None:  # the engine's per-task gradients: all shared params
                return step.gramian.diagonal().clamp_min(0).sqrt().float()
            raise ValueError("GradNorm needs the live losses (or the Gramian) of the step")
        layer = self.layer_params(step)
        rows = []
        for k in range(step.m):
            grads = torch.autograd.grad(
                step.live_losses[k], layer, retain_graph=True, allow_unused=True
            )
            sq = [g.float().pow(2).sum() for g in grads if g is not None]
            rows.append(
                torch.stack(sq).sum() if sq else step.losses.new_zeros((), dtype=torch.float32)
            )
        return torch.stack(rows).to(step.losses.device).sqrt()

    def loss_weights(self, step: TaskStep) -> Tensor:
        """The current weights of the present tasks; updates them for the next step (see module)."""
        self._bind_to_step(step)
        assert self.weights is not None
        if self.weights.device != step.losses.device:
            self.to(step.losses.device)
        t = step.tasks
        w_now = self.weights[t].clone()
        if step.m >= 2:
            self._update(step, w_now)
        else:
            self._record_initial(step)
        return w_now.to(step.losses.dtype)

    def _record_initial(self, step: TaskStep) -> Tensor:
        """Set ``L_i(0)`` of tasks seen for the first time; returns ``L(0)`` of the present tasks."""
        assert self.initial_losses is not None and self.has_initial is not None
        t = step.tasks
        losses = step.losses.detach().float()
        first = ~self.has_initial[t]
        self.initial_losses[t] = torch.where(first, losses, self.initial_losses[t])
        self.has_initial[t] = True
        return self.initial_losses[t]

    @torch.no_grad()
    def _update(self, step: TaskStep, w_now: Tensor) -> None:
        assert self.weights is not None and self.exp_avg is not None
        assert self.exp_avg_sq is not None and self.adam_steps is not None
        l0 = self._record_initial(step)
        with torch.enable_grad():
            norms = self.grad_norms(step)
        losses = step.losses.detach().float()
        ratios = torch.where(l0 > 0, losses / l0.clamp_min(1e-30), 1.0)
        grad_m = gradnorm_weight_gradient(w_now, norms, ratios, self.alpha)
        t = step.tasks
        mask = torch.zeros_like(self.weights, dtype=torch.bool)
        mask[t] = True
        grad = torch.zeros_like(self.weights)
        grad[t] = grad_m
        if self.optimizer == "adam":
            masked_adam_step(
                self.weights,
                grad,
                mask,
                self.exp_avg,
                self.exp_avg_sq,
                self.adam_steps,
                lr=self.lr,
                betas=self.betas,
                eps=self.adam_eps,
            )
        else:
            self.weights.sub_(self.lr * grad)
            self.adam_steps.add_(mask.long())
        new = self.weights[t].clamp_min(self.min_weight)
        self.weights[t] = new * (w_now.sum() / new.sum())

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, lr={self.lr}, optimizer={self.optimizer!r}"


def _as_param_list(layer: nn.Module | Tensor | Iterable[Tensor]) -> list[Tensor]:
    params: list[Tensor]
    if isinstance(layer, nn.Module):
        params = [p for p in layer.parameters() if p.requires_grad]
    elif isinstance(layer, Tensor):
        params = [layer]
    else:
        params = list(layer)
    if not params or not all(isinstance(p, Tensor) for p in params):
        raise ValueError("layer must be a parameter, an iterable of parameters or a module")
    return params
