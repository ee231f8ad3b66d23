"""NegGrad and NegGrad+: several gradient-ascent steps on the forget set,
optionally balanced by descent on the retained data."""

from __future__ import annotations

import torch
from torch import nn

from .. import tasks
from .config import NegGradConfig as Config
from .problem import UnlearningProblem, forget_and_retain, sgd_steps
from ..models import clone


def unlearn(problem: UnlearningProblem, forget: torch.Tensor, cfg: Config) -> nn.Module:
    """`steps` SGD steps on −CE(X) + retain_weight · CE(D_u \\ X), batch norm in eval mode."""
    model = clone(problem.theta_original)
    xf, yf, xr, yr = forget_and_retain(problem, forget, next(model.parameters()).device)

    def objective(m: nn.Module) -> torch.Tensor:
        loss = -tasks.loss(m(xf), yf)
        if cfg.retain_weight > 0 and len(xr):
            loss = loss + cfg.retain_weight * tasks.loss(m(xr), yr)
        return loss

    return sgd_steps(model, objective, cfg.steps, cfg.lr)
