"""The defend section: which defences run, on how many requests, and each defence's settings.
A schema leaf (pydantic and the params machinery only), so that validating params imports
no defence: each defence module takes its `Config` from here, and the registry
(`uia_pipe.defenses.DEFENSES`) asserts it agrees with DEFENCE_CONFIGS."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..config import MAX_BATCH, MAX_EPOCHS, MAX_REQUESTS, MAX_STEPS, all_of, registry_settings

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


class NoiseConfig(DefenceConfig):
    """defend.noise (noise.py)."""

    strengths: tuple[float, ...] = (0.0, 0.1, 0.5, 1.0)


class PruneConfig(DefenceConfig):
    """defend.prune (prune.py)."""

    strengths: tuple[float, ...] = (0.0, 0.3, 0.6, 0.9)

    @field_validator("strengths")
    @classmethod
    def _rate(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 <= s < 1 for s in v):
            raise ValueError(f"pruning rates must be in [0, 1) (got {list(v)})")
        return v


class FinetuneConfig(DefenceConfig):
    """defend.finetune (finetune.py)."""

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


class NoisyUnlearningConfig(DefenceConfig):
    """defend.noisy_unlearning (noisy_unlearning.py)."""

    strengths: tuple[float, ...] = (0.0, 0.001, 0.01, 0.1)
    clip: float = Field(10.0, gt=0, description="per-sample gradient L2 bound C")
    eta: float = Field(1.0, gt=0, description="ascent step η (as unlearn.approx.eta)")


# Defence name (the params key) -> its config type, in the registry's order (defenses.DEFENSES).
DEFENCE_CONFIGS: dict[str, type[DefenceConfig]] = {
    "noise": NoiseConfig,
    "prune": PruneConfig,
    "finetune": FinetuneConfig,
    "noisy_unlearning": NoisyUnlearningConfig,
}


class DefendParams(registry_settings("DefenceSettings", DEFENCE_CONFIGS)):
    max_requests: int = Field(2, ge=1, le=MAX_REQUESTS, description="defend the first this many requests")
    defences: tuple[str, ...] = Field(tuple(DEFENCE_CONFIGS), min_length=1, description="defences to run, in order")
    attack_iterations: int = Field(
        200, ge=0, le=MAX_STEPS, description="iterations of attacks that have them (feature recovery) on defended "
        "models; 0 = the attack section's",
    )

    @field_validator("defences")
    @classmethod
    def _known(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return all_of("defence", v, DEFENCE_CONFIGS)
