"""defend: each configured defence at each strength on the first
defend.max_requests θ_u, then every attack family again on the defended models."""

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
from uia_pipe.defenses.config import DefendParams
from uia_pipe.evaluation import sweep
from uia_pipe.evaluation.campaign import prepare, sweep_configs


@clean_errors
def main(
    data: DataDir,
    trained: TrainedDir,
    unlearned: UnlearnedDir,
    metrics: Annotated[Path, typer.Option(help="metrics JSON to write ({defence:strength: {...}})")],
    details: Annotated[Path, typer.Option(help="tidy per-(defence, strength, request) CSV to write")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Defend each released θ_u at each strength; record utility against leakage."""
    p = load_sections(params, base=BaseParams, download=DownloadParams, attack=attack_params(), defend=DefendParams)
    base, d, a = p.base, p.defend, p.attack
    configs = sweep_configs(family_configs(a), d.attack_iterations)
    with attacking("defend", base, a.threads, p.download.cache_dir, data, trained, unlearned, configs,
                   d.max_requests) as at:  # SISA's released ensemble: a defence transforms what is released
        run = next(iter(at.runs.values()))
        ctx = at.context(run)
        prepare(run, at.attacks, configs, ctx)
        defences = {name: getattr(d, name) for name in d.defences}
        started = time.perf_counter()
        with progress(sum(len(c.strengths) for c in defences.values()), "defend") as bar:
            frame = sweep.sweep(sweep.defence_variants(run, defences, configs, ctx), at.attacks, "defence",
                                on_step=lambda key: (bar.set_postfix(**key), bar.update()))
        result = sweep.summarise_defences(frame, at.attacks)
    io.save_json(metrics, result)
    io.save_csv(details, frame)
    typer.echo(f"defend: {len(frame)} defended models in {time.perf_counter() - started:.1f} s")
    for key, row in result.items():
        typer.echo(f"  {key:24s} " + ", ".join(f"{k} {v:.3g}" for k, v in row.items()))
    attack = a.model_dump(mode="json", exclude={"access"})  # the levels are the access stage's
    tracking.log_run("defend", {"base": base.model_dump(), "defend": d.model_dump(), "attack": attack},
                     result, section_hash(base, d, attack), artifacts=[metrics, details])


app = single_command(main)

if __name__ == "__main__":
    app()
