"""How close an unlearned model is to the gold standard, retraining without X."""

from __future__ import annotations

import math

import torch
from torch import nn


@torch.no_grad()
def agreement(a: nn.Module, b: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> float:
    """Fraction of inputs on which the two models predict the same class."""
    if len(x) == 0:
        return float("nan")
    device = next(a.parameters()).device
    same = 0
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].to(device)
        same += (a(xb).argmax(1) == b(xb).argmax(1)).sum().item()
    return same / len(x)


def parameter_distance(a: nn.Module, b: nn.Module) -> float:
    """‖θ_a − θ_b‖ / ‖θ_b‖ over all parameters; nan when the architectures
    differ (e.g. a SISA ensemble against one model)."""
    pa, pb = list(a.parameters()), list(b.parameters())
    if len(pa) != len(pb) or any(x.shape != y.shape for x, y in zip(pa, pb)):
        return float("nan")
    diff = math.sqrt(sum(float((x.detach() - y.detach()).double().square().sum()) for x, y in zip(pa, pb)))
    norm = math.sqrt(sum(float(y.detach().double().square().sum()) for y in pb))
    return diff / norm if norm else float("nan")


def distance_to_retrain(theta_u: nn.Module, theta_retrain: nn.Module, x_forget: torch.Tensor,
                        x_test: torch.Tensor) -> dict[str, float]:
    """Output agreement on the forget set and the test set, and parameter distance."""
    return {
        "retrain_agreement_forget": agreement(theta_u, theta_retrain, x_forget),
        "retrain_agreement_test": agreement(theta_u, theta_retrain, x_test),
        "retrain_param_distance": parameter_distance(theta_u, theta_retrain),
    }
