"""attack: every attack family of the registry on every (θ, θ_u) pair of
unlearn.method and of each compared method, each attack seeing only its view;
then the scores against what was really removed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from stages.common import (
    DataDir, ParamsOption, TrainedDir, UnlearnedDir, clean_errors, device_for, progress,
    seed_everything, single_command, torch_threads,
)
from uia_pipe import executor, io, tracking
from uia_pipe.attacks import ATTACKS
from uia_pipe.attacks.config import attack_params, family_configs
from uia_pipe.attacks.protocol import Context, attack_run, check, for_task, outputs
from uia_pipe.attacks.setting import load_run
from uia_pipe.config import BaseParams, load_sections, section_hash
from uia_pipe.data import DownloadParams


@clean_errors
def main(
    data: DataDir,
    trained: TrainedDir,
    unlearned: UnlearnedDir,
    out: Annotated[Path, typer.Option(help="folder for the families' artifacts (reconstructions, figures)")],
    metrics: Annotated[Path, typer.Option(help="metrics JSON to write")],
    details: Annotated[Path, typer.Option(help="per-request CSV of unlearn.method to write")],
    methods: Annotated[Path, typer.Option(help="per-(method, request) CSV: unlearn.method and each compared method")],
    plots: Annotated[Path, typer.Option(help="folder for the families' plot data, <name>.csv (DVC plots)")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Run every attack on every request of every unlearning method; score each against the truth."""
    p = load_sections(params, base=BaseParams, download=DownloadParams, attack=attack_params())
    base, a = p.base, p.attack
    configs, device = family_configs(a), device_for(base.device)
    seed_everything(base.seed, base.threads)
    with torch_threads(a.threads), executor.for_stage(base, a.threads) as ex:
        main_run = load_run(data, trained, unlearned, device, a.max_requests)
        names = (main_run.setting.method, *main_run.compare)
        runs = {name: main_run if name == names[0] else load_run(data, trained, unlearned / "compare" / name,
                                                                  device, a.max_requests) for name in names}
        for run in runs.values():
            check(run.setting, ATTACKS, configs)
        result, tables, outcomes = {"compare": {}}, [], {}
        attacks = for_task(ATTACKS, main_run.setting.task)
        if len(attacks) < len(ATTACKS):
            typer.echo(f"attack: {', '.join(n for n in ATTACKS if n not in attacks)} left out (they attack "
                       f"classifiers; train.task is {main_run.setting.task})")
        with progress(len(names) * len(attacks) * len(main_run.setting.requests), "attack") as bar:
            for name, run in runs.items():
                ctx = Context(base.seed, run.test_x, Path(p.download.cache_dir).expanduser(), a.sisa_view,
                              progress=lambda it, loss: bar.set_postfix(iteration=it, loss=f"{loss:.4f}"),
                              on_request=lambda family, index: bar.update(), public_y=run.test_y, executor=ex)
                outcome = attack_run(run, ATTACKS, configs, ctx, plots=run is main_run)
                tables.append(outcome.frame.assign(method=name))
                outcomes[name] = outcome
                typer.echo(f"{name}: " + "; ".join(f"{family}: {_describe(s)}" for family, s in outcome.summaries.items()))
                if run is main_run:
                    result.update(outcome.summaries, seconds=outcome.seconds)
                    main_outcome = outcome
                else:
                    result["compare"][name] = {**outcome.summaries, "seconds": outcome.seconds}
    with io.atomic_dir(out) as tmp:  # unlearn.method's at the top, each compared method's under compare/<name>/
        for name, outcome in outcomes.items():
            folder = tmp if name == names[0] else tmp / "compare" / name
            for rel, obj in outputs(runs[name], ATTACKS, outcome).items():
                (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                if isinstance(obj, dict):
                    io.save_tensors(folder / rel, obj)
                else:
                    io.save_figure(folder / rel, obj)
    io.save_json(metrics, result)
    io.save_csv(details, main_outcome.frame)
    io.save_csv(methods, pd.concat(tables, ignore_index=True))
    for name, frame in main_outcome.plots.items():
        io.save_csv(plots / f"{name}.csv", frame)
    attack = a.model_dump(mode="json", exclude={"access"})  # the levels are the access stage's
    tracking.log_run("attack", {"base": base.model_dump(), "attack": attack}, result,
                     section_hash(base, attack), artifacts=[metrics, details, methods])


def _describe(summary: dict) -> str:
    """A family's headline numbers, three significant digits."""
    return ", ".join(f"{k} {v:.3g}" for k, v in summary.items() if isinstance(v, (int, float)) and "ci95" not in k)


app = single_command(main)

if __name__ == "__main__":
    app()
