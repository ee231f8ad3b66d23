"""The attack's settings: every knob of feature recovery, typed and checked (`Config`,
from the schema leaf `uia_pipe.attacks.schema.feature_recovery`, which params
validation reads without torch), and the optimisers its names stand for. A leaf: it
imports none of the attack's implementation."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..schema.feature_recovery import EXACT_UPDATES, OPTIMIZER_NAMES, Config  # noqa: F401  (re-exported)


@dataclass(frozen=True)
class OptimizerSpec:
    """An optimiser of the dummy inputs: torch class, extra kwargs, and whether
    it is fed sign(∇x) (the reference) or ∇x itself."""

    cls: type[torch.optim.Optimizer]
    signed: bool
    kwargs: dict = field(default_factory=dict)


OPTIMIZERS: dict[str, OptimizerSpec] = {
    # The reference: AdamW (torch defaults, weight decay 0.01) on the sign of ∇x.
    "signed_adamw": OptimizerSpec(torch.optim.AdamW, signed=True),
    "signed_adam": OptimizerSpec(torch.optim.Adam, signed=True),
    "adam": OptimizerSpec(torch.optim.Adam, signed=False),
    "adamw": OptimizerSpec(torch.optim.AdamW, signed=False),
}
assert tuple(OPTIMIZERS) == OPTIMIZER_NAMES, "feature_recovery.OPTIMIZERS and schema.feature_recovery.OPTIMIZER_NAMES disagree"
