"""What every stage shares: clean one-line failures, device and seeding, progress, option types (torch and tqdm
imported where used, so that `uia check`, which imports this module, loads neither)."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from pathlib import Path
from typing import Annotated, Callable, Iterator

import typer

from uia_pipe.errors import UiaError

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

ParamsOption = Annotated[
    Path, typer.Option("--params", help="params file (validated whole before any work)", dir_okay=False)
]

DataDir = Annotated[Path, typer.Option(help="download stage output folder", exists=True, file_okay=False)]
TrainedDir = Annotated[Path, typer.Option(help="train stage output folder", exists=True, file_okay=False)]
UnlearnedDir = Annotated[Path, typer.Option(help="unlearn stage output folder", exists=True, file_okay=False)]


def clean_errors(fn: Callable) -> Callable:
    """Turn a UiaError into `error: <message>` on stderr and exit status 2. Records the command's start
    time and params file for its MLflow run (the run's start; the key of its pipeline run's parent)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from uia_pipe import tracking  # stdlib only at import; mlflow is imported when a run is logged

        try:
            with tracking.stage(kwargs.get("params")):
                return fn(*args, **kwargs)
        except UiaError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def single_command(fn: Callable) -> typer.Typer:
    """A Typer app whose only command is `fn` (so `python -m stages.x --opt ...`)."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command(help=fn.__doc__)(fn)
    return app


def device_for(choice: str):
    """`auto` picks CUDA where present; `cuda` without a GPU is a clean error."""
    import torch

    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise UiaError("base.device: cuda requested but no CUDA device is available (use auto or cpu)")
    return torch.device(choice)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with n torch threads (0: leave torch's default), restoring the count after."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def seed_everything(seed: int, threads: int = 0) -> None:
    """Seed torch, ask for deterministic kernels and, for threads > 0, pin torch's thread count for the rest
    of the stage: a reduction's result depends on how many threads split it, so training does too."""
    import torch

    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if threads:
        torch.set_num_threads(threads)


def progress(total: int, desc: str):
    """A progress bar on stderr, quiet when stderr is not a terminal (DVC logs)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr, disable=None, leave=False, dynamic_ncols=True)
