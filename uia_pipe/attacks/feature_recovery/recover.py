"""The attack: recover the removed samples' features from the attacker's view."""

from __future__ import annotations

import time
from typing import Callable

import torch

from ...tasks import task_of
from ..view import AttackerView
from .backfit import _backfit
from .config import Config
from .invert import Problem, Progress, Result, _invert_many
from .labels import analytic_labels, analytic_residuals
from .priors import StatsPrior
from .update import _attack_point, observed_update


def _resolve_labels(cfg: Config, delta, view: AttackerView, labels: torch.Tensor | None, task: str) -> torch.Tensor:
    if task == "autoencoder":  # the target is the input itself: nothing to infer
        return torch.zeros(view.k, dtype=torch.float64)
    if task == "regression":
        if cfg.labels != "analytic":
            raise ValueError(f"labels={cfg.labels!r} needs classes; a regressor's residuals are read from Δ "
                             "(attack.feature_recovery.labels: analytic)")
        return analytic_residuals(delta, view.k)
    if cfg.labels == "analytic":
        return analytic_labels(delta, view.num_classes, view.k)
    if labels is None:
        raise ValueError(f"labels={cfg.labels!r} needs the labels passed in (use 'analytic' otherwise)")
    labels = torch.as_tensor(labels).long().reshape(-1)
    if len(labels) != view.k:
        raise ValueError(f"got {len(labels)} labels for k={view.k} removed samples")
    return labels


@torch.no_grad()
def inferred_values(point: torch.nn.Module, x: torch.Tensor, residuals: torch.Tensor, step: float) -> torch.Tensor:
    """Regression's value inference: y = f(x) − r at the point where Δ's gradients were taken, r the
    residual read from the output bias (∂(f − y)²/∂b = 2r, scaled by the update's step c)."""
    device = next(point.parameters()).device
    pred = point.eval()(x.to(device)).reshape(-1).double().cpu()
    return (pred - residuals.cpu() / (2 * step)).float()


def recover(
    view: AttackerView,
    cfg: Config,
    seed: int,
    labels: torch.Tensor | None = None,
    progress: Progress | None = None,
    *,
    snapshot: Callable[[int, torch.Tensor], None] | None = None,
    prior: StatsPrior | None = None,
) -> tuple[Result, dict]:
    """Recover the k removed samples' features from (θ, θ_u[, θ₀]).

    Promises:
    - uses only `view` (never the forget set) and, for labels="oracle" or
      "inferred", the `labels` tensor [k] the caller passes (ignored for
      "analytic", which reads them from Δ);
    - returns a `Result` whose reconstruction is [k, *view.input_shape], float32
      on the CPU, in [0,1] for images (box "unit"), unbounded for tabular rows;
      `labels` are the labels the dummies were optimised with;
    - the chosen restart is the one with the lowest value of the plain
      objective 1 − cos + λ·TV, the guide term of guided restarts and the image
      priors left out (`cfg.patch_prior`; `cfg.image_prior` with `prior`, the
      attacker's CNN trained on public data: `priors.train_stats_prior`; on
      every restart but one begun at a closed-form start, which they would pull off it),
      re-evaluated at each restart's best iterate;
    - deterministic for a given seed on a given device and thread count;
      attacked alone or in a batch (`recover_many`), the same bit for bit
      where steps run one by one (`cfg.vmap` "no"), to float rounding where
      they are vmapped (a batch's size changes the order of its sums);
    - `progress(iteration, loss)` is called once per round of steps
      (iteration ≤ cfg.iterations; loss = best so far over restarts);
      `snapshot(iteration, x)` (benchmarks) gets the current best iterate of
      the leading restart every `record_every` rounds.

    For k > 1, "joint" (`cfg.k_strategy`, the reference) optimises all k
    dummies against Δ at once; "backfit" adds one more restart: `_backfit`'s
    one-sample-at-a-time estimate, then refined jointly at `cfg.backfit_lr`,
    which wins when its plain objective is lower.

    `stats` holds timing and bookkeeping: steps (all restarts), ms_per_step,
    stopped (why each restart ended), delta_norm, batched, guide_layer (the
    layer whose input guided restart(s) matched, or None); under "backfit",
    steps and ms_per_step count every single-sample attack too, and
    backfit_weights (each sample's least-squares weight), backfit_loss and
    backfit_chosen say how the backfitted restart fared.
    """
    return recover_many([(view, labels, seed)], cfg, progress, snapshot=snapshot, prior=prior)[0]


def recover_many(
    requests: list[tuple[AttackerView, torch.Tensor | None, int]],
    cfg: Config,
    progress: Progress | None = None,
    *,
    snapshot: Callable[[int, torch.Tensor], None] | None = None,
    prior: StatsPrior | None = None,
) -> list[tuple[Result, dict]]:
    """`recover` of each (view, labels, seed), in order, as few batches as the views allow: views that share
    the attack point (the same θ or θ₀ object), the visible parameters, k and the input shape are inverted
    in one loop (`_invert_many`), each keeping its own restarts and stopping rule. Each result's seconds
    are its share of its batch's wall time."""
    started = time.perf_counter()
    prepared, dtype = [], torch.float64 if cfg.delta_dtype == "float64" else torch.float32
    for view, labels, seed in requests:
        delta = observed_update(view, dtype, cfg.exact_update)
        point = _attack_point(view)
        task = task_of(point)
        y = _resolve_labels(cfg, delta, view, labels, task).to(next(point.parameters()).device)
        prepared.append((view, point, task, Problem(delta, y, seed)))
    batches: dict[tuple, list[int]] = {}
    for i, (view, point, _, _) in enumerate(prepared):
        batches.setdefault((id(point), view.method, view.visible, view.k, view.input_shape), []).append(i)
    out: list = [None] * len(requests)
    for members in batches.values():
        view, point = prepared[members[0]][:2]
        done = _invert_many(point, [prepared[i][3] for i in members], view.input_shape, cfg, progress, snapshot,
                            prior)
        if view.k > 1 and cfg.k_strategy == "backfit":
            done = _backfitted(point, [prepared[i][3] for i in members], view, cfg, done, progress, snapshot, prior)
        for i, item in zip(members, done):
            out[i] = item
    share = (time.perf_counter() - started) / len(requests)
    for (view, point, task, problem), (result, stats) in zip(prepared, out):
        result.label_source = {"regression": "residuals", "autoencoder": "none"}.get(task, cfg.labels)
        if task == "regression" and view.step:
            result.values = inferred_values(point, result.reconstruction, problem.y, view.step)
        result.seconds = share
        stats["ms_per_step"] = 1000 * share / max(stats["steps"], 1)
    return out


def _backfitted(point, problems: list[Problem], view: AttackerView, cfg: Config, done: list, progress,
                snapshot, prior: StatsPrior | None = None) -> list[tuple[Result, dict]]:
    """Each joint result against its backfitted restart (`_backfit`, then refined jointly from its estimate at
    `cfg.backfit_lr`, the refinements as one batch); the lower plain objective wins."""
    fits = [_backfit(point, p.delta, p.y, view, cfg, p.seed, progress, prior) for p in problems]
    polish = cfg.model_copy(update={"lr": cfg.backfit_lr, "restarts": 1, "prune_after": 0})
    refined = _invert_many(point, [Problem(p.delta, p.y, p.seed, start) for p, (start, _, _) in zip(problems, fits)],
                           view.input_shape, polish, progress, snapshot, prior)
    out = []
    for (result, stats), (again, again_stats), (_, steps, weights) in zip(done, refined, fits):
        chosen = again.loss < result.loss
        losses, total = result.restart_losses + [again.loss], stats["steps"] + steps + again_stats["steps"]
        if chosen:
            result, stats = again, again_stats
            result.iterations += steps
        result.restart_losses = losses
        stats.update(steps=total, backfit_weights=weights, backfit_chosen=chosen, backfit_loss=again.loss)
        out.append((result, stats))
    return out
