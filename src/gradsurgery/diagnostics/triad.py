"""The "tragic triad" of Yu et al., *Gradient Surgery for Multi-Task Learning* (NeurIPS 2020).

PCGrad's analysis (§2.2, §2.4) names three conditions under which multi-task optimization goes
wrong: task gradients that *conflict*, that differ a lot in *magnitude*, and a loss with high
*curvature* along the update. Everything pairwise here is a function of the ``m × m`` Gramian
``K = J Jᵀ`` (``K_ij = g_i · g_j``) alone, so it is cheap enough to leave on during training:

* cosine similarity (Definition 1): ``cos φ_ij = K_ij / √(K_ii K_jj)``; ``g_i`` and ``g_j`` conflict
  when ``cos φ_ij < 0``;
* gradient magnitude similarity (Definition 2):
  ``Φ_ij = 2 ‖g_i‖ ‖g_j‖ / (‖g_i‖² + ‖g_j‖²)``, in ``[0, 1]``, 1 for equal norms;
* curvature bounding measure (Definition 5):
  ``ξ_ij = (1 − cos² φ_ij) ‖g_i − g_j‖² / ‖g_i + g_j‖²``, with
  ``‖g_i ± g_j‖² = K_ii + K_jj ± 2 K_ij``.

Theorem 2 says a PCGrad step lowers the loss at least as much as a plain gradient step when (a)
``cos φ_12 ≤ −Φ(g_1, g_2)``, (b) the curvature along the update is large enough, ``ℓ ≥ ξ L`` with
``ℓ ≤ L`` (so ``ξ(g_1, g_2) ≤ 1``), and (c) the step size is large enough. Figure 4 reports how
often (a) and ``ξ ≤ 1`` hold; :func:`triad_stats` counts both over all pairs of tasks.

The third element, curvature, is measured along the actual update as in §5.3,
``H = 2 [L(θ_{t+1}) − L(θ_t) − ∇L(θ_t)ᵀ (θ_{t+1} − θ_t)]`` (:func:`multitask_curvature`,
:class:`CurvatureProbe`): for a quadratic loss ``½ θᵀ A θ`` this is exactly ``Δθᵀ A Δθ``.

Degenerate cases (documented on each function): a task gradient of zero norm has cosine 0 with every
gradient (itself included), Φ is 0 between a zero and a nonzero gradient and 1 between two zero
gradients, and ξ is 0 when numerator and denominator are both 0 and ``inf`` when only the
denominator is. Pairs involving a zero gradient never count as satisfying Theorem 2's conditions.

Example:
    >>> import torch
    >>> from gradsurgery.diagnostics import triad_stats
    >>> g = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
    >>> stats = triad_stats(g @ g.T)
    >>> round(stats.cosine[0, 1].item(), 4), round(stats.curvature_bounding[0, 1].item(), 4)
    (-0.7071, 2.5)
    >>> stats.scalars()["fraction_conflicting"]
    1.0
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

__all__ = [
    "CurvatureProbe",
    "TriadStats",
    "cosine_matrix",
    "curvature_bounding_measure",
    "magnitude_similarity",
    "multitask_curvature",
    "triad_stats",
]


def _check_gramian(gramian: Tensor) -> Tensor:
    if gramian.dim() != 2 or gramian.shape[0] != gramian.shape[1]:
        raise ValueError(f"expected a square (m, m) Gramian, got shape {tuple(gramian.shape)}")
    if not gramian.is_floating_point():
        gramian = gramian.to(torch.get_default_dtype())
    return gramian.detach()


def _sq_norms(gramian: Tensor) -> Tensor:
    """``‖g_i‖²``: the Gramian's diagonal, clamped at 0 against rounding."""
    return gramian.diagonal().clamp(min=0)


def cosine_matrix(gramian: Tensor) -> Tensor:
    """Pairwise cosine similarities ``cos φ_ij = K_ij / (‖g_i‖ ‖g_j‖)`` (Definition 1).

    Args:
        gramian: ``(m, m)`` Gramian ``K_ij = g_i · g_j``.

    Returns:
        ``(m, m)`` tensor in the Gramian's dtype, clamped to ``[-1, 1]`` against rounding. The
        diagonal is exactly 1 for nonzero gradients.

    Degenerate case: the cosine is undefined when ``g_i`` or ``g_j`` is zero; it is set to 0 there
    (a zero gradient neither conflicts with nor agrees with anything), including ``cos φ_ii = 0``
    for a zero ``g_i``.
    """
    gramian = _check_gramian(gramian)
    norms = _sq_norms(gramian).sqrt()
    nonzero = norms > 0
    safe = torch.where(nonzero, norms, torch.ones_like(norms))
    # Divide by each norm in turn rather than by their product, which can under- or overflow.
    cos = gramian / safe[:, None] / safe[None, :]
    # The two divisions round differently for (i, j) and (j, i): average to make cos symmetric.
    cos = ((cos + cos.T) / 2).clamp(-1.0, 1.0)
    cos = torch.where(nonzero[:, None] & nonzero[None, :], cos, torch.zeros_like(cos))
    cos.diagonal().copy_(nonzero.to(cos.dtype))
    return cos


def magnitude_similarity(gramian: Tensor) -> Tensor:
    """Gradient magnitude similarity ``Φ_ij = 2 ‖g_i‖ ‖g_j‖ / (‖g_i‖² + ‖g_j‖²)`` (Definition 2).

    Computed as ``2r / (1 + r²)`` with ``r = min(‖g_i‖, ‖g_j‖) / max(‖g_i‖, ‖g_j‖)``, which is the
    same number without squaring the norms (no overflow) and exactly invariant to a common scale.

    Returns:
        ``(m, m)`` tensor in ``[0, 1]``, 1 on the diagonal.

    Degenerate cases: ``Φ = 0`` when exactly one of the two gradients is zero (the formula's limit),
    and ``Φ = 1`` when both are zero (equal magnitudes; the formula reads 0/0).
    """
    gramian = _check_gramian(gramian)
    norms = _sq_norms(gramian).sqrt()
    lo = torch.minimum(norms[:, None], norms[None, :])
    hi = torch.maximum(norms[:, None], norms[None, :])
    positive = hi > 0
    r = lo / torch.where(positive, hi, torch.ones_like(hi))
    phi = 2 * r / (1 + r * r)
    return torch.where(positive, phi, torch.ones_like(phi))


def _curvature_bounding(gramian: Tensor, cos: Tensor) -> Tensor:
    sq = _sq_norms(gramian)
    s = sq[:, None] + sq[None, :]
    diff_sq = (s - 2 * gramian).clamp(min=0)  # ‖g_i − g_j‖²
    sum_sq = (s + 2 * gramian).clamp(min=0)  # ‖g_i + g_j‖²
    num = (1 - cos * cos) * diff_sq
    positive = sum_sq > 0
    xi = num / torch.where(positive, sum_sq, torch.ones_like(sum_sq))
    undefined = torch.where(num > 0, torch.full_like(num, float("inf")), torch.zeros_like(num))
    return torch.where(positive, xi, undefined)


def curvature_bounding_measure(gramian: Tensor) -> Tensor:
    """Curvature bounding measure ``ξ_ij = (1 − cos² φ_ij) ‖g_i − g_j‖² / ‖g_i + g_j‖²`` (Def. 5).

    Uses ``‖g_i ± g_j‖² = K_ii + K_jj ± 2 K_ij`` (clamped at 0 against rounding) and
    :func:`cosine_matrix` for ``cos φ_ij``.

    Returns:
        ``(m, m)`` nonnegative tensor; 0 on the diagonal.

    Degenerate cases: when ``‖g_i + g_j‖² = 0`` (``g_j = −g_i``, or both zero) the ratio is 0 if
    the numerator is also 0 (exactly opposite gradients have ``cos² φ = 1``) and ``inf`` if the
    numerator is positive (possible only through rounding). With a zero gradient ``g_j = 0 ≠ g_i``
    the cosine convention ``cos = 0`` gives ``ξ_ij = 1``.
    """
    gramian = _check_gramian(gramian)
    return _curvature_bounding(gramian, cosine_matrix(gramian))


@dataclass(frozen=True)
class TriadStats:
    """Tragic-triad statistics of one step, all computed from the Gramian (:func:`triad_stats`).

    Matrices are ``(m, m)`` and scalar summaries 0-dim tensors, all in the Gramian's dtype and on
    its device, so that computing them never waits for the device; :meth:`scalars` moves the
    summaries to the host in one transfer. Summaries are over the ``m (m − 1) / 2`` unordered
    pairs ``i < j``.

    Attributes:
        grad_norms: ``(m,)`` norms ``‖g_i‖``.
        cosine: :func:`cosine_matrix`.
        magnitude_similarity: :func:`magnitude_similarity`.
        curvature_bounding: :func:`curvature_bounding_measure`.
        num_tasks: ``m``.
        num_pairs: ``m (m − 1) / 2``.
        fraction_conflicting: pairs with ``cos φ_ij < 0``.
        fraction_condition_a: pairs meeting Theorem 2 (a), ``cos φ_ij ≤ −Φ_ij``.
        fraction_xi_le_one: pairs with ``ξ_ij ≤ 1``, the implication of Theorem 2 (b).
        fraction_both: pairs meeting both of the last two.
        mean_cosine: mean of ``cos φ_ij`` over pairs.
        min_cosine: min of ``cos φ_ij`` over pairs.

    With fewer than two tasks there are no pairs: the fractions are 0 and ``mean_cosine`` and
    ``min_cosine`` are NaN. Pairs in which either gradient is zero count with cosine 0 in the mean
    and min, are never conflicting, and never count towards the Theorem 2 fractions.
    """

    grad_norms: Tensor
    cosine: Tensor
    magnitude_similarity: Tensor
    curvature_bounding: Tensor
    num_tasks: int
    num_pairs: int
    fraction_conflicting: Tensor
    fraction_condition_a: Tensor
    fraction_xi_le_one: Tensor
    fraction_both: Tensor
    mean_cosine: Tensor
    min_cosine: Tensor

    #: Names of the 0-dim summary fields, in the order :meth:`scalar_tensor` stacks them.
    SCALAR_FIELDS: ClassVar[tuple[str, ...]] = (
        "fraction_conflicting",
        "fraction_condition_a",
        "fraction_xi_le_one",
        "fraction_both",
        "mean_cosine",
        "min_cosine",
    )

    def scalar_tensor(self) -> Tensor:
        """The summaries of :attr:`SCALAR_FIELDS` stacked into a ``(6,)`` tensor (no host sync)."""
        return torch.stack([getattr(self, name) for name in self.SCALAR_FIELDS])

    def scalars(self) -> dict[str, float]:
        """The summaries as Python floats (one device-to-host transfer)."""
        return dict(zip(self.SCALAR_FIELDS, self.scalar_tensor().tolist(), strict=True))


def triad_stats(gramian: Tensor) -> TriadStats:
    """Cosine, magnitude similarity, curvature bounding measure and their pair summaries.

    Args:
        gramian: ``(m, m)`` Gramian ``K = J Jᵀ`` of the task gradients (e.g.
            :meth:`gradsurgery.jacobian.TaskJacobian.gramian`). Integer Gramians are cast to the
            default float dtype; everything else is computed in the Gramian's dtype.

    Returns:
        A :class:`TriadStats`. Nothing here synchronizes with the device.
    """
    gramian = _check_gramian(gramian)
    m = gramian.shape[0]
    dtype, device = gramian.dtype, gramian.device
    norms = _sq_norms(gramian).sqrt()
    cos = cosine_matrix(gramian)
    phi = magnitude_similarity(gramian)
    xi = _curvature_bounding(gramian, cos)

    i, j = torch.triu_indices(m, m, offset=1, device=device)
    num_pairs = i.numel()
    if num_pairs == 0:
        zero = torch.zeros((), dtype=dtype, device=device)
        nan = torch.full((), float("nan"), dtype=dtype, device=device)
        fc = fa = fx = fb = zero
        mean_cos = min_cos = nan
    else:
        pair_cos, pair_phi, pair_xi = cos[i, j], phi[i, j], xi[i, j]
        nonzero = norms > 0
        valid = nonzero[i] & nonzero[j]
        cond_a = valid & (pair_cos <= -pair_phi)
        cond_b = valid & (pair_xi <= 1)
        fc = (pair_cos < 0).to(dtype).mean()
        fa = cond_a.to(dtype).mean()
        fx = cond_b.to(dtype).mean()
        fb = (cond_a & cond_b).to(dtype).mean()
        mean_cos = pair_cos.mean()
        min_cos = pair_cos.min()
    return TriadStats(
        grad_norms=norms,
        cosine=cos,
        magnitude_similarity=phi,
        curvature_bounding=xi,
        num_tasks=m,
        num_pairs=num_pairs,
        fraction_conflicting=fc,
        fraction_condition_a=fa,
        fraction_xi_le_one=fx,
        fraction_both=fb,
        mean_cosine=mean_cos,
        min_cosine=min_cos,
    )


def multitask_curvature(
    loss_before: float | Tensor,
    loss_after: float | Tensor,
    grad_before_dot_delta: float | Tensor,
) -> float | Tensor:
    """Multi-task curvature along an update (§5.3):
    ``H(L; θ_t, θ_{t+1}) = 2 [L(θ_{t+1}) − L(θ_t) − ∇L(θ_t)ᵀ (θ_{t+1} − θ_t)]``.

    By Taylor's theorem ``H = Δθᵀ ∇²L(θ̃) Δθ`` for some ``θ̃`` on the segment; for a quadratic loss
    it is ``Δθᵀ A Δθ`` exactly. Floats give a float, tensors a tensor.

    Args:
        loss_before: ``L(θ_t)``.
        loss_after: ``L(θ_{t+1})``, on the same batch.
        grad_before_dot_delta: ``∇L(θ_t)ᵀ (θ_{t+1} − θ_t)``.
    """
    return 2 * ((loss_after - loss_before) - grad_before_dot_delta)


def _accumulation_dtype(device: torch.device) -> torch.dtype:
    # The curvature is a small difference of large terms: accumulate in float64 where supported.
    return torch.float32 if device.type == "mps" else torch.float64


class CurvatureProbe:
    """Measures :func:`multitask_curvature` around one optimizer step.

    Usage, with ``L = Σ_i L_i`` the *unitary* (summed) loss as in the paper::

        probe = CurvatureProbe()
        ...  # compute the per-task losses and gradients
        probe.before_step(params, total_loss, unitary_grads)  # ∇(Σ_i L_i), one tensor per param
        optimizer.step()  # any update: PCGrad, plain SGD, ...
        with torch.no_grad():
            total_after = ...  # Σ_i L_i at θ_{t+1}, on the same batch
        h = probe.after_step(total_after)

    ``grads`` is explicit because after gradient surgery ``p.grad`` holds the *modified* update,
    not ``∇L``; pass ``[p.grad for p in params]`` only when ``p.grad`` is the plain gradient of the
    summed loss. Entries may be ``None`` for parameters with no gradient (they count as zero).

    Memory: one copy of the gradients, nothing else. Instead of snapshotting ``θ_t``, the probe
    stores the scalar ``∇L(θ_t)ᵀ θ_t`` and uses
    ``∇L(θ_t)ᵀ (θ_{t+1} − θ_t) = ∇L(θ_t)ᵀ θ_{t+1} − ∇L(θ_t)ᵀ θ_t``; inner products are taken per
    parameter and accumulated in float64 (float32 on MPS). The estimate is a difference of losses,
    so its precision is bounded by that of the loss values: evaluate them in float64 when the step
    is small.
    """

    def __init__(self) -> None:
        self._params: list[Tensor] = []
        self._grads: list[Tensor] = []
        self._dot_before: Tensor | None = None
        self._loss_before: Tensor | None = None

    @property
    def armed(self) -> bool:
        """True between :meth:`before_step` and :meth:`after_step`."""
        return self._dot_before is not None

    def _dot(
        self, params: Sequence[Tensor], grads: Sequence[Tensor], device: torch.device
    ) -> Tensor:
        dtype = _accumulation_dtype(device)
        total = torch.zeros((), dtype=dtype, device=device)
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                d = torch.dot(g.reshape(-1).to(dtype), p.detach().reshape(-1).to(g.device, dtype))
                total = total + d.to(device)
        return total

    def _device(self, loss: float | Tensor) -> torch.device:
        if self._params:
            return self._grads[0].device
        return loss.device if isinstance(loss, Tensor) else torch.device("cpu")

    def _loss(self, loss: float | Tensor, device: torch.device) -> Tensor:
        dtype = _accumulation_dtype(device)
        if isinstance(loss, Tensor):
            if loss.numel() != 1:
                raise ValueError(f"expected a scalar loss, got shape {tuple(loss.shape)}")
            return loss.detach().reshape(()).to(device, dtype)
        return torch.tensor(float(loss), dtype=dtype, device=device)

    def before_step(
        self,
        params: Iterable[Tensor],
        loss: float | Tensor,
        grads: Sequence[Tensor | None],
    ) -> None:
        """Record ``L(θ_t)`` and ``∇L(θ_t)`` (copied) before the parameters are updated.

        Args:
            params: the parameters the step will update (in the same order as ``grads``).
            loss: ``L(θ_t)``, the summed loss, as a float or a scalar tensor.
            grads: ``∇L(θ_t)`` with respect to each parameter, or ``None`` for no gradient.
        """
        params = list(params)
        grads = list(grads)
        if len(params) != len(grads):
            raise ValueError(f"got {len(params)} parameters but {len(grads)} gradients")
        kept_p: list[Tensor] = []
        kept_g: list[Tensor] = []
        for p, g in zip(params, grads, strict=True):
            if g is None:
                continue
            if g.shape != p.shape:
                raise ValueError(
                    f"gradient of shape {tuple(g.shape)} for a parameter of shape {tuple(p.shape)}"
                )
            kept_p.append(p)
            kept_g.append(g.detach().clone())
        self._params, self._grads = kept_p, kept_g
        device = self._device(loss)
        self._dot_before = self._dot(kept_p, kept_g, device)
        self._loss_before = self._loss(loss, device)

    def after_step(self, loss_after: float | Tensor) -> float:
        """``H`` from ``L(θ_{t+1})`` and the parameters' current values; releases the snapshot.

        Synchronizes with the device once (to return a float).
        """
        if self._dot_before is None or self._loss_before is None:
            raise RuntimeError("CurvatureProbe.after_step called without a matching before_step")
        device = self._dot_before.device
        grad_dot_delta = self._dot(self._params, self._grads, device) - self._dot_before
        h = multitask_curvature(self._loss_before, self._loss(loss_after, device), grad_dot_delta)
        self._params, self._grads = [], []
        self._dot_before = self._loss_before = None
        return float(h)
