"""k > 1 removed samples recovered one at a time (backfitting)."""

from __future__ import annotations

import torch
from torch import nn

from ..view import AttackerView
from .config import Config
from .invert import Progress, _invert
from .labels import _label_scores
from .objective import _Objective
from .priors import StatsPrior


def _backfit(
    point: nn.Module,
    delta: dict[str, torch.Tensor],
    y: torch.Tensor,
    view: AttackerView,
    cfg: Config,
    seed: int,
    progress: Progress | None = None,
    prior: StatsPrior | None = None,
) -> tuple[torch.Tensor, int, list[float]]:
    """k > 1 removed samples one at a time (backfitting, as for additive models).

    Δ ∝ Σ_j g(x_j, y_j). Given estimates x̂_m of the others, Δ − Σ_{m≠i} c_m g(x̂_m) is close to sample i's
    gradient alone, which the single-sample attack (its closed-form start and layered guide included)
    inverts better, on a well-trained model, than k dummies fitted at once. c are least-squares weights of
    the dummies' own gradients against Δ, free per sample, so a sample recovered poorly gets a small weight
    instead of corrupting the others' residuals. Samples are first peeled off in the order of their label's
    output-bias change (most negative first: the largest 1 − p_y, so the largest gradient; a regressor's largest
    residual first), each against
    what those before it leave unexplained, then each is solved again `cfg.backfit_rounds` times.
    Returns the k estimates [k, *input_shape] in the order of y, the steps taken, and the weights c."""
    device = next(point.parameters()).device
    k = len(y)
    objective = _Objective(point, delta, cfg.tv, len(view.input_shape) >= 2)
    names = objective.names
    target = torch.cat([delta[n].double().reshape(-1) for n in names]).to(device)
    target = target / target.norm()
    sizes = [delta[n].numel() for n in names]
    if y.is_floating_point():  # a regressor's residuals (largest first), an autoencoder's zeros: no class
        order = sorted(range(k), key=lambda i: -abs(float(y[i])))
    else:
        scores = _label_scores(delta, view.num_classes)
        order = sorted(range(k), key=lambda i: float(scores[y[i]]))
    xs: list[torch.Tensor | None] = [None] * k
    grads: list[torch.Tensor | None] = [None] * k

    def fit() -> tuple[list[int], torch.Tensor]:
        known = [m for m in range(k) if grads[m] is not None]
        basis = torch.stack([grads[m] for m in known], 1)
        return known, torch.nan_to_num(torch.linalg.lstsq(basis, target.unsqueeze(1)).solution.squeeze(1))

    steps = 0
    for p in range(1 + cfg.backfit_rounds):
        for i in order:
            residual = target
            if any(g is not None for g in grads):
                known, weights = fit()
                residual = target - sum(w * grads[m] for m, w in zip(known, weights) if m != i)
            part = {n: r.reshape(delta[n].shape) for n, r in zip(names, residual.split(sizes))}
            result, stats = _invert(point, part, y[i : i + 1], view.input_shape, cfg, seed + 101 * (p * k + i),
                                    progress, prior=prior)
            steps += stats["steps"]
            xs[i] = result.reconstruction[0]
            grads[i] = objective.gradient(result.reconstruction.to(device), y[i : i + 1])
    return torch.stack(xs), steps, fit()[1].tolist()
