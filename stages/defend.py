"""defend: each configured defence at each strength on the first
defend.max_requests θ_u, then every attack family again on the defended models."""

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
from uia_pipe.attacks import ATTACKS
from uia_pipe.attacks.config import attack_params, sweep_configs
from uia_pipe.attacks.protocol import Context, check, for_task, prepare
from uia_pipe.attacks.setting import load_run
from uia_pipe.config import BaseParams, load_sections, section_hash
from uia_pipe.data import DownloadParams
from uia_pipe.defenses import sweep
from uia_pipe.defenses.config import DefendParams


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
    configs = sweep_configs(a, d.attack_iterations)
    device = device_for(base.device)
    seed_everything(base.seed, base.threads)
    with torch_threads(a.threads), executor.for_stage(base, a.threads) as ex:
        run = load_run(data, trained, unlearned, device, d.max_requests)
        attacks = for_task(ATTACKS, run.setting.task)
        check(run.setting, attacks, configs)
        ctx = Context(base.seed, run.test_x, Path(p.download.cache_dir).expanduser(),  # attacks the released θ_u
                      public_y=run.test_y, executor=ex)
        prepare(run.setting, attacks, configs, ctx)
        defences = {name: getattr(d, name) for name in d.defences}
        started = time.perf_counter()
        with progress(sum(len(c.strengths) for c in defences.values()), "defend") as bar:
            frame = sweep.sweep(run, defences, attacks, configs, ctx,
                                on_step=lambda name, s: (bar.set_postfix(defence=name, strength=s), bar.update()))
    result = sweep.summarise(frame, attacks)
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
