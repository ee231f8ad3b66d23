"""Defences: name -> (function, config type). The name is the params key
(`defend.defences` lists the ones to run; `defend.<name>` holds its settings).

A defence is `defend(inp, strength, cfg, seed) -> θ_u'`: given the released
deletion (a `DefenceInput`: θ, θ_u, X, D_u \\ X) it returns a new model and
leaves its inputs untouched. Strength 0 is no defence; what a strength means
is each module's docstring: noise σ (relative to ‖θ_u − θ‖), prune rate,
finetune epochs, noisy_unlearning noise multiplier σ.

`DEFENSES` and `DefenceInput` are imported on first use, so that the schema
leaf `defenses.config` (each defence's settings, what params validation reads)
imports no defence and no torch.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from .config import DEFENCE_CONFIGS, DefenceConfig

# Defences that redo the unlearning step as an approximate (θ + ηg) update.
REPLACES_UNLEARNING = {"noisy_unlearning"}

__all__ = ["DEFENSES", "REPLACES_UNLEARNING", "DefenceConfig", "DefenceInput"]


@functools.cache
def _registry() -> dict[str, tuple[Callable, type[DefenceConfig]]]:
    from . import finetune, noise, noisy_unlearning, prune

    defenses = {
        "noise": (noise.defend, noise.Config),
        "prune": (prune.defend, prune.Config),
        "finetune": (finetune.defend, finetune.Config),
        "noisy_unlearning": (noisy_unlearning.defend, noisy_unlearning.Config),
    }
    assert list(defenses) == list(DEFENCE_CONFIGS) and all(
        cfg is DEFENCE_CONFIGS[name] for name, (_, cfg) in defenses.items()), \
        "defenses.DEFENSES and defenses.config.DEFENCE_CONFIGS disagree"
    return defenses


def __getattr__(name: str) -> Any:
    if name == "DEFENSES":
        return _registry()
    if name == "DefenceInput":
        from .base import DefenceInput

        return DefenceInput
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
