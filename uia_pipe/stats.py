"""Intervals for the numbers we publish: means over requests, proportions,
and paired comparisons of two methods on the same requests."""

from __future__ import annotations

import math
import warnings

from scipy import stats as _stats


def mean_ci(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """(mean, half-width of the Student-t interval); half-width is nan for
    fewer than two values, 0 when they are all equal."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    if math.isfinite(values[0]) and all(v == values[0] for v in values):
        # No spread: the interval is the point (scipy would warn of precision loss).
        return mean, 0.0
    with warnings.catch_warnings():
        # Nearly equal values make scipy warn of precision loss; the interval stays valid.
        warnings.simplefilter("ignore", RuntimeWarning)
        ci = _stats.ttest_1samp(values, 0.0).confidence_interval(confidence_level=level)
    return mean, float(ci.high - ci.low) / 2


def wilson_ci(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval (low, high) for a proportion; (nan, nan) for n = 0."""
    if n == 0:
        return float("nan"), float("nan")
    ci = _stats.binomtest(successes, n).proportion_ci(confidence_level=level, method="wilson")
    return max(0.0, float(ci.low)), min(1.0, float(ci.high))


def sign_test(more: int, less: int) -> float:
    """Two-sided exact sign test on paired outcomes: `more` pairs favour the
    first of two methods, `less` the second, ties left out; 1.0 without any."""
    n = more + less
    return 1.0 if n == 0 else float(_stats.binomtest(more, n, 0.5).pvalue)
