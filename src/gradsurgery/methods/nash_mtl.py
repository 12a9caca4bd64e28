"""Nash-MTL: multi-task learning as a bargaining game.

Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik, Fetaya. "Multi-Task Learning as a
Bargaining Game", ICML 2022 (Algorithm 1; official code: github.com/AvivNavon/nash-mtl).

Rule. The Nash bargaining solution among the tasks is the update ``Δθ = Σ_i α_i g_i`` with
``α > 0`` solving

    Gᵀ G α = 1/α     (entrywise; in our notation K α = 1/α, K = J Jᵀ the Gramian),

i.e. ``α_i · (g_iᵀ Δθ) = 1`` for every task. Then ``‖Δθ‖² = αᵀ K α = m``.

Solving it: the paper's sequence of convex problems (``solver="ccp"``, default). With
``β_i(α) = (K α)_i`` and ``φ(α) = Σ_i log α_i + log β_i(α)`` (concave), the paper (and its code)
solves

    min_α  Σ_i β_i(α) + φ(α)   s.t.  φ_i(α) = log α_i + log β_i(α) ≥ 0,  α ≥ 0

by the concave-convex procedure: ``φ`` is replaced by its linearisation at the current iterate
``α_t``, and the resulting convex problem (linear objective ``(K 1 + ∇φ(α_t))ᵀ α``, convex
constraints ``α_i (K α)_i ≥ 1``) gives ``α_{t+1}``; ``optim_niter`` such steps (20 in the official
code), warm-started from the previous step's ``α``. The official code solves each convex problem
with cvxpy/ECOS on ``K/‖K‖_F``; we solve it with a log-barrier method in torch: variables
``u = α sqrt(‖K‖_F)`` (so the constraints read ``u_i (K̂ u)_i ≥ 1`` with ``K̂ = K/‖K‖_F``, and the
objective is ``(sqrt(‖K‖_F) K̂ 1 + ∇φ̂(u_t))ᵀ u``, the official one up to a positive factor),
barrier ``t cᵀu − Σ_i log φ_i(u)``, a strictly feasible start obtained by scaling ``u`` up (``φ_i``
grows by ``2 log s`` when ``u`` is scaled by ``s``), ``t`` from ``m/|cᵀu|`` up by 10× for
``barrier_stages`` stages (8 in float64, 5 in float32 by default), ``newton_steps`` Newton steps
per stage, each with a batched line search over step sizes ``1, ½, ..., 2⁻¹⁵`` that keeps ``u``
strictly feasible and the barrier objective non-increasing. If the warm start has some
``(K α)_i ≤ 0`` the linearisation is undefined there; we then start from the Nash point of the
direct solver below.

Shortcut (with ``tol > 0``, the default): the CCP's fixed points are the points whose own
linearised problem returns them. The Nash point is one exactly when the multipliers of that
problem at the Nash point are non-negative (:func:`_is_ccp_fixed_point`, one ``m × m`` solve),
and then the CCP converges to it (and the refinement below snaps it there). So the Nash point is
computed first (the direct solver below) and returned when it is a fixed point; the CCP runs
only when it is not. On 300 random Gramians (``m ≤ 8``, half of them with strong conflicts) the
check predicted the CCP's outcome every time, and it makes the common case as fast as the direct
solver.

The CCP is not always at the Nash point. When every constraint is active at the solution of
that problem, the solution is the Nash point (``m`` equations ``α_i β_i = 1`` in ``m``
unknowns), and the procedure converges in two or three steps. With strongly conflicting tasks
(negative entries in ``K 1``) the problem's solution can leave constraints slack —
``α_i (K α)_i > 1`` for some tasks — and the procedure converges there instead, not at the Nash
point (tested: with norms 1 to 100 and ``K 1`` not positive, the CCP and ``solver="direct"``
differ and only the latter has ``K α = 1/α``).

Against the official code (the tests run torchjd's port of it, cvxpy/ECOS, from its start
``α = 1``, which is usable only where ``K 1 > 0``): with mildly spread norms (factors of about 3)
ours and theirs agree to 1e-5; with spread norms (1, 10, 100) they do not: ours ends at the Nash
point and theirs short of it (``α_i (Kα)_i`` off 1 by ~1e-3: the official ``_stop_criteria``
ends at ``‖K̂α − 1/α‖ < 1e-3``, as read in the ``NashMTL`` class of ``weight_methods.py`` copies
found with code search; its ``optim_niter=20``, ``max_norm=1.0`` and start from ones likewise). So the CCP is *not* a drop-in for
the official weights in general, and neither is the Nash point; on Gramians where the official
linearisation at ``α = 1`` is undefined we have no comparison.

``solver="direct"``: the Nash point itself. ``K α = 1/α`` is the stationarity condition of the
strictly convex ``F(α) = ½ αᵀKα − Σ_i log α_i``, which has a minimiser exactly when the Nash point
exists; damped Newton on ``F`` (self-concordant, so the step ``1/(1 + λ)`` with Newton decrement
``λ`` needs no line search and stays in ``α > 0``), from the start rescaled to the minimum of
``F`` along its ray, for up to ``newton_iters`` iterations. It satisfies ``α_i (Kα)_i = 1`` to
working precision and is about ten times faster than the CCP.

Choices the paper leaves open, and ours:

* Existence. A Nash point exists iff the zero vector is not in the convex hull of the gradients
  (then some ``α > 0`` has ``K α > 0``). A task with a zero gradient (squared norm below ``eps²``
  times the largest) cannot bargain: it gets weight 0 and the others are solved for among
  themselves (the official code's solver fails and it reuses the previous weights). If no
  solution exists otherwise, or the solver did not get there (``"direct"``:
  ``max_i |α_i (Kα)_i − 1| > max(1e-6, 30 sqrt(eps))``, i.e. 1e-6 in float64 and 1e-2 in
  float32, where rounding limits ill-conditioned Gramians; ``"ccp"``: some
  ``α_i (Kα)_i < 1 − 1e-3``), the previous weights of these tasks are reused, as the official
  code does when cvxpy fails.
* Warm start. From the last weights of the present tasks (a task never seen starts at
  ``1/‖g_i‖``, its own solution alone; the official code starts from ones).
* Stopping. The CCP stops early when ``max_i |α_i (Kα)_i − 1| ≤ tol`` or the iterate moved by
  less than ``max(tol, 10 sqrt(eps))`` (relative, max-norm) — the official criteria, made
  scale-free. That test costs one host synchronisation per CCP step; ``tol=0`` runs all
  ``optim_niter`` steps without any. The barrier solves each convex problem to about 1e-6
  (float64) or 1e-4 (float32) relative; when the CCP ends within 1e-3 of the Nash point, three
  Newton steps on ``F`` (below) refine it to working precision. The direct solver stops when
  its Newton decrement is below ``tol`` (checked every 5 iterations, one synchronisation each).
* ``update_weights_every = k``: the weights are recomputed on steps with ``step % k == 0`` (and
  whenever the present tasks differ from those of the last computation; checking that is one
  host synchronisation per step when ``k > 1``), and reused in between — as the official code,
  which also still clips the norm every step.
* ``max_norm`` (official default 1.0; 0 disables): the shared update is scaled down to norm
  ``max_norm`` when longer, its norm computed from the Gramian (``‖αᵀJ‖² = αᵀKα``), like
  ``clip_grad_norm_`` on the shared parameters in the official code. Since ``αᵀKα = m`` at the
  solution, with ``m ≥ 2`` tasks and ``max_norm=1`` the update always ends up with norm 1.
* Task-specific parameters: ``task_specific="weights"`` (default; the official code back-propagates
  ``Σ_i α_i L_i``, so heads get ``α_i`` — unclipped), or ``"ones"``.
* State (the last weights per task index, which tasks have weights, and the tasks of the last
  computation) is kept in buffers, so ``state_dict`` carries it.
* Where it runs (``placement``, :mod:`gradsurgery.methods.host`): both solvers are Newton or
  barrier iterations of tiny ops with convergence tests read on the host: thousands of kernel
  launches and a synchronisation per test on an accelerator. So by default (``"auto"``) the
  weights are computed on the host in float64, from one device-to-host copy of the Gramian and
  the warm start (the step's one host synchronisation; the tests are then host reads that cost
  nothing), with a non-blocking copy of the weights back; ``"device"`` keeps it on the device.

Example (orthogonal gradients of norms 1 and 2: α_i ‖g_i‖² α_i = 1, α_i = 1/‖g_i‖):
    >>> import torch
    >>> from gradsurgery.methods.base import TaskStep
    >>> K = torch.tensor([[1.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    >>> step = TaskStep(torch.ones(2), torch.arange(2), 2, 0, gramian=K)
    >>> NashMTL(max_norm=0.0)(step).weights
    tensor([1.0000, 0.5000], dtype=torch.float64)
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from gradsurgery.methods.base import Aggregation, GramianWeighting, TaskStep
from gradsurgery.methods.host import HostSolver, Placement, check_placement, placed
from gradsurgery.methods.registry import register
from gradsurgery.methods.simplex import live_rows
from gradsurgery.methods.task_state import TaskStateMixin

__all__ = ["NashMTL", "nash_mtl_weights"]

Solver = Literal["ccp", "direct"]
TaskSpecific = Literal["weights", "ones"]

_STEP_SIZES = 16  # line search: 1, 1/2, ..., 2^-15 (and 0)


def nash_mtl_weights(
    gramian: Tensor,
    alpha0: Tensor | None = None,
    solver: Solver = "ccp",
    optim_niter: int = 20,
    tol: float = 1e-6,
    newton_iters: int = 50,
    barrier_stages: int | None = None,
    newton_steps: int = 5,
) -> Tensor:
    """The ``(m,)`` solution ``α`` of ``K α = 1/α`` (zero for zero-gradient tasks), unclipped.

    Args:
        gramian: ``(m, m)`` Gramian ``K``.
        alpha0: warm start (and fallback); None: ``1/‖g_i‖``.
        solver: ``"ccp"`` (the paper's procedure) or ``"direct"`` (damped Newton).
        optim_niter, tol: CCP steps and early-stopping tolerance (``tol=0``: no host syncs).
        newton_iters: Newton iterations of the direct solver (at most, with ``tol > 0``).
        barrier_stages, newton_steps: schedule of the barrier method of each CCP step.
    """
    if solver not in ("ccp", "direct"):
        raise ValueError(f"solver must be 'ccp' or 'direct', got {solver!r}")
    dtype = gramian.dtype
    finfo = torch.finfo(dtype)
    diag, live = live_rows(gramian)
    norm = torch.linalg.matrix_norm(gramian)  # the official normalisation, ‖K‖_F
    norm = torch.where(norm > finfo.tiny, norm, torch.ones_like(norm))
    root = norm.sqrt()
    eye = torch.eye(gramian.shape[0], dtype=dtype, device=gramian.device)
    both = live[:, None] & live[None, :]
    # Zero-gradient tasks are decoupled (their own row u_i² = 1) and get weight 0 at the end.
    k = torch.where(both, gramian / norm, eye)
    own = torch.where(live, (diag / norm).clamp_min(finfo.tiny).rsqrt(), torch.ones_like(diag))
    if alpha0 is None:
        u0 = own
    else:
        u0 = alpha0.to(dtype=dtype, device=gramian.device) * root
        u0 = torch.where(live & torch.isfinite(u0) & (u0 > 0), u0, own)
    if solver == "direct":
        u = _newton(k, u0, newton_iters, tol)
    else:
        stages = barrier_stages or (8 if dtype == torch.float64 else 5)
        u = _ccp(k, root, u0, optim_niter, tol, stages, newton_steps, newton_iters)
        # The barrier solves each convex problem to about 1e-6 (float64) / 1e-4 (float32): once
        # the CCP is at the Nash point to 1e-3, three Newton steps on F refine it to precision.
        close = (u * (k @ u) - 1).abs().amax() <= 1e-3
        u = torch.where(close, _newton(k, u, 3), u)
    res_tol = max(1e-6, 30 * finfo.eps**0.5)
    products = u * (k @ u)
    if solver == "direct":  # the Nash point: every α_i (Kα)_i = 1
        reached = (products - 1).abs().amax() <= res_tol
    else:  # a point of the CCP's problem: every α_i (Kα)_i ≥ 1
        reached = products.amin() >= 1 - 1e-3
    ok = torch.isfinite(u).all() & (u > 0).all() & reached
    fallback = alpha0.to(dtype=dtype, device=gramian.device) if alpha0 is not None else own / root
    alpha = torch.where(ok, u / root, fallback)
    return torch.where(live, alpha, torch.zeros_like(alpha))


def _newton(k: Tensor, u: Tensor, iters: int, tol: float = 0.0) -> Tensor:
    """Damped Newton on ``F(u) = ½ uᵀK̂u − Σ log u_i`` (self-concordant).

    The start is first rescaled to the minimum of ``F`` along its ray, ``s = sqrt(m / uᵀK̂u)``.
    With ``tol > 0``, stops when the Newton decrement is below ``tol`` (checked every 5
    iterations: one host synchronisation each).
    """
    quad = u @ k @ u
    u = u * torch.where(
        quad > 0, (u.shape[0] / quad.clamp_min(torch.finfo(u.dtype).tiny)).sqrt(), 1
    )
    for it in range(iters):
        inv_u = 1 / u
        grad = k @ u - inv_u
        hess = k + torch.diag(inv_u * inv_u)
        chol = torch.linalg.cholesky_ex(hess)[0]
        du = -torch.cholesky_solve(grad[:, None], chol)[:, 0]
        decrement = (-(grad @ du)).clamp_min(0).sqrt()
        step = torch.where(decrement < 0.25, torch.ones_like(decrement), 1 / (1 + decrement))
        u_new = u + step * torch.nan_to_num(du)
        u = torch.where((u_new > 0).all(), u_new, u)
        if tol > 0 and it % 5 == 4 and bool(decrement <= tol):  # the documented synchronisation
            break
    return u


def _ccp(
    k: Tensor,
    root: Tensor,
    u: Tensor,
    niter: int,
    tol: float,
    stages: int,
    newton_steps: int,
    newton_iters: int,
) -> Tensor:
    """The concave-convex procedure in ``u``-space (see the module docstring)."""
    # The linearised problem is bounded only from a start with K̂u > 0; the Nash point (from the
    # direct solver) is such a start whenever one exists.
    in_domain = (u > 0).all() & ((k @ u) > 0).all()
    if tol > 0:
        if not bool(in_domain):  # the documented host synchronisation
            u = _newton(k, u, newton_iters, tol)
            if not bool((u > 0).all() & ((k @ u) > 0).all()):
                return u  # no Nash point, no usable start: the caller falls back
    else:
        u = torch.where(in_domain, u, _newton(k, u, newton_iters))
    k1 = root * k.sum(dim=1)
    if tol > 0:
        nash = _newton(k, u, newton_iters, tol)
        if bool(_is_ccp_fixed_point(k, k1, nash)):  # the documented host synchronisation
            return nash
    # The barrier's own accuracy bounds how still two iterates can be.
    move_tol = max(tol, 10 * torch.finfo(k.dtype).eps ** 0.5)
    for _ in range(niter):
        ku = k @ u
        c = k1 + 1 / u + k @ (1 / ku)
        u_new = _barrier(k, c, u, stages, newton_steps)
        if tol > 0:
            moved = (u_new - u).abs().amax() <= move_tol * u.abs().amax()
            solved = (u_new * (k @ u_new) - 1).abs().amax() <= tol
            broken = ~torch.isfinite(u_new).all()
            u = u_new
            if bool(moved | solved | broken):  # the documented host synchronisation
                break
        else:
            u = u_new
    return u


def _is_ccp_fixed_point(k: Tensor, k1: Tensor, u: Tensor) -> Tensor:
    """Whether the Nash point ``u`` solves the CCP's convex problem linearised at ``u`` itself.

    At ``u`` every constraint ``φ_i(u) = log u_i + log (K̂u)_i ≥ 0`` is active, so ``u`` is that
    problem's minimiser iff its objective ``c = K̂1·√‖K‖_F + ∇φ(u)`` is a non-negative
    combination of the constraints' gradients ``∇φ_i = e_i/u_i + K̂_{:,i}/(K̂u)_i`` (KKT; the
    problem is convex). With ``G`` the matrix of those gradients, ``∇φ(u) = G 1``, so the
    multipliers are ``μ = 1 + G⁻¹ k1``.
    """
    finfo = torch.finfo(u.dtype)
    ku = k @ u
    nash = (u > 0).all() & (ku > 0).all() & ((u * ku - 1).abs().amax() <= 1e3 * finfo.eps**0.5)
    g = torch.diag(1 / u) + k / ku[None, :]
    mu = 1 + torch.linalg.solve_ex(g, k1)[0]
    ok: Tensor = nash & torch.isfinite(mu).all() & (mu >= -1e3 * finfo.eps**0.5).all()
    return ok


def _barrier(k: Tensor, c: Tensor, u: Tensor, stages: int, newton_steps: int) -> Tensor:
    """``argmin cᵀu`` s.t. ``log u_i + log (K̂u)_i ≥ 0``: log-barrier Newton with line search."""
    m = u.shape[0]
    dtype, device = u.dtype, u.device
    sizes = torch.cat(
        [
            2.0 ** -torch.arange(_STEP_SIZES, dtype=dtype, device=device),
            torch.zeros(1, dtype=dtype, device=device),
        ]
    )
    # Strictly feasible start: scaling u by e^δ raises every φ_i by 2δ; aim at min φ ≥ 1/2.
    phi = u.log() + (k @ u).log()
    u = u * ((0.5 - phi.amin()).clamp_min(0) / 2).exp()
    t0 = m / (c @ u).abs().clamp_min(torch.finfo(dtype).tiny)
    for stage in range(stages):
        t = t0 * 10.0**stage
        for _ in range(newton_steps):
            ku = k @ u
            inv_u, inv_ku = 1 / u, 1 / ku
            phi = u.log() + ku.log()
            r = 1 / phi
            grad = t * c - (r * inv_u + k @ (r * inv_ku))
            p = torch.diag(inv_u) + inv_ku[:, None] * k
            hess = (
                p.T @ (p * (r * r)[:, None])
                + torch.diag(r * inv_u * inv_u)
                + k @ (k * (r * inv_ku * inv_ku)[:, None])
            )
            chol = torch.linalg.cholesky_ex(hess)[0]
            du = torch.nan_to_num(-torch.cholesky_solve(grad[:, None], chol)[:, 0])
            cand = u + sizes[:, None] * du
            kc = cand @ k
            ok = (cand > 0).all(dim=1) & (kc > 0).all(dim=1)
            phis = (
                torch.where(ok[:, None], cand, torch.ones_like(cand)).log()
                + torch.where(ok[:, None], kc, torch.ones_like(kc)).log()
            )
            ok = ok & (phis > 0).all(dim=1)
            obj = t * (cand @ c) - torch.where(ok[:, None], phis, torch.ones_like(phis)).log().sum(
                1
            )
            obj = torch.where(ok & torch.isfinite(obj), obj, torch.full_like(obj, math.inf))
            u = cand[torch.argmin(obj)]
    return u


@register(
    "nash_mtl",
    paper="Navon et al., Multi-Task Learning as a Bargaining Game, ICML 2022",
    rule="α > 0 with K α = 1/α (Nash bargaining) via the paper's CCP; Δθ = Σ_i α_i g_i, clipped",
)
class NashMTL(HostSolver, TaskStateMixin, GramianWeighting):
    """Nash-MTL (Algorithm 1) from the Gramian. See the module docstring for the rule and choices.

    Args:
        max_norm: clip the shared update to this norm (0: no clipping). Official default 1.0.
        update_weights_every: recompute the weights every this many steps.
        optim_niter: CCP steps (official: 20).
        solver: ``"ccp"`` (the paper's procedure) or ``"direct"`` (damped Newton, the Nash point).
        tol: early-stopping tolerance of the CCP (and of the direct solver's Newton
            iterations); 0: fixed iteration counts, no host synchronisation.
        task_specific: ``"weights"`` (heads get ``α_i``, official) or ``"ones"``.
        newton_iters: Newton iterations of the direct solver (also used by the CCP to find a
            start when the warm start is not usable).
        barrier_stages, newton_steps: the barrier schedule of each CCP step.
        num_tasks: the number of tasks ``M`` (None: taken from the first step).
        placement: ``"auto"`` (host, float64), ``"host"`` or ``"device"`` (see above).

    State (buffers, per task index): ``alpha`` (the last unclipped weights), ``seen`` (which
    tasks have weights) and ``last_present`` (the tasks of the last computation).
    """

    #: ``α_i ∝ 1/s`` when the gradients are scaled by ``s``: the update does not change
    scale_degree = 0
    #: with one task ``α = 1/‖g‖``: the update is the unit gradient
    single_task = "positive"

    _task_state_names = ("alpha", "seen", "last_present")
    alpha: Tensor | None
    seen: Tensor | None
    last_present: Tensor | None

    def __init__(
        self,
        max_norm: float = 1.0,
        update_weights_every: int = 1,
        optim_niter: int = 20,
        solver: Solver = "ccp",
        tol: float = 1e-6,
        task_specific: TaskSpecific = "weights",
        newton_iters: int = 50,
        barrier_stages: int | None = None,
        newton_steps: int = 5,
        num_tasks: int | None = None,
        placement: Placement = "auto",
    ) -> None:
        super().__init__()
        self.placement = check_placement(placement)
        if max_norm < 0:
            raise ValueError(f"max_norm must be non-negative, got {max_norm}")
        if update_weights_every < 1:
            raise ValueError(f"update_weights_every must be positive, got {update_weights_every}")
        if optim_niter < 1:
            raise ValueError(f"optim_niter must be positive, got {optim_niter}")
        if solver not in ("ccp", "direct"):
            raise ValueError(f"solver must be 'ccp' or 'direct', got {solver!r}")
        if task_specific not in ("weights", "ones"):
            raise ValueError(f"task_specific must be 'weights' or 'ones', got {task_specific!r}")
        self.max_norm = float(max_norm)
        self.update_weights_every = int(update_weights_every)
        self.optim_niter = int(optim_niter)
        self.solver: Solver = solver
        self.tol = float(tol)
        self.task_specific: TaskSpecific = task_specific
        self.newton_iters = int(newton_iters)
        self.barrier_stages = barrier_stages
        self.newton_steps = int(newton_steps)
        self._init_task_state(num_tasks)

    def _allocate(self, num_tasks: int, device: torch.device | None) -> None:
        self.alpha = torch.ones(num_tasks, device=device)
        self.seen = torch.zeros(num_tasks, dtype=torch.bool, device=device)
        self.last_present = torch.zeros(num_tasks, dtype=torch.bool, device=device)

    def _needs_update(self, step: TaskStep, present: Tensor) -> bool:
        assert self.last_present is not None
        if step.step % self.update_weights_every == 0:
            return True
        # Also recompute when the present tasks differ from the last computation's.
        return not torch.equal(present, self.last_present)  # one host sync, only when k > 1

    def unclipped_weights(self, gramian: Tensor, step: TaskStep) -> Tensor:
        """``α`` of the present tasks (recomputed or reused), before norm clipping."""
        self._bind_to_step(step)
        assert self.alpha is not None and self.seen is not None
        if self.alpha.device != gramian.device or (
            gramian.dtype == torch.float64 and self.alpha.dtype != torch.float64
        ):
            dtype = torch.float64 if gramian.dtype == torch.float64 else self.alpha.dtype
            self.alpha = self.alpha.to(device=gramian.device, dtype=dtype)
            self.seen = self.seen.to(gramian.device)
            self.last_present = self.last_present.to(gramian.device)  # type: ignore[union-attr]
        tasks = step.tasks.to(gramian.device)
        present = torch.zeros_like(self.seen).index_fill(0, tasks, True)
        if not self._needs_update(step, present):
            return self.alpha.index_select(0, tasks).to(gramian.dtype)
        seen = self.seen.index_select(0, tasks)
        prev = self.alpha.index_select(0, tasks).to(gramian.dtype)
        own = gramian.diagonal().clamp_min(torch.finfo(gramian.dtype).tiny).rsqrt()

        def solve(k: Tensor, start: Tensor) -> Tensor:
            return nash_mtl_weights(
                k,
                start,
                self.solver,
                self.optim_niter,
                self.tol,
                self.newton_iters,
                self.barrier_stages,
                self.newton_steps,
            )

        alpha = placed(self.placement, solve, gramian, torch.where(seen, prev, own))
        self.alpha[tasks] = alpha.to(self.alpha.dtype)
        self.seen[tasks] = True
        self.last_present = present
        return alpha

    def gramian_weights(self, gramian: Tensor, step: TaskStep) -> Tensor:
        return self._clip(gramian, self.unclipped_weights(gramian, step))

    def _clip(self, gramian: Tensor, alpha: Tensor) -> Tensor:
        if self.max_norm <= 0:
            return alpha
        norm = (alpha @ gramian @ alpha).clamp_min(0).sqrt()
        scale = (self.max_norm / norm.clamp_min(torch.finfo(norm.dtype).tiny)).clamp(max=1.0)
        return alpha * scale

    def forward(self, step: TaskStep) -> Aggregation:
        if step.gramian is None:
            raise ValueError("Nash-MTL needs the Gramian of the task gradients")
        alpha = self.unclipped_weights(step.gramian, step)
        specific = (
            alpha.to(step.losses.dtype)
            if self.task_specific == "weights"
            else torch.ones_like(step.losses)
        )
        return Aggregation(weights=self._clip(step.gramian, alpha), task_specific_weights=specific)

    def reset(self) -> None:
        """Forget the weights of previous steps."""
        if self.seen is not None:
            self.seen.zero_()
            self.last_present.zero_()  # type: ignore[union-attr]
            self.alpha.fill_(1.0)  # type: ignore[union-attr]

    def device_syncs(self) -> int | None:
        return 0 if self.tol == 0 else None  # tol > 0: convergence tests read on the host

    def extra_repr(self) -> str:
        return (
            f"max_norm={self.max_norm}, update_weights_every={self.update_weights_every}, "
            f"optim_niter={self.optim_niter}, solver={self.solver!r}"
        )
