"""train: pretrain θ₀ on the training set minus a held-out pool, then fine-tune
θ₀ on D_u (N samples of the pool) to get the served model θ."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import pandas as pd
import torch
import typer

from stages.common import (
    DataDir, ParamsOption, clean_errors, device_for, progress, seed_everything, single_command,
)
from uia_pipe import io, tracking
from uia_pipe.config import BaseParams, TrainParams, load_sections, section_hash
from uia_pipe.data import as_inputs
from uia_pipe.errors import UiaError
from uia_pipe.models import clone, init_model
from uia_pipe.training import evaluate, fit


@clean_errors
def main(
    data: DataDir,
    out: Annotated[Path, typer.Option(help="folder for θ₀, θ and the split")],
    metrics: Annotated[Path, typer.Option(help="metrics JSON to write")],
    curve: Annotated[Path, typer.Option(help="per-epoch loss/accuracy CSV (DVC plot data)")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Pretrain θ₀, fine-tune it on D_u into θ, and record both models' test accuracy."""
    p = load_sections(params, base=BaseParams, train=TrainParams)
    base, t = p.base, p.train
    ds = io.load_dataset_artifact(data)
    card = ds.card
    if t.pool_size >= card["n_train"]:
        raise UiaError(f"train.pool_size: must be smaller than the {card['name']} training set ({card['n_train']})")
    if t.pretrain.augment and card["kind"] != "image":
        raise UiaError(f"train.pretrain.augment: only for image datasets ({card['name']} is {card['kind']})")
    device = device_for(base.device)
    seed_everything(base.seed, base.threads)

    order = torch.randperm(card["n_train"], generator=torch.Generator().manual_seed(base.seed))
    pool, rest = order[: t.pool_size], order[t.pool_size :]
    if t.pretrain.max_samples:
        rest = rest[: t.pretrain.max_samples]
    du = pool[: t.n]
    x_train, x_test = as_inputs(ds.x_train), as_inputs(ds.x_test)

    spec = {
        "model": t.model,
        "config": getattr(t, t.model).model_dump(),
        "input_shape": card["input_shape"],
        "num_classes": card["num_classes"],
        "mean": card["mean"],
        "std": card["std"],
        "dtype": t.precision,
    }
    model = init_model(spec, base.seed).to(device)

    started = time.perf_counter()
    curve_rows = []
    batches = -(-len(rest) // t.pretrain.batch_size) * t.pretrain.epochs
    with progress(batches, "pretrain θ₀") as bar:
        def on_epoch(row: dict) -> None:
            test = evaluate(model, x_test, ds.y_test)
            curve_rows.append({"phase": "pretrain", **row, "test_accuracy": test["accuracy"]})

        fit(model, x_train[rest], ds.y_train[rest], t.pretrain, base.seed, augment=t.pretrain.augment,
            on_epoch=on_epoch, on_batch=bar.update)
    theta_pretrained = clone(model)
    pretrain_test = evaluate(theta_pretrained, x_test, ds.y_test)

    finetune_seed = base.seed + 1
    theta = clone(theta_pretrained)
    history = fit(theta, x_train[du], ds.y_train[du], t.finetune, finetune_seed, batchnorm_eval=True)
    curve_rows += [{"phase": "finetune", **row, "test_accuracy": float("nan")} for row in history]
    test = evaluate(theta, x_test, ds.y_test)
    seconds = time.perf_counter() - started

    with io.atomic_dir(out) as tmp:
        io.save_model(tmp / "theta_pretrained.safetensors", theta_pretrained, spec)
        io.save_model(tmp / "theta_original.safetensors", theta, spec)
        io.save_tensors(tmp / "split.safetensors", {"pool": pool, "du": du, "pretrain": rest})
        io.save_json(tmp / "finetune.json", {"seed": finetune_seed, **t.finetune.model_dump()})
        io.save_json(tmp / "pretrain.json", {"seed": base.seed, "init_seed": base.seed, **t.pretrain.model_dump()})
    result = {
        "test_accuracy": test["accuracy"],
        "pretrain_test_accuracy": pretrain_test["accuracy"],
        "du_accuracy": evaluate(theta, x_train[du], ds.y_train[du])["accuracy"],
        "seconds": seconds,
    }
    io.save_json(metrics, result)
    io.save_csv(curve, pd.DataFrame(curve_rows))
    typer.echo(f"θ₀ test accuracy {pretrain_test['accuracy']:.4f}, θ test accuracy {test['accuracy']:.4f} ({seconds:.0f} s)")
    tracking.log_run(
        "train", {"base": base.model_dump(), "train": t.model_dump()}, result, section_hash(base, t),
        artifacts=[metrics, curve],
    )


app = single_command(main)

if __name__ == "__main__":
    app()
