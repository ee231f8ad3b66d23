"""True exact unlearning: the whole training run again, from the same
initialisation and seeds, without the forget set (the gold reference for
efficacy, and the costliest method)."""

from __future__ import annotations

import torch
from torch import nn

from .config import RetrainConfig as Config
from ..errors import UiaError
from ..training import fit
from .problem import UnlearningProblem


def unlearn(problem: UnlearningProblem, forget: torch.Tensor, cfg: Config) -> nn.Module:
    """Pretrain from θ₀'s initialisation, then fine-tune on D_u \\ X. The forget
    set lies in D_u only, so on a deterministic device this equals `exact`
    while recomputing θ₀; with nothing to forget it reproduces θ bit for bit."""
    pre = problem.pretraining
    if pre is None:
        raise UiaError("unlearn.method=retrain: the server kept no pretraining record to retrain from")
    model = pre.init()
    fit(model, pre.x, pre.y, pre.settings, pre.seed, augment=pre.augment)
    fit(model, problem.du_x, problem.du_y, problem.finetune, problem.finetune_seed,
        batchnorm_eval=True, keep=~forget)
    return model
