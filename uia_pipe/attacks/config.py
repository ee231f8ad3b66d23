"""The attack section: settings shared by the families, and one block per
family, built when params are read: from the live registry in the stages (so a
family registered at run time gets its block too), from the built-in families'
schema leaves (`attacks.schema.FAMILY_CONFIGS`) where params are only validated
(`uia check`), which imports no attack."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field, create_model, field_validator

from ..config import MAX_REQUESTS, MAX_STEPS, Section

# What each access dimension's levels may be (attack.access.levels: "<dimension>:<level>").
PRECISIONS = ("float16", "bfloat16", "int8_tensor", "int8_channel", "int4_tensor", "int4_channel")
KNOWLEDGE = ("n_half", "n_double", "no_pretrained", "inferred_labels", "no_batch_norm_stats")
OUTPUTS = ("topk", "label")
LEVEL_FORMS = {
    "layers": "L >= 1 (the last L parametrised layers) or layer names joined by '+'",
    "precision": " | ".join(PRECISIONS),
    "staleness": "R >= 0 (further deletion requests served) or T_steps, T >= 1 (fine-tuning steps on other data)",
    "knowledge": " | ".join(KNOWLEDGE),
    "queries": "B >= 1 (label-inference queries per request)",
    "output": " | ".join(OUTPUTS),
}
MAX_LEVELS = 64  # each level re-runs every attack family on the access requests of every access method


def level_error(level: str) -> str | None:
    """Why `level` ("<dimension>:<value>") is no access level, or None when it is one."""
    dimension, sep, value = level.partition(":")
    if not sep or dimension not in LEVEL_FORMS:
        return f"{level!r} is not <dimension>:<level> with a dimension of {', '.join(LEVEL_FORMS)}"
    ok = {
        "layers": value.isdigit() and int(value) >= 1 or (not value.isdigit() and bool(value)
                                                          and all(re.fullmatch(r"[\w.]+", n) for n in value.split("+"))),
        "precision": value in PRECISIONS,
        "staleness": bool(re.fullmatch(r"\d+", value)) and int(value) <= MAX_REQUESTS
        or bool(re.fullmatch(r"[1-9]\d*_steps", value)) and int(value.split("_")[0]) <= MAX_STEPS,
        "knowledge": value in KNOWLEDGE,
        "queries": value.isdigit() and int(value) >= 1,
        "output": value in OUTPUTS,
    }[dimension]
    return None if ok else f"{level!r}: {dimension} takes {LEVEL_FORMS[dimension]}"


class AccessParams(Section):
    levels: tuple[str, ...] = Field((), max_length=MAX_LEVELS, description="access levels, <dimension>:<level>")
    methods: tuple[str, ...] = Field(("exact", "approx"), min_length=1, description="unlearning methods attacked "
                                     "at each level: unlearn.method or methods in unlearn.compare")
    max_requests: int = Field(2, ge=1, le=MAX_REQUESTS, description="attack the first this many requests per level")
    iterations: int = Field(200, ge=0, le=MAX_STEPS, description="feature-recovery steps per restart at each "
                            "level; 0 = attack.feature_recovery's")

    @field_validator("levels")
    @classmethod
    def _levels(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for level in v:
            if (why := level_error(level)) is not None:
                raise ValueError(why)
        if len(set(v)) < len(v):
            raise ValueError("a level is listed twice")
        return v


class AttackSettings(Section):
    max_requests: int = Field(0, ge=0, le=MAX_REQUESTS, description="attack the first this many requests; 0 = all")
    threads: int = Field(1, ge=0, le=1024, description="torch threads while attacking; 0 = torch's default")
    sisa_view: Literal["shard", "ensemble"] = Field(
        "shard", description="under sisa: shard = invert the changed shard's retrained stage from the server's "
        "checkpoints; ensemble = the served ensemble's parameters, as for any method"
    )
    access: AccessParams = AccessParams()


def attack_params(configs: dict[str, type[BaseModel]] | None = None) -> type[AttackSettings]:
    """The attack section's type: the shared settings and `<family>: <its config>` for each family of
    `configs` (name -> config type; None: the live registry's, `uia_pipe.attacks.ATTACKS`, which imports
    every family; `attacks.schema.FAMILY_CONFIGS`: the built-in families', which imports none)."""
    if configs is None:
        from . import ATTACKS

        configs = {name: attack.config for name, attack in ATTACKS.items()}
    return create_model("AttackParams", __base__=AttackSettings,
                        **{name: (config, config()) for name, config in configs.items()})


def family_configs(section: AttackSettings) -> dict:
    """Family name -> its validated config, in registry order."""
    from . import ATTACKS

    return {name: getattr(section, name) for name in ATTACKS}
