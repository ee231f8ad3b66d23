"""Gradient inversion of Δ from random restarts: the optimisation loop, its early stop and pruning, and the
choice of the best restart by the plain objective. Many inversions at one point (the requests of a batch) run
as one loop, each keeping its own restarts, objective and stopping rule; with `vmap` their steps are one call."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from .closed_form import analytic_input, layered_features
from .config import OPTIMIZERS, Config
from .objective import _Objective, _Stacked
from .priors import StatsPrior, model_patch

Progress = Callable[[int, float], None]

# On a CPU a vmapped step pays where per-call overhead dominates (small models) and costs more where the
# convolutions do (benchmarks/feature_recovery.py prints both ways): `vmap: auto` batches a CPU model up to this
# many parameters, any model on CUDA.
VMAP_CPU_PARAMETERS = 1_000_000


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
class Problem:
    """One inversion: Δ at the batch's point for len(y) dummies labelled y, its seed (its restarts' starts),
    and where restart 0 begins ([k, *input_shape]; None: as the config says)."""

    delta: dict[str, torch.Tensor]
    y: torch.Tensor
    seed: int
    start: torch.Tensor | None = None


@dataclass
class _Restart:
    x: torch.Tensor
    opt: torch.optim.Optimizer
    problem: int = 0
    best_loss: float = math.inf
    best_x: torch.Tensor | None = None
    ref_loss: float = math.inf  # best loss when the patience counter was last reset
    last_improved: int = 0
    steps: int = 0
    active: bool = True
    guide: float = 0.0  # β of the guide term on this restart's objective (0 = plain)
    prior: float = 1.0  # factor of the image priors on this restart's objective (0: none, the closed-form start's)
    stopped: str = "max_iterations"
    curve: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class _Setup:
    starts: list[torch.Tensor]
    analytic: bool
    guide: tuple[str, torch.Tensor] | None
    objective: _Objective
    priors: tuple[str, ...] = ()  # the image priors on this problem's objective


def _init(cfg: Config, shape: tuple[int, ...], gen: torch.Generator, boxed: bool) -> torch.Tensor:
    if cfg.init == "randn_clamped":
        x = torch.randn(shape, generator=gen)
    elif cfg.init == "uniform":
        x = torch.rand(shape, generator=gen) if boxed else torch.randn(shape, generator=gen)
    else:
        x = (0.5 if boxed else 0.0) + 0.01 * torch.randn(shape, generator=gen)
    return x.clamp(0, 1) if boxed else x


def _setup(point: nn.Module, problem: Problem, input_shape: tuple[int, ...], cfg: Config, boxed: bool,
           prior: StatsPrior | None = None) -> _Setup:
    """One problem's restarts' starts (its seed's), closed-form start, guide, objective and its image priors
    (the patch-order prior where a patch side is set or the model has one; the image prior where `prior`,
    the attacker's CNN trained on public data, is given)."""
    k, image = len(problem.y), len(input_shape) >= 2
    gen = torch.Generator().manual_seed(problem.seed)
    starts = [_init(cfg, (k, *input_shape), gen, boxed) for _ in range(cfg.restarts)]
    analytic = False
    if problem.start is not None:
        starts[0] = problem.start.float()
    elif cfg.analytic_init and k == 1:
        x0 = analytic_input(point, problem.delta, input_shape)
        if x0 is not None and torch.isfinite(x0).all():
            starts[0] = (x0.clamp(0, 1) if boxed else x0).float().unsqueeze(0)
            analytic = True
    # The closed-form input, where there is one, is exact: no guide is needed then.
    guide = None
    if cfg.guide > 0 and cfg.guide_restarts > 0 and not analytic:
        if k == 1:
            guide = layered_features(point, problem.delta, input_shape, cfg.guide_depth)
        elif cfg.joint_guide_depth:
            guide = layered_features(point, problem.delta, input_shape, cfg.joint_guide_depth, problem.y)
    patch = (cfg.patch_prior, cfg.patch_size or model_patch(point)) if cfg.patch_prior > 0 else None
    image_prior = (cfg.image_prior, prior) if cfg.image_prior > 0 and prior is not None else None
    objective = _Objective(point, problem.delta, cfg.tv, image, guide, cfg.second_order == "finite_difference",
                           patch, image_prior)
    priors = (("patch",) if objective.patch is not None else ()) + (("image",) if objective.prior is not None else ())
    return _Setup(starts, analytic, guide, objective, priors)


def vmapped(cfg: Config, point: nn.Module) -> bool:
    """Whether restarts (and the requests of a batch) step as one vmapped call (`cfg.vmap`)."""
    if cfg.vmap != "auto":
        return cfg.vmap == "yes"
    params = next(point.parameters())
    return params.device.type == "cuda" or sum(p.numel() for p in point.parameters()) <= VMAP_CPU_PARAMETERS


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
    prior: StatsPrior | None = None,
) -> tuple[Result, dict]:
    """Gradient inversion of Δ at `point` for len(y) dummies labelled y: `recover`'s promises, restarts and
    all; restart 0 begins at `start` [k, *input_shape] when given."""
    return _invert_many(point, [Problem(delta, y, seed, start)], input_shape, cfg, progress, snapshot, prior)[0]


def _invert_many(
    point: nn.Module,
    problems: list[Problem],
    input_shape: tuple[int, ...],
    cfg: Config,
    progress: Progress | None = None,
    snapshot: Callable[[int, torch.Tensor], None] | None = None,
    prior: StatsPrior | None = None,
) -> list[tuple[Result, dict]]:
    """`_invert` of every problem at one point, as one loop: each problem's restarts start, stop, are pruned
    and are chosen between exactly as alone; with `vmapped`, every active restart of every problem takes its
    step in one call (the objective's exact double backward, whatever `second_order` says). `progress` gets the
    best loss over all problems; `snapshot`, the leading restart's best iterate of them all. Each result's
    seconds are the loop's share per problem."""
    started = time.perf_counter()
    device = next(point.parameters()).device
    boxed = cfg.box == "unit" or (cfg.box == "auto" and len(input_shape) >= 2)
    spec = OPTIMIZERS[cfg.optimizer]
    setups = [_setup(point, p, input_shape, cfg, boxed, prior) for p in problems]
    stacked = None
    if vmapped(cfg, point) and cfg.restarts * len(problems) > 1:
        stacked = _Stacked([s.objective for s in setups], [p.y.to(device) for p in problems])

    runs: list[_Restart] = []
    for p, s in enumerate(setups):
        kept = s.analytic and not cfg.analytic_refine  # the closed-form start is the result
        for i, x0 in enumerate(s.starts[:1] if kept else s.starts):
            x = x0.to(device).requires_grad_(True)
            beta = cfg.guide if s.guide is not None and i < cfg.guide_restarts else 0.0
            runs.append(_Restart(x=x, opt=spec.cls([x], lr=cfg.lr, **spec.kwargs), problem=p, guide=beta,
                                 prior=0.0 if s.analytic and i == 0 and s.priors else 1.0))
            if kept:
                runs[-1].active, runs[-1].stopped = False, "closed_form"
    milestones = sorted({max(1, round(m * cfg.iterations)) for m in cfg.milestones})
    rounds = [0] * len(problems)

    for it in range(1, cfg.iterations + 1):
        active = [i for i, r in enumerate(runs) if r.active]
        if not active:
            break
        for i in active:
            rounds[runs[i].problem] = it
        lr = cfg.lr * cfg.gamma ** sum(it > m for m in milestones)
        fade = 1 - (it - 1) / cfg.iterations  # the guide's weight falls linearly towards 0
        if stacked is not None:
            weights = torch.tensor([runs[i].guide * fade for i in active], device=device)
            priors = torch.tensor([runs[i].prior for i in active], device=device)
            losses, grads = stacked.step([runs[i].problem for i in active],
                                         torch.stack([runs[i].x.detach() for i in active]), weights, priors)
            pairs = list(zip(active, losses.tolist(), grads))
        else:
            pairs = []
            for i in active:
                r = runs[i]
                loss, gx = setups[r.problem].objective.step(r.x, problems[r.problem].y.to(device), r.guide * fade,
                                                            r.prior)
                pairs.append((i, float(loss), gx))
        for i, loss, gx in pairs:
            r = runs[i]
            r.steps += 1
            if loss < r.best_loss:
                r.best_loss = loss
                r.best_x = r.x.detach().clone()
            if r.best_loss < r.ref_loss * (1 - cfg.min_improvement):
                r.ref_loss = r.best_loss
                r.last_improved = it
            if it % cfg.record_every == 0 or it == 1:
                r.curve.append((it, loss))
            if cfg.early_stop and it - r.last_improved >= cfg.patience:
                r.active, r.stopped = False, f"plateau@{it}"
                continue
            for group in r.opt.param_groups:
                group["lr"] = lr
            r.x.grad = gx.sign() if spec.signed else gx
            r.opt.step()
            if boxed:
                with torch.no_grad():
                    r.x.clamp_(0, 1)
        if cfg.prune_after and it == cfg.prune_after:
            # Guided and plain restarts, and those with and without priors, optimise different objectives: keep
            # the best of each kind, per problem.
            for p in range(len(problems)):
                for kind in ((True, True), (True, False), (False, True), (False, False)):
                    alive = sorted((r for r in runs if r.problem == p and r.active
                                    and ((r.guide > 0), (r.prior > 0)) == kind), key=lambda r: r.best_loss)
                    for r in alive[cfg.keep:]:
                        r.active, r.stopped = False, f"pruned@{it}"
        if progress is not None:
            progress(it, min(r.best_loss for r in runs))
        if snapshot is not None and it % cfg.record_every == 0:
            lead = min(runs, key=lambda r: r.best_loss)
            snapshot(it, lead.best_x.float().cpu())

    share = (time.perf_counter() - started) / len(problems)
    return [_chosen(p, [r for r in runs if r.problem == j], setups[j], rounds[j], share, cfg, stacked is not None)
            for j, p in enumerate(problems)]


def _chosen(problem: Problem, runs: list[_Restart], setup: _Setup, rounds: int, seconds: float, cfg: Config,
            batched: bool) -> tuple[Result, dict]:
    """The restart with the lowest plain objective (for guided restarts, without the guide term), re-evaluated
    at each restart's best iterate, as the problem's result."""
    finals = []
    for r in runs:
        value = setup.objective.value(r.best_x if r.best_x is not None else r.x.detach(), problem.y.to(r.x.device))
        finals.append(value if math.isfinite(value) else math.inf)
    best = min(range(len(runs)), key=lambda i: finals[i])
    winner = runs[best]
    steps = sum(r.steps for r in runs)
    result = Result(
        reconstruction=(winner.best_x if winner.best_x is not None else winner.x.detach()).float().cpu(),
        labels=problem.y.cpu(),
        label_source=cfg.labels,
        loss=finals[best],
        restart_losses=finals,
        curve=winner.curve,
        iterations=winner.steps,
        seconds=seconds,
    )
    stats = {
        "steps": steps,
        "ms_per_step": 1000 * seconds / max(steps, 1),
        "stopped": [r.stopped for r in runs],
        "best_restart": best,
        "analytic_init": setup.analytic,
        "priors": list(setup.priors),
        "guide_layer": setup.guide[0] if setup.guide is not None else None,
        "batched": batched,
        "delta_norm": float(torch.sqrt(sum((d.double() ** 2).sum() for d in problem.delta.values()))),
        "rounds": rounds,
    }
    return result, stats
