"""Fine-tuning on the retained data only (catastrophic forgetting)."""

from __future__ import annotations

import torch
from torch import nn

from .config import FinetuneConfig as Config
from ..training import fit
from .problem import UnlearningProblem
from ..models import clone


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
