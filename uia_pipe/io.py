"""All file I/O of the library: atomic writes and loading that never executes code.

Every writer goes through a temporary file (or folder) in the destination's
directory and renames it into place, so an interrupted run never leaves a
half-written artifact; the next write of the same output removes what a killed
one left behind. Weights are safetensors with the model's spec in the file's
metadata.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import UiaError

_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process's umask, left unchanged."""
    try:
        # Linux reports it; reading it elsewhere means setting it for a moment.
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        # The strictest mask while we look: a file another thread creates meanwhile
        # is at worst private, never world-writable.
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def _temporary_name(path: Path) -> re.Pattern[str]:
    """The names `_claim` gives temporaries of `path`: tempfile's 8 random
    characters between ".<name>." and ".tmp"."""
    return re.compile(re.escape(f".{path.name}.") + "[a-z0-9_]{8}" + re.escape(".tmp"))


def _remove_stale_temporaries(path: Path) -> None:
    """Delete the temporaries of `path` that killed writes left beside it; a
    temporary that a live writer holds locked, and every other file, stays."""
    pattern = _temporary_name(path)
    for entry in os.scandir(path.parent):
        if not pattern.fullmatch(entry.name):
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            # A killed writer's lock died with it; a live one (another process
            # filling a shared cache) still holds its lock, and we must not take
            # its file away. Where locks are unsupported, nothing is removed.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)
        except OSError:
            pass
        finally:
            os.close(fd)


def _claim(path: Path, directory: bool) -> tuple[int, Path]:
    """A new temporary file (or folder) beside `path` and an open descriptor
    that holds a lock on it until closed: (fd, temporary path)."""
    prefix, parent = f".{path.name}.", path.parent
    while True:
        if directory:
            tmp = tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=parent)
            fd = os.open(tmp, os.O_RDONLY)
        else:
            fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=parent)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass  # no locks on this filesystem: written unprotected, as ever
        if os.fstat(fd).st_nlink:
            return fd, Path(tmp)
        # Another writer's clean-up removed it in the instant before our lock.
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it to `path`,
    with mode 0o666 less the umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    fd, tmp_path = _claim(path, directory=False)
    try:
        yield tmp_path
        # mkstemp makes the file private; an output is an ordinary file.
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
        os.close(fd)


@contextlib.contextmanager
def atomic_dir(path: Path | str) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; on success it replaces
    `path`, with mode 0o777 less the umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    fd, tmp = _claim(path, directory=True)
    try:
        yield tmp
        # mkdtemp makes the folder private; an output is an ordinary folder.
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        os.close(fd)


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
    """A matplotlib figure as PNG (then closed)."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


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
