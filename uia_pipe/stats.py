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


def ratio_of_means(numerators: list[float], denominators: list[float], resamples: int = 1000, seed: int = 0,
                   level: float = 0.95) -> tuple[float, float, float]:
    """(Σ numerators / Σ denominators, low, high): a ratio pooled over paired values (e.g. requests) rather
    than the mean of per-pair ratios, which pairs with a denominator near 0 would swamp; its percentile interval
    over `resamples` bootstrap resamples of the pairs (seeded; resamples whose denominator sums to 0 left
    out). nan where the denominators sum to 0; the interval nan without resamples or pairs."""
    import numpy as np

    num, den = np.asarray(numerators, dtype=np.float64), np.asarray(denominators, dtype=np.float64)
    if len(num) != len(den):
        raise ValueError(f"ratio_of_means: {len(num)} numerators for {len(den)} denominators")
    point = float(num.sum() / den.sum()) if len(den) and den.sum() != 0 else float("nan")
    if resamples <= 0 or not len(num) or not math.isfinite(point):
        return point, float("nan"), float("nan")
    idx = np.random.default_rng(seed).integers(0, len(num), size=(resamples, len(num)))
    sums_n, sums_d = num[idx].sum(1), den[idx].sum(1)
    kept = sums_d != 0
    if not kept.any():
        return point, float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(sums_n[kept] / sums_d[kept], [tail, 100 - tail])
    return point, float(low), float(high)
