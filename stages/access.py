"""access: the attack families each level of attack.access acts through again (a weaker attacker: fewer layers,
coarser weights, a stale release, less knowledge, fewer queries, narrower outputs; the other families' rows are
full access's), on the first requests of each method in attack.access.methods that the run unlearned (else
unlearn.method); the cost of each level beside what it recovers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from stages.attacking import attacking
from stages.common import DataDir, ParamsOption, TrainedDir, UnlearnedDir, clean_errors, progress, single_command
from uia_pipe import io, tracking
from uia_pipe.attacks.config import attack_params, family_configs
from uia_pipe.config import BaseParams, load_sections, section_hash
from uia_pipe.data import DownloadParams
from uia_pipe.evaluation import access, sweep
from uia_pipe.evaluation.campaign import sweep_configs


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
    configs = sweep_configs(family_configs(a), acc.iterations)
    with attacking("access", base, a.threads, p.download.cache_dir, data, trained, unlearned, configs,
                   acc.max_requests, acc.methods) as at:  # SISA's released ensemble, as the defend stage attacks it
        levels, skipped = access.applicable(acc.levels, at.attacks)
        if skipped:
            typer.echo(f"access: skipping {', '.join(skipped)} (their family does not attack "
                       f"{next(iter(at.runs.values())).setting.task} models)")
        started = time.perf_counter()
        variants = access.variants(at.runs, levels, at.attacks, configs, at.context)
        with progress(len(variants), "access") as bar:
            frame = sweep.sweep(variants, at.attacks, "access",
                                on_step=lambda key: (bar.set_postfix(method=key["method"], level=key["level"]),
                                                     bar.update()))
        runs = at.runs
    result = access.summarise(frame, at.attacks)
    io.save_json(metrics, result)
    io.save_csv(details, frame)
    typer.echo(f"access: {len(result)} levels × {len(runs)} methods in {time.perf_counter() - started:.1f} s")
    for level, by_method in result.items():
        typer.echo(f"  {level:26s} " + "; ".join(
            f"{m}: " + (", ".join(f"{k} {v:.3g}" for k, v in row.items() if "." in k) or "not servable")
            for m, row in by_method.items()))
    for row in frame[frame["request"] < 0].itertuples():
        typer.echo(f"  {row.level} not servable under {row.method}: {row.unservable}")
    tracking.log_run("access", {"base": base.model_dump(), "attack": a.model_dump()},
                     {f"{level}.{m}": row for level, by_method in result.items() for m, row in by_method.items()},
                     section_hash(base, a), artifacts=[metrics, details])


app = single_command(main)

if __name__ == "__main__":
    app()
