"""Settings of the language model's families (`attack.exposure`, `attack.extraction`, `attack.text_recovery`):
a schema leaf (pydantic only); `uia_pipe.attacks.secrets` holds the algorithms."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

# The most secrets (10^digits) ranked exactly; above, the Secret Sharer's estimate from random secrets.
MAX_EXACT = 10 ** 6


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ExposureConfig(_Config):
    chunk: int = Field(4096, ge=10, le=1_000_000, description="trie rows stepped at once (memory against speed)")
    samples: int = Field(20000, ge=100, le=10_000_000, description="random secrets the Secret Sharer's estimate "
                         "fits its skew-normal to, above 10^6 secrets (seeded by the attack's seed)")


class ExtractionConfig(_Config):
    weights: tuple[float, ...] = Field((0.5, 1.0, 0.0), min_length=1, max_length=8,
                                       description="λ of each ranking log p_θ(s) − λ log p_θu(s); the first is "
                                       "the headline")
    chunk: int = Field(4096, ge=10, le=1_000_000, description="trie rows stepped at once")
    samples: int = Field(20000, ge=100, le=10_000_000, description="random secrets of the estimate above 10^6 "
                         "secrets")
    beam: int = Field(1000, ge=1, le=1_000_000, description="beam width of the top guess's search above 10^6 "
                      "secrets")


class TextRecoveryConfig(_Config):
    beam: int = Field(8, ge=1, le=1024, description="beam width of the contrastive decoding")
    weight: float = Field(0.5, ge=0, le=10, description="λ of Σ log p_θ − λ log p_θu (below 1: θ's fluency "
                          "keeps the decoding on text)")
