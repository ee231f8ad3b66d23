"""Scores of a binary attack (membership): AUC, balanced accuracy and TPR at a
fixed FPR (Carlini et al. 2022's low-FPR reading), each with a stratified
bootstrap interval, and the ROC points."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

# FPRs at which the TPR is read, and their key suffixes.
LOW_FPR = {0.01: "1pct", 0.001: "0.1pct"}


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann–Whitney, ties counted half); higher scores mean positive."""
    pos = labels.astype(bool)
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def tpr_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr: float) -> float:
    """The highest TPR of any threshold whose FPR is at most `fpr` (0 when even the strictest threshold
    passes more negatives): with n negatives, FPRs below 1/n mean no false positive at all."""
    pos = labels.astype(bool)
    neg_sorted = np.sort(scores[~pos])[::-1]
    allowed = int(np.floor(fpr * len(neg_sorted) + 1e-9))  # false positives the FPR admits
    # threshold strictly above the (allowed+1)-th highest negative score
    bar = neg_sorted[allowed] if allowed < len(neg_sorted) else -np.inf
    return float((scores[pos] > bar).mean()) if pos.any() else float("nan")


def balanced_accuracy(labels: np.ndarray, decisions: np.ndarray) -> float:
    """Mean of the TPR and the TNR of hard decisions."""
    pos = labels.astype(bool)
    return float((decisions[pos].mean() + (~decisions[~pos]).mean()) / 2)


def _point(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    out = {"auc": auc(labels, scores), "balanced_accuracy": balanced_accuracy(labels, scores > threshold)}
    out.update({f"tpr_at_{name}_fpr": tpr_at_fpr(labels, scores, f) for f, name in LOW_FPR.items()})
    return out


def summary(labels: np.ndarray, scores: np.ndarray, threshold: float, resamples: int = 1000, seed: int = 0,
            level: float = 0.95) -> dict[str, float]:
    """AUC, balanced accuracy (decision: score > threshold) and TPR at each LOW_FPR, each with a
    percentile interval over `resamples` stratified bootstrap resamples (positives and negatives
    resampled apart, seeded); 0 resamples: the points alone."""
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    out = _point(labels, scores, threshold)
    if resamples <= 0:
        return out
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(labels), np.flatnonzero(~labels)
    draws = {k: [] for k in out}
    for _ in range(resamples):
        idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        for k, v in _point(labels[idx], scores[idx], threshold).items():
            draws[k].append(v)
    tail = (1 - level) / 2 * 100
    for k, values in draws.items():
        low, high = np.nanpercentile(values, [tail, 100 - tail])
        out[f"{k}_ci95_low"], out[f"{k}_ci95_high"] = float(low), float(high)
    return out


def curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) at every distinct threshold, from (0, 0) to (1, 1)."""
    labels = np.asarray(labels, dtype=bool)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    s, y = np.asarray(scores)[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each run of equal scores
    tp, fp = np.cumsum(y)[last], np.cumsum(~y)[last]
    return np.r_[0.0, fp / max(1, (~y).sum())], np.r_[0.0, tp / max(1, y.sum())]
