"""Recovery's settings (`attack.recovery`): a schema leaf (pydantic only); `uia_pipe.attacks.families.recovery`
is the attack. Each manipulation's strengths; 0 (no steps, full precision, nothing pruned) is θ_u itself."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_RELEARN_STEPS = 100_000
BITS = (0, 8, 4)  # 0: full precision; the integer widths `uia_pipe.weights.quantise` rounds weights to


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    relearn: tuple[int, ...] = Field((1, 3, 10), min_length=1, max_length=16, description="SGD steps on "
                                     "public records (the test set), θ_u and the control alike")
    relearn_lr: float = Field(0.01, gt=0, le=10, description="step size of relearning")
    relearn_batch: int = Field(32, ge=1, le=100_000, description="public records per relearning step")
    quantise: tuple[int, ...] = Field((8, 4), min_length=1, max_length=2 * len(BITS), description="weight "
                                      "widths in bits (symmetric integers); each per channel and per tensor")
    prune: tuple[float, ...] = Field((0.3, 0.6, 0.9), min_length=1, max_length=16, description="fraction of "
                                     "conv and linear weights zeroed by global magnitude, in [0, 1)")
    metric: Literal["loss", "logit", "accuracy"] = Field("loss", description="the deleted records' number "
                                                         "whose share is the headline")
    bootstrap: int = Field(1000, ge=0, le=100_000, description="resamples of each share's interval; 0 = none")

    @field_validator("relearn")
    @classmethod
    def _steps(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(s < 0 or s > MAX_RELEARN_STEPS for s in v):
            raise ValueError(f"steps must lie in [0, {MAX_RELEARN_STEPS}]")
        return v

    @field_validator("quantise")
    @classmethod
    def _bits(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(b not in BITS for b in v):
            raise ValueError(f"widths must be among {list(BITS)} (0: full precision)")
        return v

    @field_validator("prune")
    @classmethod
    def _fractions(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 <= f < 1 for f in v):
            raise ValueError("fractions must lie in [0, 1)")
        return v

    def for_sweep(self) -> "Config":
        """Under each defence and access level: the same manipulations, intervals from 200 resamples."""
        return self.model_copy(update={"bootstrap": min(self.bootstrap, 200)})
