"""Membership inference's settings (`attack.membership`) and the feature constructions
they name: a schema leaf (pydantic only); `uia_pipe.attacks.membership` is the attack."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

CHEN = ("direct_diff", "sorted_diff", "l2_distance", "direct_concat", "sorted_concat")
BASELINE = "one_model"
OURS = "logit_diff"
FEATURES = (*CHEN, BASELINE, OURS)
Feature = Literal["direct_diff", "sorted_diff", "l2_distance", "direct_concat", "sorted_concat", "one_model",
                  "logit_diff"]


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    shadows: int = Field(100, ge=1, le=100_000, description="S shadow (θ_s, θ_s,u) pairs of the population attack")
    targets: int = Field(100, ge=1, le=100_000, description="deleted records scored per question (the run's "
                         "requests' first, then pairs the evaluator makes alike from the pool), as many negatives")
    features: tuple[Feature, ...] = Field(FEATURES, min_length=1, description="feature constructions scored")
    primary: Feature = Field(OURS, description="the feature whose classifier is the headline and the compound's")
    classifier: Literal["random_forest", "logistic"] = "random_forest"
    trees: int = Field(100, ge=1, le=10_000, description="random forest size")
    lira_shadows: int = Field(2, ge=0, le=10_000, description="U-LiRA shadow pairs per candidate and side; 0 = off")
    lira_group: int = Field(8, ge=1, le=1024, description="candidates planted in each U-LiRA shadow fine-tune set")
    stack: int = Field(1, ge=1, le=4096, description="shadow, audit and U-LiRA pairs made at once as one stacked model "
                       "(the server's `pairs`: equal to one by one up to float rounding); 1 = one by one")
    bootstrap: int = Field(1000, ge=0, le=100_000, description="resamples of each interval; 0 = none")

    @model_validator(mode="after")
    def _primary_is_scored(self) -> "Config":
        if self.primary not in self.features:
            raise ValueError(f"primary {self.primary!r} must be one of the features {list(self.features)}")
        return self

    def for_sweep(self) -> "Config":
        """Under each defence and access level, which re-run every family: the population attack alone (no
        U-LiRA shadows, no bootstrap intervals) on at most 20 deleted records a question, since each defence
        is applied to every audit pair."""
        return self.model_copy(update={"lira_shadows": 0, "bootstrap": 0, "targets": min(self.targets, 20)})
