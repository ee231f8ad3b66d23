"""access: every attack family again at each level of attack.access (a weaker attacker: fewer layers, coarser
weights, a stale release, less knowledge, fewer queries, narrower outputs), on the first requests of each method
in attack.access.methods that the run unlearned (else unlearn.method); the cost of each level beside what it
recovers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from stages.common import (
    DataDir, ParamsOption, TrainedDir, UnlearnedDir, clean_errors, device_for, progress, seed_everything,
    single_command, torch_threads,
)
from uia_pipe import executor, io, tracking
from uia_pipe.attacks import ATTACKS, access
from uia_pipe.attacks.config import attack_params, sweep_configs
from uia_pipe.attacks.protocol import Context, check, for_task
from uia_pipe.attacks.setting import load_run
from uia_pipe.config import BaseParams, load_sections, section_hash
from uia_pipe.data import DownloadParams


@clean_errors
def main(
    data: DataDir,
    trained: TrainedDir,
    unlearned: UnlearnedDir,
    metrics: Annotated[Path, typer.Option(help="metrics JSON to write ({level: {method: {...}}})")],
    details: Annotated[Path, typer.Option(help="per-(method, level, request) CSV to write (plot data)")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Attack each method's first requests again at every access level; record what each level recovers and costs."""
    p = load_sections(params, base=BaseParams, download=DownloadParams, attack=attack_params())
    base, a = p.base, p.attack
    acc = a.access
    record = io.load_json(unlearned / "requests.json")
    have = (record["method"], *record.get("compare", ()))
    methods = [m for m in acc.methods if m in have] or [record["method"]]
    if set(methods) != set(acc.methods):
        typer.echo(f"access: attacking {', '.join(methods)} (this run unlearned {', '.join(have)})")
    configs, device = sweep_configs(a, acc.iterations), device_for(base.device)
    seed_everything(base.seed, base.threads)
    with torch_threads(a.threads), executor.for_stage(base, a.threads) as ex:
        runs = {m: load_run(data, trained, unlearned if m == record["method"] else unlearned / "compare" / m,
                            device, acc.max_requests) for m in methods}
        task = next(iter(runs.values())).setting.task
        attacks = for_task(ATTACKS, task)
        levels, skipped = access.applicable(acc.levels, attacks)
        if skipped:
            typer.echo(f"access: skipping {', '.join(skipped)} (their family does not attack {task} models)")
        for run in runs.values():
            check(run.setting, attacks, configs)

        def context(run) -> Context:
            # SISA's released ensemble, as the defend stage attacks it: a level withholds from the served models
            return Context(base.seed, run.test_x, Path(p.download.cache_dir).expanduser(), "ensemble",
                           public_y=run.test_y, executor=ex)

        started = time.perf_counter()
        with progress(len(runs) * (1 + len(levels)), "access") as bar:
            frame = access.sweep(runs, levels, attacks, configs, context,
                                 on_step=lambda m, level: (bar.set_postfix(method=m, level=level), bar.update()))
    result = access.summarise(frame, attacks)
    io.save_json(metrics, result)
    io.save_csv(details, frame)
    typer.echo(f"access: {len(result)} levels × {len(runs)} methods in {time.perf_counter() - started:.1f} s")
    for level, by_method in result.items():
        typer.echo(f"  {level:26s} " + "; ".join(
            f"{m}: " + (", ".join(f"{k} {row[k]:.3g}" for k in access.HEADLINE if k in row) or "not servable")
            for m, row in by_method.items()))
    for row in frame[frame["request"] < 0].itertuples():
        typer.echo(f"  {row.level} not servable under {row.method}: {row.unservable}")
    tracking.log_run("access", {"base": base.model_dump(), "attack": a.model_dump()},
                     {f"{level}.{m}": row for level, by_method in result.items() for m, row in by_method.items()},
                     section_hash(base, a), artifacts=[metrics, details])


app = single_command(main)

if __name__ == "__main__":
    app()
