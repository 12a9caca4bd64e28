"""Mean, standard deviation and Student-t confidence intervals over seeds (no SciPy needed).

For ``n`` values with mean ``x̄`` and sample standard deviation ``s`` (``n − 1`` in the
denominator), the two-sided ``level`` confidence interval of the mean is

    x̄ ± t_{(1+level)/2, n−1} · s / √n,

with ``t_{p, ν}`` the ``p``-quantile of Student's t distribution with ``ν`` degrees of freedom. The
quantile is computed here from the t CDF, ``F(t) = 1 − ½ I_{ν/(ν+t²)}(ν/2, ½)`` for ``t ≥ 0``
(``I`` the regularized incomplete beta function, by its continued fraction), inverted by bisection
to full double precision. With one value the standard deviation and the interval are undefined
(None).

Example (three seeds; t_{0.975, 2} = 4.302653):
    >>> ci = mean_ci([0.90, 0.92, 0.94])
    >>> round(ci.mean, 6), round(ci.std, 6), round(ci.half_width, 6)
    (0.92, 0.02, 0.049683)
    >>> round(t_quantile(0.975, 2), 6)
    4.302653
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["MeanCI", "mean_ci", "t_cdf", "t_quantile"]


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-16
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta ``I_x(a, b)``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """CDF of Student's t distribution with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p``-quantile of Student's t distribution (``0 < p < 1``)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must lie in (0, 1), got {p}")
    if p == 0.5:
        return 0.0
    if abs(p - 0.5) < 1e-7:
        # The cdf cannot resolve p − ½ this small; the quantile is (p − ½)/f(0) to O((p − ½)³),
        # f(0) = Γ((ν+1)/2) / (√(νπ) Γ(ν/2)) the density at 0.
        log_f0 = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
        return (p - 0.5) / math.exp(log_f0)
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    hi = 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    lo = 0.0
    for _ in range(200):  # bisection to the last bit
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class MeanCI:
    """Summary of ``n`` values: mean, sample std, and the t confidence interval of the mean."""

    n: int
    mean: float
    std: float | None
    half_width: float | None
    low: float | None
    high: float | None
    level: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mean_ci(values: Sequence[float], level: float = 0.95) -> MeanCI:
    """Mean ± t-interval of ``values`` (NaN and None are dropped; see the module docstring)."""
    xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not xs:
        raise ValueError("mean_ci needs at least one value")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    n = len(xs)
    mean = math.fsum(xs) / n
    if n == 1:
        return MeanCI(1, mean, None, None, None, None, level)
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile(0.5 + level / 2.0, n - 1) * std / math.sqrt(n)
    return MeanCI(n, mean, std, half, mean - half, mean + half, level)
