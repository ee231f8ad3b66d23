"""Intervals for the numbers we publish: means over requests, proportions,
and paired comparisons of two methods on the same requests."""

from __future__ import annotations

import math

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
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, float(_stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n))


def wilson_ci(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval (low, high) for a proportion; (nan, nan) for n = 0."""
    if n == 0:
        return float("nan"), float("nan")
    z = float(_stats.norm.ppf(0.5 + level / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def sign_test(more: int, less: int) -> float:
    """Two-sided exact sign test on paired outcomes: `more` pairs favour the
    first of two methods, `less` the second, ties left out; 1.0 without any."""
    n = more + less
    return 1.0 if n == 0 else float(_stats.binomtest(more, n, 0.5).pvalue)
