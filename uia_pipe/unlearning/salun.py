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
from .random_label import wrong_labels
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
    device = next(model.parameters()).device
    xf, yf, xr, yr = forget_and_retain(problem, forget, device)
    masks = saliency_masks(model, xf, yf, cfg.saliency)
    with torch.no_grad():
        num_classes = model(xf[:1]).shape[1]
    target = wrong_labels(yf, num_classes, torch.Generator().manual_seed(cfg.seed)).to(device)

    def objective(m: nn.Module) -> torch.Tensor:
        loss = F.cross_entropy(m(xf), target)
        if cfg.retain_weight > 0 and len(xr):
            loss = loss + cfg.retain_weight * F.cross_entropy(m(xr), yr)
        return loss

    return sgd_steps(model, objective, cfg.steps, cfg.lr, masks=masks)
