"""Label inference's settings (`attack.label_inference`): a schema leaf (pydantic only);
`uia_pipe.attacks.label_inference` is the attack (its STATISTICS asserts it agrees with
STATISTIC_NAMES)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from ...registry import one_of
from .probes import ProbeConfig

# Per-class drop statistics, names of label_inference.STATISTICS in its order.
STATISTIC_NAMES = ("logit", "logit_median", "probability")


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    probes: ProbeConfig = Field(ProbeConfig(), description="how probing samples are made (probes.py)")
    statistic: str = Field(
        "logit",
        description="per-class drop under probability/top-k access: logit | logit_median | probability "
        "(reference: probability, the mean drop of p_c)",
    )
    access: Literal["probabilities", "topk", "label"] = Field(
        "probabilities", description="what each query returns (reference: probabilities)"
    )
    topk: int = Field(1, ge=1, le=1000, description="entries visible under topk access (no reference)")
    calibration: Literal["none", "leave_one_out"] = Field(
        "none",
        description="infer_many only: subtract per class the median score of the other requests on the same θ; "
        "use for exact unlearning, whose θ_u carries a common drift (reference: none)",
    )
    reference: Literal["none", "pretrained", "auto"] = Field(
        "auto",
        description="read the drop against θ₀ too (N·f(θ) − (N−k)·f(θ_u) − k·f(θ₀) for one step; θ₀'s "
        "outputs on the probes cost one query each, once): none | pretrained (always) | auto (only when θ_u "
        "is a retrained fine-tune from θ₀: exact, retrain); not under label access (reference: none)",
    )

    @field_validator("statistic")
    @classmethod
    def _known(cls, v: str) -> str:
        return one_of("statistic", v, STATISTIC_NAMES)

    @field_validator("reference")
    @classmethod
    def _reference_needs_scores(cls, v: str, info: ValidationInfo) -> str:
        if v == "pretrained" and info.data.get("access") == "label":
            raise ValueError("pretrained needs probabilities or topk access (label access counts flips)")
        return v
