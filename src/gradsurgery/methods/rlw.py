"""RLW: random loss weighting, fresh random task weights at every step.

Lin, Ye, Zhang, Tsang. "Reasonable Effectiveness of Random Weighting: A Litmus Test for Multi-Task
Learning". TMLR 2022 (arXiv:2111.10603, first titled "A Closer Look at Loss Weighting in Multi-Task
Learning"); its authors' code is LibMTL's ``RLW``. Kurin et al. (NeurIPS 2022) ran it in supervised
and reinforcement learning (MT10/MT50 with ``"dirichlet"`` and ``"normal"``).

Rule. Each step draw ``λ̃ ~ p(λ̃)`` independently of everything else, normalize ``λ = f(λ̃)`` and
minimize ``Σ_i λ_i L_i`` (one backward pass, no per-task gradients). ``distribution``:

* ``"normal"`` (default, as LibMTL and torchjd): ``λ = softmax(λ̃)``, ``λ̃ ~ N(0, I)``.
* ``"uniform"``: ``λ = softmax(λ̃)``, ``λ̃ ~ U(0, 1)^m`` (so weights stay within a factor ``e``).
* ``"dirichlet"``: ``λ ~ Dirichlet(α 1)``, ``α = 1`` by default: uniform on the simplex, used as is
  (as we read Kurin et al.'s port, not checked here; LibMTL's ``RLW.py`` passes the draw through a
  softmax as well, which we do not).
* ``"random_normal"``: ``λ = softmax(λ̃)``, ``λ̃ ~ N(μ, diag σ²)`` with ``μ_i, σ_i ~ U(0, 1)`` drawn
  once per task at the first step and kept (in the state), after Kurin et al.'s port of the
  authors' first code release (not checked here).
* ``"bernoulli"``: ``λ_i ∈ {0, 1}`` with probability ½ each, redrawn until not all zero (weights as
  drawn, not normalized, as LibMTL).
* ``"constrained_bernoulli"``: one task drawn uniformly gets weight 1, the others 0.

``rescale="tasks"`` multiplies the weights so that they sum to the number of present tasks ``m``, as
we read Kurin et al.'s port (not checked here): the same loss scale as unitary scalarization.
The default ``"none"`` keeps the paper's weights (sum 1, or the Bernoulli draws).

Choices: with tasks absent from a step the draw is over the present tasks only (``random_normal``
keeps each task's own ``μ_i, σ_i``). Weights are drawn in float32 (float64 for float64 losses) on
the losses' device, from the method's own generators (:class:`DeviceGenerators`, saved in
``state_dict``): no host synchronisation. The Bernoulli draw conditioned on "not all zero" is exact
without a redraw loop: the binary digits of a uniform integer in ``[1, 2^m)``.

Example:
    >>> import torch
    >>> from gradsurgery.methods.base import TaskStep
    >>> step = TaskStep(losses=torch.ones(3), tasks=torch.arange(3), num_tasks=3, step=0)
    >>> w = RLW("dirichlet", seed=0).loss_weights(step)
    >>> bool((w >= 0).all()), round(float(w.sum()), 6)
    (True, 1.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from gradsurgery.methods.base import LossWeighting, TaskStep
from gradsurgery.methods.generators import DeviceGenerators
from gradsurgery.methods.registry import register
from gradsurgery.methods.task_state import TaskStateMixin

__all__ = ["RLW", "DeviceGenerators"]

Distribution = Literal[
    "normal", "uniform", "dirichlet", "random_normal", "bernoulli", "constrained_bernoulli"
]
Rescale = Literal["none", "tasks"]
_DISTRIBUTIONS = (
    "normal",
    "uniform",
    "dirichlet",
    "random_normal",
    "bernoulli",
    "constrained_bernoulli",
)


@register(
    "rlw",
    paper="Lin et al., Reasonable Effectiveness of Random Weighting, TMLR 2022",
    rule="each step λ = softmax(λ̃), λ̃ ~ N(0, I) (or another distribution); Δθ = ∇ Σ_i λ_i L_i",
)
class RLW(TaskStateMixin, LossWeighting):
    """Random loss weighting. See the module docstring for the distributions.

    Args:
        distribution: one of ``"normal"``, ``"uniform"``, ``"dirichlet"``, ``"random_normal"``,
            ``"bernoulli"``, ``"constrained_bernoulli"``.
        alpha: Dirichlet concentration (``"dirichlet"`` only).
        rescale: ``"none"`` (paper) or ``"tasks"`` (weights sum to ``m``, Kurin et al.).
        num_tasks: the number of tasks (``"random_normal"`` only; None: from the first step).
        seed: seed of the method's generators (None: ``torch.initial_seed()``, read without drawing from the global stream).
    """

    #: the random weights are drawn by task position
    permutation_equivariant = False

    _task_state_names = ("mu", "sigma")
    mu: Tensor | None
    sigma: Tensor | None

    def __init__(
        self,
        distribution: Distribution = "normal",
        alpha: float = 1.0,
        rescale: Rescale = "none",
        num_tasks: int | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if distribution not in _DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {_DISTRIBUTIONS}, got {distribution!r}")
        if rescale not in ("none", "tasks"):
            raise ValueError(f"rescale must be 'none' or 'tasks', got {rescale!r}")
        if alpha <= 0:
            raise ValueError(f"alpha must be positive, got {alpha}")
        self.distribution: Distribution = distribution
        self.alpha = float(alpha)
        self.rescale: Rescale = rescale
        self.generators = DeviceGenerators(seed)
        # Per-task mean and std of "random_normal" (drawn once, when the number of tasks is known).
        self.num_tasks = None
        self.register_buffer("mu", None)
        self.register_buffer("sigma", None)
        if num_tasks is not None and distribution == "random_normal":
            self.bind(num_tasks)

    def _allocate(self, num_tasks: int, device: torch.device | None) -> None:
        gen = self.generators.get(device or "cpu")
        self.mu = torch.rand(num_tasks, generator=gen, device=device)
        self.sigma = torch.rand(num_tasks, generator=gen, device=device)

    def sample(self, step: TaskStep) -> Tensor:
        """``(m,)`` weights of the present tasks, in at least float32, on the losses' device."""
        m, device = step.m, step.losses.device
        dtype = torch.float64 if step.losses.dtype == torch.float64 else torch.float32
        g, dist = self.generators.get(device), self.distribution
        f = _Draws(g, dtype, device)
        if dist == "normal":
            return torch.softmax(f.randn(m), 0)
        if dist == "uniform":
            return torch.softmax(f.rand(m), 0)
        if dist == "dirichlet":
            alpha = torch.full((m,), self.alpha, dtype=dtype, device=device)
            gamma = torch._standard_gamma(alpha, generator=g)
            total = gamma.sum()  # > 0 but for underflow of every draw (tiny alpha): then uniform
            return torch.where(total > 0, gamma / torch.where(total > 0, total, 1.0), 1.0 / m)
        if dist == "random_normal":
            self._bind_to_step(step)
            assert self.mu is not None and self.sigma is not None
            t = step.tasks.to(self.mu.device)
            mu = self.mu[t].to(dtype=dtype, device=device)
            sigma = self.sigma[t].to(dtype=dtype, device=device)
            return torch.softmax(mu + sigma * f.randn(m), 0)
        if dist == "bernoulli":
            return _nonzero_bits(m, f)
        one = torch.randint(0, m, (1,), generator=g, device=device)
        return torch.zeros(m, dtype=dtype, device=device).index_fill_(0, one, 1.0)

    def loss_weights(self, step: TaskStep) -> Tensor:
        w = self.sample(step)
        if self.rescale == "tasks":
            w = w * (step.m / w.sum())
        return w.to(step.losses.dtype)

    def get_extra_state(self) -> dict[str, Any]:
        return {"generators": self.generators.state()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.generators.load(state["generators"])

    def extra_repr(self) -> str:
        return f"distribution={self.distribution!r}, rescale={self.rescale!r}"


@dataclass(frozen=True)
class _Draws:
    """Where one step's random draws are made."""

    generator: torch.Generator
    dtype: torch.dtype
    device: torch.device

    def randn(self, m: int) -> Tensor:
        return torch.randn(m, generator=self.generator, dtype=self.dtype, device=self.device)

    def rand(self, m: int) -> Tensor:
        return torch.rand(m, generator=self.generator, dtype=self.dtype, device=self.device)


def _nonzero_bits(m: int, f: _Draws) -> Tensor:
    """``m`` fair coin flips conditioned on not all being 0, without a host round trip: the binary
    digits of an integer drawn uniformly from ``[1, 2^m)`` (for ``m > 62``, where all-zero has
    probability below ``2^-62``, plain flips with an all-zero draw replaced by a one-hot)."""
    g, dtype, device = f.generator, f.dtype, f.device
    if m <= 62:
        code = torch.randint(1, 2**m, (1,), generator=g, device=device)
        bits = torch.arange(m, device=device)
        return ((code >> bits) & 1).to(dtype)
    flips = (torch.rand(m, generator=g, device=device) < 0.5).to(dtype)
    one = torch.randint(0, m, (1,), generator=g, device=device)
    fallback = torch.zeros(m, dtype=dtype, device=device).index_fill_(0, one, 1.0)
    return torch.where(flips.sum() > 0, flips, fallback)
