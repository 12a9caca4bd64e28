"""Mean, standard deviation and Student-t confidence intervals over seeds, medians and
interquartile ranges (no SciPy needed).

For ``n`` values with mean ``x̄`` and sample standard deviation ``s`` (``n − 1`` in the
denominator), the two-sided ``level`` confidence interval of the mean is

    x̄ ± t_{(1+level)/2, n−1} · s / √n,

with ``t_{p, ν}`` the ``p``-quantile of Student's t distribution with ``ν`` degrees of freedom. The
quantile is computed here from the t CDF, ``F(t) = 1 − ½ I_{ν/(ν+t²)}(ν/2, ½)`` for ``t ≥ 0``
(``I`` the regularized incomplete beta function, by its continued fraction), inverted by bisection
to full double precision. With one value the standard deviation and the interval are undefined
(None).

A metric with a possible range (an accuracy in [0, 1], an error ≥ 0) can have an interval that
leaves it (0.99 ± 0.02 → high 1.01): :func:`clip_ci` cuts the ends to the range and marks the
summary ``clipped``. The mean and the standard deviation are kept as computed.

:func:`median_iqr`: the median and the first and third quartiles, by linear interpolation between
order statistics (quantile ``q`` at position ``q·(n − 1)`` of the sorted values, NumPy's default)
— for timings and memory, whose spread over seeds is skewed by a slow or loaded run.

Example (three seeds; t_{0.975, 2} = 4.302653):
    >>> ci = mean_ci([0.90, 0.92, 0.94])
    >>> round(ci.mean, 6), round(ci.std, 6), round(ci.half_width, 6)
    (0.92, 0.02, 0.049683)
    >>> round(t_quantile(0.975, 2), 6)
    4.302653
    >>> acc = clip_ci(mean_ci([0.98, 1.0, 1.0]), 0.0, 1.0)
    >>> round(acc.low, 6), acc.high, acc.clipped
    (0.964649, 1.0, True)
    >>> median_iqr([10.0, 12.0, 11.0, 30.0])
    MedianIQR(n=4, median=11.5, q1=10.75, q3=16.5)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

__all__ = ["MeanCI", "MedianIQR", "clip_ci", "mean_ci", "median_iqr", "t_cdf", "t_quantile"]


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
    clipped: bool = False
    """Whether :func:`clip_ci` moved an end of the interval to the metric's range."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mean_ci(values: Sequence[float], level: float = 0.95) -> MeanCI:
    """Mean ± t-interval of ``values`` (NaN and None are dropped; see the module docstring)."""
    xs = _values(values)
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


def _values(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and not math.isnan(float(v))]


def clip_ci(ci: MeanCI, low: float | None = None, high: float | None = None) -> MeanCI:
    """``ci`` with the interval's ends cut to ``[low, high]`` (None: unbounded on that side);
    ``clipped`` is set when an end moved (see the module docstring)."""
    if ci.low is None or ci.high is None:
        return ci
    lo = ci.low if low is None else max(ci.low, low)
    hi = ci.high if high is None else min(ci.high, high)
    if lo == ci.low and hi == ci.high:
        return ci
    return replace(ci, low=lo, high=hi, clipped=True)


@dataclass(frozen=True)
class MedianIQR:
    """Median and quartiles of ``n`` values (see :func:`median_iqr`)."""

    n: int
    median: float
    q1: float
    q3: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _quantile(xs: Sequence[float], q: float) -> float:
    pos = q * (len(xs) - 1)
    i = math.floor(pos)
    j = min(i + 1, len(xs) - 1)
    return xs[i] + (xs[j] - xs[i]) * (pos - i)


def median_iqr(values: Sequence[float | None]) -> MedianIQR:
    """Median and first/third quartiles of ``values`` (NaN and None dropped; linear
    interpolation, see the module docstring)."""
    xs = sorted(_values(values))
    if not xs:
        raise ValueError("median_iqr needs at least one value")
    return MedianIQR(len(xs), _quantile(xs, 0.5), _quantile(xs, 0.25), _quantile(xs, 0.75))
