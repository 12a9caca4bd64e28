"""MGDA: the multiple-gradient descent algorithm as a minimum-norm problem on the Gramian.

Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018 (building on
Désidéri's MGDA, 2012).

Rule. With the task gradients ``g_1..g_m`` of the shared parameters and normalisers ``s_i > 0``,

    w = argmin_{w ∈ Δ} ‖Σ_i w_i g_i / s_i‖²,       Δθ = Σ_i w_i g_i / s_i,

``Δ`` the probability simplex. ``d = Σ_i w_i g_i/s_i`` is the minimum-norm point of the convex hull
of the normalised gradients: either ``d = 0`` (a Pareto-stationary point) or ``d · g_i/s_i ≥ ‖d‖²
> 0`` for every task, so ``−d`` decreases every loss to first order. Everything is computed from
the Gramian: the normalised Gramian is ``K_ij / (s_i s_j)`` and the weights on the raw gradients
are ``w_i / s_i``.

MGDA-UB (the paper's upper-bound variant, §3.3) is this same method fed the Gramian of the
gradients with respect to the shared *representation* ``z`` instead of the shared parameters:
``MultiTaskBackward(model, "mgda").backward(losses, representation=z)`` (one trunk pass; the
result is labelled ``approximate=True``). (The IMTL paper computes IMTL-G that way too.)

Choices the paper leaves open, and ours:

* Solver. ``solver="exact"`` (default): an interior-point QP solver plus an exact polish on the
  support (:func:`gradsurgery.methods.simplex.simplex_qp`), machine precision in a fixed number
  of iterations, no host synchronisation. ``solver="frank_wolfe"``: the paper's Algorithm 2 —
  start at ``w = 1/m``, move towards the vertex ``argmin_r (K w)_r`` with the analytic two-point
  line search of Algorithm 1 — up to ``max_iter`` iterations (250, as the authors' code), stopping
  early when ``w`` moved by less than ``tol`` (ℓ1) over 10 iterations (one host synchronisation
  per 10 iterations; ``tol=0``: none). The authors' solvers (``multi_task/min_norm_solvers.py``,
  checked: projected gradient in ``find_min_norm_element``, which the training script uses,
  Frank–Wolfe in ``find_min_norm_element_FW``) start from the best pair of tasks instead of ``1/m``, returns 0.999/0.001 instead of 1/0 at the ends of a segment, and
  never increments its iteration counter (it stops only on its tolerance); all converge to the
  same minimiser.
* Normalisation (the authors' code, "optional and not included in the paper"):
  ``normalization="none"`` (``s_i = 1``, the paper), ``"l2"`` (``s_i = ‖g_i‖``), ``"loss"``
  (``s_i = L_i``), ``"loss+"`` (``s_i = L_i ‖g_i‖``, the authors' sample config). ``"loss"`` and
  ``"loss+"`` assume positive losses. A normaliser that is not positive (a zero gradient under
  ``"l2"``, a zero or negative loss) is replaced by 1 for that task instead of dividing by it.
* Which gradients the weights multiply: ``apply_to="normalized"`` (default; LibMTL): the update is
  the min-norm point ``Σ w_i g_i/s_i`` itself. ``apply_to="raw"``: ``Σ w_i g_i`` — the authors'
  training script solves on the normalised gradients but then scales the *raw* losses by ``w``.
  With ``normalization="none"`` both are the same.
* Scale. The weights lie on the simplex (they sum to 1, before division by ``s_i``): the update is
  the min-norm vector itself, as in the paper, i.e. of the scale of a *mean* of the gradients.
  (Nash-MTL's port of MGDA multiplies the weights by ``m``; use a larger learning rate for that.)
* Task-specific parameters: ``task_specific="ones"`` (default; the paper's Algorithm 2 updates
  each task's own parameters with its own gradient) or ``"weights"`` (the authors' script, where
  the heads also see the scaled losses, i.e. the shared weights ``w_i``, or ``w_i/s_i``).
* Where it runs (``placement``, :mod:`gradsurgery.methods.host`): the exact solver is 15 interior-point iterations of about 30 tiny ops each (a Cholesky
  factorisation and triangular solves among them): hundreds of kernel launches on an accelerator. So by default
  (``"auto"``) it runs on the host in float64, one device-to-host copy of the Gramian (the step's
  one host synchronisation) and a non-blocking copy of the weights back; ``"device"`` keeps it
  on the device (no synchronisation, hundreds of launches).
* A zero gradient puts ``0`` in the convex hull, so MGDA's update is then zero (the definition;
  with ``normalization="l2"`` the zero gradient keeps ``s_i = 1`` and the same holds).
  Identical gradients get equal weights (the solver converges to the centre of the optimal face).

Example (two tasks by hand: g1 = (1, 0), g2 = (−1, 1); the closest point to 0 of the segment
between them is (0.2, 0.4) = 0.6 g1 + 0.4 g2):
    >>> import torch
    >>> from gradsurgery.methods.base import TaskStep
    >>> K = torch.tensor([[1.0, -1.0], [-1.0, 2.0]], dtype=torch.float64)
    >>> step = TaskStep(torch.ones(2), torch.arange(2), 2, 0, gramian=K)
    >>> MGDA()(step).weights
    tensor([0.6000, 0.4000], dtype=torch.float64)
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from gradsurgery.methods.base import Aggregation, GramianWeighting, TaskStep
from gradsurgery.methods.host import HostSolver, Placement, check_placement, placed
from gradsurgery.methods.registry import register
from gradsurgery.methods.simplex import MinNormSolver, min_norm_weights

__all__ = ["MGDA", "gradient_normalizers"]

Normalization = Literal["none", "l2", "loss", "loss+"]
ApplyTo = Literal["normalized", "raw"]
TaskSpecific = Literal["ones", "weights"]


def gradient_normalizers(gramian: Tensor, losses: Tensor, normalization: Normalization) -> Tensor:
    """The ``(m,)`` normalisers ``s_i`` of the authors' code, from the Gramian and the losses.

    Entries that are not positive (or not finite) are replaced by 1.
    """
    if normalization == "none":
        return torch.ones_like(gramian.diagonal())
    norms = gramian.diagonal().clamp_min(0).sqrt()
    losses = losses.to(device=gramian.device, dtype=gramian.dtype)
    if normalization == "l2":
        s = norms
    elif normalization == "loss":
        s = losses
    elif normalization == "loss+":
        s = losses * norms
    else:
        raise ValueError(
            f"normalization must be 'none', 'l2', 'loss' or 'loss+', got {normalization!r}"
        )
    ok = torch.isfinite(s) & (s > torch.finfo(s.dtype).tiny)
    return torch.where(ok, s, torch.ones_like(s))


@register(
    "mgda",
    paper="Sener & Koltun, Multi-Task Learning as Multi-Objective Optimization, NeurIPS 2018",
    rule="w = argmin_{w∈Δ} ‖Σ_i w_i g_i/s_i‖² (min-norm point of the hull); Δθ = Σ_i w_i g_i/s_i",
)
class MGDA(HostSolver, GramianWeighting):
    """MGDA (and MGDA-UB with ``representation=``). See the module docstring for the rule.

    Args:
        solver: ``"exact"`` (interior point + polish) or ``"frank_wolfe"`` (the paper's Alg. 2).
        normalization: ``"none"``, ``"l2"``, ``"loss"`` or ``"loss+"`` (the authors' code).
        apply_to: ``"normalized"`` (update = the min-norm point) or ``"raw"`` (weights on raw
            gradients, as the authors' training script).
        task_specific: ``"ones"`` (the paper) or ``"weights"`` (the authors' script).
        max_iter, tol: Frank–Wolfe iteration limit and early-stopping tolerance.
        iters: interior-point iterations of the exact solver.
        placement: ``"auto"`` (host, float64), ``"host"`` or ``"device"`` (see above).
    """

    def __init__(
        self,
        solver: MinNormSolver = "exact",
        normalization: Normalization = "none",
        apply_to: ApplyTo = "normalized",
        task_specific: TaskSpecific = "ones",
        max_iter: int = 250,
        tol: float = 1e-5,
        iters: int = 15,
        placement: Placement = "auto",
    ) -> None:
        super().__init__()
        self.placement = check_placement(placement)
        if solver not in ("exact", "frank_wolfe"):
            raise ValueError(f"solver must be 'exact' or 'frank_wolfe', got {solver!r}")
        if normalization not in ("none", "l2", "loss", "loss+"):
            raise ValueError(
                f"normalization must be 'none', 'l2', 'loss' or 'loss+', got {normalization!r}"
            )
        if apply_to not in ("normalized", "raw"):
            raise ValueError(f"apply_to must be 'normalized' or 'raw', got {apply_to!r}")
        if task_specific not in ("ones", "weights"):
            raise ValueError(f"task_specific must be 'ones' or 'weights', got {task_specific!r}")
        self.solver: MinNormSolver = solver
        self.normalization: Normalization = normalization
        self.apply_to: ApplyTo = apply_to
        self.task_specific: TaskSpecific = task_specific
        self.max_iter = max_iter
        self.tol = tol
        self.iters = iters

    def gramian_weights(self, gramian: Tensor, step: TaskStep) -> Tensor:
        return placed(self.placement, self._weights, gramian, step.losses)

    def _weights(self, gramian: Tensor, losses: Tensor) -> Tensor:
        s = gradient_normalizers(gramian, losses, self.normalization)
        normalized = gramian / (s[:, None] * s[None, :])
        w = min_norm_weights(
            normalized, self.solver, iters=self.iters, max_iter=self.max_iter, tol=self.tol
        )
        return w / s if self.apply_to == "normalized" else w

    def forward(self, step: TaskStep) -> Aggregation:
        if step.gramian is None:
            raise ValueError("MGDA needs the Gramian of the task gradients")
        w = self.gramian_weights(step.gramian, step)
        specific = w.to(step.losses.dtype) if self.task_specific == "weights" else None
        return Aggregation(
            weights=w,
            task_specific_weights=specific
            if specific is not None
            else torch.ones_like(step.losses),
        )

    def device_syncs(self) -> int | None:
        return None if self.solver == "frank_wolfe" else 0  # Frank–Wolfe's early stop is a read

    def extra_repr(self) -> str:
        return (
            f"solver={self.solver!r}, normalization={self.normalization!r}, "
            f"apply_to={self.apply_to!r}, task_specific={self.task_specific!r}"
        )
