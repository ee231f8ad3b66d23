"""The removed samples' labels, read from the output layer's update."""

from __future__ import annotations

import torch


def _output_layer(delta: dict[str, torch.Tensor], num_classes: int) -> tuple[str | None, str | None]:
    """Names of the output layer's bias and weight: the last parameters shaped
    [C] and [C, h]."""
    bias = weight = None
    for name, d in delta.items():
        if d.dim() == 1 and d.shape[0] == num_classes:
            bias = name
        elif d.dim() == 2 and d.shape[0] == num_classes:
            weight = name
    return bias, weight


def _label_scores(delta: dict[str, torch.Tensor], num_classes: int) -> torch.Tensor:
    """Per class, the output bias's change (or the weight rows' summed change): about −(1 − p_y) per removed
    sample of class y, positive where no removed sample is."""
    bias, weight = _output_layer(delta, num_classes)
    if bias is not None:
        return delta[bias].double()
    if weight is not None:
        return delta[weight].double().sum(1)
    raise ValueError("analytic labels need an output layer with `num_classes` outputs")


def analytic_labels(delta: dict[str, torch.Tensor], num_classes: int, k: int) -> torch.Tensor:
    """Labels read from the output layer's update.

    With Δ ∝ Σ_X ∇CE, the output bias moves by Σ_i (p_i − e_{y_i}): negative
    exactly at the removed samples' classes (for k = 1, the unique negative
    entry), positive elsewhere. Without a bias, the rows of ΔW = Σ_i (p_i −
    e_{y_i}) h_iᵀ with h ≥ 0 (ReLU features) give the same signs by row sum.

    For k > 1, the k most negative classes when at least k are negative;
    otherwise repeats are allowed: k is split over the negative classes in
    proportion to their magnitude (largest remainder, at least one each),
    since each sample of a class contributes about −(1 − p_y) to its entry.
    Where no entry is negative, all k go to the lowest class.
    """
    score = _label_scores(delta, num_classes)
    order = torch.argsort(score)
    negative = order[score[order] < 0]
    if len(negative) == 0:
        negative = order[:1]
    if len(negative) >= k:
        return order[:k].sort().values.long()
    mags = (-score[negative]).clamp(min=0).nan_to_num(0.0)
    # No class moved down (a zero or defended Δ): split k evenly over the fallback class(es).
    mags = mags / mags.sum() if mags.sum() > 0 else torch.full_like(mags, 1 / len(mags))
    counts = torch.ones(len(negative), dtype=torch.long)
    extra = k - len(negative)
    share = mags * extra
    counts += share.floor().long()
    remainder = share - share.floor()
    for i in torch.argsort(remainder, descending=True)[: k - int(counts.sum())]:
        counts[i] += 1
    return torch.repeat_interleave(negative, counts).sort().values.long()


def analytic_residuals(delta: dict[str, torch.Tensor], k: int) -> torch.Tensor:
    """A regressor's removed samples' residuals r = f(x) − y, up to the update's scale: the single
    output's bias moves by c·Σ_X 2r_i, so each of the k samples gets the mean share (for k = 1 the
    residual itself, times 2c)."""
    bias, _ = _output_layer(delta, 1)
    if bias is None:
        raise ValueError("regression's feature recovery reads the output bias's update; the model has none")
    return (delta[bias].double().reshape(()) / k).repeat(k)
