"""The NeurIPS 2023 Machine Unlearning Challenge's per-example ε and forget score (Triantafillou et al.,
google-deepmind/unlearning_evaluation, metric.py), written from its definition, on the CPU in numpy.

For each forget example, its logit-scaled confidence under M unlearned and M retrained models gives two
samples; a family of decision rules (one threshold; two thresholds around the peakier sample) tells them
apart with error rates (FPR, FNR), each rule an (ε, δ) estimate, and ε is the largest, capped. The forget
score sums 2^-b over the examples' ε buckets b of width 0.5, over the forget set's size.

Where the definition leaves a case open this module decides it, and says so: a rule grid on which no rule
survives (both samples one and the same point, or apart by less than the grid's step) gives ε = 0
(metric.py stops on an assertion there; as published, its `assert` on a numpy array of more than one
surviving rule raises too, read here as "at least one rule survives"), and the thresholds are float64
(metric.py's single-threshold grid is float32)."""

from __future__ import annotations

import math

import numpy as np

DELTA = 1e-5
EPSILON_CAP = 50.0
THRESHOLDS_PER_UNIT = 100  # rule grid: thresholds per unit of logit-scaled confidence
BUFFER = 2.0  # the double-threshold grid reaches this far beyond the peakier sample
PEAKY = 0.01  # one sample's range below this share of the other's: ε at the cap without a test
BUCKET = 0.5


def logit_confidence(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """log p_y − log(1 − p_y) of each row's true class y, in float64 (p: the softmax), with metric.py's 1e-45
    floor inside both logs."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    rows = np.arange(len(p))
    correct = p[rows, targets].copy()
    p[rows, targets] = 0.0
    return np.log(correct + 1e-45) - np.log(p.sum(axis=-1) + 1e-45)


def _inside(sorted_c: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Share of sorted_c in [left, right], per rule."""
    count = np.searchsorted(sorted_c, right, "right") - np.searchsorted(sorted_c, left, "left")
    return np.maximum(count, 0) / len(sorted_c)


def _at_or_above(sorted_c: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Share of sorted_c ≥ t, per rule."""
    return (len(sorted_c) - np.searchsorted(sorted_c, t, "left")) / len(sorted_c)


def _single_rates(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(TPR, FPR) of "≥ t is positive" for t on the grid over both samples' span."""
    low, high = min(pos[0], neg[0]), max(pos[-1], neg[-1])
    t = np.linspace(low, high, int(math.ceil((high - low) * THRESHOLDS_PER_UNIT)))
    return _at_or_above(pos, t), _at_or_above(neg, t)


def _double_rates(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(TPR, FPR) of "inside [l, r] is positive", positive the peakier sample (the smaller range; on a tie the
    second): r on a grid from its minimum + its width − BUFFER to its maximum + BUFFER, l on a grid of
    2·BUFFER around r − width."""
    if pos[-1] - pos[0] >= neg[-1] - neg[0]:
        pos, neg = neg, pos
    width = pos[-1] - pos[0]
    low, high = pos[0] + width - BUFFER, pos[-1] + BUFFER
    right = np.linspace(low, high, int(math.ceil((high - low) * THRESHOLDS_PER_UNIT)))
    per = int(math.ceil(2 * BUFFER * THRESHOLDS_PER_UNIT))
    left = np.linspace(right - width - BUFFER, right - width + BUFFER, per, axis=1).reshape(-1)
    right = np.repeat(right, per)
    return _inside(pos, left, right), _inside(neg, left, right)


def rule_epsilons(tpr: np.ndarray, fpr: np.ndarray, delta: float = DELTA) -> np.ndarray:
    """Each rule's ε: inf where it separates perfectly (FPR = FNR = 0), nan (no estimate: too few samples)
    where exactly one of FPR, FNR is 0, else max(log((1−δ−FPR)/FNR), log((1−δ−FNR)/FPR)) floored at 0."""
    fnr = 1.0 - tpr
    out = np.full(len(tpr), np.nan)
    perfect = (fpr == 0) & (fnr == 0)
    both = (fpr > 0) & (fnr > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        a = np.log(1 - delta - fpr[both]) - np.log(fnr[both])
        b = np.log(1 - delta - fnr[both]) - np.log(fpr[both])
    out[both] = np.maximum(np.fmax(a, b), 0.0)  # fmax: a log of a negative number is left out, as nanmax does
    out[perfect] = np.inf
    return out


def example_epsilon(pos: np.ndarray, neg: np.ndarray, delta: float = DELTA) -> float:
    """ε of one example from its two samples of confidences (one per model), in [0, EPSILON_CAP]."""
    pos, neg = np.sort(np.asarray(pos, np.float64)), np.sort(np.asarray(neg, np.float64))
    ranges = sorted((pos[-1] - pos[0], neg[-1] - neg[0]))
    if ranges[1] > 0 and ranges[0] / ranges[1] < PEAKY:
        return EPSILON_CAP
    rates = [_double_rates(pos, neg), _single_rates(pos, neg)]
    eps = rule_epsilons(np.concatenate([r[0] for r in rates]), np.concatenate([r[1] for r in rates]), delta)
    eps = eps[~np.isnan(eps)]
    return float(min(eps.max(), EPSILON_CAP)) if len(eps) else 0.0


def epsilons(unlearned: np.ndarray, retrained: np.ndarray, delta: float = DELTA) -> np.ndarray:
    """Per-example ε from confidences of shape [models, examples]: per example, the positive sample is the one
    whose median is larger (the retrained one where strictly larger)."""
    unlearned, retrained = np.asarray(unlearned, np.float64), np.asarray(retrained, np.float64)
    if unlearned.ndim != 2 or retrained.ndim != 2 or unlearned.shape[1] != retrained.shape[1]:
        raise ValueError(f"confidences must be [models, examples] alike, got {unlearned.shape} and {retrained.shape}")
    retrained_positive = np.median(retrained, 0) > np.median(unlearned, 0)
    return np.array([example_epsilon(r, u, delta) if rp else example_epsilon(u, r, delta)
                     for u, r, rp in zip(unlearned.T, retrained.T, retrained_positive)])


def bucket_points(models: int) -> list[float]:
    """Points of each ε bucket [b/2, (b+1)/2): 2^-b, for the buckets ending at or below ⌈log(M − 1)⌉, the
    largest ε that M models per side can show short of perfect separation; ε beyond scores 0."""
    top = math.ceil(math.log(models - 1))
    return [2.0 ** -b for b in range(int(top / BUCKET))]


def forget_score(eps: np.ndarray, models: int) -> float:
    """Σ over examples of their bucket's points, over the number of examples: 1 when every ε < 0.5."""
    points = bucket_points(models)
    index = np.floor(np.asarray(eps) / BUCKET).astype(int)
    return float(sum(points[i] for i in index if i < len(points)) / len(eps))


def final_score(forget: float, unlearned_retain: float, retrained_retain: float, unlearned_test: float,
                retrained_test: float) -> float:
    """metric.py's utility-adjusted score: the forget score × the ratios of the mean retain and test accuracies
    of the unlearned models to the retrained ones'."""
    return forget * (unlearned_retain / retrained_retain) * (unlearned_test / retrained_test)
