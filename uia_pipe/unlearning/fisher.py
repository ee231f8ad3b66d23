"""Fisher forgetting (Golatkar, Achille & Soatto, CVPR 2020, "Eternal
Sunshine of the Spotless Net"): θ_u = θ + sqrt(α · F⁻¹) ⊙ ε, ε ~ N(0, I), with F
the diagonal Fisher information of the model on the retained data D_u \\ X.
Parameters the retained data pins down (large F) stay; those only X needed
(small F) are drowned in noise. The variance follows the reference code: 1/F
capped (the head's cap a tenth of the others'), averaged over a weight's input
dimension, the head's and 1-D parameters' (biases) times ten."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from .config import FisherConfig as Config
from .problem import UnlearningProblem, forget_and_retain, head_of
from ..models import clone


def diagonal_fisher(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """E_x Σ_c p(c|x) (∇_θ log p(c|x))², per parameter (model in eval mode): the
    Fisher of the model's own predictive distribution, as the reference computes it."""
    model.eval()
    params = {name: p.detach() for name, p in model.named_parameters()}
    buffers = dict(model.named_buffers())
    fisher = {name: torch.zeros_like(p) for name, p in params.items()}
    if len(x) == 0:
        return fisher
    with torch.no_grad():
        probs = F.softmax(model(x), dim=1)

    def log_prob(p, xi, c):
        return F.log_softmax(functional_call(model, (p, buffers), (xi.unsqueeze(0),)), dim=1)[0, c]

    per_sample = vmap(grad(log_prob), in_dims=(None, 0, None))
    for c in range(probs.shape[1]):
        grads = per_sample(params, x, c)
        weight = probs[:, c]
        for name, g in grads.items():
            fisher[name] += torch.einsum("n,n...->...", weight, g.square())
    return {name: f / len(x) for name, f in fisher.items()}


def noise_std(model: nn.Module, fisher: dict[str, torch.Tensor], cfg: Config) -> dict[str, torch.Tensor]:
    """The per-parameter standard deviation of the forgetting noise."""
    head = {id(p) for p in head_of(model).parameters()}
    out = {}
    for name, p in model.named_parameters():
        is_head = id(p) in head
        var = (1.0 / (fisher[name] + 1e-8)).clamp(max=cfg.max_variance / (10 if is_head else 1)) * cfg.alpha
        if p.ndim > 1:
            var = var.mean(dim=1, keepdim=True).expand_as(p)
        if is_head or p.ndim == 1:
            var = var * 10
        out[name] = var.sqrt()
    return out


def unlearn(problem: UnlearningProblem, forget: torch.Tensor, cfg: Config) -> nn.Module:
    """θ plus Gaussian noise shaped by the inverse Fisher on D_u \\ X."""
    model = clone(problem.theta_original)
    _, _, xr, _ = forget_and_retain(problem, forget, next(model.parameters()).device)
    std = noise_std(model, diagonal_fisher(model, xr), cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(std[name] * torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device))
    return model
