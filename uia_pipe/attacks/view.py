"""What each attacker is granted. The module boundary is the threat model: an
attack function receives one of these and nothing else, so it cannot see the
removed samples; only the stage compares its output with the truth."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from ..models import clone


@dataclass(frozen=True)
class AttackerView:
    """White-box view of the server (feature recovery): θ and θ_u, θ₀ where the
    exact-unlearning attack assumes it, public facts about the setting, and
    the fine-tune's batch size (the server's own training settings).

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
    # B, the batch size of the fine-tune on D_u: the server ran that fine-tune, so
    # knows it (the exact attack's batch_weighted estimator needs it); None = not given.
    finetune_batch_size: int | None = None
    # The parameters of θ and θ_u (and θ₀) the attacker holds, by name (an access level: the last layers, or a
    # named subset); None = all. The update Δ and every objective are restricted to them.
    visible: tuple[str, ...] | None = None
    # c with Δ = c·Σ_X ∇ℓ: η/k for approx, the fine-tune's learning rate for exact (one full-batch step),
    # the server's own settings; None = unknown. Regression's value inference needs it.
    step: float | None = None


@dataclass(frozen=True)
class Limits:
    """What an access level (attack.access) withholds from the attacker; the defaults withhold nothing.
    The evaluator's models stay as the server released them: each family reads the limits it concerns."""

    visible: tuple[str, ...] | None = None  # white-box: parameter names held (AttackerView.visible)
    n: int | None = None  # white-box: N as the attacker guesses it; None = the true N
    pretrained: bool = True  # white-box: θ₀ known; without it exact unlearning is attacked as approx
    batch_norm_stats: bool = True  # white-box: batch norm's running statistics known (else reset to 0 and 1)
    observe: Callable[[nn.Module], nn.Module] | None = None  # black-box: the attacker's copy of a released model


def without_batch_norm_stats(model: nn.Module) -> nn.Module:
    """A copy of `model` whose batch-norm running statistics are the defaults (mean 0, variance 1)."""
    model = clone(model)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            m.reset_running_stats()
    return model


def _same(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def sisa_shard_views(
    before: list[list[nn.Module]],
    after: list[list[nn.Module]],
    slice_sizes: list[list[int]],
    removed: list[list[int]],
    input_shape: tuple[int, ...],
    num_classes: int,
    finetune_batch_size: int | None = None,
) -> list[tuple[int, int, AttackerView]]:
    """A SISA-aware server's views of one deletion: (shard, slice, view) for
    each shard whose models changed.

    What this attacker holds: SISA's checkpoint store before and after the
    deletion (`before[s][j]`, `after[s][j]`: shard s after training on slices
    0..j−1, so [s][0] is θ₀; the server must keep these to serve the next
    deletion), the slice sizes, and SISA's index of where each deleted record
    lives (`removed[s][j]`: how many of X's records slice j of shard s holds)
    — the records' locations, never their contents.

    Comparing the stores finds the changed shard s (the others are
    bit-identical) and its first changed checkpoint j+1: retraining restarted
    from c = before[s][j] and redid stage j, `fit(c, slices 0..j without X)`
    with the same settings, seed and batch order. That one stage is exactly
    the paper's exact-unlearning setting, so the view is θ₀ := c,
    θ := before[s][j+1], θ_u := after[s][j+1], N := |slices 0..j|,
    k := removed[s][j], method "exact". With the default fine-tune (one
    epoch, batch ≥ N) the stage is one full-batch step and
    −(N(θ−c) − (N−k)(θ_u−c)) = lr·Σ_X ∇CE(c) holds exactly; with several
    minibatches it is the same linearisation as for exact unlearning. The
    later stages start from different checkpoints before and after, so
    their difference mixes the drift in: X's records in later slices of an
    already affected shard are not covered by any view.
    """
    views = []
    for s, (old, new) in enumerate(zip(before, after)):
        j = next((i for i in range(1, len(old)) if not _same(old[i], new[i])), None)
        if j is None:
            continue
        stage = j - 1
        views.append((s, stage, AttackerView(
            theta_original=old[j], theta_unlearned=new[j], theta_pretrained=old[stage], method="exact",
            input_shape=tuple(input_shape), num_classes=num_classes,
            n=int(sum(slice_sizes[s][: stage + 1])), k=int(removed[s][stage]),
            finetune_batch_size=finetune_batch_size,  # each stage is a fit with the fine-tune's settings
        )))
    return views


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
        return restricted(torch.softmax(self._model(x.to(device)).double(), dim=1), self.access, self.topk).cpu()


def restricted(probs: torch.Tensor, access: str, topk: int = 1) -> torch.Tensor:
    """What `access` shows of output probabilities [n, C]: all of them, the `topk` largest (the rest zero), or a
    one-hot of the argmax ("label")."""
    if access == "probabilities":
        return probs
    if access == "topk":
        values, idx = probs.topk(topk, dim=1)
        return torch.zeros_like(probs).scatter_(1, idx, values)
    return torch.zeros_like(probs).scatter_(1, probs.argmax(1, keepdim=True), 1.0)


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
