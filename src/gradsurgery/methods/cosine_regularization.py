"""Cosine-similarity (orthogonal gradients) regularization.

Suteu, Guo. "Regularizing Deep Multi-Task Networks using Orthogonal Gradients". arXiv:1912.06844,
2019.

Rule. The model minimises the sum of the task losses plus a penalty on the cosine similarity of the
task gradients ``g_i = ∇_{θ_s} L_i`` of the shared parameters ``θ_s``:

    L_total = Σ_i L_i + λ Σ_{i<j} cos²(g_i, g_j),       cos(g_i, g_j) = g_i·g_j / (‖g_i‖‖g_j‖)

(pushing the task gradients towards orthogonality, so that the heads use different directions of the
shared trunk). The penalty is differentiated into the model: a double backward.

Cost. ``m`` backward passes with ``create_graph=True`` (one per task, down to the shared
parameters), then the combined backward of ``Σ L_i + penalty`` differentiates through them (a
double backward): roughly ``3m`` backward passes' work and the memory of ``m`` retained gradient
graphs. Use it on a small shared block (``params=``) when the trunk is large.

Choices the paper leaves open, and ours:

* ``power=2`` (default) penalises ``cos²`` (smooth at 0; public ports, e.g. a ``CosRegOptimizer``
  with penalty 10, use ``cos²``); ``power=1`` penalises ``|cos|``. We could not check the exact power
  against the paper's text; both are offered.
* ``reduction="sum"`` (default) sums over the pairs ``i < j``; ``"mean"`` averages over them (the
  port averages over ordered pairs ``i ≠ j``, which is the same number). ``λ`` = ``weight`` (1 by
  default; the port uses 10).
* ``θ_s``: the ``params`` argument, else ``TaskStep.shared_params`` (pass ``shared=`` to
  ``MultiTaskBackward``). The paper regularises the shared parameters' gradients.
* A zero gradient has cosine 0 with everything (no NaN, no penalty); with one present task there is
  no pair and no penalty (and no extra backward pass).
* The task weights are 1 (the sum of losses, as in the paper).

Example (g1 = (1, 0), g2 = (1, 1): cos² = 1/2):
    >>> import torch
    >>> from gradsurgery.methods.base import TaskStep
    >>> theta = torch.nn.Parameter(torch.zeros(2))
    >>> losses = torch.stack([theta @ torch.tensor([1.0, 0.0]), theta @ torch.tensor([1.0, 1.0])])
    >>> reg = CosineRegularization(params=[theta])
    >>> step = TaskStep(losses=losses.detach(), tasks=torch.arange(2), num_tasks=2, step=0,
    ...                 live_losses=losses)
    >>> reg(step).regularizer
    tensor(0.5000)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from gradsurgery.methods.base import Aggregation, LossWeighting, TaskStep
from gradsurgery.methods.registry import register

__all__ = ["CosineRegularization", "pairwise_cosine_penalty"]

Reduction = Literal["sum", "mean"]


def pairwise_cosine_penalty(
    gramian: Tensor, power: int = 2, reduction: Reduction = "sum"
) -> Tensor:
    """``Σ_{i<j} |cos_ij|^power`` (or its mean over pairs) from a Gramian; differentiable, NaN-free.

    A row with zero norm has cosine 0 with every other row.
    """
    m = gramian.shape[0]
    if m < 2:
        return gramian.sum() * 0
    diag = gramian.diagonal()
    prod = diag.unsqueeze(0) * diag.unsqueeze(1)
    ok = prod > 0
    denom = torch.where(ok, prod, torch.ones_like(prod)).sqrt()  # sqrt only of safe values
    cos = torch.where(ok, gramian / denom, torch.zeros_like(gramian))
    iu = torch.triu_indices(m, m, offset=1, device=gramian.device)
    pairs = cos[iu[0], iu[1]]
    terms = pairs.pow(2) if power == 2 else pairs.abs()
    return terms.sum() if reduction == "sum" else terms.mean()


@register(
    "cosreg",
    paper="Suteu & Guo, Regularizing Deep Multi-Task Networks using Orthogonal Gradients, 2019",
    rule="minimise Σ_i L_i + λ Σ_{i<j} cos²(∇_θs L_i, ∇_θs L_j) (double backward)",
)
class CosineRegularization(LossWeighting):
    """Sum of losses plus a penalty on the task gradients' cosines (see the module docstring).

    Args:
        weight: ``λ``.
        power: 2 for ``cos²``, 1 for ``|cos|``.
        reduction: ``"sum"`` over pairs ``i < j`` or their ``"mean"``.
        params: the shared parameters to regularise (a module or tensors; not registered in the
            method). None: ``TaskStep.shared_params``.
    """

    not_composable = (
        "it differentiates through the task gradients of the live losses (a double backward), "
        "which a gradient method's step does not keep"
    )

    def __init__(
        self,
        weight: float = 1.0,
        power: int = 2,
        reduction: Reduction = "sum",
        params: nn.Module | Iterable[Tensor] | None = None,
    ) -> None:
        super().__init__()
        if power not in (1, 2):
            raise ValueError(f"power must be 1 or 2, got {power}")
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        if weight < 0:
            raise ValueError(f"weight must be non-negative, got {weight}")
        self.weight = float(weight)
        self.power = power
        self.reduction: Reduction = reduction
        self._params: list[Tensor] | None = None
        if params is not None:
            items = params.parameters() if isinstance(params, nn.Module) else params
            self._params = [p for p in items if p.requires_grad]
            if not self._params:
                raise ValueError("params contains no trainable tensor")

    def loss_weights(self, step: TaskStep) -> Tensor:
        return torch.ones_like(step.losses)

    def regularized_params(self, step: TaskStep) -> Sequence[Tensor]:
        if self._params is not None:
            return self._params
        if step.shared_params is None:
            raise ValueError(
                "CosineRegularization needs the shared parameters: pass params=... or tell "
                "MultiTaskBackward which parameters are shared (shared=...)"
            )
        return step.shared_params

    def penalty(self, step: TaskStep) -> Tensor | None:
        """``λ ·`` the cosine penalty, with the graph for the double backward (None when m = 1)."""
        if step.m < 2 or self.weight == 0:
            return None
        if step.live_losses is None:
            raise ValueError(
                "CosineRegularization differentiates through the task gradients: it needs the "
                "live losses (the loss-weighting path of MultiTaskBackward, without a monitor)"
            )
        params = list(self.regularized_params(step))
        rows: list[list[Tensor | None]] = []
        for k in range(step.m):
            grads = torch.autograd.grad(
                step.live_losses[k], params, retain_graph=True, create_graph=True, allow_unused=True
            )
            rows.append(list(grads))
        gram = _gramian(rows, step.live_losses)
        return self.weight * pairwise_cosine_penalty(gram, self.power, self.reduction)

    def forward(self, step: TaskStep) -> Aggregation:
        w = self.loss_weights(step)
        return Aggregation(weights=w, task_specific_weights=w, regularizer=self.penalty(step))

    def extra_repr(self) -> str:
        return f"weight={self.weight}, power={self.power}, reduction={self.reduction!r}"


def _gramian(rows: list[list[Tensor | None]], like: Tensor) -> Tensor:
    """Differentiable ``K_ij = Σ_p <g_i[p], g_j[p]>``; missing (unused) blocks count as zero."""
    m = len(rows)
    dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
    gram = like.new_zeros((m, m), dtype=dtype)
    for p in range(len(rows[0])):
        grads = [row[p] for row in rows]
        present = next((g for g in grads if g is not None), None)
        if present is None:
            continue
        zero = torch.zeros(present.numel(), dtype=dtype, device=present.device)
        # an unused block is a zero row (no index tensor built from host data: no host sync)
        block = torch.stack([g.reshape(-1).to(dtype) if g is not None else zero for g in grads])
        gram = gram + block @ block.T
    return gram
