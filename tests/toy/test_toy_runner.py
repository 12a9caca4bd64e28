"""The toy runner: PCGrad's Figure 1 claim, an independent Adam+PCGrad reference, determinism,
diagnostics, and the autograd fallback."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from gradsurgery.diagnostics import cosine_matrix, magnitude_similarity
from gradsurgery.methods.base import LossWeighting, TaskStep
from gradsurgery.toy.landscapes import Landscape, get_landscape, pcgrad_figure1_point
from gradsurgery.toy.runner import run_toy


# ------------------------------------------------------------------ Figure 1
def test_figure1_claim_fast_budget():
    """Adam stalls in task 1's valley; Adam+PCGrad reaches the region where both losses are low.

    Budget: 2,000 steps at lr 0.07 (about 1.5 s of CPU for "sum" and 3.5 s for "pcgrad" here).
    Measured on this run (deterministic for the build): sum ends at θ ≈ (0.84, −3.75) with
    L1 ≈ −10.9, L2 ≈ 30.7 and L2 never below 29.4; pcgrad ends at θ ≈ (−2.61, 3.67) with
    L1 ≈ −23.7, L2 ≈ −29.8, both below −20 first at step 579. With so few steps the lr has to be
    large and the path is chaotic: in a float-level perturbation study (60 starts within 1e-6 of
    (0.5, −3)) "sum" stayed above L2 = 27 in every run, while PCGrad ended with both losses < 0 in
    75% of them. So the thresholds below are loose (L2 > 25 for "sum"; < −10 for PCGrad) and the
    robust version of the claim is :func:`test_figure1_claim_quick_preset`.
    """
    kw = {"steps": 2000, "lr": 0.07, "record_every": 10}
    plain = run_toy("pcgrad_figure1", "sum", **kw)
    pc = run_toy("pcgrad_figure1", "pcgrad", **kw)

    l1, l2 = plain.final_losses
    assert l1 < 0 < 25 < l2  # one valley: task 1 solved, task 2 not
    assert plain.losses[:, 1].min() > 25  # never left task 1's side
    assert plain.first_hit_step is None
    assert plain.final_theta[1] < -1  # still in the lower half, far from where the valleys meet

    p1, p2 = pc.final_losses
    assert p1 < -10 and p2 < -10
    assert pc.first_hit_step is not None
    assert pc.final_theta[1] > 1  # crossed to where the valleys meet (θ1 → −2, θ2 → +∞)
    assert pc.final_loss < plain.final_loss - 30


@pytest.mark.skipif(
    os.environ.get("GRADSURGERY_SLOW_TESTS") != "1",
    reason="about a minute of CPU; set GRADSURGERY_SLOW_TESTS=1",
)
def test_figure1_claim_quick_preset():
    """The CLI's quick preset (15,000 steps at lr 0.02). Measured: "sum" ends with L2 ≈ 35 and
    PCGrad with both losses below −20; in a perturbation study (24 starts within 1e-6) PCGrad ended
    with both losses below −24 and "sum" with L2 > 32 in every run."""
    steps, lr = get_landscape("pcgrad_figure1").budgets["quick"]
    plain = run_toy("pcgrad_figure1", "sum", steps=steps, lr=lr)
    pc = run_toy("pcgrad_figure1", "pcgrad", steps=steps, lr=lr)
    assert plain.final_losses[0] < 0 and plain.final_losses[1] > 30
    assert plain.first_hit_step is None
    assert pc.final_losses[0] < -15 and pc.final_losses[1] < -15
    assert pc.first_hit_step is not None


# ------------------------------------------------------------------ independent reference
def _reference(method: str, steps: int, lr: float, start=(0.5, -3.0)) -> list[tuple[float, float]]:
    """Adam (β = 0.9, 0.999, ε = 1e-8) with PCGrad on two gradients, in plain Python floats."""
    b1, b2, eps = 0.9, 0.999, 1e-8
    x, m, v, out = list(start), [0.0, 0.0], [0.0, 0.0], [tuple(start)]
    for s in range(1, steps + 1):
        _, (g1, g2) = pcgrad_figure1_point(*x)
        d = g1[0] * g2[0] + g1[1] * g2[1]
        if method == "pcgrad" and d < 0:
            n1 = g1[0] ** 2 + g1[1] ** 2
            n2 = g2[0] ** 2 + g2[1] ** 2
            p1 = [g1[k] - d / n2 * g2[k] for k in range(2)]
            p2 = [g2[k] - d / n1 * g1[k] for k in range(2)]
            g = [p1[k] + p2[k] for k in range(2)]
        else:
            g = [g1[k] + g2[k] for k in range(2)]
        for k in range(2):
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v[k] = b2 * v[k] + (1 - b2) * g[k] ** 2
            x[k] -= lr * (m[k] / (1 - b1**s)) / (math.sqrt(v[k] / (1 - b2**s)) + eps)
        out.append((x[0], x[1]))
    return out


@pytest.mark.parametrize("method", ["sum", "pcgrad"])
def test_matches_independent_adam_reference(method):
    # At the paper's lr the two agree to rounding (measured ≤ 2e-15 over 300 steps); at larger lr
    # the valley floors amplify rounding differences chaotically, so the check uses lr 1e-3.
    res = run_toy("pcgrad_figure1", method, steps=300, lr=1e-3, record_every=1)
    ref = np.asarray(_reference(method, 300, 1e-3))
    assert res.record_steps.tolist() == list(range(301))
    np.testing.assert_allclose(res.trajectory, ref, rtol=0, atol=1e-12)


def test_pcgrad_path_differs_from_plain_adam():
    # The gradients conflict from the start (cos φ ≈ −0.999), so the projection is active.
    pc, plain = (
        np.asarray(_reference("pcgrad", 300, 1e-3)),
        np.asarray(_reference("sum", 300, 1e-3)),
    )
    assert np.abs(pc[-1] - plain[-1]).max() > 1e-2


def test_pcgrad_mean_reduction_is_the_same_path_under_adam():
    # Adam is invariant to scaling the gradient by a constant up to its ε (which matters where the
    # projected gradient is tiny): reduction="mean" halves it.
    kw = {"steps": 300, "lr": 1e-3, "record_every": 1}
    a = run_toy("pcgrad_figure1", "pcgrad", **kw)
    b = run_toy("pcgrad_figure1", "pcgrad", method_kwargs={"reduction": "mean"}, **kw)
    np.testing.assert_allclose(a.trajectory, b.trajectory, atol=2e-6)  # measured 3.6e-7
    assert b.method_kwargs == {"reduction": "mean"}


# ------------------------------------------------------------------ determinism and RNG
class _RandomWeights(LossWeighting):
    """Weights drawn from torch's global RNG each step (as RLW does)."""

    def loss_weights(self, step: TaskStep) -> torch.Tensor:
        return torch.rand(step.m, dtype=step.losses.dtype) + 0.5


def test_deterministic_for_a_seed_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    kw = {"steps": 60, "lr": 1e-2, "record_every": 1}
    a = run_toy("pcgrad_figure1", _RandomWeights(), seed=3, **kw)
    b = run_toy("pcgrad_figure1", _RandomWeights(), seed=3, **kw)
    c = run_toy("pcgrad_figure1", _RandomWeights(), seed=4, **kw)
    assert torch.equal(torch.get_rng_state(), state)
    np.testing.assert_array_equal(a.trajectory, b.trajectory)
    assert not np.array_equal(a.trajectory, c.trajectory)
    assert a.method == "_RandomWeights"
    p = run_toy("pcgrad_figure1", "pcgrad", **kw)
    q = run_toy("pcgrad_figure1", "pcgrad", **kw)
    np.testing.assert_array_equal(p.trajectory, q.trajectory)
    np.testing.assert_array_equal(p.losses, q.losses)


class _LearnedWeights(LossWeighting):
    """A method with a learnable parameter and a regularizer (like uncertainty weighting)."""

    def __init__(self) -> None:
        super().__init__()
        self.log_w = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))

    def forward(self, step: TaskStep):
        agg = super().forward(step)
        from gradsurgery.methods.base import Aggregation

        return Aggregation(
            weights=agg.weights, task_specific_weights=agg.weights, regularizer=self.log_w.sum()
        )

    def loss_weights(self, step: TaskStep) -> torch.Tensor:
        return torch.exp(-self.log_w)


def test_method_parameters_are_optimized():
    method = _LearnedWeights()
    run_toy("pcgrad_figure1", method, steps=20, lr=1e-2)
    assert not torch.equal(method.log_w.detach(), torch.zeros(2, dtype=torch.float64))


# ------------------------------------------------------------------ diagnostics
def test_triad_diagnostics_match_the_library():
    res = run_toy("pcgrad_figure1", "sum", steps=50, lr=1e-2, record_every=1)
    for i in (0, 17, 50):
        _, (g1, g2) = pcgrad_figure1_point(*res.trajectory[i])
        jac = torch.tensor([g1, g2], dtype=torch.float64)
        gram = jac @ jac.T
        assert res.cosine[i] == pytest.approx(cosine_matrix(gram)[0, 1].item(), abs=1e-12)
        assert res.magnitude_similarity[i] == pytest.approx(
            magnitude_similarity(gram)[0, 1].item(), abs=1e-12
        )
    # The start: g1 = (20/u)(0.5, sech²(−3)) with u < 0, g2 = (25/v)(0.5, −sech²(−3)) with v > 0.
    sech2 = 1 - math.tanh(-3.0) ** 2
    cos0 = (0.25 - sech2**2) / (0.25 + sech2**2) * -1  # sign(20/u · 25/v) = −1
    assert res.cosine[0] == pytest.approx(cos0, abs=1e-12)
    s = res.summary
    assert 0 <= s["fraction_condition_a"] <= s["fraction_conflicting"] <= 1
    assert -1 <= s["mean_cosine"] <= 1 and 0 <= s["mean_magnitude_similarity"] <= 1
    assert math.isnan(res.curvature[-1])


def _quadratic_landscape() -> Landscape:
    a1 = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    a2 = torch.tensor([[1.0, -0.3], [-0.3, 3.0]], dtype=torch.float64)
    c2 = torch.tensor([1.0, -2.0], dtype=torch.float64)

    def fn(theta: torch.Tensor) -> torch.Tensor:
        d = theta - c2
        l1 = 0.5 * torch.einsum("...i,ij,...j->...", theta, a1.to(theta.dtype), theta)
        l2 = 0.5 * torch.einsum("...i,ij,...j->...", d, a2.to(theta.dtype), d)
        return torch.stack([l1, l2], dim=-1)

    return Landscape("quadratic", fn, ((3.0, 2.0),), (-4, 4), (-4, 4), "two quadratics"), a1 + a2


def test_curvature_is_exact_on_a_quadratic_and_autograd_fallback_works():
    land, hessian = _quadratic_landscape()
    assert land.point is None  # exercises the autograd path
    res = run_toy(land, "pcgrad", steps=40, lr=5e-2, record_every=1)
    steps = np.diff(res.trajectory, axis=0)
    expected = np.einsum("ti,ij,tj->t", steps, hessian.numpy(), steps)
    np.testing.assert_allclose(res.curvature[:-1], expected, rtol=1e-6, atol=1e-12)
    assert res.landscape == "quadratic"
    assert res.threshold is None and res.first_hit_step is None


# ------------------------------------------------------------------ recording and arguments
def test_recording_and_to_dict():
    res = run_toy("pcgrad_figure1", "pcgrad", steps=25, lr=1e-2, record_every=10, start=(1.0, 0.0))
    assert res.record_steps.tolist() == [0, 10, 20, 25]
    assert res.trajectory.shape == (4, 2) and res.losses.shape == (4, 2)
    assert res.start == (1.0, 0.0) and tuple(res.trajectory[0]) == (1.0, 0.0)
    d = res.to_dict()
    assert d["trajectory_length"] == 4 and "trajectory" not in d
    assert d["final_L"] == pytest.approx(d["final_L1"] + d["final_L2"])
    assert set(d["diagnostics"]) >= {"fraction_conflicting", "mean_curvature"}
    full = res.to_dict(trajectory=True)
    assert len(full["trajectory"]) == 4 and full["curvature"][-1] is None


def test_first_hit_step_and_threshold():
    # Start on the meeting region: both losses are at their floors from step 0.
    res = run_toy("pcgrad_figure1", "sum", steps=3, lr=1e-3, start=(-2.0, 10.0))
    assert res.first_hit_step == 0
    res = run_toy("pcgrad_figure1", "sum", steps=3, lr=1e-3, threshold=-1e9, start=(-2.0, 10.0))
    assert res.first_hit_step is None


def test_cagrad_toy_runs_with_options():
    res = run_toy("cagrad_toy", "pcgrad", steps=20, lr=1e-3, landscape_options={"scale_l1": 0.1})
    assert res.start == (-8.5, 7.5) and res.landscape_options == {"scale_l1": 0.1}
    assert np.isfinite(res.losses).all()


def test_bad_arguments():
    with pytest.raises(KeyError, match="known methods"):
        run_toy("pcgrad_figure1", "no_such_method", steps=1)
    with pytest.raises(KeyError, match="known landscapes"):
        run_toy("nowhere", "sum", steps=1)
    with pytest.raises(TypeError, match="no option"):
        run_toy("pcgrad_figure1", "sum", steps=1, landscape_options={"scale_l1": 1})
    with pytest.raises(ValueError, match="steps"):
        run_toy("pcgrad_figure1", "sum", steps=-1)
    with pytest.raises(ValueError, match="start"):
        run_toy("pcgrad_figure1", "sum", steps=1, start=(math.nan, 0.0))


def test_each_toy_step_ends_an_epoch_so_dwa_differs_from_the_sum():
    """Full-batch steps: the runner signals an epoch boundary after each one, so DWA's weights
    follow the loss rates; without the boundary DWA's weights stay 1 and it traces the sum's path
    bit for bit (checked by hand before the fix). Adam's small steps keep the rates near 1, so the
    paths part by ~1e-7 in 200 steps."""
    dwa = run_toy("pcgrad_figure1", "dwa", steps=200)
    plain = run_toy("pcgrad_figure1", "sum", steps=200)
    assert dwa.final_theta != plain.final_theta
