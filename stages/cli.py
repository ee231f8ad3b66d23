"""`uia`: the pipeline's stages as sub-commands, plus `uia ui` for the MLflow UI, `uia check`, and the
seeds and grid tables. A stage's module (torch and the rest) is imported only when its command runs or help
lists it, so `uia check` validates params.yaml with the light schema modules alone."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from stages.common import ParamsOption, clean_errors
from uia_pipe.errors import UiaError
from uia_pipe.params import load_params

STAGES = ("download", "train", "unlearn", "attack", "defend", "access", "evaluate")
SEED = "base.seed"
# What `uia seeds` aggregates and `uia grid` / `uia table` tabulate by default (summary-run metric names).
HEADLINE = ("feature_recovery.psnr_mean", "feature_recovery.ssim_mean", "feature_recovery.categorical_accuracy",
            "label_inference.accuracy", "unlearning.test_accuracy", "unlearning.seconds_per_request")
GRID = ("feature_recovery.psnr_mean", "label_inference.accuracy", "membership.never_auc")


class _Stages(TyperGroup):
    """The stage commands, each one's module imported when it runs (or help lists it)."""

    def list_commands(self, ctx) -> list[str]:
        return [*STAGES, *super().list_commands(ctx)]

    def get_command(self, ctx, name: str):
        if name not in STAGES:
            return super().get_command(ctx, name)
        command = typer.main.get_command(importlib.import_module(f"stages.{name}").app)
        command.name = name
        return command


app = typer.Typer(cls=_Stages, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Unlearning inversion attacks as a DVC pipeline; each stage is a sub-command.")


@app.command()
def ui(port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = 5000) -> None:
    """Start the MLflow UI on 127.0.0.1 over this repository's tracking store."""
    from uia_pipe import tracking

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = tracking.tracking_uri()
    typer.echo(f"MLflow UI for {uri} at http://127.0.0.1:{port}/{tracking.ui_route()}")
    # This interpreter's mlflow: `.venv/bin/uia ui` works without the venv on PATH.
    os.execv(sys.executable, [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
                              "--host", "127.0.0.1", "--port", str(port)])


@app.command()
@clean_errors
def check(params: ParamsOption = Path("params.yaml")) -> None:
    """Validate the whole params file, every section, as the stages will (each stage checks its own sections
    before any work; this checks them all before `dvc repro` starts)."""
    load_params(params)
    typer.echo(f"{params}: valid")


@app.command("readme")
@clean_errors
def readme_results(
    path: Annotated[Path, typer.Option("--readme", help="the README whose results block is rewritten",
                                       exists=True, dir_okay=False)] = Path("README.md"),
    metrics: Annotated[Path, typer.Option(help="folder of the pipeline's metrics JSON files",
                                          exists=True, file_okay=False)] = Path("metrics"),
) -> None:
    """Rewrite the README's results table (between <!-- results:begin --> and <!-- results:end -->) from the
    metrics files of the last run; run it after `make run` or `dvc exp run`. Nothing else in the README changes."""
    from uia_pipe import io, readme

    files = {name: metrics / f"{name}.json" for name in readme.FILES}
    found = {name: io.load_json(file) for name, file in files.items() if file.is_file()}  # a missing file: no columns
    text = path.read_text()
    new = readme.replace_block(text, readme.results_table(found))
    if new != text:
        io.write_text(path, new)  # atomic: a temporary beside it, renamed into place
    typer.echo(f"{path}: results table {'rewritten' if new != text else 'already up to date'} from {metrics}/")


@app.command()
@clean_errors
def seeds(
    metric: Annotated[list[str], typer.Option(help="summary-run metric to aggregate (repeatable)")] = list(HEADLINE),
    level: Annotated[float, typer.Option(min=0.5, max=0.999, help="confidence level of the intervals")] = 0.95,
    out: Annotated[Path | None, typer.Option(help="also write the table to this CSV")] = None,
) -> None:
    """Intervals over seeds: group the MLflow summary runs whose params differ
    only in base.seed (e.g. `dvc exp run --queue -S base.seed=1`, ... then
    `dvc queue start`) and print each metric's mean over seeds with its interval."""
    from uia_pipe import io, report, summary, tracking

    table = summary.over_seeds(tracking.summary_runs(), tuple(metric), level)
    if table.empty:
        raise UiaError(f"{tracking.tracking_uri()}: no summary run holds any of the metrics {', '.join(metric)} "
                       "(run the pipeline first: `dvc repro`)")
    header = ["setting", "metric", "seeds", "mean", f"{level:.0%} interval", "seed values"]
    typer.echo(report.markdown_table(header, [
        [r.setting, r.metric, r.seeds, r.mean, "–" if r.seeds < 2 else f"[{r.ci_low:.4g}, {r.ci_high:.4g}]",
         r.seed_list] for r in table.itertuples()]))
    if out is not None:
        io.save_csv(out, table)


@app.command()
@clean_errors
def grid(
    name: Annotated[str, typer.Argument(help="the grid's name: its experiments are <name>-000, <name>-001, ...")],
    set_param: Annotated[list[str], typer.Option("--set", "-S", help="key=value1,value2,... (repeatable): an axis")],
    seeds: Annotated[list[int], typer.Option("--seed", help="base.seed of each experiment (repeatable)")] = [0],
    jobs: Annotated[int, typer.Option(min=1, help="experiments run at once (DVC queue workers)")] = 1,
    rows: Annotated[str | None, typer.Option(help="param whose values are the table's rows (default: the first axis)")] = None,
    columns: Annotated[str | None, typer.Option(help="param of the table's columns (default: the second axis)")] = None,
    metric: Annotated[list[str], typer.Option(help="summary-run metric tabulated (repeatable)")] = list(GRID),
    params: ParamsOption = Path("params.yaml"),
    out: Annotated[Path, typer.Option(help="folder for the tables, <name>.md and <name>.csv")] = Path("grids"),
) -> None:
    """Queue every combination of the axes and seeds as a DVC experiment, run them
    (`dvc exp run --run-all --jobs`), then build the grid's tables from MLflow (`uia table`)."""
    import subprocess

    from uia_pipe import grid as g
    from uia_pipe import tracking
    from uia_pipe.config import read_params

    dvc = [sys.executable, "-m", "dvc"]  # this environment's DVC, on PATH or not
    axes = [g.parse_axis(text) for text in set_param]
    combos = g.expand(axes, seeds, read_params(params), name)  # every experiment's params checked first
    keys = [k for k, _ in axes]
    rows, columns = rows or keys[0], columns or (keys[1] if len(keys) > 1 else None)
    for option, key in (("--rows", rows), ("--columns", columns)):
        if key is not None and key not in (*keys, g.SEED):
            raise UiaError(f"grid {name}: {option} {key} is not an axis of the grid (-S {key}=...)")
    for exp, combo in zip(g.names(name, len(combos)), combos):
        if subprocess.run([*dvc, "exp", "run", "--queue", "-n", exp, *g.overrides(combo)],
                          stdout=subprocess.DEVNULL).returncode != 0:
            raise UiaError(f"grid {name}: could not queue {exp} (see DVC's message above)")
    tracking.prepare_store()  # before queue workers log side by side
    typer.echo(f"grid {name}: {len(combos)} experiments queued; running {jobs} at a time")
    if subprocess.run([*dvc, "exp", "run", "--run-all", "--jobs", str(jobs)]).returncode != 0:
        raise UiaError(f"grid {name}: an experiment failed (`dvc queue status`, `dvc queue logs <name>`)")
    table(name, rows, columns, metric, out=out)


@app.command()
@clean_errors
def table(
    name: Annotated[str, typer.Argument(help="the grid's name")],
    rows: Annotated[str, typer.Option(help="param whose values are the rows, e.g. train.n")],
    columns: Annotated[str | None, typer.Option(help="param whose values are the columns, e.g. unlearn.method")] = None,
    metric: Annotated[list[str], typer.Option(help="summary-run metric tabulated (repeatable)")] = list(GRID),
    level: Annotated[float, typer.Option(min=0.5, max=0.999, help="confidence level of the intervals")] = 0.95,
    out: Annotated[Path, typer.Option(help="folder for the tables, <name>.md and <name>.csv")] = Path("grids"),
) -> None:
    """Paper-style tables of grid NAME from its MLflow summary runs: per metric, a row per
    value of --rows, a column per value of --columns, each cell the mean over seeds [interval]."""
    import pandas as pd

    from uia_pipe import grid as g
    from uia_pipe import io, report, tracking

    try:
        runs = g.grid_runs(tracking.summary_runs(), name)
    except Exception as exc:  # noqa: BLE001  (a broken or unreachable store: one line)
        raise UiaError(f"{tracking.tracking_uri()}: could not read the summary runs: {type(exc).__name__}: "
                       f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from None
    if not runs:
        raise UiaError(f"{tracking.tracking_uri()}: no summary run of grid {name} (experiments {name}-000, ...)")
    seeds = {run["params"].get(g.SEED) for run in runs}
    text, frames = [f"# Grid {name}", "", f"{len(runs)} experiments, {len(seeds)} seeds; "
                    f"mean over seeds [{level:.0%} Student-t interval]", ""], []
    for m in metric:
        frame = g.table(runs, rows, columns, m, level)
        frames.append(frame.assign(metric=m))
        text += [f"## {m}", "", report.markdown_table(list(frame.columns), frame.values.tolist()), ""]
    io.write_text(out / f"{name}.md", "\n".join(text))
    io.save_csv(out / f"{name}.csv", pd.concat(frames, ignore_index=True))
    typer.echo("\n".join(text))


if __name__ == "__main__":
    app()
