"""What every stage shares: clean one-line failures, device and seeding, progress."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Callable, Iterator

import torch
import typer
from tqdm.auto import tqdm

from uia_pipe import io
from uia_pipe.attacks import campaign
from uia_pipe.attacks import label_inference as li
from uia_pipe.attacks.probes import Probes
from uia_pipe.data import as_inputs
from uia_pipe.errors import UiaError
from uia_pipe.metrics import class_mean_images, mean_image

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

ParamsOption = Annotated[
    Path, typer.Option("--params", help="params file (validated whole before any work)", dir_okay=False)
]

DataDir = Annotated[Path, typer.Option(help="download stage output folder", exists=True, file_okay=False)]
TrainedDir = Annotated[Path, typer.Option(help="train stage output folder", exists=True, file_okay=False)]
UnlearnedDir = Annotated[Path, typer.Option(help="unlearn stage output folder", exists=True, file_okay=False)]


def clean_errors(fn: Callable) -> Callable:
    """Turn a UiaError into `error: <message>` on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
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


def device_for(choice: str) -> torch.device:
    """`auto` picks CUDA where present; `cuda` without a GPU is a clean error."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise UiaError("base.device: cuda requested but no CUDA device is available (use auto or cpu)")
    return torch.device(choice)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with n torch threads (0: leave torch's default), restoring the count after."""
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
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if threads:
        torch.set_num_threads(threads)


def progress(total: int, desc: str) -> tqdm:
    """A progress bar on stderr, quiet when stderr is not a terminal (DVC logs)."""
    return tqdm(total=total, desc=desc, file=sys.stderr, disable=None, leave=False, dynamic_ncols=True)


def load_setting(data: Path, trained: Path, unlearned: Path, device, max_requests: int = 0):
    """The evaluator's view of a run (models, D_u, requests) and each θ_u."""
    ds = io.load_dataset_artifact(data)
    card = ds.card
    split, _ = io.load_tensors(trained / "split.safetensors")
    record = io.load_json(unlearned / "requests.json")
    requests = record["requests"][: max_requests or None]
    train_x = as_inputs(ds.x_train[split["pretrain"]])
    image = card["kind"] == "image"
    setting = campaign.Setting(
        theta_pretrained=io.load_model(trained / "theta_pretrained.safetensors", device)[0],
        theta_original=io.load_model(unlearned / "theta_original.safetensors", device)[0],
        method=record["method"], card=card,
        du_x=as_inputs(ds.x_train[split["du"]]), du_y=ds.y_train[split["du"]], requests=requests,
        mean_guess=mean_image(train_x),
        class_guess=class_mean_images(train_x, ds.y_train[split["pretrain"]], card["num_classes"]) if image else None,
        train_x=train_x, finetune_batch_size=io.load_json(trained / "finetune.json")["batch_size"],
    )
    thetas_u = [io.load_model(unlearned / f"theta_unlearned_{r['index']:03d}.safetensors", device)[0]
                for r in requests]
    if record.get("method") == "sisa" and "server_state" in record:
        setting = replace(setting, sisa=_sisa_store(unlearned, record, requests, device))
    return setting, thetas_u, as_inputs(ds.x_test)


def _sisa_store(unlearned: Path, record: dict, requests: list[dict], device) -> campaign.SisaStore:
    """SISA's checkpoint store before and after each request, as the unlearn stage kept it."""
    from uia_pipe.unlearning.sisa import unflatten

    slices = record["server_state"]["slices"]

    def load(name: str):
        return unflatten(io.load_model(unlearned / name, device)[0], slices)

    return campaign.SisaStore(slices, load("server_state.safetensors"),
                              [load(f"server_state_{r['index']:03d}.safetensors") for r in requests])


def _model_hash(model: torch.nn.Module):
    key = hashlib.sha256()
    for name, t in model.state_dict().items():
        key.update(name.encode() + t.detach().cpu().numpy().tobytes())
    return key


def cached_probes(setting, cfg: li.Config, seed: int, public_x: torch.Tensor, cache_dir: Path) -> tuple[Probes, dict]:
    """Probes depend only on θ, the probe settings and the seed: made once and
    kept under cache_dir/probes, keyed by a hash of the three. Where
    `cfg.reference` applies to the run's method they carry θ₀'s outputs too,
    kept beside them under a key that adds θ₀ (stats["reference_queries"])."""
    key = _model_hash(setting.theta_original)
    key.update(json.dumps([cfg.probes.model_dump(mode="json"), cfg.access, cfg.topk, seed]).encode())
    path = cache_dir / "probes" / f"{key.hexdigest()[:24]}.safetensors"
    probes, stats = _probes_at(path, setting, cfg, seed, public_x)
    if not li.uses_reference(cfg, setting.method):
        return probes, stats
    key.update(_model_hash(setting.theta_pretrained).digest())
    ref_path = path.with_name(f"{key.hexdigest()[:24]}.reference.safetensors")
    if ref_path.is_file():
        tensors, meta = io.load_tensors(ref_path)
        return replace(probes, reference=tensors["reference"]), {**stats, **meta}
    probes, more = li.with_reference(probes, li.oracle(setting.theta_pretrained, cfg))
    io.save_tensors(ref_path, {"reference": probes.reference}, more)
    return probes, {**stats, **more}


def _probes_at(path: Path, setting, cfg: li.Config, seed: int, public_x: torch.Tensor) -> tuple[Probes, dict]:
    if path.is_file():
        tensors, meta = io.load_tensors(path)
        return Probes(tensors["x"], tensors["target"], tensors["before"], tensors["reached"], meta["access"]), \
            {**meta["stats"], "cached": True}
    before = li.oracle(setting.theta_original, cfg)
    probes, stats = li.make_probes(before, cfg, seed, input_shape=tuple(setting.card["input_shape"]),
                                   num_classes=setting.card["num_classes"], auxiliary=public_x,
                                   model=setting.theta_original)
    stats = {k: v for k, v in stats.items() if isinstance(v, (int, float, str, bool))}
    io.save_tensors(path, {"x": probes.x, "target": probes.target, "before": probes.before,
                           "reached": probes.reached}, {"access": probes.access, "stats": stats})
    return probes, {**stats, "cached": False}
