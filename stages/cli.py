"""`uia`: the pipeline's stages as sub-commands, plus `uia ui` for the MLflow UI."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from pathlib import Path

from stages import attack, defend, download, evaluate, train, unlearn
from stages.common import ParamsOption, clean_errors
from uia_pipe import io, report, summary, tracking
from uia_pipe.errors import UiaError
from uia_pipe.params import load_params

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Unlearning inversion attacks as a DVC pipeline; each stage is a sub-command.")
for _name, _module in {"download": download, "train": train, "unlearn": unlearn, "attack": attack,
              "defend": defend, "evaluate": evaluate}.items():
    app.command(_name, help=_module.main.__doc__)(_module.main)


@app.command()
def ui(port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = 5000) -> None:
    """Start the MLflow UI on 127.0.0.1 over this repository's tracking store."""
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


@app.command()
@clean_errors
def seeds(
    metric: Annotated[list[str], typer.Option(help="summary-run metric to aggregate (repeatable)")] = list(summary.HEADLINE),
    level: Annotated[float, typer.Option(min=0.5, max=0.999, help="confidence level of the intervals")] = 0.95,
    out: Annotated[Path | None, typer.Option(help="also write the table to this CSV")] = None,
) -> None:
    """Intervals over seeds: group the MLflow summary runs whose params differ
    only in base.seed (e.g. `dvc exp run --queue -S base.seed=1`, ... then
    `dvc queue start`) and print each metric's mean over seeds with its interval."""
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


if __name__ == "__main__":
    app()
