"""What every defence is given, and the settings every defence shares."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn


class DefenceConfig(BaseModel):
    """A defence's settings; `strengths` is the list the defend stage sweeps."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strengths: tuple[float, ...] = Field((0.0,), description="strengths to sweep; 0 = no defence")

    @field_validator("strengths")
    @classmethod
    def _non_negative(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not v:
            raise ValueError("must list at least one strength")
        if any(s < 0 for s in v):
            raise ValueError(f"strengths must be >= 0 (got {list(v)})")
        return v


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
