"""Mean ± Student-t confidence intervals on known numbers, and the t quantile against SciPy."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradsurgery.runtime.stats import MedianIQR, clip_ci, mean_ci, median_iqr, t_cdf, t_quantile


def test_known_numbers() -> None:
    # 1..5: mean 3, s² = (4+1+0+1+4)/4 = 2.5, t_{0.975,4} = 2.7764451, half = t·√2.5/√5 = t/√2
    ci = mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    assert ci.n == 5 and ci.mean == 3.0
    assert ci.std == pytest.approx(math.sqrt(2.5), rel=1e-15)
    assert ci.half_width == pytest.approx(2.7764451051977987 / math.sqrt(2), rel=1e-9)
    assert ci.low == pytest.approx(3.0 - ci.half_width) and ci.high == pytest.approx(
        3.0 + ci.half_width
    )


def test_two_values_and_other_levels() -> None:
    # n = 2: t_{0.975,1} = 12.7062047, s = |a − b|/√2, half = t·s/√2 = t·|a − b|/2
    ci = mean_ci([0.8, 0.9])
    assert ci.half_width == pytest.approx(12.706204736174698 * 0.1 / 2, rel=1e-9)
    # 90 %: t_{0.95,2} = 2.9199856
    ci90 = mean_ci([1.0, 2.0, 6.0], level=0.90)
    assert ci90.half_width == pytest.approx(2.919985580355516 * ci90.std / math.sqrt(3), rel=1e-9)


def test_one_value_has_no_interval_and_nan_is_dropped() -> None:
    ci = mean_ci([0.7, float("nan"), None])  # type: ignore[list-item]
    assert ci.n == 1 and ci.mean == 0.7 and ci.std is None and ci.half_width is None
    with pytest.raises(ValueError):
        mean_ci([])


def test_t_quantile_table_values() -> None:
    table = {1: 12.706204736, 2: 4.302652730, 5: 2.570581836, 10: 2.228138852, 30: 2.042272456}
    for df, value in table.items():
        assert t_quantile(0.975, df) == pytest.approx(value, abs=1e-8)
    assert t_quantile(0.5, 3) == 0.0
    assert t_quantile(0.025, 5) == pytest.approx(-2.570581836, abs=1e-8)


@settings(max_examples=60, deadline=None)
@given(
    p=st.floats(min_value=0.001, max_value=0.999),
    df=st.one_of(st.integers(min_value=1, max_value=200), st.floats(min_value=0.5, max_value=50)),
)
def test_t_quantile_matches_scipy(p: float, df: float) -> None:
    stats = pytest.importorskip("scipy.stats")
    assert t_quantile(p, df) == pytest.approx(float(stats.t.ppf(p, df)), rel=1e-8, abs=1e-10)
    assert t_cdf(t_quantile(p, df), df) == pytest.approx(p, abs=1e-10)


def test_clip_ci_cuts_the_interval_to_the_range() -> None:
    ci = mean_ci([0.99, 1.0, 0.97])  # high = 0.9867 + 4.30 · 0.0153 / √3 > 1
    assert ci.high is not None and ci.high > 1.0
    clipped = clip_ci(ci, 0.0, 1.0)
    assert clipped.high == 1.0 and clipped.low == ci.low and clipped.clipped
    assert clipped.mean == ci.mean and clipped.std == ci.std
    inside = clip_ci(mean_ci([0.5, 0.6, 0.55]), 0.0, None)
    assert not inside.clipped
    one = mean_ci([2.0])
    assert clip_ci(one, 0.0, 1.0) is one  # no interval to clip


def test_median_iqr_linear_interpolation() -> None:
    assert median_iqr([3.0]) == MedianIQR(1, 3.0, 3.0, 3.0)
    m = median_iqr([4.0, 1.0, 2.0, 3.0, 100.0, None])  # type: ignore[list-item]
    assert (m.n, m.median, m.q1, m.q3) == (5, 3.0, 2.0, 4.0)
    np = pytest.importorskip("numpy")
    xs = [0.3, 9.0, 1.5, 2.25, 7.0, 7.5]
    m = median_iqr(xs)
    assert (m.q1, m.median, m.q3) == pytest.approx(tuple(np.percentile(xs, [25, 50, 75])))
    with pytest.raises(ValueError):
        median_iqr([])
