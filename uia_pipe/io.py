"""All file I/O of the library: atomic writes and loading that never executes code.

Every writer goes through a temporary file (or folder) in the destination's
directory and renames it into place (`atomic.atomic_path`, `atomic.atomic_dir`,
re-exported here), so an interrupted run never leaves a half-written artifact;
the next write of the same output removes what a killed one left behind.
Weights are safetensors with the model's spec in the file's metadata.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .atomic import atomic_dir, atomic_path  # noqa: F401  (io.atomic_path, io.atomic_dir: the writers' primitives)
from .errors import UiaError


def _existing(path: Path | str) -> Path:
    """`path` as a Path, or a one-line UiaError when no such file exists."""
    path = Path(path)
    if not path.is_file():
        raise UiaError(f"{path}: file not found (run the stage that writes it first)")
    return path


def write_text(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def copy_file(source: Path | str, path: Path | str) -> None:
    with atomic_path(path) as tmp:
        shutil.copyfile(_existing(source), tmp)


def save_json(path: Path | str, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def load_json(path: Path | str) -> Any:
    path = _existing(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UiaError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def save_csv(path: Path | str, frame) -> None:
    """Write a pandas DataFrame (no index)."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def save_tensors(path: Path | str, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    """safetensors file; `metadata` (JSON-able) is stored under the key "spec"."""
    meta = {"spec": json.dumps(metadata)} if metadata is not None else None
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().clone().contiguous() for k, v in tensors.items()}, str(tmp), metadata=meta)


def load_tensors(path: Path | str) -> tuple[dict[str, torch.Tensor], dict | None]:
    """Tensors and metadata of a safetensors file (no code is executed)."""
    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise UiaError(f"{path}: not a readable safetensors file ({exc})") from None
    spec = json.loads(meta["spec"]) if "spec" in meta else None
    return tensors, spec


def save_model(path: Path | str, model: nn.Module, spec: dict) -> None:
    """Weights and buffers, with the spec that rebuilds the architecture:
    {"model", "config", "input_shape", "num_classes", "mean", "std", "dtype", "task"}
    ("dtype" float32 and "task" classification when absent; num_classes is the
    output size), plus "ensemble": S for an ensemble of S such models."""
    save_tensors(path, model.state_dict(), spec)


def load_model(path: Path | str, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a saved model from its spec and weights, in eval mode."""
    from .models import from_spec

    state, spec = load_tensors(path)
    if spec is None or "model" not in spec:
        raise UiaError(f"{path}: no model spec in the file's metadata")
    model = from_spec(spec)
    model.load_state_dict(state)
    return model.to(device).eval(), spec


def load_dataset_artifact(folder: Path | str):
    """The download stage's output folder as a `data.Dataset`."""
    from .data import Dataset

    folder = Path(folder)
    tensors, _ = load_tensors(folder / "tensors.safetensors")
    card = load_json(folder / "card.json")
    return Dataset(tensors["x_train"], tensors["y_train"], tensors["x_test"], tensors["y_test"], card)


def save_figure(path: Path | str, fig) -> None:
    """A matplotlib figure as PNG."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def load_csv(path: Path | str):
    """A CSV file as a pandas DataFrame."""
    import pandas as pd

    path = _existing(path)
    return pd.read_csv(path)


def read_bytes(path: Path | str) -> bytes:
    return _existing(path).read_bytes()


def load_png(path: Path | str):
    """A PNG as an H×W×C float array (for composing saved figures)."""
    import matplotlib.image

    path = _existing(path)
    return matplotlib.image.imread(str(path), format="png")


def method_folder(folder: Path | str, method: str, main: str) -> Path:
    """Where a stage that runs several unlearning methods keeps `method`'s outputs: `folder` itself for
    unlearn.method (`main`), compare/<method>/ under it for each compared method."""
    return Path(folder) if method == main else Path(folder) / "compare" / method
