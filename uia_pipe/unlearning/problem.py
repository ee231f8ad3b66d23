"""What every unlearning method is given, and the settings shared by methods."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from ..training import OptimSettings


class MethodConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class UnlearningProblem:
    """The server's side of a deletion request: the models and the data it holds.

    theta_pretrained (θ₀) is the model before the fine-tune on D_u;
    theta_original (θ) is the served model, θ₀ fine-tuned on (du_x, du_y) with
    `finetune` and `finetune_seed`. Methods must not modify either model.
    """

    theta_pretrained: nn.Module
    theta_original: nn.Module
    du_x: torch.Tensor
    du_y: torch.Tensor
    finetune: OptimSettings
    finetune_seed: int


def clone(model: nn.Module) -> nn.Module:
    """An independent copy (parameters and buffers) in eval mode."""
    return copy.deepcopy(model).eval()
