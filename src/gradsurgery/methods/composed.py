"""A loss weighting composed under a gradient method: ``"uw+pcgrad"``.

The PCGrad paper's best NYUv2 result is MTAN + PCGrad with uncertainty weighting: the losses are
first weighted by a loss-weighting method, then the weighted task gradients go through gradient
surgery. :class:`Composed` is that, for any loss weighting (``requires == "losses"``: ``uw``,
``dwa``, ``rlw``, ``famo``, ``imtl_l``, ``gradnorm``, ``sum``, ``mean``, ...) under any gradient
method (``requires`` ``"gramian"`` or ``"jacobian"``: ``pcgrad``, ``mgda``, ``cagrad``,
``imtl_g``, ``nash_mtl``, ``graddrop``, ...). By name, everywhere a method name is taken
(:func:`~gradsurgery.methods.registry.create_method`, ``MultiTaskBackward(model, "uw+pcgrad")``,
``compare --methods``, ``rl --method``, ``toy --methods``): ``"WEIGHTING+GRADIENT"``, the loss
weighting first, each part any spelling the registry accepts (``uncertainty+pc-grad`` is
``uw+pcgrad``).

Keyword arguments of a composed name (``create_method("uw+pcgrad", ...)``, ``--method-arg
uw+pcgrad.KEY=VALUE``): ``PART.KEY`` goes to that part only (``**{"pcgrad.seed": 1}``,
``--method-arg uw+pcgrad.uw.init=0.5``); a bare ``KEY`` goes to every part whose constructor takes
it (``seed=1`` seeds PCGrad in ``uw+pcgrad``, and both RLW and PCGrad in ``rlw+pcgrad``), and is a
``TypeError`` when neither does.

Refused, with a ``ValueError`` naming the reason (also by
:func:`~gradsurgery.methods.registry.resolve_method`, so a command line refuses before it runs):
two loss weightings, two gradient methods, the gradient method first, and a method that declares
:attr:`~gradsurgery.methods.base.Method.not_composable` (``cosreg``, which differentiates
through the live losses' gradients; ``imtl``, which weights the losses itself; a composition).

Example (two tasks, UW's weights at ``s = (0, log 2)`` are ``(1, ½)``):
    >>> import torch
    >>> from gradsurgery.methods import create_method
    >>> from gradsurgery.methods.base import TaskStep
    >>> method = create_method("uw+pcgrad", num_tasks=2)
    >>> with torch.no_grad():
    ...     _ = method.weighting.log_vars.copy_(torch.tensor([0.0, 0.6931471805599453]))
    >>> J = torch.tensor([[1.0, 0.0], [-2.0, 2.0]])    # the weighted rows: (1, 0) and (-1, 1)
    >>> step = TaskStep(losses=torch.tensor([1.0, 1.0]), tasks=torch.arange(2), num_tasks=2,
    ...                 step=0, gramian=J @ J.T)
    >>> agg = method(step)
    >>> agg.weights                    # PCGrad's weights on the weighted rows, times UW's weights
    tensor([2.0000, 0.7500])
    >>> agg.weights @ J                # PCGrad of (1, 0) and (-1, 1) (MultiTaskBackward's example)
    tensor([0.5000, 1.5000])
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from gradsurgery.jacobian import TaskJacobian
from gradsurgery.methods.base import Aggregation, Method, SingleTask, TaskStep

__all__ = ["Composed", "composition_problem"]


def composition_problem(weighting: type[Method], gradient: type[Method]) -> str | None:
    """Why ``weighting + gradient`` is not a composition (None: it is). Decided by the classes'
    ``requires`` and their declared :attr:`~gradsurgery.methods.base.Method.not_composable`."""
    w, g = _label(weighting), _label(gradient)
    for cls, label in ((weighting, w), (gradient, g)):
        if cls.not_composable is not None:
            return f"{label} cannot be composed: {cls.not_composable}"
    if weighting.requires != "losses" and gradient.requires == "losses":
        return (
            f"the loss weighting comes first: write {g}+{w} ({g} weights the losses, {w} "
            "combines the weighted gradients)"
        )
    if weighting.requires != "losses":
        return (
            f"{w}+{g} composes two gradient methods ({w} needs the {weighting.requires}, {g} the "
            f"{gradient.requires}); a composition is a loss weighting (requires 'losses') "
            "followed by one gradient method"
        )
    if gradient.requires == "losses":
        return (
            f"{w}+{g} composes two loss weightings; a composition is a loss weighting followed "
            "by a gradient method (requires 'gramian' or 'jacobian')"
        )
    return None


class Composed(Method):
    """A loss weighting ``weighting`` composed under a gradient method ``gradient``.

    Semantics, for one step with present tasks ``i = 1..m``, losses ``L_i``, shared-parameter
    task gradients ``g_i`` (the rows of ``J``) and Gramian ``G = J Jᵀ``:

    1. ``weighting`` is called on the step as it is (the unweighted losses, the unweighted
       Gramian ``G``; no live losses) and gives the loss weights ``w`` (``(m,)``) with its
       regularizer, exactly as it would alone; its state advances as it would alone.
    2. ``gradient`` is called on the *weighted* problem, ``D = diag(w)`` held constant: losses
       ``w_i L_i``, rows ``w_i g_i`` (``D J``, materialized only for ``requires == "jacobian"``),
       Gramian ``G' = D G D``. It returns weights ``v`` (the update ``vᵀ D J``) or an update
       ``u`` computed on ``D J``, and task-specific weights ``c``.
    3. The shared parameters get ``(v ⊙ w)ᵀ J`` (that is ``vᵀ D J``; reported as the step's
       weights) or ``u``; task ``i``'s specific parameters get ``c_i w_i ∇L_i``: the weighted
       own-task gradient (``w_i ∇L_i`` for the gradient methods whose ``c = 1``).
    4. The weighting's own parameters (uncertainty weighting's log-variances) get the gradient
       they get alone: of ``Σ_i w_i L_i`` with the losses held constant, plus the weighting's
       regularizer (UW's ``Σ s_i``): ``∂/∂s_i = 1 − e^{−s_i} L_i`` in UW's simple form. This is
       carried as the composition's regularizer, ``Σ_i (w_i − sg(w_i)) sg(L_i) + R_w + R_g``
       (``sg``: detached; the first term is 0 in value), which ``MultiTaskBackward``
       differentiates after the write-back, one small backward pass into the method's
       parameters as for a weighting alone; the gradient method's own regularizer ``R_g`` is
       kept.

    No backward pass beyond the gradient method's own per-task gradients; no host
    synchronisation beyond the two parts' (``host_syncs`` is their sum). With ``w = 1``
    (``sum``) the composition is the gradient method itself. A weighting that reads the
    gradients (``gradnorm``) sees the unweighted Gramian ``G``: its gradient norms are the
    diagonal's, over all shared parameters (as LibMTL computes them), not its ``layer``'s.

    ``parameters()`` are the weighting's (pass them to the optimizer: ``mtl.parameters()``);
    ``state_dict()`` holds both parts, under ``weighting.`` and ``gradient.``; ``bind`` and
    ``end_epoch`` reach both. The claims the conformance suite checks follow from the parts:
    permutation-equivariant when both are; the gradient method's scale degree when the
    weighting's weights do not depend on the gradients' scale (degree 1), else none; one task
    ``"exact"`` when both parts are exact, no claim (None) when either part makes none, else
    ``"positive"``.

    Args:
        weighting: a loss-weighting method (``requires == "losses"``).
        gradient: a gradient method (``requires`` ``"gramian"`` or ``"jacobian"``).
    """

    not_composable = "it is a composition already"

    def __init__(self, weighting: Method, gradient: Method) -> None:
        problem = composition_problem(type(weighting), type(gradient))
        if problem is not None:
            raise ValueError(problem)
        super().__init__()
        self.weighting = weighting
        self.gradient = gradient
        # per-instance values of what Method declares per class
        self.requires = gradient.requires  # type: ignore[misc]
        self.name = f"{weighting.name}+{gradient.name}" if weighting.name and gradient.name else ""  # type: ignore[misc]
        self.permutation_equivariant = (  # type: ignore[misc]
            weighting.permutation_equivariant and gradient.permutation_equivariant
        )
        self.scale_degree = gradient.scale_degree if weighting.scale_degree == 1 else None  # type: ignore[misc]
        parts = (weighting.single_task, gradient.single_task)
        single: SingleTask | None = "exact" if parts == ("exact", "exact") else "positive"
        self.single_task = None if None in parts else single  # type: ignore[misc]

    @property
    def host_syncs(self) -> int | None:
        a, b = self.weighting.host_syncs, self.gradient.host_syncs
        return None if a is None or b is None else a + b

    @property
    def needs_epoch_boundaries(self) -> bool:
        return self.weighting.needs_epoch_boundaries or self.gradient.needs_epoch_boundaries

    def end_epoch(self) -> None:
        self.weighting.end_epoch()
        self.gradient.end_epoch()

    def bind(self, num_tasks: int, device: torch.device | str | None = None) -> None:
        self.weighting.bind(num_tasks, device)
        self.gradient.bind(num_tasks, device)

    def forward(self, step: TaskStep) -> Aggregation:
        own = self.weighting(step)
        if own.weights is None:
            raise ValueError(f"{_label(type(self.weighting))} returned an update, not weights")
        live = own.weights
        w = live.detach().to(device=step.losses.device, dtype=step.losses.dtype)
        agg = self.gradient(self._weighted(step, w))
        weights = (
            agg.weights.detach() * w.to(agg.weights.dtype) if agg.weights is not None else None
        )
        regularizer = _sum_of(
            [
                ((live - live.detach()) * step.losses.detach().to(live.dtype)).sum()
                if live.requires_grad
                else None,
                own.regularizer,
                agg.regularizer,
            ]
        )
        return Aggregation(
            weights=weights,
            update=agg.update,
            task_specific_weights=agg.task_specific_weights.detach() * w,
            regularizer=regularizer,
        )

    @staticmethod
    def _weighted(step: TaskStep, w: Tensor) -> TaskStep:
        """The step of the weighted problem: losses ``w_i L_i``, ``G' = D G D``, rows ``D J``."""
        gramian = step.gramian
        if gramian is not None:
            d = w.to(device=gramian.device, dtype=gramian.dtype)
            gramian = gramian * d[:, None] * d[None, :]
        jacobian = step.jacobian
        if jacobian is not None:
            jacobian = TaskJacobian(
                [
                    b * w.to(device=b.device, dtype=b.dtype).view(-1, *([1] * (b.dim() - 1)))
                    for b in jacobian.blocks
                ]
            )
        return replace(step, losses=step.losses * w, gramian=gramian, jacobian=jacobian)

    def extra_repr(self) -> str:
        return f"name={self.name!r}"


def _sum_of(terms: list[Tensor | None]) -> Tensor | None:
    present = [t for t in terms if t is not None]
    if not present:
        return None
    total = present[0]
    for t in present[1:]:
        total = total + t.to(device=total.device, dtype=total.dtype)
    return total


def _label(cls: type[Any]) -> str:
    return cls.name or cls.__name__
