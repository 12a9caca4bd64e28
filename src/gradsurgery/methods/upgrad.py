"""UPGrad: project every task gradient onto the dual cone of all of them, then average.

Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", 2024 (arXiv:2406.16232), §4;
reference implementation: torchjd's ``UPGrad``.

Rule. With ``J`` the ``m × d`` matrix of task gradients, the dual cone of its rows is
``{x : J x ≥ 0}`` (vectors that conflict with no task). With ``π_J`` the Euclidean projection onto
it,

    Δθ = Σ_i p_i π_J(g_i),        p = (1/m, …, 1/m) by default.

By Proposition 1 of the paper, ``π_J(Jᵀu) = Jᵀv`` with ``v = argmin ½ vᵀKv s.t. v ≥ u`` and
``K = J Jᵀ``; so ``π_J(g_i)`` has weights ``v⁽ⁱ⁾`` solving that program with ``u = p_i e_i`` and the
update is ``wᵀJ`` with ``w = Σ_i v⁽ⁱ⁾``. The ``m`` programs are solved together
(:mod:`gradsurgery.methods.nonneg_qp`). Properties: ``K w ≥ 0`` (the update conflicts with no task,
up to the ``reg_eps`` ridge), and ``w = p`` whenever no two tasks conflict (every ``K_ij ≥ 0``), so
the update is then the plain (weighted) mean.

Choices the paper leaves open, and ours:

* Conditioning as torchjd: the Gramian is divided by its trace and ``reg_eps · I`` (default 1e-4, as
  torchjd) is added. torchjd treats a Gramian whose trace is below an *absolute* ``norm_eps = 1e-4``
  as zero (then ``w = p``: conflicts are no longer resolved once ``Σ_i ‖g_i‖² < 1e-4``, which
  happens late in training). We default to ``norm_eps = 0`` (only an all-zero Gramian counts as
  zero), so the result does not depend on the gradients' scale; pass ``norm_eps=1e-4`` to match
  torchjd there.
* ``pref_vector``: over all ``num_tasks`` tasks. When tasks are absent from a step the present
  tasks' entries are rescaled to the full vector's sum (the default is then ``1/m`` over the present
  tasks).
* Task-specific parameters get their own task's gradient with weight 1 (as torchjd's
  ``mtl_backward``).
* Where it runs (``placement``, :mod:`gradsurgery.methods.host`): the block principal pivoting solver runs a data-dependent number of rounds, each a batched
  Cholesky factorisation, and checks its convergence on the host. So by default
  (``"auto"``) it runs on the host in float64, one device-to-host copy of the Gramian (the step's
  one host synchronisation) and a non-blocking copy of the weights back; ``"device"`` keeps it
  on the device (no synchronisation, a few dozen launches and a synchronisation every 4 rounds).
* On a shared representation (``MultiTaskBackward.backward(losses, representation=z)``) the dual
  cone is that of the ``∂L_i/∂z``: the non-conflict guarantee then holds for ``z``, not the trunk.

Example (g1 = (1, 0), g2 = (-1, 1) conflict; π(g1) = g1 + g2/2, π(g2) = g2 + g1):
    >>> import torch
    >>> from gradsurgery.methods.base import TaskStep
    >>> K = torch.tensor([[1.0, -1.0], [-1.0, 2.0]], dtype=torch.float64)
    >>> step = TaskStep(torch.ones(2, dtype=torch.float64), torch.arange(2), 2, 0, gramian=K)
    >>> UPGrad(reg_eps=0.0)(step).weights   # (1/2)(g1 + g2/2) + (1/2)(g2 + g1)
    tensor([1.0000, 0.7500], dtype=torch.float64)
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

import torch
from torch import Tensor

from gradsurgery.methods.base import GramianWeighting, TaskStep
from gradsurgery.methods.host import HostSolver, Placement, check_placement, placed
from gradsurgery.methods.nonneg_qp import dual_cone_weights
from gradsurgery.methods.registry import register

__all__ = ["DualConeWeighting", "UPGrad", "preference_vector"]


def preference_vector(
    pref: Tensor | None, step: TaskStep, like: Tensor, default: float | None = None
) -> Tensor:
    """The present tasks' preference weights, in ``like``'s dtype and device.

    Args:
        pref: ``(num_tasks,)`` preferences over all tasks, or None for the default.
        step: the step (its ``tasks`` select the present entries).
        like: a tensor whose dtype and device the result takes.
        default: the constant default weight (None: ``1/m`` over the present tasks).
    """
    m = step.m
    if pref is None:
        value = 1.0 / m if default is None else default
        return torch.full((m,), value, dtype=like.dtype, device=like.device)
    if pref.shape != (step.num_tasks,):
        raise ValueError(
            f"pref_vector has shape {tuple(pref.shape)}, expected ({step.num_tasks},) "
            "(one entry per task, present or not)"
        )
    full = pref.to(dtype=like.dtype, device=like.device)
    sel = full.index_select(0, step.tasks.to(like.device))
    if m == step.num_tasks:
        return sel
    total = sel.sum()
    nonzero = total != 0
    return sel * torch.where(nonzero, full.sum() / torch.where(nonzero, total, 1.0), 1.0)


def as_pref_buffer(pref: Tensor | Sequence[float] | None) -> Tensor | None:
    """Validate a user's preference vector (1-D, finite) and return it as a float tensor."""
    if pref is None:
        return None
    t = torch.as_tensor(pref, dtype=torch.get_default_dtype()).detach().clone()
    if t.dim() != 1 or t.numel() == 0:
        raise ValueError(f"pref_vector must be a non-empty vector, got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError("pref_vector must be finite")
    return t


class DualConeWeighting(HostSolver, GramianWeighting):
    """Shared settings of the dual-cone projections (UPGrad, DualProj) on the Gramian.

    Args:
        pref_vector: ``(num_tasks,)`` preference weights ``p`` (None: ``1/m``).
        norm_eps: a Gramian with trace ``≤ norm_eps`` is treated as zero (torchjd: 1e-4).
        reg_eps: ridge added to the trace-normalized Gramian (torchjd: 1e-4).
        max_iter: cap on the QP solver's pivoting rounds (None: ``4m + 20``).
        placement: ``"auto"`` (host, float64), ``"host"`` or ``"device"`` (see UPGrad's
            module docstring).
    """

    pref_vector: Tensor | None

    def __init__(
        self,
        pref_vector: Tensor | Sequence[float] | None = None,
        norm_eps: float = 0.0,
        reg_eps: float = 1e-4,
        max_iter: int | None = None,
        placement: Placement = "auto",
    ) -> None:
        super().__init__()
        self.placement = check_placement(placement)
        if norm_eps < 0 or reg_eps < 0:
            raise ValueError(f"norm_eps and reg_eps must be ≥ 0, got {norm_eps}, {reg_eps}")
        self.register_buffer("pref_vector", as_pref_buffer(pref_vector))
        self.norm_eps = float(norm_eps)
        self.reg_eps = float(reg_eps)
        self.max_iter = max_iter

    def gramian_weights(self, gramian: Tensor, step: TaskStep) -> Tensor:
        p = preference_vector(self.pref_vector, step, gramian)
        return placed(self.placement, self._weights, gramian, p)

    @abstractmethod
    def _weights(self, gramian: Tensor, p: Tensor) -> Tensor:
        """The weights from the Gramian and the present tasks' preferences ``p``."""

    def device_syncs(self) -> int | None:
        return None  # the pivoting reads its convergence test on the host every few rounds


@register(
    "upgrad",
    paper="Quinton & Rey, Jacobian Descent for Multi-Objective Optimization, 2024",
    rule="project each g_i onto the dual cone {x: Jx ≥ 0} of all task gradients; Δθ = Σ p_i π(g_i)",
)
class UPGrad(DualConeWeighting):
    """UPGrad on the Gramian. See the module docstring for the rule and the choices.

    Args:
        pref_vector: ``(num_tasks,)`` weights ``p`` of the projected gradients (None: ``1/m``).
        norm_eps: a Gramian with trace ``≤ norm_eps`` is treated as zero (torchjd: 1e-4).
        reg_eps: ridge added to the trace-normalized Gramian (torchjd: 1e-4).
        max_iter: cap on the QP solver's pivoting rounds (None: ``4m + 20``).
    """

    def _weights(self, gramian: Tensor, p: Tensor) -> Tensor:
        v = dual_cone_weights(
            gramian,
            torch.diag(p),
            norm_eps=self.norm_eps,
            reg_eps=self.reg_eps,
            max_iter=self.max_iter,
        )
        return v.sum(dim=0)

    def extra_repr(self) -> str:
        return f"norm_eps={self.norm_eps}, reg_eps={self.reg_eps}"
