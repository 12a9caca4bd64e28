"""IMTL: impartial multi-task learning: gradient balance (IMTL-G), loss balance (IMTL-L), both.

Liu, Li, Kuang, Xue, Chen, Yang, Liao, Zhang. "Towards Impartial Multi-task Learning", ICLR 2021.

IMTL-G (gradient balance, shared parameters). Find weights ``α`` with ``Σ_i α_i = 1`` such that the
update ``g = Σ_i α_i g_i`` has equal projections onto every task's unit gradient
``u_i = g_i/‖g_i‖``: ``g·u_1 = g·u_i`` for all ``i``. The paper's closed form: with ``D`` the rows
``g_1 − g_i`` and ``U`` the rows ``u_1 − u_i`` (``i = 2..m``),

    (α_2, ..., α_m) = g_1 Uᵀ (D Uᵀ)⁻¹,       α_1 = 1 − Σ_{i≥2} α_i.

From the Gramian. Every entry is an inner product: ``g_1·(u_1 − u_j) = K_11/n_1 − K_1j/n_j`` and
``(g_1 − g_i)·(u_1 − u_j) = K_11/n_1 − K_1j/n_j − K_i1/n_1 + K_ij/n_j`` with ``n_i = sqrt(K_ii)``
(``formula="paper"``). Equivalently — and this is the default, ``formula="gramian"`` — the
conditions say ``K α = C n`` for a constant ``C``; with ``Σ α = 1``, ``α = K⁻¹ n / (1ᵀ K⁻¹ n)``.
Writing ``K = N C N`` with ``N = diag(n)`` and ``C`` the cosine matrix, ``K⁻¹ n = N⁻¹ C⁻¹ 1``,
which we compute with the pseudo-inverse of ``C`` (unit diagonal, so the solve does not care
how different the gradients' norms are). The two formulas agree whenever ``J`` has full row rank
(tested); torchjd's ``IMTLG`` computes ``K⁺ n`` normalised, the same in that case.

IMTL-L (loss balance). A learnable ``s_i`` per task; task ``i``'s loss is replaced by
``e^{s_i} L_i − s_i``. The model sees the loss weights ``e^{s_i}``; ``s`` is trained by the same
optimizer on the same objective, whose gradient ``e^{s_i} L_i − 1`` drives the scaled losses
towards 1. Here the weights are returned detached and the ``s``-objective is the
:attr:`~gradsurgery.methods.base.Aggregation.regularizer` ``Σ_i (e^{s_i} L_i − s_i)`` with the
losses held constant: the model gets ``e^{s_i} ∇L_i``, ``s`` gets ``e^{s_i} L_i − 1``.

IMTL (hybrid, the paper's Algorithm 1). IMTL-L's scaled losses for everything, and IMTL-G on the
shared parameters: the gradients of the scaled losses are ``e^{s_i} g_i`` (Gramian
``E K E``, ``E = diag(e^{s_i})``), IMTL-G gives ``α`` on them, so the weights on the raw rows of
``J`` are ``α_i e^{s_i}``; task-specific parameters get ``e^{s_i} ∇L_i``.

Choices the paper leaves open, and ours:

* Singular cases. ``formula="gramian"`` uses the pseudo-inverse of the cosine matrix;
  ``formula="paper"`` the pseudo-inverse of ``D Uᵀ``. They can differ when the gradients are
  linearly dependent (both still give equal projections): for two identical gradients
  ``"gramian"`` returns ``(½, ½)``, ``"paper"`` ``(1, 0)``.
* A zero gradient (squared norm below ``eps²`` times the largest) has no direction to balance:
  its weight is 0 and the other tasks are balanced among themselves (LibMTL's ``IMTL.py`` divides
  by zero; ``formula="paper"`` falls back to the Gramian formula in that step). All-zero
  gradients give zero weights.
* If ``1ᵀ K⁻¹ n < 0`` (possible for ``m ≥ 3`` strongly conflicting tasks) the equal projections
  are negative; we keep the paper's rule as it is (so does LibMTL's ``IMTL.py``). An exactly zero
  ``1ᵀK⁻¹n`` gives zero weights.
* The paper computes IMTL-G on the gradient with respect to the shared *representation*
  (``backward(losses, representation=z)``); with the plain ``backward`` the Gramian is that of the
  shared parameters.
* IMTL-L and IMTL have one learnable parameter, ``log_scales`` (``s``, initialised to 0), that
  the user must hand to an optimizer (``optimizer.add_param_group({"params":
  mtl.method.parameters()})``). Give ``num_tasks`` at construction (or let ``MultiTaskBackward``
  bind it) so that it exists before the optimizer is built; otherwise it is created at the
  first step, with a warning. Only the present tasks' ``s_i`` get a gradient in a step.
* Where it runs (``placement``, :mod:`gradsurgery.methods.host`): the pseudo-inverse is an
  eigendecomposition (or SVD), slow on an accelerator for a tiny matrix and checked on the host;
  by default (``"auto"``) it runs on the host in float64, one device-to-host copy of the
  Gramian and a non-blocking copy of the weights back; ``"device"`` keeps it on the device.
* Task-specific parameters: IMTL-G: weight 1 (each head trains on its own loss); IMTL-L / IMTL:
  ``e^{s_i}``.

Example (two tasks: g1 = (1, 0), g2 = (0, 2); the update (2/3)(1, 0) + (1/3)(0, 2) = (2/3, 2/3)
has projection 2/3 on both unit gradients):
    >>> import torch
    >>> from gradsurgery.methods.base import TaskStep
    >>> K = torch.tensor([[1.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    >>> step = TaskStep(torch.ones(2), torch.arange(2), 2, 0, gramian=K)
    >>> IMTLG()(step).weights
    tensor([0.6667, 0.3333], dtype=torch.float64)
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from torch import Tensor, nn

from gradsurgery.methods.base import Aggregation, GramianWeighting, LossWeighting, TaskStep
from gradsurgery.methods.host import HostSolver, Placement, check_placement, placed
from gradsurgery.methods.registry import register
from gradsurgery.methods.simplex import live_rows
from gradsurgery.methods.task_state import TaskStateMixin

__all__ = ["IMTL", "IMTLG", "IMTLL", "imtl_g_weights"]

Formula = Literal["gramian", "paper"]


def imtl_g_weights(gramian: Tensor, formula: Formula = "gramian") -> Tensor:
    """IMTL-G's ``(m,)`` weights (summing to 1) from the Gramian. See the module docstring."""
    if formula not in ("gramian", "paper"):
        raise ValueError(f"formula must be 'gramian' or 'paper', got {formula!r}")
    dtype = gramian.dtype
    finfo = torch.finfo(dtype)
    diag, live = live_rows(gramian)
    n = torch.where(live, diag, torch.ones_like(diag)).sqrt()
    inv_n = torch.where(live, 1 / n, torch.zeros_like(n))
    cos = gramian * inv_n[:, None] * inv_n[None, :]
    v = inv_n * (torch.linalg.pinv(cos, hermitian=True) @ live.to(dtype))
    if formula == "paper" and gramian.shape[0] > 1:
        # k_u[i, j] = g_i · u_j; rows g_1 − g_i and u_1 − u_j for i, j = 2..m.
        k_u = gramian * inv_n[None, :]
        g1_u = k_u[0, 0] - k_u[0, 1:]
        d_u = k_u[0, 0] - k_u[0, 1:][None, :] - k_u[1:, 0][:, None] + k_u[1:, 1:]
        alpha = g1_u @ torch.linalg.pinv(d_u)
        paper = torch.cat([(1 - alpha.sum()).reshape(1), alpha])
        # The closed form needs every u_i: with a zero gradient, use the Gramian formula.
        v = torch.where(live.all(), paper, v)
    total = v.sum()
    ok = total.abs() > finfo.tiny
    return torch.where(ok, v / torch.where(ok, total, torch.ones_like(total)), torch.zeros_like(v))


@register(
    "imtl_g",
    paper="Liu et al., Towards Impartial Multi-task Learning, ICLR 2021 (IMTL-G)",
    rule="α with Σα = 1 and equal projections of Σ_i α_i g_i on every u_i = g_i/‖g_i‖: α ∝ K⁻¹ ‖g‖",
)
class IMTLG(HostSolver, GramianWeighting):
    """IMTL-G: gradient balance on the shared parameters (closed form from the Gramian).

    Args:
        formula: ``"gramian"`` (default, ``α ∝ N⁻¹ C⁺ 1``) or ``"paper"`` (``g_1 Uᵀ (D Uᵀ)⁺``).
        placement: ``"auto"`` (host, float64), ``"host"`` or ``"device"``.
    """

    def __init__(self, formula: Formula = "gramian", placement: Placement = "auto") -> None:
        super().__init__()
        self.placement = check_placement(placement)
        if formula not in ("gramian", "paper"):
            raise ValueError(f"formula must be 'gramian' or 'paper', got {formula!r}")
        self.formula: Formula = formula

    def gramian_weights(self, gramian: Tensor, step: TaskStep) -> Tensor:
        return placed(self.placement, lambda k: imtl_g_weights(k, self.formula), gramian)

    def extra_repr(self) -> str:
        return f"formula={self.formula!r}"


class _LearnableScales(TaskStateMixin):
    """IMTL-L's learnable log-scales ``s``, one per task, created once ``num_tasks`` is known."""

    _task_state_names = ("log_scales",)
    log_scales: nn.Parameter | None
    init: float

    def _setup_scales(self, num_tasks: int | None, init: float) -> None:
        self.init = float(init)
        self.num_tasks = None
        self.register_parameter("log_scales", None)  # type: ignore[attr-defined]
        if num_tasks is not None:
            self.bind(num_tasks)

    def _allocate(self, num_tasks: int, device: torch.device | None) -> None:
        self.log_scales = nn.Parameter(torch.full((num_tasks,), self.init, device=device))

    def _bind_to_step(self, step: TaskStep) -> None:
        if self.num_tasks is None:
            warnings.warn(
                f"{type(self).__name__} created its loss scales at the first step: an optimizer "
                "built before now does not contain them. Pass num_tasks=... at construction.",
                stacklevel=5,
            )
        super()._bind_to_step(step)

    def _scales(self, step: TaskStep) -> tuple[Tensor, Tensor]:
        """``(s, e^s)`` of the present tasks, on the losses' device (``s`` keeps its graph)."""
        self._bind_to_step(step)
        assert self.log_scales is not None
        s = self.log_scales.index_select(0, step.tasks.to(self.log_scales.device))
        s = s.to(step.losses.device)
        return s, s.exp()

    @staticmethod
    def _regularizer(s: Tensor, scale: Tensor, losses: Tensor) -> Tensor:
        """``Σ_i (e^{s_i} L_i − s_i)`` with the losses held constant: trains ``s`` only."""
        return (scale * losses.detach().to(scale.dtype) - s).sum()


@register(
    "imtl_l",
    paper="Liu et al., Towards Impartial Multi-task Learning, ICLR 2021 (IMTL-L)",
    rule="loss e^{s_i} L_i − s_i with learnable s_i: weights e^{s_i}; s_i → −log L_i",
)
class IMTLL(_LearnableScales, LossWeighting):
    """IMTL-L: learnable loss scales ``log_scales``. Hand ``method.parameters()`` to the optimizer.

    Args:
        num_tasks: the total number of tasks (recommended: creates the parameter now).
        init: initial ``s_i`` (0: weights 1).
    """

    def __init__(self, num_tasks: int | None = None, init: float = 0.0) -> None:
        super().__init__()
        self._setup_scales(num_tasks, init)

    def loss_weights(self, step: TaskStep) -> Tensor:
        return self._scales(step)[1].detach().to(step.losses.dtype)

    def forward(self, step: TaskStep) -> Aggregation:
        s, scale = self._scales(step)
        w = scale.detach().to(step.losses.dtype)
        return Aggregation(
            weights=w, task_specific_weights=w, regularizer=self._regularizer(s, scale, step.losses)
        )

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}, init={self.init}"


@register(
    "imtl",
    paper="Liu et al., Towards Impartial Multi-task Learning, ICLR 2021 (IMTL, hybrid)",
    rule="IMTL-G on the gradients e^{s_i} g_i of IMTL-L's scaled losses: weights α_i e^{s_i}",
)
class IMTL(HostSolver, _LearnableScales, GramianWeighting):
    """IMTL (hybrid): IMTL-L's scaled losses, IMTL-G on the shared parameters.

    Hand ``method.parameters()`` to the optimizer.

    Args:
        num_tasks: the total number of tasks (recommended: creates the parameter now).
        init: initial ``s_i``.
        formula: IMTL-G's formula (``"gramian"`` or ``"paper"``).
        placement: ``"auto"`` (host, float64), ``"host"`` or ``"device"``.
    """

    not_composable = (
        "it weights the losses itself (IMTL-L's learnable scales); compose imtl_l with a gradient "
        "method instead (imtl_l+imtl_g)"
    )

    def __init__(
        self,
        num_tasks: int | None = None,
        init: float = 0.0,
        formula: Formula = "gramian",
        placement: Placement = "auto",
    ) -> None:
        super().__init__()
        self.placement = check_placement(placement)
        if formula not in ("gramian", "paper"):
            raise ValueError(f"formula must be 'gramian' or 'paper', got {formula!r}")
        self.formula: Formula = formula
        self._setup_scales(num_tasks, init)

    def _weights(self, gramian: Tensor, scale: Tensor) -> Tensor:
        scale = scale.detach().to(device=gramian.device, dtype=gramian.dtype)

        def weights(k: Tensor, e: Tensor) -> Tensor:
            return imtl_g_weights(k * e[:, None] * e[None, :], self.formula) * e

        return placed(self.placement, weights, gramian, scale)

    def gramian_weights(self, gramian: Tensor, step: TaskStep) -> Tensor:
        return self._weights(gramian, self._scales(step)[1])

    def forward(self, step: TaskStep) -> Aggregation:
        if step.gramian is None:
            raise ValueError("IMTL needs the Gramian of the task gradients")
        s, scale = self._scales(step)
        return Aggregation(
            weights=self._weights(step.gramian, scale),
            task_specific_weights=scale.detach().to(step.losses.dtype),
            regularizer=self._regularizer(s, scale, step.losses),
        )

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}, init={self.init}, formula={self.formula!r}"
