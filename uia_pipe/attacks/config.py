"""The attack section: settings shared by the families, and one block per
family of the registry, built from it when params are read (so a family
registered at run time gets its block too)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, create_model

from ..config import MAX_REQUESTS, Section
from . import ATTACKS


class AttackSettings(Section):
    max_requests: int = Field(0, ge=0, le=MAX_REQUESTS, description="attack the first this many requests; 0 = all")
    threads: int = Field(1, ge=0, le=1024, description="torch threads while attacking; 0 = torch's default")
    sisa_view: Literal["shard", "ensemble"] = Field(
        "shard", description="under sisa: shard = invert the changed shard's retrained stage from the server's "
        "checkpoints; ensemble = the served ensemble's parameters, as for any method"
    )


def attack_params() -> type[AttackSettings]:
    """The attack section's type: the shared settings and `<family>: <its config>` for each registered family."""
    return create_model("AttackParams", __base__=AttackSettings,
                        **{name: (attack.config, attack.config()) for name, attack in ATTACKS.items()})


def family_configs(section: AttackSettings) -> dict:
    """Family name -> its validated config, in registry order."""
    return {name: getattr(section, name) for name in ATTACKS}
