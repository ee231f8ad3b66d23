"""Random-label unlearning (Amnesiac-style): fine-tune on the forget set with
labels drawn at random from the wrong classes."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .config import RandomLabelConfig as Config
from .problem import UnlearningProblem, forget_and_retain, sgd_steps
from ..models import clone


def wrong_labels(y: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """A label different from y for each sample, uniform over the others."""
    shift = torch.randint(1, num_classes, y.shape, generator=generator)
    return (y.cpu() + shift) % num_classes


def relabelled(model: nn.Module, problem: UnlearningProblem, forget: torch.Tensor, retain_weight: float,
               seed: int) -> Callable[[nn.Module], torch.Tensor]:
    """The objective CE(X, random wrong labels drawn under `seed`) + retain_weight · CE(D_u \\ X)."""
    xf, yf, xr, yr = forget_and_retain(problem, forget, next(model.parameters()).device)
    with torch.no_grad():
        num_classes = model(xf[:1]).shape[1]
    target = wrong_labels(yf, num_classes, torch.Generator().manual_seed(seed)).to(xf.device)

    def objective(m: nn.Module) -> torch.Tensor:
        loss = F.cross_entropy(m(xf), target)
        if retain_weight > 0 and len(xr):
            loss = loss + retain_weight * F.cross_entropy(m(xr), yr)
        return loss

    return objective


def unlearn(problem: UnlearningProblem, forget: torch.Tensor, cfg: Config) -> nn.Module:
    """`steps` SGD steps on CE(X, random wrong labels) [+ retain term], batch norm in eval mode."""
    model = clone(problem.theta_original)
    return sgd_steps(model, relabelled(model, problem, forget, cfg.retain_weight, cfg.seed), cfg.steps, cfg.lr)
