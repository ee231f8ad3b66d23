"""Fine-tuning on the retained data only (catastrophic forgetting)."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from ..training import fit
from .problem import MethodConfig, UnlearningProblem, clone


class Config(MethodConfig):
    epochs: int = Field(5, ge=1, description="epochs over D_u \\ X")
    lr: float = Field(0.01, gt=0, description="SGD step size")
    momentum: float = Field(0.9, ge=0, lt=1)
    batch_size: int = Field(128, ge=1)
    seed_offset: int = Field(100, ge=0, description="added to the fine-tune seed for the batch order")


def unlearn(problem: UnlearningProblem, forget: torch.Tensor, cfg: Config) -> nn.Module:
    """θ fine-tuned on D_u \\ X for `epochs`, batch norm in eval mode."""
    model = clone(problem.theta_original)
    settings = problem.finetune.__class__(
        epochs=cfg.epochs, lr=cfg.lr, momentum=cfg.momentum, weight_decay=problem.finetune.weight_decay,
        batch_size=cfg.batch_size,
    )
    fit(model, problem.du_x, problem.du_y, settings, problem.finetune_seed + cfg.seed_offset,
        batchnorm_eval=True, keep=~forget)
    return model
