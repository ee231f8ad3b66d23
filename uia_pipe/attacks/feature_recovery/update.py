"""The observed update Δ, oriented along +Σ_X ∇CE at the point where dummy gradients are taken.

Exact unlearning's Δ = −(a(θ−θ₀) − b(θ_u−θ₀)), with (a, b) named by
`exact_update` (EXACT_UPDATES, which says what each is). For one full-batch
step (N ≤ B, the default N = 32) both give lr·Σ_X ∇CE(θ₀) exactly and are
bit-identical.

With several minibatches neither is exact. To first order in lr (which tracks
the real update closely on Fashion-MNIST), θ−θ₀ = −lr Σ_i g_i/B_i; for N a
multiple of B the retrain's last batch L is k short, so θ_u − θ = (lr/B)(Σ_X g
− (k/(B−k)) Σ_L g). The plain difference (batch_weighted) keeps L's mean
gradient, often larger than a well-fitted sample's own. count_weighted =
N(θ_u−θ) − k(θ_u−θ₀) also subtracts k times the retrain's update, whose
mean-gradient part cancels L's, leaving only L's deviation from the mean.
Neither estimator is closer to Σ_X ∇CE(θ₀) in every setting measured
(benchmarks/exact_leakage.py), but count_weighted is in most, so it stays the
default. Either way a sample leaks only where its gradient outweighs that
residue: misfit samples are still recovered over several minibatches,
well-fitted ones are not. (For N ≤ B what is lost is float32 rounding of the
released weights alone.) The measured numbers: benchmarks/RESULTS.md,
"Feature recovery".
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ...registry import one_of
from ..view import AttackerView
from .config import EXACT_UPDATES


def _named_params(model: nn.Module, visible: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad and (visible is None or n in visible)}


def _count_weighted(view: AttackerView) -> tuple[int, int]:
    return view.n, view.n - view.k


def _batch_weighted(view: AttackerView) -> tuple[int, int]:
    b = view.finetune_batch_size
    if b is None:
        raise ValueError("exact_update 'batch_weighted' needs the fine-tune batch size (finetune_batch_size) "
                         "in the view")
    return min(view.n, b), min(view.n - view.k, b)


# Exact unlearning's Δ = −(a(θ−θ₀) − b(θ_u−θ₀)): each of EXACT_UPDATES -> (a, b) from the view.
_WEIGHTS: dict[str, Callable[[AttackerView], tuple[int, int]]] = {
    "count_weighted": _count_weighted,
    "batch_weighted": _batch_weighted,
}


def observed_update(
    view: AttackerView, dtype: torch.dtype = torch.float64, exact_update: str = "count_weighted"
) -> dict[str, torch.Tensor]:
    """Δ per parameter, oriented along +Σ_X ∇CE at the point where dummy
    gradients are taken (θ for approx, θ₀ for exact; `exact_update` names
    the exact estimator, a key of EXACT_UPDATES); only the parameters the view holds (`view.visible`)."""
    theta = _named_params(view.theta_original, view.visible)
    theta_u = _named_params(view.theta_unlearned, view.visible)
    if not theta:
        raise ValueError("the view holds none of the model's parameters")
    if view.method == "approx":
        return {n: theta_u[n].detach().to(dtype) - theta[n].detach().to(dtype) for n in theta}
    if view.method == "exact":
        if view.theta_pretrained is None:
            raise ValueError("exact unlearning's update needs θ₀ (theta_pretrained) in the view")
        one_of("exact_update", exact_update, EXACT_UPDATES)
        theta0 = _named_params(view.theta_pretrained)
        a, b = _WEIGHTS[exact_update](view)
        out = {}
        for name in theta:
            t0 = theta0[name].detach().to(dtype)
            out[name] = -(a * (theta[name].detach().to(dtype) - t0) - b * (theta_u[name].detach().to(dtype) - t0))
        return out
    raise ValueError(f"unknown unlearning method {view.method!r}; expected approx or exact")


def _attack_point(view: AttackerView) -> nn.Module:
    return view.theta_original if view.method == "approx" else view.theta_pretrained
