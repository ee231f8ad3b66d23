"""Attacks on unlearning. `ATTACKS` is the registry the attack stage, the
defence sweep and evaluate iterate: name (= params key `attack.<name>`) ->
`protocol.Attack`. Families run in this order on each run, and a later one
may use an earlier one's results (feature recovery takes the inferred labels)."""

from __future__ import annotations

from .families import feature_recovery, label_inference
from .protocol import Attack

ATTACKS: dict[str, Attack] = {
    "label_inference": label_inference.ATTACK,
    "feature_recovery": feature_recovery.ATTACK,
}
