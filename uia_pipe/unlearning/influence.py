"""Influence-function unlearning (Koh & Liang 2017; Guo et al. 2020's Newton
removal): θ_u = θ + (H + λI)⁻¹ Σ_{z∈X} ∇CE(z; θ) / n, with H the Hessian of
the mean training loss on D_u at θ, solved by conjugate gradients on
Hessian-vector products (never forming H)."""

from __future__ import annotations

import torch
from torch import nn

from .. import tasks
from .config import InfluenceConfig as Config
from .problem import UnlearningProblem
from ..models import clone


def _dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a, b))


def conjugate_gradient(hvp, b: list[torch.Tensor], iterations: int, tolerance: float) -> list[torch.Tensor]:
    """Solve A s = b for symmetric positive-definite A given by hvp(v) = A v;
    stops early on small residual or on non-positive curvature."""
    s = [torch.zeros_like(t) for t in b]
    r = [t.clone() for t in b]
    p = [t.clone() for t in b]
    rr = _dot(r, r)
    stop = tolerance**2 * rr
    for _ in range(iterations):
        if rr <= stop:
            break
        ap = hvp(p)
        curvature = _dot(p, ap)
        if curvature <= 0:
            break
        alpha = rr / curvature
        s = [si + alpha * pi for si, pi in zip(s, p)]
        r = [ri - alpha * api for ri, api in zip(r, ap)]
        rr_new = _dot(r, r)
        p = [ri + (rr_new / rr) * pi for ri, pi in zip(r, p)]
        rr = rr_new
    return s


def unlearn(problem: UnlearningProblem, forget: torch.Tensor, cfg: Config) -> nn.Module:
    """One Newton-style influence step from θ, batch norm in eval mode."""
    model = clone(problem.theta_original)
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    x, y = problem.du_x.to(device), problem.du_y.to(device)
    n = len(x)
    grad_forget = torch.autograd.grad(
        tasks.loss(model(x[forget]), y[forget], reduction="sum") / n, params
    )
    grad_train = torch.autograd.grad(tasks.loss(model(x), y), params, create_graph=True)

    def hvp(v: list[torch.Tensor]) -> list[torch.Tensor]:
        hv = torch.autograd.grad(grad_train, params, grad_outputs=v, retain_graph=True)
        return [h + cfg.damping * vi for h, vi in zip(hv, v)]

    step = conjugate_gradient(hvp, [g.detach() for g in grad_forget], cfg.cg_iterations, cfg.tolerance)
    with torch.no_grad():
        for p, s in zip(params, step):
            p.add_(s)
    return model
