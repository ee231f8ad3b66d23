"""Label inference's probe settings (`attack.label_inference.probes`): a schema leaf
(pydantic only); `uia_pipe.attacks.probes` makes the probes (its STRATEGIES asserts it
agrees with STRATEGY_NAMES)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ...registry import one_of

# The probe strategies, names of probes.STRATEGIES in its order.
STRATEGY_NAMES = ("zoo", "noise", "auxiliary", "whitebox")


# Sizes are bounded at 10-100x the reference (10 probes per class, 1,024 coordinates, 200 iterations): all probes
# of all classes are optimised at once, so per_class × classes × resolution² × channels floats sit in memory.
class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ZooConfig(_Config):
    coordinates: int = Field(
        32, ge=1, le=1_000_000, description="coordinates estimated per iteration, 2 queries each (reference: 1,024)"
    )
    lr: float = Field(0.5, gt=0, description="Adam step while confidence ≤ fine_above (reference: 0.1)")
    lr_fine: float = Field(0.1, gt=0, description="Adam step once confidence > fine_above (reference: 0.02)")
    fine_above: float = Field(0.9, ge=0, le=1, description="confidence that switches to lr_fine (reference: 0.9)")
    h: float = Field(1e-4, gt=0, description="finite-difference step (reference: 1e-4)")
    beta1: float = Field(0.9, ge=0, lt=1, description="Adam β1 (reference: 0.9)")
    beta2: float = Field(0.999, ge=0, lt=1, description="Adam β2 (reference: 0.999)")
    max_iterations: int = Field(
        200, ge=1, le=100_000,
        description="iterations per probe before giving up (reference: 20 a call × ≤ 10 calls = 200)",
    )
    resolution: int | None = Field(
        14,
        ge=1,
        le=256,
        description="side of the square search space, bilinearly upsampled to the input; null = the input "
        "itself (reference: null, 32x32x3 = 3,072 coordinates on CIFAR)",
    )
    batch: int = Field(
        4096, ge=1, le=65_536, description="inputs per oracle call (memory only; every input is counted)"
    )


class WhiteboxConfig(_Config):
    lr: float = Field(0.05, gt=0, description="Adam step on the input (no reference: the reference is black-box)")
    max_steps: int = Field(300, ge=1, le=100_000, description="gradient steps per probe before giving up")


class ProbeConfig(_Config):
    strategy: str = Field("zoo", description="zoo | noise | auxiliary | whitebox (reference: zoo)")
    per_class: int = Field(10, ge=1, le=1000, description="probes per class (reference: 10)")
    threshold: float = Field(
        0.9995, gt=0, lt=1, description="confidence θ must give a probe's class (reference: 0.9995; against "
        "exact unlearning the θ₀-referenced statistic needs it: 0.78 → 0.97 on single samples at N = 32, "
        "for 5× the probe queries, 0.43% of the reference's bound)"
    )
    budget: int | None = Field(
        None, ge=1, le=10**10, description="queries probe generation may spend, all classes together; null = no cap "
        "(reference: none, ≤ 409,600 per probe by construction)"
    )
    noise: Literal["gaussian", "uniform"] = Field(
        "gaussian", description="start of zoo/whitebox and the inputs of `noise`: N(0,1) clamped to [0,1] "
        "(reference) or U[0,1]"
    )
    boundary_steps: int = Field(
        12, ge=0, le=1000, description="bisection steps towards θ's decision boundary under label-only access, "
        "1 query per probe each; 0 = off (no reference: it has no label-only mode)"
    )
    zoo: ZooConfig = ZooConfig()
    whitebox: WhiteboxConfig = WhiteboxConfig()

    @field_validator("strategy")
    @classmethod
    def _known(cls, v: str) -> str:
        return one_of("probe strategy", v, STRATEGY_NAMES)
