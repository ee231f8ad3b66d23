"""attack: every attack family of the registry on every (θ, θ_u) pair of
unlearn.method and of each compared method, each attack seeing only its view;
then the scores against what was really removed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from stages.attacking import attacking
from stages.common import (DataDir, ParamsOption, TrainedDir, UnlearnedDir, clean_errors, progress, single_command,
                           torch_threads)
from uia_pipe import io, tracking
from uia_pipe.attacks.config import attack_params, family_configs
from uia_pipe.evaluation import epsilon
from uia_pipe.evaluation.campaign import attack_run
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
    configs = family_configs(a)
    with attacking("attack", base, a.threads, p.download.cache_dir, data, trained, unlearned, configs,
                   a.max_requests, sisa_view=a.sisa_view) as at:
        names = tuple(at.runs)
        skip = epsilon.check(at.runs[names[0]].setting, a.epsilon)  # before any attack: a bad forget set stops here
        result, tables, outcomes, made = {"compare": {}}, [], {}, {}
        with progress(len(names) * len(at.attacks) * len(at.runs[names[0]].setting.requests), "attack") as bar:
            for name, run in at.runs.items():
                ctx = at.context(run, progress=lambda it, loss: bar.set_postfix(iteration=it, loss=f"{loss:.4f}"),
                                 on_request=lambda family, index: bar.update())
                outcomes[name], made[name] = attack_run(run, at.attacks, configs, ctx, outputs=True)
                tables.append(outcomes[name].frame.assign(method=name))
                typer.echo(f"{name}: " + "; ".join(f"{family}: {_describe(s)}"
                                                   for family, s in outcomes[name].summaries.items()))
                own = {**outcomes[name].summaries, "seconds": outcomes[name].seconds}
                if name == names[0]:
                    result.update(own)
                else:
                    result["compare"][name] = own
        if skip is None:  # the challenge's ε, on the stage's threads: its fine-tunes are batched
            with torch_threads(base.threads):
                sections, result["epsilon_control"], eps_rows = epsilon.for_runs(
                    at.runs, a.epsilon, lambda name, s: typer.echo(f"{name}: ε {_describe(s)}"))
            for name, section in sections.items():
                (result if name == names[0] else result["compare"][name])["epsilon"] = section
            tables = [t.merge(eps_rows[eps_rows["method"] == t["method"].iloc[0]].drop(columns="method"),
                              on="request", how="left") for t in tables]
        else:
            typer.echo(f"attack: no per-example ε: {skip}")
    plot_data = {k: v for k, v in made[names[0]].items() if isinstance(v, pd.DataFrame)}
    with io.atomic_dir(out) as tmp:  # unlearn.method's at the top, each compared method's under compare/<name>/
        for name, files in made.items():
            folder, captions = io.method_folder(tmp, name, names[0]), {}
            for rel, obj in files.items():
                if isinstance(obj, pd.DataFrame):
                    continue
                (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                if isinstance(obj, dict):
                    io.save_tensors(folder / rel, obj)
                else:
                    io.save_figure(folder / rel, obj)
                    if obj.get_label():  # a figure for the report, its caption its label
                        captions[rel] = obj.get_label()
            io.save_json(folder / "captions.json", captions)
    io.save_json(metrics, result)
    io.save_csv(details, tables[0].drop(columns="method"))  # with the ε columns where the block ran
    io.save_csv(methods, pd.concat(tables, ignore_index=True))
    with io.atomic_dir(plots) as tmp:  # only the families that ran: a stale file of another task goes
        for name, frame in plot_data.items():
            io.save_csv(tmp / f"{name}.csv", frame)
    attack = a.model_dump(mode="json", exclude={"access"})  # the levels are the access stage's
    tracking.log_run("attack", {"base": base.model_dump(), "attack": attack}, result,
                     section_hash(base, attack), artifacts=[metrics, details, methods])


def _describe(summary: dict) -> str:
    """A family's headline numbers, three significant digits."""
    return ", ".join(f"{k} {v:.3g}" for k, v in summary.items() if isinstance(v, (int, float)) and "ci95" not in k)


app = single_command(main)

if __name__ == "__main__":
    app()
