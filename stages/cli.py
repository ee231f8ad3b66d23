"""`uia`: the pipeline's stages as sub-commands, plus `uia ui` for the MLflow UI."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from stages import attack, defend, download, evaluate, train, unlearn
from uia_pipe import tracking

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
    typer.echo(f"MLflow UI for {uri} at http://127.0.0.1:{port}")
    os.execvp("mlflow", ["mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port)])


if __name__ == "__main__":
    app()
