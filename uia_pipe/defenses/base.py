"""What every defence is given, and the settings every defence shares."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

# Each strength costs every attack family on every defended request: 64 make a fine sweep, not a runaway one.
MAX_STRENGTHS = 64


class DefenceConfig(BaseModel):
    """A defence's settings; `strengths` is the list the defend stage sweeps."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    strengths: tuple[float, ...] = Field((0.0,), description="strengths to sweep; 0 = no defence")

    # Checked here, not by the field's max_length: each defence redeclares `strengths` with its own default,
    # which drops the field's constraints, while validators are inherited.
    @field_validator("strengths")
    @classmethod
    def _non_negative(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not v:
            raise ValueError("must list at least one strength")
        if len(v) > MAX_STRENGTHS:
            raise ValueError(f"at most {MAX_STRENGTHS} strengths (got {len(v)})")
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
