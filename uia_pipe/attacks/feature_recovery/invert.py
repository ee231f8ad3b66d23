"""Gradient inversion of Δ from random restarts: the optimisation loop, its early stop and pruning, and the
choice of the best restart by the plain objective."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from .closed_form import analytic_input, layered_features
from .config import OPTIMIZERS, Config
from .objective import _Objective

Progress = Callable[[int, float], None]


@dataclass
class Result:
    """What the attack recovered. `reconstruction` is [k, *input_shape] on the
    data's natural scale ([0,1] images, encoded tabular rows), in the order of
    `labels` (the identity of each slot is not identifiable: match before scoring)."""

    reconstruction: torch.Tensor
    labels: torch.Tensor
    label_source: str
    loss: float
    restart_losses: list[float]
    curve: list[tuple[int, float]]
    iterations: int
    seconds: float
    values: torch.Tensor | None = None  # regression: each removed sample's inferred target value, in order



@dataclass
class _Restart:
    x: torch.Tensor
    opt: torch.optim.Optimizer
    best_loss: float = math.inf
    best_x: torch.Tensor | None = None
    ref_loss: float = math.inf  # best loss when the patience counter was last reset
    last_improved: int = 0
    steps: int = 0
    active: bool = True
    guide: float = 0.0  # β of the guide term on this restart's objective (0 = plain)
    curve: list[tuple[int, float]] = field(default_factory=list)


def _init(cfg: Config, shape: tuple[int, ...], gen: torch.Generator, boxed: bool) -> torch.Tensor:
    if cfg.init == "randn_clamped":
        x = torch.randn(shape, generator=gen)
    elif cfg.init == "uniform":
        x = torch.rand(shape, generator=gen) if boxed else torch.randn(shape, generator=gen)
    else:
        x = (0.5 if boxed else 0.0) + 0.01 * torch.randn(shape, generator=gen)
    return x.clamp(0, 1) if boxed else x


def _invert(
    point: nn.Module,
    delta: dict[str, torch.Tensor],
    y: torch.Tensor,
    input_shape: tuple[int, ...],
    cfg: Config,
    seed: int,
    progress: Progress | None = None,
    snapshot: Callable[[int, torch.Tensor], None] | None = None,
    start: torch.Tensor | None = None,
) -> tuple[Result, dict]:
    """Gradient inversion of Δ at `point` for len(y) dummies labelled y: `recover`'s promises, restarts and
    all; restart 0 begins at `start` [k, *input_shape] when given."""
    started = time.perf_counter()
    k = len(y)
    device = next(point.parameters()).device
    image = len(input_shape) >= 2
    boxed = cfg.box == "unit" or (cfg.box == "auto" and image)
    spec = OPTIMIZERS[cfg.optimizer]
    shape = (k, *input_shape)
    gen = torch.Generator().manual_seed(seed)
    batched = cfg.batch_restarts == "yes" or (cfg.batch_restarts == "auto" and device.type == "cuda")

    starts = [_init(cfg, shape, gen, boxed) for _ in range(cfg.restarts)]
    used_analytic = False
    if start is not None:
        starts[0] = start.float()
    elif cfg.analytic_init and k == 1:
        x0 = analytic_input(point, delta, input_shape)
        if x0 is not None and torch.isfinite(x0).all():
            starts[0] = (x0.clamp(0, 1) if boxed else x0).float().unsqueeze(0)
            used_analytic = True
    # The closed-form input, where there is one, is exact: no guide is needed then.
    guide = None
    if cfg.guide > 0 and cfg.guide_restarts > 0 and not used_analytic:
        if k == 1:
            guide = layered_features(point, delta, input_shape, cfg.guide_depth)
        elif cfg.joint_guide_depth:
            guide = layered_features(point, delta, input_shape, cfg.joint_guide_depth, y)
    objective = _Objective(point, delta, cfg.tv, image, guide, cfg.second_order == "finite_difference")

    runs = []
    for i, x0 in enumerate(starts):
        x = x0.to(device).requires_grad_(True)
        beta = cfg.guide if guide is not None and i < cfg.guide_restarts else 0.0
        runs.append(_Restart(x=x, opt=spec.cls([x], lr=cfg.lr, **spec.kwargs), guide=beta))
    milestones = sorted({max(1, round(m * cfg.iterations)) for m in cfg.milestones})
    stopped: list[str] = ["max_iterations"] * len(runs)
    total_steps = 0

    it = 0
    for it in range(1, cfg.iterations + 1):
        active = [i for i, r in enumerate(runs) if r.active]
        if not active:
            it -= 1
            break
        lr = cfg.lr * cfg.gamma ** sum(it > m for m in milestones)
        fade = 1 - (it - 1) / cfg.iterations  # the guide's weight falls linearly towards 0
        if batched and len(active) > 1:
            weights = torch.tensor([runs[i].guide * fade for i in active], device=device)
            losses, grads = objective.batched_step(torch.stack([runs[i].x.detach() for i in active]), y, weights)
            pairs = list(zip(active, losses.tolist(), grads))
        else:
            pairs = []
            for i in active:
                loss, gx = objective.step(runs[i].x, y, runs[i].guide * fade)
                pairs.append((i, float(loss), gx))
        for i, loss, gx in pairs:
            r = runs[i]
            r.steps += 1
            total_steps += 1
            if loss < r.best_loss:
                r.best_loss = loss
                r.best_x = r.x.detach().clone()
            if r.best_loss < r.ref_loss * (1 - cfg.min_improvement):
                r.ref_loss = r.best_loss
                r.last_improved = it
            if it % cfg.record_every == 0 or it == 1:
                r.curve.append((it, loss))
            if cfg.early_stop and it - r.last_improved >= cfg.patience:
                r.active = False
                stopped[i] = f"plateau@{it}"
                continue
            for group in r.opt.param_groups:
                group["lr"] = lr
            r.x.grad = gx.sign() if spec.signed else gx
            r.opt.step()
            if boxed:
                with torch.no_grad():
                    r.x.clamp_(0, 1)
        if cfg.prune_after and it == cfg.prune_after:
            # Guided and plain restarts optimise different objectives: keep the best of each kind.
            for guided in (True, False):
                alive = sorted((i for i, r in enumerate(runs) if r.active and (r.guide > 0) == guided),
                               key=lambda i: runs[i].best_loss)
                for i in alive[cfg.keep :]:
                    runs[i].active = False
                    stopped[i] = f"pruned@{it}"
        if progress is not None:
            progress(it, min(r.best_loss for r in runs))
        if snapshot is not None and it % cfg.record_every == 0:
            lead = min(runs, key=lambda r: r.best_loss)
            snapshot(it, lead.best_x.float().cpu())

    # Choose by the plain objective (for guided restarts, without the guide term), re-evaluated at each
    # restart's best iterate.
    finals = []
    for r in runs:
        x = r.best_x if r.best_x is not None else r.x.detach()
        value = objective.value(x, y)
        finals.append(value if math.isfinite(value) else math.inf)
    best = min(range(len(runs)), key=lambda i: finals[i])
    winner = runs[best]
    recon = (winner.best_x if winner.best_x is not None else winner.x.detach()).float().cpu()
    seconds = time.perf_counter() - started
    result = Result(
        reconstruction=recon,
        labels=y.cpu(),
        label_source=cfg.labels,
        loss=finals[best],
        restart_losses=finals,
        curve=winner.curve,
        iterations=winner.steps,
        seconds=seconds,
    )
    stats = {
        "steps": total_steps,
        "ms_per_step": 1000 * seconds / max(total_steps, 1),
        "stopped": stopped,
        "best_restart": best,
        "analytic_init": used_analytic,
        "guide_layer": guide[0] if guide is not None else None,
        "batched": batched,
        "delta_norm": float(torch.sqrt(sum((d.double() ** 2).sum() for d in delta.values()))),
        "rounds": it,
    }
    return result, stats
