"""How close an unlearned model is to the gold standard, retraining without X."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..tasks import task_of


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """What `model` (in eval mode) predicts for each input, on the CPU: a class, or the outputs
    themselves for a regressor or an autoencoder."""
    model.eval()
    device = next(model.parameters()).device
    classes = task_of(model) == "classification"
    outs = [model(x[s : s + batch_size].to(device)).cpu() for s in range(0, len(x), batch_size)]
    if not outs:
        return torch.zeros(0, dtype=torch.long)
    return torch.cat([o.argmax(1) for o in outs]) if classes else torch.cat(outs)


def agreement(a: nn.Module | torch.Tensor, b: nn.Module | torch.Tensor, x: torch.Tensor) -> float:
    """Fraction of inputs on which the two models predict the same class (either may be given as its
    predictions on x already); nan for outputs that are no class."""
    if len(x) == 0:
        return float("nan")
    pa = a if isinstance(a, torch.Tensor) else predict(a, x)
    pb = b if isinstance(b, torch.Tensor) else predict(b, x)
    if pa.is_floating_point():
        return float("nan")
    return int((pa == pb).sum()) / len(x)


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
                        x_test: torch.Tensor, test_predictions: tuple[torch.Tensor, torch.Tensor] | None = None,
                        ) -> dict[str, float]:
    """Output agreement on the forget set and the test set, and parameter distance. `test_predictions`:
    both models' predictions on x_test where the caller has them already."""
    u, r = test_predictions or (theta_u, theta_retrain)
    return {
        "retrain_agreement_forget": agreement(theta_u, theta_retrain, x_forget),
        "retrain_agreement_test": agreement(u, r, x_test),
        "retrain_param_distance": parameter_distance(theta_u, theta_retrain),
    }
