"""ConFIG: the conflict-free direction with equal cosine to every (weighted) task gradient.

Liu, Chu, Thuerey. "ConFIG: Towards Conflict-free Training of Physics Informed Neural Networks".
ICLR 2025 (arXiv:2408.11104). Checked against the authors' code (``tum-pbs/ConFIG``,
``conflictfree/grad_operator.py``: ``ConFIG_update``, ``length_model.py``: ``ProjectionLength``)
and torchjd's ``ConFIG`` (``torchjd/aggregation/_config.py``, which cites Equation 2 of the paper;
the test oracle).

Rule. With unit task gradients ``û_i = g_i / ‖g_i‖`` (rows of ``U``) and preferences ``p``
(default all 1),

    x = U⁺ p,      Δθ = (Σ_i g_iᵀ x̂) x̂,      x̂ = x / ‖x‖,

``U⁺`` the pseudo-inverse (the minimum-norm least-squares solution of ``U x = p``; the authors'
default ``use_least_square=True`` calls ``torch.linalg.lstsq``, torchjd ``pinv``). When the
gradients are linearly independent, ``û_iᵀ x = p_i``: the update's cosine with task ``i`` is
proportional to ``p_i``, so with positive ``p`` it conflicts with no task (``g_iᵀ Δθ > 0``). Its
length is the sum of the gradients' projections on it (``ProjectionLength``).

On the Gramian. ``U = D⁻¹ J`` with ``D = diag(‖g_i‖)``, so with the cosine matrix
``C = D⁻¹ K D⁻¹``, ``U⁺ p = Jᵀ v``, ``v = D⁻¹ C⁺ p``; then ``‖x‖² = vᵀ K v`` and
``Σ_i g_iᵀ x = 1ᵀ K v``, and the update is ``wᵀ J`` with

    w = v · (1ᵀ K v) / (vᵀ K v).

Choices, and ours:

* ``C⁺`` is ``torch.linalg.pinv(C, hermitian=True)`` (eigenvalues below ``m · eps · λ_max`` of
  ``C`` dropped). As eigenvalues of ``C`` are squared singular values of ``U``, this resolves
  ``U``'s singular values down to ``≈ sqrt(m · eps)`` of the largest, where ``pinv(U)`` resolves
  ``m · eps``: the two differ only for nearly dependent unit gradients (float64: a ratio below
  ``≈ 1e-7``).
* When the unit gradients are dependent (``m > d``, or a combination vanishing) ``U x = p`` may have
  no solution; ``x`` is then the least-squares one and the non-conflict guarantee is lost (as in the
  paper's method). A zero gradient counts as a zero row of ``U`` (``nan_to_num`` in the authors'
  code) and gets weight 0; with ``K = 0`` the update is 0, and so it is when ``p`` is orthogonal
  to the unit gradients' span (``‖C C⁺ p‖ ≤ sqrt(m · eps) ‖p‖``: ``x`` is 0 up to rounding).
* Two tasks: the authors' ``ConFIGOperator`` uses a closed form (``ConFIG_update_double``,
  ``allow_simplified_model=True``); like torchjd we use the general rule for every ``m``.
* Momentum (the authors' ``M-ConFIG``) is not included.
* ``pref_vector`` over all ``num_tasks`` tasks (absent tasks: the present entries, rescaled, see
  :func:`~gradsurgery.methods.upgrad.preference_vector`). Task-specific parameters get their own
  task's gradient (weight 1, as torchjd's ``mtl_backward``).
* Where it runs (``placement``): the eigendecomposition on the host in float64 by default (one
  synchronisation); ``"device"`` keeps it on the device (``eigh`` there may check its convergence
  on the host: ``host_syncs`` None).

Example (g1 = (1, 0), g2 = (−1, 1) conflict; U x = 1 gives x = (1, 1 + √2), equal cosines):
    >>> import torch
    >>> from gradsurgery.methods.base import TaskStep
    >>> J = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    >>> w = ConFIG()(TaskStep(torch.ones(2), torch.arange(2), 2, 0, gramian=J @ J.T)).weights
    >>> d = w @ J
    >>> bool((J @ d > 0).all()), torch.allclose((J @ d) / J.norm(dim=1), (J @ d)[0] / J[0].norm())
    (True, True)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from gradsurgery.methods.base import GramianWeighting, TaskStep
from gradsurgery.methods.host import HostSolver, Placement, check_placement, placed
from gradsurgery.methods.registry import register
from gradsurgery.methods.upgrad import as_pref_buffer, preference_vector

__all__ = ["ConFIG", "config_weights"]


def config_weights(gramian: Tensor, pref: Tensor) -> Tensor:
    """``(m,)`` weights of the ConFIG update ``wᵀJ`` from the Gramian and the preferences."""
    k = 0.5 * (gramian + gramian.T)
    norms = torch.diagonal(k).clamp_min(0).sqrt()
    nonzero = norms > 0
    inv = torch.where(nonzero, 1.0 / torch.where(nonzero, norms, 1.0), 0.0)
    cosines = inv.unsqueeze(1) * k * inv.unsqueeze(0)
    y = torch.linalg.pinv(cosines, hermitian=True) @ pref
    v = inv * y
    kv = k @ v
    squared = v @ kv
    # p orthogonal to the unit gradients' span (dependent gradients, e.g. m > d): x = U⁺p is 0 up
    # to rounding and has no direction; the update is 0 (as the authors' and torchjd's code give),
    # judged at the pseudo-inverse's own resolution (the projection C C⁺ p against ‖p‖).
    m = pref.shape[0]
    resolution = (m * torch.finfo(k.dtype).eps) ** 0.5
    ok = (squared > 0) & (torch.linalg.vector_norm(cosines @ y) > resolution * pref.norm())
    factor = torch.where(ok, kv.sum() / torch.where(ok, squared, 1.0), 0.0)
    weights: Tensor = v * factor
    return weights


@register(
    "config",
    paper="Liu, Chu, Thuerey, ConFIG: Towards Conflict-free Training of Physics Informed Neural "
    "Networks, ICLR 2025",
    rule="x = U⁺p (U: unit task gradients); Δθ = (Σ_i g_iᵀx̂) x̂: equal cosines, no conflict",
)
class ConFIG(HostSolver, GramianWeighting):
    """ConFIG on the Gramian. See the module docstring.

    Args:
        pref_vector: ``(num_tasks,)`` preferences ``p`` (None: all 1).
        placement: ``"auto"`` (host, float64), ``"host"`` or ``"device"``.
    """

    pref_vector: Tensor | None

    def __init__(
        self,
        pref_vector: Tensor | Sequence[float] | None = None,
        placement: Placement = "auto",
    ) -> None:
        super().__init__()
        self.placement = check_placement(placement)
        self.register_buffer("pref_vector", as_pref_buffer(pref_vector))

    def gramian_weights(self, gramian: Tensor, step: TaskStep) -> Tensor:
        p = preference_vector(self.pref_vector, step, gramian, default=1.0)
        return placed(self.placement, config_weights, gramian, p)

    def device_syncs(self) -> int | None:
        return None  # eigh may read its convergence flag on the host

    def extra_repr(self) -> str:
        return f"placement={self.placement!r}"
