"""Global magnitude pruning of θ_u: the fraction r of smallest-magnitude
weights of all conv and linear layers together is set to zero
(torch.nn.utils.prune.global_unstructured with L1 norm, then made permanent).
Biases and batch-norm parameters are kept."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune

from ..models import clone
from .base import DefenceInput
from .config import PruneConfig as Config  # the settings, in the schema leaf

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """The (module, "weight") pairs pruning applies to."""
    return [(m, "weight") for m in model.modules() if isinstance(m, PRUNABLE)]


def defend(inp: DefenceInput, strength: float, cfg: Config, seed: int) -> nn.Module:
    """θ_u with the fraction `strength` of its prunable weights zeroed (globally,
    by magnitude); rate 0 returns a bit-identical copy."""
    model = clone(inp.theta_unlearned)
    if strength == 0:
        return model
    targets = prunable(model)
    with torch.no_grad():
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=float(strength))
        for module, name in targets:
            prune.remove(module, name)
    return model.eval()
