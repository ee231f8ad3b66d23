"""The campaign: every family of the registry on every (θ, θ_u) pair of a run, each given its grant
(`grants`), then scored against the truth and summarised here, on the evaluator's side. The attack stage,
the sweeps (defences, access levels) and evaluate iterate the registry and never name a family."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection

import pandas as pd
import torch
from pydantic import BaseModel

from .. import io
from ..attacks.protocol import Attack, Context, for_task
from . import grants
from .setting import Run


@dataclass
class Outcome:
    """Every family's results on one run."""

    frame: pd.DataFrame  # one row per request: "request", then each family's scores as "<family>.<column>"
    scored: dict[str, pd.DataFrame]  # family -> its own scores, one row per request
    results: dict[str, Any]
    summaries: dict[str, dict]
    seconds: float


class FileStore:
    """Reusable work under a folder: key -> <folder>/<key>.safetensors (`protocol.Store`)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def load(self, key: str) -> tuple[dict[str, torch.Tensor], dict] | None:
        path = self.folder / f"{key}.safetensors"
        return io.load_tensors(path) if path.is_file() else None

    def save(self, key: str, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        io.save_tensors(self.folder / f"{key}.safetensors", tensors, meta)


def check(run: Run, attacks: dict[str, Attack], configs: dict[str, BaseModel]) -> None:
    """Every question the families of `run`'s task will be asked can be posed on it, before any attack runs."""
    grants.check(run, for_task(attacks, run.setting.task), configs)


def prepare(run: Run, attacks: dict[str, Attack], configs: dict[str, BaseModel], ctx: Context) -> None:
    """Each family's reusable work for the served θ of `run` (label inference's probes, membership's shadows),
    into ctx; what ctx already holds is kept."""
    for name, attack in for_task(attacks, run.setting.task).items():
        if attack.prepare is not None and name not in ctx.prepared:
            grant = grants.grant(run, name, configs[name], ctx)
            ctx.prepared[name], ctx.stats[name] = attack.prepare(grant, configs[name], ctx)


def attack_run(run: Run, attacks: dict[str, Attack], configs: dict[str, BaseModel], ctx: Context,
               outputs: bool = False, reuse: Outcome | None = None, rerun: Collection[str] = (),
               given: dict[str, tuple[Any, float]] | None = None) -> Outcome | tuple[Outcome, dict[str, Any]]:
    """Every family in registry order on every request of `run`, each on its grant; what ctx.prepared
    already holds (the same served θ, attacked again after a defence) is not prepared again. Families that
    cannot attack the run's task (`Attack.tasks`) are left out. With `reuse` (an outcome of the same families
    on inputs the same for those not in `rerun`: full access, for a level acting through `rerun` alone), the
    families not in `rerun` are not run: their results, scores and summaries are `reuse`'s, and their seconds
    count in the outcome's. `given` holds families' results already made for this run, with their seconds
    (`run_together`): scored and summarised here, not run, their seconds counted too. With `outputs`, also each family's artifacts and plot
    data ({relative path or plot name: Figure | {name: tensor} | DataFrame})."""
    started, elsewhere = time.perf_counter(), 0.0  # seconds spent before this call on its results
    frame, scored, results, summaries, made = None, {}, {}, {}, {}
    for name, attack in for_task(attacks, run.setting.task).items():
        if reuse is not None and name not in rerun and name in reuse.results:
            results[name], scored[name], summaries[name] = reuse.results[name], reuse.scored[name], reuse.summaries[name]
            ctx.earlier[name] = results[name]
            elsewhere += summaries[name]["seconds"]
        else:
            cfg, family_started = configs[name], time.perf_counter()
            prepare(run, {name: attack}, configs, ctx)
            made_before = given is not None and name in given  # its grant was posed there: not again
            grant = None if made_before and not outputs else grants.grant(run, name, cfg, ctx)
            results[name], made_in = given[name] if made_before else (attack.run(grant, cfg, ctx), 0.0)
            elsewhere += made_in
            ctx.earlier[name] = results[name]
            scored[name] = attack.score(run.setting, results[name])
            summaries[name] = {**attack.summarise(scored[name], results[name], cfg, ctx.stats.get(name, {})),
                               "seconds": time.perf_counter() - family_started + made_in}
            if outputs and attack.outputs is not None:
                made.update(attack.outputs(run.setting, grant, results[name], cfg, ctx))
        own = scored[name].rename(columns={c: f"{name}.{c}" for c in scored[name].columns if c != "request"})
        frame = own if frame is None else frame.merge(own, on="request")
    outcome = Outcome(frame, scored, results, summaries, time.perf_counter() - started + elsewhere)
    return (outcome, made) if outputs else outcome


def run_together(jobs: list[tuple[Run, dict[str, BaseModel], Context, Collection[str]] | None],
                 attacks: dict[str, Attack]) -> list[dict[str, tuple[Any, float]]]:
    """For each job (run, configs, ctx, the families it runs), the results of those families that can attack
    several runs at once (`Attack.run_many`), made so over every job whose config of the family is the same,
    with each job's share of the seconds: `attack_run`'s `given`. A family that reads another's results
    (`grants.READS`) is left to run in its turn; a job that is None is left out."""
    out: list[dict[str, tuple[Any, float]]] = [{} for _ in jobs]
    for name, attack in attacks.items():
        if attack.run_many is None:
            continue
        groups: list[tuple[BaseModel, list[int]]] = []
        for i, job in enumerate(jobs):
            if job is None or name not in job[3] or name not in for_task(attacks, job[0].setting.task):
                continue
            cfg = job[1][name]
            if grants.READS.get(name, lambda _: ())(cfg):
                continue
            same = next((members for other, members in groups if other == cfg), None)
            if same is None:
                groups.append((cfg, [i]))
            else:
                same.append(i)
        for cfg, members in groups:
            started, asked = time.perf_counter(), []
            for i in members:
                run, configs, ctx, _ = jobs[i]
                prepare(run, {name: attack}, configs, ctx)
                asked.append(grants.grant(run, name, cfg, ctx))
            made = attack.run_many(asked, cfg, jobs[members[0]][2])
            seconds, total = time.perf_counter() - started, max(sum(len(g.requests) for g in asked), 1)
            for i, g, results in zip(members, asked, made):
                out[i][name] = (results, seconds * len(g.requests) / total)
    return out


def sweep_configs(configs: dict[str, BaseModel], iterations: int) -> dict[str, BaseModel]:
    """The families' configs for a sweep that re-runs them many times (defences, access levels): `iterations`
    for families that have them (0 = as configured), and each config's own cheaper `for_sweep()` where it
    defines one."""
    out = {}
    for name, cfg in configs.items():
        if iterations and "iterations" in type(cfg).model_fields:
            cfg = cfg.model_copy(update={"iterations": iterations})
        out[name] = cfg.for_sweep() if hasattr(cfg, "for_sweep") else cfg
    return out
