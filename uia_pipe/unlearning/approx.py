"""Approximate unlearning: one gradient-ascent step on the forget set,
θ_u = θ + η ∇_θ ℓ(θ; X) with mean reduction, batch norm in eval mode (ℓ: the
task's loss, `tasks.loss`; cross-entropy for classifiers)."""

from __future__ import annotations

import torch
from torch import nn

from .. import tasks
from ..training import ascend_many
from .config import ApproxConfig as Config
from .problem import UnlearningProblem
from ..models import clone


def unlearn(problem: UnlearningProblem, forget: torch.Tensor, cfg: Config) -> nn.Module:
    """One ascent step of size η from θ on the samples marked in `forget`."""
    model = clone(problem.theta_original)
    device = next(model.parameters()).device
    x = problem.du_x[forget].to(device)
    y = problem.du_y[forget].to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(tasks.loss(model(x), y), params)
    with torch.no_grad():
        for p, g in zip(params, grads):
            p.add_(g, alpha=cfg.eta)
    return model


def unlearn_many(problems: list[UnlearningProblem], forgets: list[torch.Tensor], cfg: Config) -> list[nn.Module]:
    """[unlearn(p, f, cfg) for p, f in zip(problems, forgets)] up to float rounding, the steps stacked
    (`ascend_many`): every `forget` marks as many samples."""
    x = torch.stack([p.du_x[f] for p, f in zip(problems, forgets)])
    y = torch.stack([p.du_y[f] for p, f in zip(problems, forgets)])
    return ascend_many([p.theta_original for p in problems], x, y, cfg.eta)
