"""SalUn (Fan et al., ICLR 2024): saliency-based unlearning. A weight
saliency map keeps the weights with the largest |∇_θ CE(X)| (a fraction
`saliency` of all weights); random-label fine-tuning on X, with descent on the
retained data, then updates only those weights."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import SalUnConfig as Config
from .problem import UnlearningProblem, forget_and_retain, sgd_steps
from .random_label import relabelled
from ..models import clone


def saliency_masks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, fraction: float) -> list[torch.Tensor]:
    """One 0/1 mask per parameter: 1 on the `fraction` of all weights with the largest |∇ CE(x, y)|."""
    model.eval()
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    magnitude = torch.cat([g.abs().flatten() for g in grads])
    keep = max(1, math.ceil(fraction * len(magnitude)))
    threshold = magnitude.kthvalue(len(magnitude) - keep + 1).values
    return [(g.abs() >= threshold).to(g.dtype) for g in grads]


def unlearn(problem: UnlearningProblem, forget: torch.Tensor, cfg: Config) -> nn.Module:
    """`steps` SGD steps on CE(X, random wrong labels) + retain_weight · CE(D_u \\ X), salient weights only."""
    model = clone(problem.theta_original)
    xf, yf, _, _ = forget_and_retain(problem, forget, next(model.parameters()).device)
    masks = saliency_masks(model, xf, yf, cfg.saliency)
    objective = relabelled(model, problem, forget, cfg.retain_weight, cfg.seed)
    return sgd_steps(model, objective, cfg.steps, cfg.lr, masks=masks)
