"""The defend section: which defences run, on how many requests, and each defence's settings."""

from __future__ import annotations

from pydantic import Field, field_validator

from ..config import MAX_REQUESTS, MAX_STEPS, all_of, registry_settings
from . import DEFENSES


class DefendParams(registry_settings("DefenceSettings", {name: cfg for name, (_, cfg) in DEFENSES.items()})):
    max_requests: int = Field(2, ge=1, le=MAX_REQUESTS, description="defend the first this many requests")
    defences: tuple[str, ...] = Field(tuple(DEFENSES), min_length=1, description="defences to run, in order")
    attack_iterations: int = Field(
        200, ge=0, le=MAX_STEPS, description="iterations of attacks that have them (feature recovery) on defended "
        "models; 0 = the attack section's",
    )

    @field_validator("defences")
    @classmethod
    def _known(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return all_of("defence", v, DEFENSES)
