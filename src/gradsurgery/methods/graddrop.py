"""GradDrop: gradient sign dropout, keep one sign per coordinate with probability set by purity.

Chen, Ngiam, Huang, Luong, Kretzschmar, Chai, Anguelov. "Just Pick a Sign: Optimizing Deep Multitask
Models with Gradient Sign Dropout". NeurIPS 2020, Algorithm 1, Eq. 1. Official code: lingvo
(``lingvo/core/graddrop.py``, checked); ports by Kurin et al. (2022; not checked here), LibMTL
and torchjd (compared in the tests).

Rule. With task gradients ``g_1..g_m`` (entry-wise), the positive sign purity of each coordinate is

    P = ½ (1 + Σ_i g_i / Σ_i |g_i|)        (P = ½ where every g_i is 0),

one ``U ~ Uniform(0, 1)`` is drawn per coordinate, and task ``i`` keeps its entry where it has the
chosen sign: ``M_i = [P > U]·[g_i > 0] + [P < U]·[g_i < 0]``. The update is
``Δ = Σ_i (ℓ_i + (1 − ℓ_i) M_i) ⊙ g_i`` with leak ``ℓ_i`` (0 by default: pure GradDrop). Where all
tasks agree in sign, ``P ∈ {0, 1}`` and nothing is dropped; with ``m = 1`` GradDrop is the identity.

Where it acts. The paper inserts GradDrop as a layer at a shared activation ``A`` (the
representation the task heads read); ``g_i = ∂L_i/∂A``. With
``MultiTaskBackward.backward(losses, representation=z)`` this method receives exactly those
gradients (one block of ``z``'s shape, batch first) and its output is pushed back through the trunk:
the paper's placement. There, as §3.2 of the paper and lingvo:

* the purity uses ``sgn(A) ⊙ ∂L_i/∂A`` (the sign the gradient of the layer *below* gets); this needs
  the activation's values, read from ``step.representation`` when the engine provides it, and
  skipped otherwise (``sign_correction=False`` turns it off);
* it is summed over the batch dimension before computing ``P`` and drawing ``U`` (one draw per
  feature, shared by all samples; ``marginalize_batch=False`` draws per entry).

Without ``representation=`` it acts entry-wise on the shared *parameters'* gradients (Kurin et
al.'s ``use_params_grads`` variant, torchjd's ``GradDrop``), where neither of the two applies. It
needs the per-task gradients themselves (a :class:`~gradsurgery.methods.base.JacobianAggregator`)
and works block by block (``O(m · d)`` time, one ``m × block`` temporary, never the whole
``m × d`` matrix).

Choices the paper leaves open, and ours:

* Keep function ``f`` (paper: any monotone ``f`` applied to ``P``; lingvo's options): ``"linear"``
  ``P = ½ + k·S/(2A)`` (``k = keep_scale = 1``: the paper's Eq. 1) or ``"sigmoid"``
  ``P = sigmoid(2k·S/A)``, with ``S = Σ_i g_i``, ``A = Σ_i |g_i|``. We divide exactly (``P = ½``
  where ``A = 0``) instead of lingvo's ``+1e-7`` in the denominator, which biases ``P`` towards ½
  for small gradients.
* ``U`` is drawn in ``(0, 1)`` (zero excluded) so that unanimous coordinates are never dropped.
  Entries with ``g_i = 0`` get ``M_i = 0`` (as the paper and torchjd; they contribute nothing).
* ``keep_norm=True`` rescales the update to the norm of the plain sum ``‖Σ_i g_i‖`` (lingvo's
  ``keep_gradnorm_constant``, on by default there, and Kurin et al.'s port; lingvo multiplies by the
  *inverse* ratio, which we take to be a bug). Off by default, as Algorithm 1.
* ``leak``: a scalar or one value per task (over all ``num_tasks``; lingvo sets 1 for a task whose
  gradient must pass unchanged). Task-specific parameters get their own task's gradient (weight 1).
* Randomness from the method's own generators, one per device so that ``U`` is drawn where the
  gradients are (:class:`~gradsurgery.methods.generators.DeviceGenerators`), saved in ``state_dict``.

Example (coordinate 1 is unanimous; coordinate 2 has P = ½(1 + (1-3)/(1+3)) = ¼):
    >>> import torch
    >>> g = torch.tensor([[2.0, 1.0], [1.0, -3.0]])
    >>> graddrop_block(g, uniform=torch.tensor([0.9, 0.5]), leak=torch.zeros(2))  # U > P: keep < 0
    tensor([ 3., -3.])
    >>> graddrop_block(g, uniform=torch.tensor([0.9, 0.1]), leak=torch.zeros(2))  # U < P: keep > 0
    tensor([3., 1.])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from gradsurgery.jacobian import TaskJacobian, gramian_dtype
from gradsurgery.methods.base import JacobianAggregator, TaskStep
from gradsurgery.methods.generators import DeviceGenerators
from gradsurgery.methods.registry import register

__all__ = ["GradDrop", "graddrop_block", "sign_purity"]

KeepFunction = Literal["linear", "sigmoid"]


def sign_purity(
    signal: Tensor, keep_function: KeepFunction = "linear", keep_scale: float = 1.0
) -> Tensor:
    """``f(P)`` of every coordinate of the ``(m, ...)`` signal (computed in at least float32)."""
    s = signal.to(gramian_dtype(signal.dtype))
    return _purity(s.sum(dim=0), s.abs().sum(dim=0), keep_function, keep_scale)


def _purity(
    total: Tensor, absolute: Tensor, keep_function: KeepFunction, keep_scale: float
) -> Tensor:
    """``f(P)`` from ``S = Σ_i g_i`` and ``A = Σ_i |g_i|`` (``P = ½`` where ``A = 0``)."""
    nonzero = absolute > 0
    ratio = torch.where(nonzero, total / torch.where(nonzero, absolute, 1.0), 0.0)
    if keep_function == "linear":
        return 0.5 + 0.5 * keep_scale * ratio
    return torch.sigmoid(2.0 * keep_scale * ratio)


def graddrop_block(
    block: Tensor,
    uniform: Tensor,
    leak: Tensor | None = None,
    *,
    sign: Tensor | None = None,
    marginalize_batch: bool = False,
    keep_function: KeepFunction = "linear",
    keep_scale: float = 1.0,
) -> Tensor:
    """GradDrop on one block of per-task gradients.

    Args:
        block: ``(m, *shape)`` per-task gradients.
        uniform: the draws ``U``, shaped as ``P`` (``shape``, or ``(1, *shape[1:])`` when
            ``marginalize_batch``).
        leak: ``(m,)`` leak ratios (None: no leak).
        sign: ``shape``-shaped activation signs multiplying the gradients in the purity (or None).
        marginalize_batch: sum the signal over dimension 0 of ``shape`` (the batch) first.
        keep_function, keep_scale: the keep function ``f`` (see the module docstring).

    Returns:
        ``shape``-shaped ``Σ_i (ℓ_i + (1 − ℓ_i) M_i) ⊙ g_i``, in ``block``'s dtype.
    """
    if sign is None and not marginalize_batch:
        return _graddrop_on_own_signs(block, uniform, leak, keep_function, keep_scale)
    signal = block if sign is None else block * sign
    if marginalize_batch and block.dim() >= 2:
        signal = signal.sum(dim=1, keepdim=True)
    purity = sign_purity(signal, keep_function, keep_scale)
    keep_positive = purity > uniform.to(purity.dtype)
    mask = torch.where(keep_positive, signal > 0, signal < 0)
    if leak is None:
        return torch.where(mask, block, 0).sum(dim=0)
    shape = (-1,) + (1,) * (block.dim() - 1)
    coeff = torch.where(mask, 1.0, leak.to(block.dtype).reshape(shape)).to(block.dtype)
    return (block * coeff).sum(dim=0)


def _graddrop_on_own_signs(
    block: Tensor,
    uniform: Tensor,
    leak: Tensor | None,
    keep_function: KeepFunction,
    keep_scale: float,
) -> Tensor:
    """The common case, where the mask is decided by the gradients' own signs: then
    ``Σ_i M_i ⊙ g_i`` is ``Σ_i g_i⁺`` where the positive sign is kept and ``Σ_i g_i⁻`` elsewhere,
    while ``S = Σ g⁺ + Σ g⁻`` and ``A = Σ g⁺ − Σ g⁻``: two reductions over the tasks and one
    ``m × block`` temporary instead of masks."""
    acc = gramian_dtype(block.dtype)
    positive = block.clamp_min(0)
    total = block.sum(dim=0, dtype=acc)
    if leak is None:
        kept_pos = positive.sum(dim=0, dtype=acc)
        kept_neg = total - kept_pos
        leaked = None
    else:
        keep = (1 - leak).to(block.dtype)
        kept_pos = torch.tensordot(keep, positive, dims=1).to(acc)
        kept_neg = torch.tensordot(keep, block, dims=1).to(acc) - kept_pos
        leaked = torch.tensordot(leak.to(block.dtype), block, dims=1).to(acc)
    absolute = (
        2 * positive.sum(dim=0, dtype=acc) - total if leak is not None else kept_pos - kept_neg
    )
    purity = _purity(total, absolute, keep_function, keep_scale)
    out = torch.where(purity > uniform.to(acc), kept_pos, kept_neg)
    if leaked is not None:
        out = out + leaked
    return out.to(block.dtype)


@register(
    "graddrop",
    paper="Chen et al., Just Pick a Sign: Gradient Sign Dropout, NeurIPS 2020",
    rule="per coordinate P = ½(1 + Σg_i/Σ|g_i|); keep g_i > 0 if P > U, g_i < 0 if P < U; sum",
)
class GradDrop(JacobianAggregator):
    """GradDrop on per-task gradients. See the module docstring for the rule and the choices.

    Args:
        leak: leak ratio(s) ``ℓ``: a scalar, or one per task (over all ``num_tasks``).
        keep_function: ``"linear"`` (paper) or ``"sigmoid"`` (lingvo).
        keep_scale: slope ``k`` of the keep function (1: the paper's Eq. 1).
        keep_norm: rescale the update to the norm of the plain sum ``Σ_i g_i``.
        sign_correction: on a representation, use ``sgn(z) ⊙ ∂L_i/∂z`` for the purity.
        marginalize_batch: on a representation, sum over the batch before computing ``P``.
        seed: seed of the method's generators (None: ``torch.initial_seed()``, read without drawing from the global stream).
    """

    def __init__(
        self,
        leak: float | Sequence[float] = 0.0,
        keep_function: KeepFunction = "linear",
        keep_scale: float = 1.0,
        keep_norm: bool = False,
        sign_correction: bool = True,
        marginalize_batch: bool = True,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if keep_function not in ("linear", "sigmoid"):
            raise ValueError(f"keep_function must be 'linear' or 'sigmoid', got {keep_function!r}")
        leaks = (float(leak),) if isinstance(leak, int | float) else tuple(map(float, leak))
        if not leaks or any(not 0.0 <= x <= 1.0 for x in leaks):
            raise ValueError(f"leak ratios must lie in [0, 1], got {leak!r}")
        self.leak = leaks
        self.keep_function: KeepFunction = keep_function
        self.keep_scale = float(keep_scale)
        self.keep_norm = keep_norm
        self.sign_correction = sign_correction
        self.marginalize_batch = marginalize_batch
        self.generators = DeviceGenerators(seed)
        self._leak_tensors: dict[tuple[torch.device, torch.dtype], Tensor] = {}

    # ------------------------------------------------------------------ randomness
    def _uniform(self, shape: Sequence[int], like: Tensor) -> Tensor:
        dtype = gramian_dtype(like.dtype)
        gen = self.generators.get(like.device)
        # drawn in float32 whatever the dtype, so that a seed gives the same draws in every dtype
        u = torch.rand(tuple(shape), generator=gen, dtype=torch.float32, device=like.device)
        u = u.clamp_min_(torch.finfo(torch.float32).tiny)  # U in (0, 1): unanimous signs kept
        return u.to(dtype)

    def get_extra_state(self) -> dict[str, Any]:
        return {"generators": self.generators.state()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.generators.load(state["generators"])

    # ------------------------------------------------------------------ the rule
    def _leak_for(self, step: TaskStep, like: Tensor) -> Tensor | None:
        if len(self.leak) not in (1, step.num_tasks):
            raise ValueError(f"{len(self.leak)} leak ratios for {step.num_tasks} tasks")
        if not any(self.leak):
            return None
        key = (like.device, gramian_dtype(like.dtype))
        if key not in self._leak_tensors:  # copied to the device once, not every step
            self._leak_tensors[key] = torch.tensor(self.leak, dtype=key[1], device=key[0])
        leak = self._leak_tensors[key]
        if leak.numel() == 1:
            return leak.expand(step.m)
        return leak.index_select(0, step.tasks.to(like.device))

    def aggregate(self, jacobian: TaskJacobian, step: TaskStep) -> list[Tensor]:
        on_representation = step.approximate
        representation = step.representation if on_representation else None
        sign = None
        if on_representation and self.sign_correction and representation is not None:
            sign = representation.detach().sign()
        marginalize = on_representation and self.marginalize_batch
        leak = self._leak_for(step, jacobian.blocks[0])
        out = []
        for k, block in enumerate(jacobian.blocks):
            shape = list(block.shape[1:])
            if marginalize and shape:
                shape[0] = 1
            out.append(
                graddrop_block(
                    block,
                    self._uniform(shape, block),
                    leak,
                    sign=sign.to(block.dtype) if sign is not None and k == 0 else None,
                    marginalize_batch=marginalize,
                    keep_function=self.keep_function,
                    keep_scale=self.keep_scale,
                )
            )
        if self.keep_norm:
            out = _rescale_to_sum_norm(out, jacobian)
        return out

    def extra_repr(self) -> str:
        return (
            f"leak={self.leak}, keep_function={self.keep_function!r}, "
            f"keep_scale={self.keep_scale}, keep_norm={self.keep_norm}"
        )


def _rescale_to_sum_norm(update: list[Tensor], jacobian: TaskJacobian) -> list[Tensor]:
    """Scale ``update`` so that its norm is ``‖Σ_i g_i‖`` (no host synchronisation)."""
    dtype = gramian_dtype(jacobian.dtype)
    target = sum(b.sum(dim=0).to(dtype).pow(2).sum() for b in jacobian.blocks)
    current = sum(u.to(dtype).pow(2).sum() for u in update)
    assert isinstance(target, Tensor) and isinstance(current, Tensor)
    ok = current > 0
    factor = torch.where(ok, (target / torch.where(ok, current, 1.0)).sqrt(), 1.0)
    return [u * factor.to(u.dtype) for u in update]
