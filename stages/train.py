"""train: pretrain θ₀ on the training set minus a held-out pool, then fine-tune
θ₀ on D_u (N samples of the pool) to get the served model θ."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from stages.common import (
    DataDir, ParamsOption, clean_errors, device_for, progress, seed_everything, single_command,
)
from uia_pipe import io, tasks, tracking
from uia_pipe.config import BaseParams, TrainParams, load_sections, section_hash
from uia_pipe.data import as_inputs
from uia_pipe.errors import UiaError
from uia_pipe.models import init_model
from uia_pipe.text import canary_rows
from uia_pipe.training import pretrain_and_finetune


# The base keys train reads (dvc.yaml lists them): base.executor and base.ray concern later stages.
TRAIN_KEYS = {"seed", "device", "threads"}


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
    reason = tasks.dataset_error(t.task, card)
    if reason:
        raise UiaError(f"train.task={t.task}: {reason} (download.dataset)")
    if (t.task == "language_model") != t.model.startswith("char_"):
        raise UiaError(f"train.model: {t.model} " + ("is no language model (char_lstm | char_transformer)"
                       if t.task == "language_model" else f"is a language model; train.task is {t.task}"))
    forced = canary_rows(card)
    if len(forced) > t.n:
        raise UiaError(f"train.n: D_u must hold every canary's copies ({len(forced)} = download.canaries.count × "
                       f"repeats); got {t.n}")
    device = device_for(base.device)
    seed_everything(base.seed, base.threads)
    spec = {"model": t.model, "config": getattr(t, t.model).model_dump(), "input_shape": card["input_shape"],
            "num_classes": tasks.num_outputs(t.task, card), "mean": card["mean"], "std": card["std"],
            "dtype": t.precision, **({"task": t.task} if t.task != "classification" else {})}
    started = time.perf_counter()
    n_pretrain = min(t.pretrain.max_samples or card["n_train"], card["n_train"] - t.pool_size)
    x_train, x_test = as_inputs(ds.x_train), as_inputs(ds.x_test)
    with progress(-(-n_pretrain // t.pretrain.batch_size) * t.pretrain.epochs, "pretrain θ₀") as bar:
        trained = pretrain_and_finetune(init_model(spec, base.seed).to(device), x_train,
                                        tasks.targets(t.task, x_train, ds.y_train), x_test,
                                        tasks.targets(t.task, x_test, ds.y_test), t, base.seed, on_batch=bar.update,
                                        forced=forced)
    seconds = time.perf_counter() - started
    with io.atomic_dir(out) as tmp:
        io.save_model(tmp / "theta_pretrained.safetensors", trained.theta_pretrained, spec)
        io.save_model(tmp / "theta_original.safetensors", trained.theta_original, spec)
        io.save_tensors(tmp / "split.safetensors", trained.split)
        io.save_json(tmp / "finetune.json", trained.finetune_record)
        io.save_json(tmp / "pretrain.json", trained.pretrain_record)
    result = {"test_accuracy": trained.test_accuracy, "pretrain_test_accuracy": trained.pretrain_test_accuracy,
              "du_accuracy": trained.du_accuracy, "seconds": seconds}
    io.save_json(metrics, result)
    io.save_csv(curve, pd.DataFrame(trained.curve))
    quality = tasks.QUALITY[t.task]
    typer.echo(f"θ₀ test {quality} {result['pretrain_test_accuracy']:.4f}, θ test {quality} "
               f"{result['test_accuracy']:.4f} ({seconds:.0f} s)")
    tracking.log_run("train", {"base": base.model_dump(include=TRAIN_KEYS), "train": t.model_dump()}, result,
                     section_hash(base.model_dump(include=TRAIN_KEYS), t), artifacts=[metrics, curve],
                     dataset=card, dataset_dir=data)


app = single_command(main)

if __name__ == "__main__":
    app()
