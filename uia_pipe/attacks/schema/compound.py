"""The compound attack's settings (`attack.compound`): a schema leaf (pydantic only);
`uia_pipe.attacks.families.compound` is the attack."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    candidates: int = Field(99, ge=1, le=100_000, description="M: candidates besides the deleted record")
    tolerance: float = Field(0.25, ge=0, le=100, description="relative distance margin within which the label, "
                             "then membership, order the candidates nearest the reconstruction")
