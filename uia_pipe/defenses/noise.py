"""Parameter obfuscation: Gaussian noise on the released update.

θ_u' = θ + Δ + ε with Δ = θ_u − θ and ε ~ N(0, (σ‖Δ‖/√d)² I_d) over the d
trainable parameters, so E‖ε‖² = σ²‖Δ‖²: σ is the noise's size relative to the
update, and a strength transfers across models and unlearning methods.
Buffers (batch-norm statistics) are released as θ_u has them.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..models import clone
from .base import DefenceInput, parameters_of
from .config import NoiseConfig as Config  # the settings, in the schema leaf


def defend(inp: DefenceInput, strength: float, cfg: Config, seed: int) -> nn.Module:
    """θ_u plus noise of relative scale σ = `strength`; σ = 0 returns a bit-identical copy."""
    model = clone(inp.theta_unlearned)
    if strength == 0:
        return model
    params = parameters_of(model)
    before = parameters_of(inp.theta_original)
    with torch.no_grad():
        delta_sq = sum(float(((p.double() - q.double()) ** 2).sum()) for p, q in zip(params, before))
        d = sum(p.numel() for p in params)
        scale = strength * math.sqrt(delta_sq) / math.sqrt(d)
        gen = torch.Generator().manual_seed(seed)
        for p in params:
            p.add_(torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.device, p.dtype) * scale)
    return model
