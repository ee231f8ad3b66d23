"""download: materialise the chosen dataset as tensors plus a dataset card."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stages.common import ParamsOption, clean_errors, single_command
from uia_pipe import io, tracking
from uia_pipe.config import load_sections, section_hash
from uia_pipe.data import DownloadParams, load_dataset


@clean_errors
def main(
    out: Annotated[Path, typer.Option(help="folder for tensors.safetensors and card.json")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Load download.dataset (offline where it can) and write its tensors and card."""
    p = load_sections(params, download=DownloadParams)
    ds = load_dataset(p.download.dataset, Path(p.download.cache_dir).expanduser(), p.download)
    with io.atomic_dir(out) as tmp:
        io.save_tensors(
            tmp / "tensors.safetensors",
            {"x_train": ds.x_train, "y_train": ds.y_train, "x_test": ds.x_test, "y_test": ds.y_test},
        )
        io.save_json(tmp / "card.json", ds.card)
    typer.echo(f"{ds.card['name']}: {ds.card['n_train']} train / {ds.card['n_test']} test, checksum {ds.card['checksum'][:12]}")
    tracking.log_run(
        "download",
        {"download": p.download.model_dump()},
        {"n_train": ds.card["n_train"], "n_test": ds.card["n_test"]},
        section_hash(p.download),
        artifacts=[out / "card.json"],
    )


app = single_command(main)

if __name__ == "__main__":
    app()
