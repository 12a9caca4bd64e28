"""Run a multi-task method on a 2-D toy landscape with Adam, as in PCGrad's Figure 1.

The point ``θ ∈ R²`` is an ``nn.Parameter`` shared by both tasks. Each step evaluates the two task
losses, hands them to :class:`gradsurgery.MultiTaskBackward` with the chosen method (``"sum"`` is
plain Adam on ``L1 + L2``), and takes one ``torch.optim.Adam`` step. A step is full-batch (the landscape is all the data), so
each step ends an epoch (:meth:`~gradsurgery.methods.base.Method.end_epoch`: DWA's loss rates are
step to step here). Everything the method sees
goes through the library's public path; only the loss evaluation is specialised: the landscape's
closed-form Jacobian (``Landscape.point``) is attached to the loss vector by a one-node autograd
function, so each per-task backward pass is one 2×2 product instead of a walk through a dozen tiny
autograd nodes (the landscapes' tests check this Jacobian against autograd).

Besides the trajectory the runner records, every step, the tragic-triad quantities of Yu et al.
(§2.2, §2.4, §5.3) from the exact task gradients ``g1``, ``g2`` (their Gramian ``K`` is what
``StepResult.gramian`` holds for Gramian methods; it is computed here for every method, ``"sum"``
included):

* ``cos φ = K12 / √(K11 K22)`` (0 when a gradient is zero);
* ``Φ = 2 √(K11 K22) / (K11 + K22)`` (1 when both are zero);
* the curvature along the update, ``H = 2 [L(θ_{t+1}) − L(θ_t) − ∇L(θ_t)ᵀ(θ_{t+1} − θ_t)]`` with
  ``L = L1 + L2`` and ``∇L = g1 + g2``.

Cost: the Python overhead of ``MultiTaskBackward`` and Adam dominates (≈ 1–4 ms a step on a busy
2-core CPU), so the paper's 500,000 steps take minutes; ``Landscape.budgets["quick"]`` reaches the
same outcome with a larger learning rate in a fraction of the steps.

Example:
    >>> result = run_toy("pcgrad_figure1", "pcgrad", steps=200, lr=1e-2)
    >>> result.steps, len(result.final_theta)
    (200, 2)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from gradsurgery.backward import MultiTaskBackward
from gradsurgery.methods.base import Method
from gradsurgery.toy.landscapes import Landscape, PointEval, get_landscape

__all__ = ["ToyResult", "run_toy"]


class _ClosedFormLosses(torch.autograd.Function):
    """``θ ↦ (L1, L2)`` with values and Jacobian computed outside autograd: one backward node."""

    @staticmethod
    def forward(ctx: Any, theta: Tensor, values: Tensor, jacobian: Tensor) -> Tensor:
        ctx.save_for_backward(jacobian)
        return values.clone()

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor, None, None]:
        (jacobian,) = ctx.saved_tensors
        return grad_out @ jacobian, None, None


@dataclass
class ToyResult:
    """What :func:`run_toy` measured.

    Attributes:
        landscape, method, method_kwargs, landscape_options, lr, seed: the run's settings.
        start: the start point.
        steps: the number of Adam steps taken.
        record_steps: ``(n,)`` step index of each recorded point (0 = start, last = ``steps``).
        trajectory: ``(n, 2)`` recorded points ``θ``.
        losses: ``(n, 2)`` ``(L1, L2)`` at the recorded points.
        cosine, magnitude_similarity: ``(n,)`` ``cos φ`` and ``Φ`` of the task gradients there.
        curvature: ``(n,)`` ``H`` of the update taken from each recorded point (NaN at the end).
        threshold: the "both tasks solved" level used (None: not tracked).
        first_hit_step: the first step at which both losses were below ``threshold`` (None if never).
        summary: the triad statistics over *every* step (not only the recorded ones).
        wall_time_s: wall-clock seconds of the optimization loop.
        cpu_time_s: CPU seconds of this process in the loop (what it costs on an idle machine).
    """

    landscape: str
    method: str
    method_kwargs: dict[str, Any]
    landscape_options: dict[str, Any]
    lr: float
    seed: int
    start: tuple[float, float]
    steps: int
    record_steps: np.ndarray
    trajectory: np.ndarray
    losses: np.ndarray
    cosine: np.ndarray
    magnitude_similarity: np.ndarray
    curvature: np.ndarray
    threshold: float | None
    first_hit_step: int | None
    summary: dict[str, float] = field(default_factory=dict)
    wall_time_s: float = 0.0
    cpu_time_s: float = 0.0

    @property
    def final_theta(self) -> tuple[float, float]:
        return (float(self.trajectory[-1, 0]), float(self.trajectory[-1, 1]))

    @property
    def final_losses(self) -> tuple[float, float]:
        return (float(self.losses[-1, 0]), float(self.losses[-1, 1]))

    @property
    def final_loss(self) -> float:
        return float(self.losses[-1].sum())

    def to_dict(self, *, trajectory: bool = False) -> dict[str, Any]:
        """A JSON-ready summary (with the recorded series when ``trajectory`` is True)."""
        l1, l2 = self.final_losses
        out: dict[str, Any] = {
            "landscape": self.landscape,
            "landscape_options": self.landscape_options,
            "method": self.method,
            "method_kwargs": self.method_kwargs,
            "lr": self.lr,
            "seed": self.seed,
            "start": list(self.start),
            "steps": self.steps,
            "final_theta": list(self.final_theta),
            "final_L1": l1,
            "final_L2": l2,
            "final_L": l1 + l2,
            "threshold": self.threshold,
            "first_hit_step": self.first_hit_step,
            "wall_time_s": self.wall_time_s,
            "cpu_time_s": self.cpu_time_s,
            "us_per_step": 1e6 * self.wall_time_s / max(self.steps, 1),
            "trajectory_length": len(self.record_steps),
            "diagnostics": self.summary,
        }
        if trajectory:
            out["record_steps"] = self.record_steps.tolist()
            out["trajectory"] = self.trajectory.tolist()
            out["losses"] = self.losses.tolist()
            out["cosine"] = _json_floats(self.cosine)
            out["magnitude_similarity"] = _json_floats(self.magnitude_similarity)
            out["curvature"] = _json_floats(self.curvature)
        return out


def run_toy(
    landscape: str | Landscape = "pcgrad_figure1",
    method: str | Method = "pcgrad",
    *,
    steps: int | None = None,
    lr: float = 1e-3,
    start: tuple[float, float] | None = None,
    seed: int = 0,
    record_every: int | None = None,
    threshold: float | None = None,
    method_kwargs: dict[str, Any] | None = None,
    landscape_options: dict[str, Any] | None = None,
    method_lr: float | None = None,
    dtype: torch.dtype = torch.float64,
) -> ToyResult:
    """Optimize ``θ`` on a toy landscape with Adam and a multi-task method.

    Args:
        landscape: a registered landscape name or a :class:`Landscape`.
        method: a registered method name (``gradsurgery.method_names()``; ``"sum"`` is plain Adam)
            or a :class:`~gradsurgery.methods.base.Method` instance.
        steps: number of Adam steps (default: the landscape's ``"paper"`` budget, 500,000 for
            ``pcgrad_figure1`` — minutes; the ``"quick"`` budget uses fewer steps and a larger lr).
        lr: Adam's learning rate (1e-3 in the papers).
        start: the start point (default: the landscape's first start).
        seed: seeds torch's RNG for the run (restored afterwards), so randomized methods repeat.
        record_every: keep every k-th point of the trajectory (default: about 1,000 points).
        threshold: "both tasks solved" level (default: the landscape's, if it has one).
        method_kwargs: keyword arguments of the method (``{"reduction": "mean"}``).
        landscape_options: options of the landscape (``{"base": 10}``, ``{"scale_l1": 0.1}``).
        method_lr: learning rate of a method's own parameters, if it has any (default: ``lr``).
        dtype: dtype of ``θ``.
    """
    land = get_landscape(landscape) if isinstance(landscape, str) else landscape
    options = land.resolve_options(landscape_options)
    if steps is None:
        steps = land.budgets["paper"][0] if "paper" in land.budgets else 10_000
    if steps < 0:
        raise ValueError(f"steps must be non-negative, got {steps}")
    if record_every is None:
        record_every = max(1, steps // 1000)
    if record_every < 1:
        raise ValueError(f"record_every must be at least 1, got {record_every}")
    x0 = _as_point(start if start is not None else land.start)
    if threshold is None:
        threshold = land.threshold
    kwargs = dict(method_kwargs or {})
    point = _point_function(land, options, dtype)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        theta = nn.Parameter(torch.tensor(x0, dtype=dtype))
        mtl = MultiTaskBackward([theta], method, shared=[theta], num_tasks=2, **kwargs)
        groups: list[dict[str, Any]] = [{"params": [theta]}]
        own = [p for p in mtl.method.parameters() if p.requires_grad]
        if own:
            groups.append({"params": own, "lr": method_lr if method_lr is not None else lr})
        optimizer = _adam(groups, lr)
        rec = _Recorder(threshold)
        t0, c0 = time.perf_counter(), time.process_time()
        x = x0
        (l1, l2), (g1, g2) = point(*x)
        for step in range(steps):
            values = torch.tensor((l1, l2), dtype=dtype)
            jac = torch.tensor((g1, g2), dtype=dtype)
            optimizer.zero_grad(set_to_none=True)
            mtl.backward(_ClosedFormLosses.apply(theta, values, jac))
            optimizer.step()
            mtl.method.end_epoch()  # full-batch descent: each step sees all the "data" (DWA)
            x_new = tuple(theta.detach().tolist())
            if not (math.isfinite(x_new[0]) and math.isfinite(x_new[1])):
                raise FloatingPointError(
                    f"θ became non-finite at step {step} with method {mtl.method.name or method!r}"
                )
            (n1, n2), (h1, h2) = point(*x_new)
            rec.step(step, x, (l1, l2), g1, g2, x_new, n1 + n2, record=step % record_every == 0)
            x, l1, l2, g1, g2 = x_new, n1, n2, h1, h2
        rec.finish(steps, x, (l1, l2), g1, g2)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0

    return ToyResult(
        landscape=land.name,
        method=mtl.method.name or type(mtl.method).__name__,
        method_kwargs=kwargs,
        landscape_options=options,
        lr=lr,
        seed=seed,
        start=x0,
        steps=steps,
        record_steps=np.asarray(rec.steps, dtype=np.int64),
        trajectory=np.asarray(rec.points, dtype=np.float64).reshape(-1, 2),
        losses=np.asarray(rec.losses, dtype=np.float64).reshape(-1, 2),
        cosine=np.asarray(rec.cosine, dtype=np.float64),
        magnitude_similarity=np.asarray(rec.phi, dtype=np.float64),
        curvature=np.asarray(rec.curvature, dtype=np.float64),
        threshold=threshold,
        first_hit_step=rec.first_hit,
        summary=rec.summary(),
        wall_time_s=wall,
        cpu_time_s=cpu,
    )


# ---------------------------------------------------------------------------------------- helpers
def _point_function(
    land: Landscape, options: dict[str, Any], dtype: torch.dtype
) -> Callable[[float, float], PointEval]:
    """``(t1, t2) -> ((L1, L2), (g1, g2))`` in floats: closed form, or autograd as a fallback."""
    if land.point is not None:
        fn = land.point
        return lambda t1, t2: fn(t1, t2, **options)

    def by_autograd(t1: float, t2: float) -> PointEval:
        p = torch.tensor((t1, t2), dtype=dtype, requires_grad=True)
        values = land(p, **options)
        rows = [torch.autograd.grad(values[i], p, retain_graph=i == 0)[0] for i in range(2)]
        (a, b), (r1, r2) = values.tolist(), [r.tolist() for r in rows]
        return (a, b), ((r1[0], r1[1]), (r2[0], r2[1]))

    return by_autograd


def _adam(groups: list[dict[str, Any]], lr: float) -> torch.optim.Adam:
    """Adam; the fused kernel when this build has it (one kernel per step instead of about a dozen
    tiny ops: the toy's step cost is all per-op overhead). Same update rule either way."""
    try:
        return torch.optim.Adam(groups, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(groups, lr=lr)


def _as_point(start: Any) -> tuple[float, float]:
    xy = tuple(float(v) for v in start)
    if len(xy) != 2 or not all(math.isfinite(v) for v in xy):
        raise ValueError(f"start must be two finite numbers, got {tuple(start)}")
    return xy


def _triad(g1: tuple[float, float], g2: tuple[float, float]) -> tuple[float, float]:
    """``(cos φ, Φ)`` of two 2-D gradients, with the degenerate cases of ``diagnostics.triad``."""
    k11 = g1[0] * g1[0] + g1[1] * g1[1]
    k22 = g2[0] * g2[0] + g2[1] * g2[1]
    k12 = g1[0] * g2[0] + g1[1] * g2[1]
    prod = math.sqrt(k11 * k22)
    cos = k12 / prod if prod > 0 else 0.0
    phi = 2.0 * prod / (k11 + k22) if k11 + k22 > 0 else 1.0
    return cos, phi


class _Recorder:
    """Subsampled series plus running statistics of every step, in plain Python floats."""

    def __init__(self, threshold: float | None) -> None:
        self.threshold = threshold
        self.first_hit: int | None = None
        self.steps: list[int] = []
        self.points: list[tuple[float, ...]] = []
        self.losses: list[tuple[float, float]] = []
        self.cosine: list[float] = []
        self.phi: list[float] = []
        self.curvature: list[float] = []
        self.n = 0
        self.n_conflict = 0
        self.n_condition_a = 0
        self.sum_cos = 0.0
        self.sum_phi = 0.0
        self.sum_h = 0.0
        self.max_abs_h = 0.0

    def _hit(self, step: int, losses: tuple[float, float]) -> None:
        if (
            self.first_hit is None
            and self.threshold is not None
            and losses[0] < self.threshold
            and losses[1] < self.threshold
        ):
            self.first_hit = step

    def step(
        self,
        step: int,
        x: tuple[float, ...],
        losses: tuple[float, float],
        g1: tuple[float, float],
        g2: tuple[float, float],
        x_new: tuple[float, ...],
        loss_new: float,
        *,
        record: bool,
    ) -> None:
        self._hit(step, losses)
        cos, phi = _triad(g1, g2)
        gx = g1[0] + g2[0]
        gy = g1[1] + g2[1]
        h = 2.0 * (
            loss_new - (losses[0] + losses[1]) - gx * (x_new[0] - x[0]) - gy * (x_new[1] - x[1])
        )
        self.n += 1
        self.n_conflict += cos < 0
        self.n_condition_a += cos < 0 and cos <= -phi
        self.sum_cos += cos
        self.sum_phi += phi
        self.sum_h += h
        self.max_abs_h = max(self.max_abs_h, abs(h))
        if record:
            self._append(step, x, losses, cos, phi, h)

    def finish(
        self,
        step: int,
        x: tuple[float, ...],
        losses: tuple[float, float],
        g1: tuple[float, float],
        g2: tuple[float, float],
    ) -> None:
        self._hit(step, losses)
        cos, phi = _triad(g1, g2)
        self._append(step, x, losses, cos, phi, math.nan)

    def _append(
        self,
        step: int,
        x: tuple[float, ...],
        losses: tuple[float, float],
        cos: float,
        phi: float,
        h: float,
    ) -> None:
        self.steps.append(step)
        self.points.append(x)
        self.losses.append(losses)
        self.cosine.append(cos)
        self.phi.append(phi)
        self.curvature.append(h)

    def summary(self) -> dict[str, float]:
        n = max(self.n, 1)
        return {
            "fraction_conflicting": self.n_conflict / n,
            "fraction_condition_a": self.n_condition_a / n,
            "mean_cosine": self.sum_cos / n,
            "mean_magnitude_similarity": self.sum_phi / n,
            "mean_curvature": self.sum_h / n,
            "max_abs_curvature": self.max_abs_h,
        }


def _json_floats(a: np.ndarray) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in a.tolist()]
