"""Weaker attackers (attack.access): each access level turns a run, the families' configs and the context into
what an attacker at that level holds, and the families it acts through (`ACTS`, and those reading their results)
are run again on it; the others see what they see in full and their rows are full access's. The server releases
as usual; a level acts on the attacker's side:

- layers:L / layers:a+b — only the last L parametrised layers' parameters of θ, θ_u (and θ₀), or the named ones:
  the white-box update Δ and every objective are restricted to them (the attack point's other weights are
  still the served model's: Maui's and the partial-gradient papers' setting).
- precision:P — every released model rounded to float16 or bfloat16, or int8 / int4 weights, symmetric, per
  tensor or per output channel (torch's quantisation: MinMax observers, zero point 0); biases stay float, as in
  torch's quantised layers.
- staleness:R — θ_u published only after R further deletion requests (k records each, drawn from what the
  server still holds) were served by the same method, in order; staleness:T_steps — after T SGD steps of the
  fine-tune's settings on records never in D_u.
- knowledge:K — N halved or doubled (the attacker's guess), θ₀ unknown (exact unlearning attacked as approx),
  labels only as label inference infers them, batch norm's running statistics unknown.
- queries:B — label inference with B queries of θ_u per request (B // C probes per class).
- output:O — label inference, and membership's posteriors, through top-k or label-only outputs.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import pandas as pd
import torch
from pydantic import BaseModel
from torch import nn

from .. import tasks
from ..attacks import label_inference as li
from ..attacks.protocol import Attack, Context
from ..attacks.view import Limits, restricted
from ..config import OptimParams
from ..errors import UiaError
from ..models import clone
from ..unlearning.methods import METHODS, SERVER_STATE
from ..unlearning.problem import UnlearningProblem
from ..weights import rounded
from . import grants
from .campaign import Outcome, prepare
from .setting import Run, Setting
from .sweep import Unservable, Variant, means

FULL = "full"  # the level with nothing withheld, run first as every curve's reference
PAPER_STEPS = 10_000 * 5  # the reference's feature recovery: 10,000 iterations × 5 restarts, always in full


def parametrised_layers(model: nn.Module) -> list[tuple[str, list[str]]]:
    """(module name, its own trainable parameters' names) of each module that has some, in registration order
    (the head last for every model here)."""
    out = []
    for name, module in model.named_modules():
        own = [f"{name}.{p}" if name else p for p, t in module.named_parameters(recurse=False) if t.requires_grad]
        if own:
            out.append((name, own))
    return out


def visible_parameters(model: nn.Module, value: str) -> tuple[str, ...]:
    """The parameter names layers:`value` leaves the attacker: the last L layers', or the named layers'."""
    layers = parametrised_layers(model)
    if value.isdigit():
        if int(value) > len(layers):
            raise UiaError(f"attack.access: layers:{value}: the model has {len(layers)} parametrised layers")
        chosen = layers[-int(value):]
    else:
        known = dict(layers)
        unknown = [n for n in value.split("+") if n not in known]
        if unknown:
            raise UiaError(f"attack.access: layers:{value}: no parametrised layer {', '.join(unknown)} "
                           f"(the model has {', '.join(known)})")
        chosen = [(n, known[n]) for n in value.split("+")]
    return tuple(p for _, names in chosen for p in names)


def later_requests(setting: Setting, theta_u: nn.Module, retain_x: torch.Tensor, retain_y: torch.Tensor, k: int,
                   count: int, seed: int) -> nn.Module:
    """θ_u after `count` further requests of k records each, drawn (seeded) from what the server still holds,
    unlearned one after another by the run's method from the model the previous one left."""
    unlearn = METHODS[setting.method][0]
    g = torch.Generator().manual_seed(seed)
    model, x, y = theta_u, retain_x, retain_y
    for served in range(count):
        forget = torch.zeros(len(y), dtype=torch.bool)
        forget[torch.randperm(len(y), generator=g)[:k]] = True
        problem = UnlearningProblem(setting.theta_pretrained, model, x, y, setting.finetune, setting.finetune_seed)
        model, x, y = unlearn(problem, forget, setting.method_config), x[~forget], y[~forget]
        _finite(model, f"{setting.method}'s weights are not finite after {served + 1} of {count} further requests")
    return model


def drifted(model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: OptimParams, steps: int,
            seed: int) -> nn.Module:
    """A copy of `model` after `steps` SGD steps of `settings` on minibatches of (x, y) (batch norm in eval)."""
    model = clone(model)
    device = next(model.parameters()).device
    opt = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum,
                          weight_decay=settings.weight_decay)
    g = torch.Generator().manual_seed(seed)
    order, at, size = torch.randperm(len(y), generator=g), 0, min(settings.batch_size, len(y))
    for _ in range(steps):
        if at + size > len(order):
            order, at = torch.randperm(len(y), generator=g), 0
        idx = order[at: at + size]
        at += size
        opt.zero_grad()
        tasks.loss(model(x[idx].to(device)), y[idx].to(device)).backward()
        opt.step()
    return _finite(model.eval(), f"the weights are not finite after {steps} fine-tuning steps")


class RestrictedOutputs(nn.Module):
    """A model seen through top-k or label-only outputs: log of the probabilities the oracle would return
    (zeros floored), so a family that reads log-posteriors reads what that access gives."""

    def __init__(self, model: nn.Module, access: str, topk: int = 1):
        super().__init__()
        self.model, self.access, self.topk = model, access, topk

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = restricted(torch.softmax(self.model(x).double(), dim=1), self.access, self.topk)
        return probs.clamp_min(1e-30).log()


def _finite(model: nn.Module, what: str) -> nn.Module:
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise Unservable(what)
    return model


@dataclasses.dataclass(frozen=True)
class Attacked:
    """One level's run, the families' configs and the context the campaign runs them with."""

    run: Run
    configs: dict[str, BaseModel]
    ctx: Context


def _layers(value: str, a: Attacked) -> Attacked:
    visible = visible_parameters(a.run.setting.theta_original, value)
    labels = a.configs["feature_recovery"].labels
    head = parametrised_layers(a.run.setting.theta_original)[-1][1]
    if labels == "analytic" and not set(head) <= set(visible):
        raise UiaError(f"attack.access: layers:{value} hides the output layer, which "
                       "attack.feature_recovery.labels: analytic reads (use inferred or oracle labels)")
    return dataclasses.replace(a, run=dataclasses.replace(a.run, limits=Limits(visible=visible)))


def _precision(value: str, a: Attacked) -> Attacked:
    setting, round_ = a.run.setting, lambda m: rounded(m, value)
    setting = dataclasses.replace(setting, theta_original=round_(setting.theta_original),
                                  theta_pretrained=round_(setting.theta_pretrained))
    run = dataclasses.replace(a.run, setting=setting, thetas_u=[round_(m) for m in a.run.thetas_u],
                              limits=Limits(observe=round_))
    prepared = dict(a.ctx.prepared)
    if "label_inference" in prepared:  # the probes' outputs as the attacker reads them off the rounded θ (and θ₀)
        probes, cfg = prepared["label_inference"], a.configs["label_inference"]
        reference = None if probes.reference is None else li.oracle(setting.theta_pretrained, cfg)(probes.x)
        prepared["label_inference"] = dataclasses.replace(
            probes, before=li.oracle(setting.theta_original, cfg)(probes.x), reference=reference)
    return Attacked(run, a.configs, dataclasses.replace(a.ctx, prepared=prepared))


def _staleness(value: str, a: Attacked) -> Attacked:
    setting = a.run.setting
    if value.endswith("_steps"):
        steps = int(value.split("_")[0])
        if setting.outside_y is None or not len(setting.outside_y):
            raise UiaError(f"attack.access: staleness:{value} needs pool records outside D_u to fine-tune on")

        def later(theta_u, retain_x, retain_y, k, seed):
            return drifted(theta_u, setting.outside_x, setting.outside_y, setting.finetune, steps, seed)
    else:
        count = int(value)
        if setting.method not in METHODS or setting.method in SERVER_STATE or setting.method == "retrain":
            raise Unservable(f"{setting.method} serves a request from state the attack stage does not keep "
                             "(a checkpoint store or the pretraining data)")
        need = max(setting.ks) * (count + 1)
        if need >= len(setting.du_y):
            raise Unservable(f"{count} further requests and this one remove {need} of N = {len(setting.du_y)} "
                             "records")

        def later(theta_u, retain_x, retain_y, k, seed):
            return later_requests(setting, theta_u, retain_x, retain_y, k, count, seed)
    thetas_u = []
    for req, theta_u in zip(setting.requests, a.run.thetas_u):
        keep = ~setting.forget_mask(req)
        thetas_u.append(later(theta_u, setting.du_x[keep], setting.du_y[keep], len(req["forget"]),
                              a.ctx.seed + 5003 + req["index"]))

    def release(theta, theta_u, forget_x, forget_y, retain_x, retain_y, seed):  # membership's made pairs alike
        return later(theta_u, retain_x, retain_y, len(forget_y), seed)

    return dataclasses.replace(a, run=dataclasses.replace(a.run, thetas_u=thetas_u, release=release))


def _knowledge(value: str, a: Attacked) -> Attacked:
    setting, configs = a.run.setting, a.configs
    n = len(setting.du_y)
    limits = {"n_half": Limits(n=max(n // 2, max(setting.ks) + 1)), "n_double": Limits(n=2 * n),
              "no_pretrained": Limits(pretrained=False), "no_batch_norm_stats": Limits(batch_norm_stats=False),
              "inferred_labels": Limits()}[value]
    if value == "no_batch_norm_stats" and not any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                                                  for m in setting.theta_original.modules()):
        raise UiaError("attack.access: knowledge:no_batch_norm_stats: the model has no batch norm")
    if value == "inferred_labels":
        configs = {**configs, "feature_recovery": configs["feature_recovery"].model_copy(update={"labels": "inferred"})}
    return Attacked(dataclasses.replace(a.run, limits=limits), configs, a.ctx)


def _queries(value: str, a: Attacked) -> Attacked:
    classes = a.run.setting.card["num_classes"]
    per_class = int(value) // classes
    if per_class < 1:
        raise UiaError(f"attack.access: queries:{value} buys less than one probe per class ({classes} classes)")
    prepared = dict(a.ctx.prepared)
    prepared["label_inference"] = prepared["label_inference"].first_per_class(per_class)
    return dataclasses.replace(a, ctx=dataclasses.replace(a.ctx, prepared=prepared))


def _output(value: str, a: Attacked) -> Attacked:
    cfg = a.configs["label_inference"].model_copy(update={"access": value})
    # Probes made anew under that access (cached per θ like the attack stage's): the attacker's cost of it.
    prepared = {k: v for k, v in a.ctx.prepared.items() if k != "label_inference"}
    stats = {k: v for k, v in a.ctx.stats.items() if k != "label_inference"}
    observe = lambda m: RestrictedOutputs(m, value, cfg.topk)  # noqa: E731
    return Attacked(dataclasses.replace(a.run, limits=Limits(observe=observe)), {**a.configs, "label_inference": cfg},
                    dataclasses.replace(a.ctx, prepared=prepared, stats=stats))


# Dimension -> (its level's value, the full-access run) -> that level's run; raises UiaError for a level the
# run cannot be attacked at.
DIMENSIONS: dict[str, Callable[[str, Attacked], Attacked]] = {
    "layers": _layers, "precision": _precision, "staleness": _staleness, "knowledge": _knowledge,
    "queries": _queries, "output": _output,
}


# The family a dimension (or one level) acts through; without it (a task it cannot attack) the level is skipped.
NEEDS: dict[str, str] = {"queries": "label_inference", "output": "label_inference",
                         "knowledge:inferred_labels": "label_inference"}


# The families a dimension (or one level) acts through, None: all of them. Every other family sees at that level
# exactly what it sees in full (the same models, release, config, prepared work and the limits it reads: checked,
# `rerun`), so its rows are full access's; a family reading the results of one run again runs again (grants.READS).
ACTS: dict[str, tuple[str, ...] | None] = {
    "layers": ("feature_recovery",), "knowledge": ("feature_recovery",), "queries": ("label_inference",),
    "output": ("label_inference", "membership"), "precision": None, "staleness": None,
}


def rerun(level: str, full: Attacked, at: Attacked, attacks: dict[str, Attack]) -> frozenset[str]:
    """The families attacked again at `level` (whose run, configs and context are `at`): those it acts through
    (ACTS), then, in registry order, each reading one of them (grants.READS). Every other family's inputs are
    checked to be full access's (a ValueError where a level changes what it declares it leaves alone)."""
    acts = ACTS[level] if level in ACTS else ACTS.get(level.split(":", 1)[0])  # a dimension not named: all
    if acts is None:
        return frozenset(attacks)
    out = set(acts) & set(attacks)
    for name in attacks:
        if set(grants.READS.get(name, lambda cfg: ())(at.configs[name])) & out:
            out.add(name)
    for name in (n for n in attacks if n not in out):
        changed = _changed(name, full, at)
        if changed:
            raise ValueError(f"access: {level} changes {name}'s {changed} but ACTS does not name {name}")
    return frozenset(out)


def _changed(name: str, full: Attacked, at: Attacked) -> str:
    """What of family `name`'s inputs `at` holds otherwise than `full` ("" for nothing)."""
    a, b = full.run, at.run
    checks = {
        "setting": a.setting is b.setting, "released models": len(a.thetas_u) == len(b.thetas_u) and all(
            x is y for x, y in zip(a.thetas_u, b.thetas_u)),
        "release": a.release is b.release and a.sisa_view == b.sisa_view,
        "config": full.configs[name] == at.configs[name],
        "prepared work": full.ctx.prepared.get(name) is at.ctx.prepared.get(name)
        and full.ctx.stats.get(name) is at.ctx.stats.get(name),
        "context": full.ctx.seed == at.ctx.seed and full.ctx.public_x is at.ctx.public_x,
        **{f"limits.{f}": getattr(a.limits, f) == getattr(b.limits, f) for f in grants.LIMITS.get(name, ())},
    }
    return ", ".join(what for what, same in checks.items() if not same)


def applicable(levels: tuple[str, ...], attacks: dict[str, Attack]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the levels `attacks` can be run at, those skipped: the family they act through is not among them)."""
    def needs(level: str) -> str | None:
        return NEEDS.get(level, NEEDS.get(level.split(":", 1)[0]))
    kept = tuple(lv for lv in levels if needs(lv) is None or needs(lv) in attacks)
    return kept, tuple(lv for lv in levels if lv not in kept)


def at_level(level: str, full: Attacked) -> Attacked:
    """The run, configs and context of an attacker at `level` ("<dimension>:<value>", or FULL)."""
    if level == FULL:
        return full
    dimension, value = level.split(":", 1)
    return DIMENSIONS[dimension](value, full)


def variants(runs: dict[str, Run], levels: tuple[str, ...], attacks: dict[str, Attack],
             configs: dict[str, BaseModel], context: Callable[[Run], Context], reuse: bool = True) -> list[Variant]:
    """Each (method, level) as a sweep variant (`sweep.sweep`), FULL first. Every level of every method is
    built here, before any attack (a level a run cannot take fails first); each method's families are
    prepared once at full access and that work is shared by its levels (probes, shadows, audit pairs). With
    `reuse`, a level runs again only the families it acts through (`rerun`), the others' rows being full
    access's; without, every family at every level (the same numbers, timings aside)."""
    out = []
    for method, run in runs.items():
        ctx = context(run)
        prepare(run, attacks, configs, ctx)
        full = Attacked(run, configs, ctx)
        for level in (FULL, *levels):
            dimension, _, value = level.partition(":")
            key = {"method": method, "level": level, "dimension": dimension, "value": value or FULL}
            try:
                a = at_level(level, full)
            except Unservable as why:
                out.append(Variant(key, unservable=str(why)))
                continue
            if level == FULL or not reuse:
                out.append(Variant(key, a.run, a.configs, a.ctx, _effort))
                full_key = tuple(key.values())
            else:
                out.append(Variant(key, a.run, a.configs, a.ctx, _effort, reuse=full_key,
                                   rerun=rerun(level, full, a, attacks)))
    return out


def _effort(run: Run, outcome: Outcome) -> list[dict]:
    """Per request, over the families that count them: optimiser steps with their seconds, and queries; the
    level's seconds a request and the queries that made its probes (of θ, once; anew under an output level)."""
    frames = [f.reset_index(drop=True) for f in outcome.scored.values()]
    zero = pd.Series(0.0, index=frames[0].index)
    stepped = [f for f in frames if "steps" in f and "seconds" in f]
    effort = {"steps": sum((f["steps"].astype(float) for f in stepped), zero),
              "step_seconds": sum((f["seconds"].astype(float) for f in stepped), zero),
              "queries": sum((f["queries"].astype(float) for f in frames if "queries" in f), zero)}
    probe_queries = sum(float(s.get("probe_queries", 0)) for s in outcome.summaries.values())
    n = len(run.setting.requests)
    return [{"unservable": "", "seconds": outcome.seconds / n, "probe_queries": probe_queries,
             **{k: float(v.iloc[j]) for k, v in effort.items()}} for j in range(n)]


def summarise(frame: pd.DataFrame, attacks: dict[str, Attack]) -> dict[str, dict[str, dict[str, float]]]:
    """`{level: {method: {...}}}` (`{"served": 0}` where the server could not release): each family's numbers
    declared for the access table under their one name ("<family>.<key>"), and the effort: per request
    (seconds, queries, steps), the probes' queries once, and the hours the reference's scale (PAPER_STEPS
    optimiser steps a request) would take at the measured step cost."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for (level, method), group in frame.groupby(["level", "method"], sort=False):
        if (group["request"] < 0).all():
            out.setdefault(level, {})[method] = {"served": 0.0}
            continue
        entry = means(attacks, "access", group)
        steps = group["steps"].sum()
        entry.update(served=1.0, seconds_per_request=group["seconds"].mean(),
                     queries_per_request=group["queries"].mean(), steps_per_request=group["steps"].mean(),
                     probe_queries=group["probe_queries"].iloc[0])
        if steps > 0:
            entry["paper_hours_per_request"] = group["step_seconds"].sum() / steps * PAPER_STEPS / 3600
        out.setdefault(level, {})[method] = {k: float(v) for k, v in entry.items() if pd.notna(v)}
    return out
