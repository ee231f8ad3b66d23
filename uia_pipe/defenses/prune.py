"""Global magnitude pruning of θ_u: the fraction r of smallest-magnitude
weights of all conv and linear layers together is set to zero
(torch.nn.utils.prune.global_unstructured with L1 norm, then made permanent).
Biases and batch-norm parameters are kept."""

from __future__ import annotations

from torch import nn

from ..weights import pruned
from .base import DefenceInput
from .config import PruneConfig as Config  # the settings, in the schema leaf


def defend(inp: DefenceInput, strength: float, cfg: Config, seed: int) -> nn.Module:
    """θ_u with the fraction `strength` of its prunable weights zeroed (globally,
    by magnitude: `weights.pruned`); rate 0 returns a bit-identical copy."""
    return pruned(inp.theta_unlearned, strength)
