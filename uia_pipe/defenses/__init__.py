"""Defences: name -> (function, config type). The name is the params key
(`defend.defences` lists the ones to run; `defend.<name>` holds its settings).

A defence is `defend(inp, strength, cfg, seed) -> θ_u'`: given the released
deletion (a `DefenceInput`: θ, θ_u, X, D_u \\ X) it returns a new model and
leaves its inputs untouched. Strength 0 is no defence; what a strength means
is each module's docstring: noise σ (relative to ‖θ_u − θ‖), prune rate,
finetune epochs, noisy_unlearning noise multiplier σ.
"""

from __future__ import annotations

from typing import Callable

from . import finetune, noise, noisy_unlearning, prune
from .base import DefenceConfig, DefenceInput

DEFENSES: dict[str, tuple[Callable, type[DefenceConfig]]] = {
    "noise": (noise.defend, noise.Config),
    "prune": (prune.defend, prune.Config),
    "finetune": (finetune.defend, finetune.Config),
    "noisy_unlearning": (noisy_unlearning.defend, noisy_unlearning.Config),
}

# Defences that redo the unlearning step as an approximate (θ + ηg) update.
REPLACES_UNLEARNING = {"noisy_unlearning"}

__all__ = ["DEFENSES", "REPLACES_UNLEARNING", "DefenceConfig", "DefenceInput"]
