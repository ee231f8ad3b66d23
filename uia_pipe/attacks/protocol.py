"""What an attack family is, and the campaign that runs every family of the
registry on every (θ, θ_u) pair of a run.

A family is one `Attack`: a typed config (its params block `attack.<name>`),
a run function that builds each request's view (an `AttackerView`, query
oracles, or narrower) and attacks it without ever reading the removed samples,
and a scoring step, run here on the evaluator's side, that compares its
results with the truth: per request, and, for a family whose numbers rest on
more than the run's requests (membership's audit pairs), over all of them. The attack stage, the defence sweep and evaluate
iterate the registry and never name a family.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch
from pydantic import BaseModel
from torch import nn

from ..executor import LOCAL, Executor
from .setting import Run, Setting
from .view import Limits


@dataclass
class Context:
    """What the campaign hands every family besides its config: the seed, public
    data, where reusable work may be cached, callbacks, and what earlier
    families of the same run prepared and found (a compound attack builds on it)."""

    seed: int
    public_x: torch.Tensor  # public data (the test set): auxiliary probes, the attacker's shadow records
    cache_dir: Path | None = None  # reusable work (label inference's probes), keyed by what made it
    sisa_view: str = "ensemble"  # under sisa: "shard" when the attacker holds the server's checkpoint store
    progress: Callable[[int, float], None] | None = None  # (iteration, loss) of an optimising attack
    on_request: Callable[[str, int], None] | None = None  # (family, request index) once each is attacked
    prepared: dict[str, Any] = field(default_factory=dict)  # family -> what its prepare() made
    stats: dict[str, dict] = field(default_factory=dict)  # family -> numbers about that (e.g. queries)
    earlier: dict[str, Any] = field(default_factory=dict)  # family -> its results on this run
    public_y: torch.Tensor | None = None  # labels of public_x
    # How the server releases a model a family makes alike (membership's audit pairs): under a defence,
    # release(θ, θ_u, forget_x, forget_y, retain_x, retain_y, seed) -> the defended θ_u; None: θ_u as is.
    release: Callable[..., nn.Module] | None = None
    executor: Executor = LOCAL  # maps a family's independent work (requests, shadow pairs): here or on Ray
    limits: Limits = Limits()  # what an access level withholds from the attacker (attack.access); nothing by default


@dataclass(frozen=True)
class Attack:
    """One attack family (see the module docstring). Column names of `score`'s
    frame get `prefix` in the per-request table of all families (None: the
    family's name and an underscore)."""

    config: type[BaseModel]
    run: Callable[[Setting, list[nn.Module], BaseModel, Context], Any]  # -> the family's results
    score: Callable[[Setting, Any], pd.DataFrame]  # one row per request, with a "request" column
    summarise: Callable[[pd.DataFrame, dict], dict]  # (scored frame, prepare()'s stats) -> numbers
    prefix: str | None = None
    prepare: Callable[[Setting, BaseModel, Context], tuple[Any, dict]] | None = None  # once per served θ
    outputs: Callable[[Setting, list], dict[str, Any]] | None = None  # relative path -> Figure | {name: tensor}
    plots: Callable[[Setting, list[nn.Module], BaseModel, Context], dict[str, pd.DataFrame]] | None = None
    defended: Callable[[pd.DataFrame], pd.DataFrame] | None = None  # per-request columns kept under a defence
    defended_summary: Callable[[pd.DataFrame], dict] | None = None  # their means (one defence, one strength)
    pooled: Callable[[Setting, Any, BaseModel], dict] | None = None  # numbers over all results, beside summarise's
    defended_pooled: tuple[str, ...] = ()  # pooled keys kept under a defence: columns "<name>.<key>"
    check: Callable[[Setting, BaseModel], None] | None = None  # raises UiaError for a setting it cannot attack
    defended_config: Callable[[BaseModel], BaseModel] | None = None  # its config in the defence sweep (cheaper)
    tasks: tuple[str, ...] = ("classification",)  # the models it can attack (uia_pipe.tasks); others skip it


def for_task(attacks: dict[str, Attack], task: str) -> dict[str, Attack]:
    """The families that can attack a model of `task`, in registry order."""
    return {name: attack for name, attack in attacks.items() if task in attack.tasks}


@dataclass
class Outcome:
    """Every family's results on one run."""

    frame: pd.DataFrame  # one row per request, each family's columns with its prefix
    scored: dict[str, pd.DataFrame]  # family -> its own scores, one row per request
    results: dict[str, Any]
    summaries: dict[str, dict]
    plots: dict[str, pd.DataFrame]
    seconds: float


def check(setting: Setting, attacks: dict[str, Attack], configs: dict[str, BaseModel]) -> None:
    """Every family's own check of the run's setting, before any attack runs."""
    for name, attack in for_task(attacks, setting.task).items():
        if attack.check is not None:
            attack.check(setting, configs[name])


def prepare(setting: Setting, attacks: dict[str, Attack], configs: dict[str, BaseModel], ctx: Context) -> None:
    """Each family's reusable work for the served θ of `setting` (label inference's probes), into ctx;
    what ctx already holds is kept."""
    for name, attack in for_task(attacks, setting.task).items():
        if attack.prepare is not None and name not in ctx.prepared:
            ctx.prepared[name], ctx.stats[name] = attack.prepare(setting, configs[name], ctx)


def attack_run(run: Run, attacks: dict[str, Attack], configs: dict[str, BaseModel], ctx: Context,
               plots: bool = False) -> Outcome:
    """Every family in registry order on every request of `run`; `plots` also
    computes the families' plot data. What ctx.prepared already holds (the same
    served θ, attacked again after a defence) is not prepared again. Families that cannot attack the
    run's task (`Attack.tasks`) are left out."""
    started = time.perf_counter()
    frame, scored, results, summaries, plot_data = None, {}, {}, {}, {}
    attacks = for_task(attacks, run.setting.task)
    for name, attack in attacks.items():
        cfg, family_started = configs[name], time.perf_counter()
        prepare(run.setting, {name: attack}, configs, ctx)
        results[name] = attack.run(run.setting, run.thetas_u, cfg, ctx)
        ctx.earlier[name] = results[name]
        scored[name] = attack.score(run.setting, results[name])
        pooled = attack.pooled(run.setting, results[name], cfg) if attack.pooled is not None else {}
        summaries[name] = {**attack.summarise(scored[name], ctx.stats.get(name, {})), **pooled,
                           "seconds": time.perf_counter() - family_started}
        if plots and attack.plots is not None:
            plot_data.update(attack.plots(run.setting, run.thetas_u, cfg, ctx))
        prefix = f"{name}_" if attack.prefix is None else attack.prefix
        own = scored[name].rename(columns={c: f"{prefix}{c}" for c in scored[name].columns if c != "request"})
        frame = own if frame is None else frame.merge(own, on="request")
    return Outcome(frame, scored, results, summaries, plot_data, time.perf_counter() - started)


def outputs(run: Run, attacks: dict[str, Attack], outcome: Outcome) -> dict[str, Any]:
    """Every family's artifacts of one run: relative path -> Figure or {name: tensor}."""
    out = {}
    for name, attack in for_task(attacks, run.setting.task).items():
        if attack.outputs is not None:
            out.update(attack.outputs(run.setting, outcome.results[name]))
    return out


def defended_rows(attacks: dict[str, Attack], outcome: Outcome) -> pd.DataFrame:
    """The per-request columns each family keeps under a defence (default: every
    numeric score, prefixed with the family's name), and its `defended_pooled`
    numbers, the same in every row."""
    frame = None
    for name, attack in attacks.items():
        if name not in outcome.scored:  # a family the run's task left out
            continue
        own = outcome.scored[name]
        if attack.defended is not None:
            kept = attack.defended(own)
        else:
            numeric = own.drop(columns="request").select_dtypes("number")
            kept = numeric.rename(columns=lambda c: f"{name}.{c}")
        kept = kept.assign(request=own["request"].to_numpy(),
                           **{f"{name}.{key}": outcome.summaries[name].get(key, float("nan"))
                              for key in attack.defended_pooled})
        frame = kept if frame is None else frame.merge(kept, on="request")
    return frame


def defended_summary(attacks: dict[str, Attack], group: pd.DataFrame) -> dict[str, float]:
    """Means over the requests of one (defence, strength), family by family; a family's `defended_pooled`
    numbers as they are."""
    out: dict[str, float] = {}
    for name, attack in attacks.items():
        pooled = {f"{name}.{key}" for key in attack.defended_pooled}
        if attack.defended_summary is not None:
            out.update(attack.defended_summary(group))
        else:
            out.update({f"{c}_mean": group[c].mean() for c in group.columns
                        if c.startswith(f"{name}.") and c not in pooled})
        out.update({c: group[c].iloc[0] for c in pooled if c in group})
    return out
