"""Exact unlearning: redo the fine-tune from θ₀ on D_u without the forget set,
with the same settings, seed and sample order (the paper's protocol)."""

from __future__ import annotations

import torch
from torch import nn

from .config import ExactConfig as Config
from ..training import fit, fit_many
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


def unlearn_many(problems: list[UnlearningProblem], forgets: list[torch.Tensor], cfg: Config) -> list[nn.Module]:
    """[unlearn(p, f, cfg) for p, f in zip(problems, forgets)] up to float rounding, the fine-tunes stacked
    (`fit_many`): the problems share θ₀ and the fine-tune's settings, and hold as many records each; every
    `forget` marks as many."""
    first = problems[0]
    if any(p.theta_pretrained is not first.theta_pretrained or p.finetune != first.finetune for p in problems):
        raise ValueError("exact.unlearn_many: the problems must share θ₀ and the fine-tune's settings")
    return fit_many(first.theta_pretrained, torch.stack([p.du_x for p in problems]),
                    torch.stack([p.du_y for p in problems]), first.finetune, [p.finetune_seed for p in problems],
                    keep=~torch.stack(forgets))
