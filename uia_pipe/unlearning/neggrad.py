"""NegGrad and NegGrad+: several gradient-ascent steps on the forget set,
optionally balanced by descent on the retained data."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from .problem import MethodConfig, UnlearningProblem, clone, forget_and_retain, sgd_steps


class Config(MethodConfig):
    steps: int = Field(5, ge=1, description="full-batch ascent steps on X")
    lr: float = Field(0.01, gt=0, description="SGD step size")
    retain_weight: float = Field(
        0.0, ge=0, description="weight of the descent term on D_u \\ X: 0 = NegGrad, > 0 = NegGrad+"
    )


def unlearn(problem: UnlearningProblem, forget: torch.Tensor, cfg: Config) -> nn.Module:
    """`steps` SGD steps on −CE(X) + retain_weight · CE(D_u \\ X), batch norm in eval mode."""
    model = clone(problem.theta_original)
    xf, yf, xr, yr = forget_and_retain(problem, forget, next(model.parameters()).device)

    def objective(m: nn.Module) -> torch.Tensor:
        loss = -F.cross_entropy(m(xf), yf)
        if cfg.retain_weight > 0 and len(xr):
            loss = loss + cfg.retain_weight * F.cross_entropy(m(xr), yr)
        return loss

    return sgd_steps(model, objective, cfg.steps, cfg.lr)
