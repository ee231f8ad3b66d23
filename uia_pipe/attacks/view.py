"""What each attacker is granted. The module boundary is the threat model: an
attack function receives one of these and nothing else, so it cannot see the
removed samples; only the stage compares its output with the truth."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass(frozen=True)
class AttackerView:
    """White-box view of the server (feature recovery): θ and θ_u, θ₀ where the
    exact-unlearning attack assumes it, and public facts about the setting.

    There is deliberately no field for the forget set or its labels.
    """

    theta_original: nn.Module
    theta_unlearned: nn.Module
    theta_pretrained: nn.Module | None
    method: str  # the unlearning method the attacker assumes ("exact" or "approx")
    input_shape: tuple[int, ...]
    num_classes: int
    n: int  # N = |D_u|
    k: int  # |X|, the number of removed samples


class QueryOracle:
    """Black-box access to a model: probabilities (or less) for inputs the
    attacker chooses; every input evaluated is counted, batched or not.

    `access` is "probabilities" (full vector), "topk" (the `topk` largest, the
    rest zero) or "label" (a one-hot of the argmax).
    """

    def __init__(self, model: nn.Module, access: str = "probabilities", topk: int = 1,
                 budget: int | None = None):
        if access not in ("probabilities", "topk", "label"):
            raise ValueError(f"unknown access {access!r}")
        self._model = model.eval()
        self.access = access
        self.topk = topk
        self.budget = budget
        self.queries = 0

    @property
    def exhausted(self) -> bool:
        return self.budget is not None and self.queries >= self.budget

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs for a batch x, in float64 (small posterior changes near
        p≈1 vanish in float32). Raises BudgetExhausted past the budget."""
        if self.budget is not None and self.queries + len(x) > self.budget:
            raise BudgetExhausted(self.queries, self.budget)
        self.queries += len(x)
        device = next(self._model.parameters()).device
        logits = self._model(x.to(device)).double()
        probs = torch.softmax(logits, dim=1)
        if self.access == "probabilities":
            return probs.cpu()
        if self.access == "topk":
            values, idx = probs.topk(self.topk, dim=1)
            return torch.zeros_like(probs).scatter_(1, idx, values).cpu()
        return torch.zeros_like(probs).scatter_(1, probs.argmax(1, keepdim=True), 1.0).cpu()


class BudgetExhausted(RuntimeError):
    def __init__(self, used: int, budget: int):
        super().__init__(f"query budget exhausted ({used} of {budget})")
        self.used = used
        self.budget = budget


@dataclass
class BlackBoxView:
    """A user's view (label inference): query access to θ before and θ_u after
    the deletion, and the number of classes."""

    before: QueryOracle
    after: QueryOracle
    num_classes: int
    input_shape: tuple[int, ...]
    notes: dict = field(default_factory=dict)
