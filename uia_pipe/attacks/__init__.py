"""Attacks on unlearning. `ATTACKS` is the registry the attack stage, the
defence sweep and evaluate iterate: name (= params key `attack.<name>`) ->
`protocol.Attack`. Families run in this order on each run, and a later one
may use an earlier one's results (feature recovery takes the inferred labels;
the compound attack chains membership, label inference and feature recovery)."""

from __future__ import annotations

from .families.compound import ATTACK as _COMPOUND
from .families.feature_recovery import ATTACK as _FEATURE_RECOVERY
from .families.label_inference import ATTACK as _LABEL_INFERENCE
from .families.membership import ATTACK as _MEMBERSHIP
from .protocol import Attack

# (imported under other names: `uia_pipe.attacks.label_inference` stays the algorithm module)
ATTACKS: dict[str, Attack] = {
    "label_inference": _LABEL_INFERENCE,
    "feature_recovery": _FEATURE_RECOVERY,
    "membership": _MEMBERSHIP,
    "compound": _COMPOUND,
}
