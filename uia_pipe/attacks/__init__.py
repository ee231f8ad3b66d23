"""Attacks on unlearning. `ATTACKS` is the registry the attack stage, the
defence sweep and evaluate iterate: name (= params key `attack.<name>`) ->
`protocol.Attack`. Families run in this order on each run, and a later one
may use an earlier one's results (feature recovery takes the inferred labels;
the compound attack chains membership, label inference and feature recovery).

The registry is imported on first use of `ATTACKS`, so that the schema leaves
(`attacks.config`, `attacks.schema`: what params validation reads) import no family."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .protocol import Attack


@functools.cache
def _registry() -> dict[str, Attack]:
    # (imported under other names: `uia_pipe.attacks.label_inference` stays the algorithm module)
    from .families.compound import ATTACK as _COMPOUND
    from .families.feature_recovery import ATTACK as _FEATURE_RECOVERY
    from .families.label_inference import ATTACK as _LABEL_INFERENCE
    from .families.membership import ATTACK as _MEMBERSHIP
    from .families.recovery import ATTACK as _RECOVERY
    from .families.secrets import EXPOSURE as _EXPOSURE, EXTRACTION as _EXTRACTION, TEXT_RECOVERY as _TEXT_RECOVERY
    from .schema import FAMILY_CONFIGS

    attacks = {
        "label_inference": _LABEL_INFERENCE,
        "feature_recovery": _FEATURE_RECOVERY,
        "membership": _MEMBERSHIP,
        "compound": _COMPOUND,
        "recovery": _RECOVERY,
        "exposure": _EXPOSURE,
        "extraction": _EXTRACTION,
        "text_recovery": _TEXT_RECOVERY,
    }
    assert list(attacks) == list(FAMILY_CONFIGS) and all(
        attack.config is FAMILY_CONFIGS[name] for name, attack in attacks.items()), \
        "attacks.ATTACKS and attacks.schema.FAMILY_CONFIGS disagree"
    return attacks


def __getattr__(name: str) -> Any:
    if name == "ATTACKS":  # one dict, built once: a family registered at run time stays registered
        return _registry()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
