"""What every defence is given, and the settings every defence shares."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

# The settings every defence shares live in the schema leaf (config.py); re-exported here.
from .config import MAX_STRENGTHS, DefenceConfig  # noqa: F401


@dataclass(frozen=True)
class DefenceInput:
    """The server's side of one released deletion: θ, θ_u, the forget set X and
    the data it keeps D_u \\ X. Defences must not modify the models."""

    theta_original: nn.Module
    theta_unlearned: nn.Module
    forget_x: torch.Tensor
    forget_y: torch.Tensor
    retain_x: torch.Tensor
    retain_y: torch.Tensor


def parameters_of(model: nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad]
