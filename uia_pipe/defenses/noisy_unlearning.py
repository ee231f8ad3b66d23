"""Approximate unlearning made differentially private in the usual (DP-SGD)
way: θ_u' = θ + η (Σ_i clip_C(∇CE(θ; x_i)) + σ C ξ) / k with ξ ~ N(0, I),
per-sample gradients from torch.func (vmap(grad(functional_call))), each
clipped to L2 norm C over all parameters. It replaces the unlearning step (θ_u
is not used): the released model is an `approx`-style update whatever the
run's method, and the attacker is told so. With σ = 0 and C large it is the
approx method's step; σ = 0 with a finite C is clipping alone."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from .. import tasks
from ..models import clone
from .base import DefenceInput
from .config import NoisyUnlearningConfig as Config  # the settings, in the schema leaf


def per_sample_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """∇_θ CE(θ; x_i, y_i) for each i, stacked on a leading axis (model in eval mode)."""
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss(p, xi, yi):
        logits = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return tasks.loss(logits, yi.unsqueeze(0))

    return vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)


def defend(inp: DefenceInput, strength: float, cfg: Config, seed: int) -> nn.Module:
    """One clipped, noised ascent step from θ on X with noise multiplier σ = `strength`."""
    model = clone(inp.theta_original)
    device = next(model.parameters()).device
    x, y = inp.forget_x.to(device), inp.forget_y.to(device)
    grads = per_sample_gradients(model, x, y)
    norms = torch.sqrt(sum((g.flatten(1).double() ** 2).sum(1) for g in grads.values()))
    factor = (cfg.clip / (norms + 1e-12)).clamp(max=1.0).to(x.dtype)
    gen = torch.Generator().manual_seed(seed)
    named = dict(model.named_parameters())
    with torch.no_grad():
        for name, g in grads.items():
            total = (g * factor.view(-1, *[1] * (g.dim() - 1))).sum(0)
            if strength:
                total = total + strength * cfg.clip * torch.randn(total.shape, generator=gen).to(total)
            named[name].add_(total / len(x), alpha=cfg.eta)
    return model
