"""Fine-tune θ_u on the data the server keeps, D_u \\ X: the strength is the
number of epochs (a whole number), at a fixed lr, batch norm on its running
statistics as in the paper's fine-tuning. Drowns the deletion's trace in
ordinary training steps, at a cost in compute."""

from __future__ import annotations

from pydantic import Field, field_validator
from torch import nn

from ..config import MAX_BATCH, MAX_EPOCHS, OptimParams
from ..training import fit
from ..models import clone
from .base import DefenceConfig, DefenceInput


class Config(DefenceConfig):
    strengths: tuple[float, ...] = (0.0, 1.0, 5.0, 20.0)
    lr: float = Field(0.01, gt=0, description="SGD step size")
    momentum: float = Field(0.0, ge=0, lt=1)
    batch_size: int = Field(8, ge=1, le=MAX_BATCH)

    @field_validator("strengths")
    @classmethod
    def _whole(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(not float(s).is_integer() for s in v):
            raise ValueError(f"fine-tune strengths are epochs, whole numbers (got {list(v)})")
        if any(s > MAX_EPOCHS for s in v):  # as many as training allows (OptimParams.epochs)
            raise ValueError(f"fine-tune strengths are epochs, each <= {MAX_EPOCHS} (got {list(v)})")
        return v


def defend(inp: DefenceInput, strength: float, cfg: Config, seed: int) -> nn.Module:
    """θ_u after `strength` epochs of SGD on D_u \\ X; 0 epochs (or an empty
    retain set) returns a bit-identical copy."""
    model = clone(inp.theta_unlearned)
    if strength == 0 or len(inp.retain_x) == 0:
        return model
    settings = OptimParams(epochs=int(strength), lr=cfg.lr, momentum=cfg.momentum, batch_size=cfg.batch_size)
    fit(model, inp.retain_x, inp.retain_y, settings, seed, batchnorm_eval=True)
    return model
