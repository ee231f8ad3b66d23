"""Exact unlearning: redo the fine-tune from θ₀ on D_u without the forget set,
with the same settings, seed and sample order (the paper's protocol)."""

from __future__ import annotations

import torch
from torch import nn

from .config import ExactConfig as Config
from ..training import fit
from .problem import UnlearningProblem
from ..models import clone


def unlearn(problem: UnlearningProblem, forget: torch.Tensor, cfg: Config) -> nn.Module:
    """θ_u = fine-tune(θ₀, D_u \\ X): identical to θ when `forget` is all false."""
    model = clone(problem.theta_pretrained)
    fit(
        model,
        problem.du_x,
        problem.du_y,
        problem.finetune,
        problem.finetune_seed,
        batchnorm_eval=True,
        keep=~forget,
    )
    return model
