"""Fine-tune θ_u on the data the server keeps, D_u \\ X: the strength is the
number of epochs (a whole number), at a fixed lr, batch norm on its running
statistics as in the paper's fine-tuning. Drowns the deletion's trace in
ordinary training steps, at a cost in compute."""

from __future__ import annotations

from torch import nn

from ..config import OptimParams
from ..training import fit
from ..models import clone
from .base import DefenceInput
from .config import FinetuneConfig as Config  # the settings, in the schema leaf


def defend(inp: DefenceInput, strength: float, cfg: Config, seed: int) -> nn.Module:
    """θ_u after `strength` epochs of SGD on D_u \\ X; 0 epochs (or an empty
    retain set) returns a bit-identical copy."""
    model = clone(inp.theta_unlearned)
    if strength == 0 or len(inp.retain_x) == 0:
        return model
    settings = OptimParams(epochs=int(strength), lr=cfg.lr, momentum=cfg.momentum, batch_size=cfg.batch_size)
    fit(model, inp.retain_x, inp.retain_y, settings, seed, batchnorm_eval=True)
    return model
