"""Dataset registry: name -> loader(cache_dir) -> `Dataset`.

Images come back as uint8 [N, C, H, W] (call `as_inputs` for float [0, 1]),
tabular data as float32 [N, D] already encoded; labels are int64 [N]. Every
dataset carries a JSON-serialisable card (provenance, licence, class counts,
train-split statistics, checksum) so that a run records exactly what it saw.

Image sets are read by torchvision's own dataset classes. The ones that work
without a network are Fashion-MNIST (from the Debian package
``dataset-fashion-mnist``) and German Credit (vendored in ``vendor/``); the
others need torchvision's download, or its files already under ``cache_dir``.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torchvision
from pydantic import BaseModel, ConfigDict, Field, field_validator

from uia_pipe.errors import UiaError
from uia_pipe.io import atomic_path
from uia_pipe.registry import one_of

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
"""Where the Debian package ``dataset-fashion-mnist`` installs the gzipped IDX files."""

GERMAN_CREDIT_FILE = Path(__file__).parent / "vendor/german_credit/german.data"

GERMAN_CREDIT_SPLIT_SEED = 0
GERMAN_CREDIT_N_TRAIN = 800

_FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

_OFFLINE_HINT = (
    "use a dataset that works offline: fashion_mnist (apt-get install dataset-fashion-mnist)"
    " or german_credit (vendored)"
)

# UCI attribute order A1..A20: (name, numeric?)
_GERMAN_CREDIT_ATTRIBUTES: tuple[tuple[str, bool], ...] = (
    ("checking_status", False),
    ("duration", True),
    ("credit_history", False),
    ("purpose", False),
    ("credit_amount", True),
    ("savings", False),
    ("employment_since", False),
    ("instalment_rate", True),
    ("personal_status_sex", False),
    ("other_debtors", False),
    ("residence_since", True),
    ("property", False),
    ("age", True),
    ("other_instalment_plans", False),
    ("housing", False),
    ("existing_credits", True),
    ("job", False),
    ("people_liable", True),
    ("telephone", False),
    ("foreign_worker", False),
)


@dataclass(frozen=True)
class Dataset:
    """A train/test split plus its card.

    Images: x uint8 [N, C, H, W]; tabular: x float32 [N, D]. y int64 [N].
    `card` holds only JSON types (dict, list, str, int, float).
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    card: dict


def as_inputs(x: torch.Tensor) -> torch.Tensor:
    """Model inputs from stored data: uint8 images -> float32 x/255 in [0, 1];
    floating tensors (encoded tabular rows) -> float32, values unchanged."""
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0)
    if x.is_floating_point():
        return x.to(torch.float32)
    raise TypeError(f"as_inputs expects uint8 images or a float tensor, got {x.dtype}")


def checksum(ds: Dataset) -> str:
    """SHA-256 hex digest of x_train, y_train, x_test, y_test in that order;
    each tensor contributes its dtype, shape and raw bytes, so equal digests
    mean equal data. The card is not hashed."""
    h = hashlib.sha256()
    for name, t in (
        ("x_train", ds.x_train),
        ("y_train", ds.y_train),
        ("x_test", ds.x_test),
        ("y_test", ds.y_test),
    ):
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def load_dataset(name: str, cache_dir: Path) -> Dataset:
    """The dataset registered as `name`, read or fetched under `cache_dir`.

    Raises UiaError (one line) for an unknown name or a dataset that cannot be
    fetched or read."""
    loader = DATASETS.get(name)
    if loader is None:
        known = ", ".join(sorted(DATASETS))
        raise UiaError(f"dataset={name}: unknown dataset; known: {known}")
    return loader(Path(cache_dir))


# --------------------------------------------------------------------------- images


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if len(text) > 160:
        text = text[:157] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _image_stats(x: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and (population) std of uint8 [N, C, H, W] on the [0, 1] scale."""
    c = x.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    # Chunked (~4M values) so CIFAR/STL never need a float64 copy of the whole split.
    per_sample = max(1, x[0].numel()) if x.shape[0] else 1
    for chunk in torch.split(x, max(1, (1 << 22) // per_sample)):
        v = chunk.to(torch.float64).div_(255.0)
        total += v.sum(dim=(0, 2, 3))
        total_sq += v.square().sum(dim=(0, 2, 3))
    n = x.shape[0] * x.shape[2] * x.shape[3]
    if n == 0:
        return [0.0] * c, [1.0] * c
    mean = total / n
    var = (total_sq / n - mean.square()).clamp_min(0.0)
    return mean.tolist(), var.sqrt().tolist()


def _class_counts(y: torch.Tensor, num_classes: int) -> list[int]:
    return torch.bincount(y, minlength=num_classes)[:num_classes].tolist()


def _image_dataset(
    *,
    name: str,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    class_names: list[str],
    source: str,
    licence: str,
    citation: str,
) -> Dataset:
    """Assemble an image Dataset and its card from uint8 NCHW tensors."""
    num_classes = len(class_names)
    mean, std = _image_stats(x_train)
    bare = Dataset(x_train, y_train, x_test, y_test, card={})
    card: dict[str, Any] = {
        "name": name,
        "source": source,
        "licence": licence,
        "citation": citation,
        "kind": "image",
        "input_shape": list(x_train.shape[1:]),
        "num_classes": num_classes,
        "class_names": list(class_names),
        "class_counts": {
            "train": _class_counts(y_train, num_classes),
            "test": _class_counts(y_test, num_classes),
        },
        "n_train": int(x_train.shape[0]),
        "n_test": int(x_test.shape[0]),
        "mean": mean,
        "std": std,
        "checksum": checksum(bare),
    }
    return Dataset(x_train, y_train, x_test, y_test, card)


def _fetch(name: str, title: str, cache_dir: Path, make: Callable[[bool], Any]) -> tuple[Any, Any]:
    """torchvision's (train, test) datasets built by `make(train)`, with every
    failure to fetch or read turned into a one-line UiaError."""
    try:
        return make(True), make(False)
    except UiaError:
        raise
    except Exception as exc:  # torchvision raises URLError, OSError, RuntimeError, ...
        if name == "fashion_mnist":
            remedy = (
                "apt-get install dataset-fashion-mnist (works offline), put the files there,"
                " or use german_credit (vendored)"
            )
        else:
            remedy = f"put the files there, or {_OFFLINE_HINT}"
        raise UiaError(
            f"download.dataset={name}: cannot fetch {title} into {cache_dir} "
            f"(no network, or bad files there? {_one_line(exc)}); {remedy}"
        ) from exc


def _mnist_like(ds: torchvision.datasets.MNIST) -> tuple[torch.Tensor, torch.Tensor]:
    return ds.data.to(torch.uint8).unsqueeze(1).contiguous(), ds.targets.to(torch.int64)


def _hwc_numpy(ds: Any) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    return x, torch.as_tensor(ds.targets, dtype=torch.int64)


def _stage_debian_fashion_mnist(cache_dir: Path) -> bool:
    """Decompress the Debian package's files into cache_dir/FashionMNIST/raw/
    (torchvision's layout). False when the package's files are not all there."""
    src = Path(DEBIAN_FASHION_MNIST)
    if not all((src / f"{f}.gz").is_file() for f in _FASHION_MNIST_FILES):
        return False
    raw = cache_dir / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for f in _FASHION_MNIST_FILES:
        dst = raw / f
        if dst.is_file():
            continue
        # Atomic: an interrupted copy must not look like a staged file.
        try:
            with atomic_path(dst) as tmp, gzip.open(src / f"{f}.gz", "rb") as fin, open(tmp, "wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
        except (OSError, EOFError) as exc:
            raise UiaError(
                f"dataset=fashion_mnist: cannot decompress {src / f'{f}.gz'} into {raw} "
                f"({_one_line(exc)}); reinstall with apt-get install --reinstall dataset-fashion-mnist"
            ) from exc
    return True


@dataclass(frozen=True)
class _TorchvisionSet:
    """How to read one torchvision dataset and what its card says."""

    title: str
    make: Callable[[Path, bool, bool], Any]  # (root, train split?, download?) -> torchvision dataset
    tensors: Callable[[Any], tuple[torch.Tensor, torch.Tensor]]  # -> (uint8 NCHW, int64 labels)
    source: str
    licence: str
    citation: str


def _stl10_tensors(ds: Any) -> tuple[torch.Tensor, torch.Tensor]:
    # STL10.data is already uint8 NCHW.
    return torch.from_numpy(ds.data).contiguous(), torch.as_tensor(ds.labels, dtype=torch.int64)


_STL10_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
_CIFAR_SOURCE = "https://www.cs.toronto.edu/~kriz/cifar.html"
_CIFAR_CITATION = "Krizhevsky 2009, Learning Multiple Layers of Features from Tiny Images"
_NO_LICENCE = "no licence stated; see source"

_TORCHVISION: dict[str, _TorchvisionSet] = {
    "fashion_mnist": _TorchvisionSet(
        "Fashion-MNIST",
        lambda root, train, dl: torchvision.datasets.FashionMNIST(root=root, train=train, download=dl),
        _mnist_like,
        "https://github.com/zalandoresearch/fashion-mnist",
        "MIT (Zalando Research)",
        "Xiao, Rasul & Vollgraf 2017, Fashion-MNIST, arXiv:1708.07747",
    ),
    "mnist": _TorchvisionSet(
        "MNIST",
        lambda root, train, dl: torchvision.datasets.MNIST(root=root, train=train, download=dl),
        _mnist_like,
        "http://yann.lecun.com/exdb/mnist/",
        "CC BY-SA 3.0 (Yann LeCun & Corinna Cortes)",
        "LeCun, Bottou, Bengio & Haffner 1998, Gradient-based learning applied to document recognition",
    ),
    "cifar10": _TorchvisionSet(
        "CIFAR-10",
        lambda root, train, dl: torchvision.datasets.CIFAR10(root=root, train=train, download=dl),
        _hwc_numpy, _CIFAR_SOURCE, _NO_LICENCE, _CIFAR_CITATION,
    ),
    "cifar100": _TorchvisionSet(
        "CIFAR-100",
        lambda root, train, dl: torchvision.datasets.CIFAR100(root=root, train=train, download=dl),
        _hwc_numpy, _CIFAR_SOURCE, _NO_LICENCE, _CIFAR_CITATION,
    ),
    "stl10": _TorchvisionSet(
        "STL-10",
        lambda root, train, dl: torchvision.datasets.STL10(
            root=root, split="train" if train else "test", download=dl
        ),
        _stl10_tensors,
        "https://cs.stanford.edu/~acoates/stl10/",
        _NO_LICENCE,
        "Coates, Ng & Lee 2011, An Analysis of Single-Layer Networks in Unsupervised Feature Learning",
    ),
}


def _load_torchvision(name: str, cache_dir: Path, download: bool = True, source: str | None = None) -> Dataset:
    """One of _TORCHVISION through torchvision's own class (download unless the
    files are already in cache_dir; STL-10: the labelled splits only)."""
    spec = _TORCHVISION[name]
    train, test = _fetch(name, spec.title, cache_dir, lambda split: spec.make(cache_dir, split, download))
    (x_tr, y_tr), (x_te, y_te) = spec.tensors(train), spec.tensors(test)
    return _image_dataset(
        name=name,
        x_train=x_tr,
        y_train=y_tr,
        x_test=x_te,
        y_test=y_te,
        class_names=list(getattr(train, "classes", _STL10_CLASSES)),
        source=source or spec.source,
        licence=spec.licence,
        citation=spec.citation,
    )


def load_fashion_mnist(cache_dir: Path) -> Dataset:
    """Fashion-MNIST, 60k/10k 1x28x28. Offline from the Debian package when
    installed (staged into cache_dir), else torchvision's download."""
    staged = _stage_debian_fashion_mnist(cache_dir)
    source = _TORCHVISION["fashion_mnist"].source
    if staged:
        source = f"Debian package dataset-fashion-mnist ({DEBIAN_FASHION_MNIST}); {source}"
    return _load_torchvision("fashion_mnist", cache_dir, download=not staged, source=source)


# --------------------------------------------------------------------------- tabular


def _read_german_credit(path: Path) -> tuple[list[list[str]], list[int]]:
    """Raw attribute strings (20 per row) and class codes (1/2) from german.data."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise UiaError(
            f"dataset=german_credit: cannot read {path} ({_one_line(exc)}); reinstall uia-pipe"
        ) from exc
    rows: list[list[str]] = []
    classes: list[int] = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 21 or fields[20] not in ("1", "2"):
            raise UiaError(
                f"dataset=german_credit: {path} line {lineno}: expected 20 attributes and a class 1|2, "
                f"got {len(fields)} fields; restore the original UCI german.data"
            )
        rows.append(fields[:20])
        classes.append(int(fields[20]))
    return rows, classes


def load_german_credit(cache_dir: Path) -> Dataset:
    """UCI Statlog German Credit (vendored; `cache_dir` unused), 800/200 rows.

    The split is a fixed permutation (seed GERMAN_CREDIT_SPLIT_SEED). Columns
    follow the UCI attribute order: numeric ones standardised with the train
    rows' mean and population std, categorical ones one-hot over the codes in
    the file (sorted). Labels: 0 = good (class 1), 1 = bad (class 2). The
    card's `encoding` inverts this (see `decode_tabular`)."""
    path = GERMAN_CREDIT_FILE
    rows, classes = _read_german_credit(path)
    n = len(rows)
    y = torch.tensor([c - 1 for c in classes], dtype=torch.int64)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(GERMAN_CREDIT_SPLIT_SEED))
    train_idx, test_idx = perm[:GERMAN_CREDIT_N_TRAIN], perm[GERMAN_CREDIT_N_TRAIN:]

    columns: list[dict[str, Any]] = []
    blocks: list[torch.Tensor] = []
    dim = 0
    for j, (name, numeric) in enumerate(_GERMAN_CREDIT_ATTRIBUTES):
        values = [r[j] for r in rows]
        if numeric:
            try:
                v = torch.tensor([float(s) for s in values], dtype=torch.float64)
            except ValueError as exc:
                raise UiaError(
                    f"dataset=german_credit: {path} attribute A{j + 1} ({name}) is not numeric "
                    f"({_one_line(exc)}); restore the original UCI german.data"
                ) from exc
            mean = float(v[train_idx].mean())
            std = float(v[train_idx].std(unbiased=False))
            std = std if std > 0 else 1.0
            blocks.append(((v - mean) / std).unsqueeze(1))
            columns.append({"name": name, "type": "numeric", "index": dim, "mean": mean, "std": std})
            dim += 1
        else:
            categories = sorted(set(values))
            code = torch.tensor([categories.index(s) for s in values], dtype=torch.int64)
            blocks.append(torch.nn.functional.one_hot(code, len(categories)).to(torch.float64))
            columns.append({"name": name, "type": "categorical", "start": dim, "categories": categories})
            dim += len(categories)
    x = torch.cat(blocks, dim=1).to(torch.float32)

    x_tr, y_tr, x_te, y_te = x[train_idx].contiguous(), y[train_idx], x[test_idx].contiguous(), y[test_idx]
    class_names = ["good", "bad"]
    bare = Dataset(x_tr, y_tr, x_te, y_te, card={})
    card: dict[str, Any] = {
        "name": "german_credit",
        "source": "UCI Machine Learning Repository, Statlog (German Credit Data), doi:10.24432/C5NC77 "
        "(vendored: uia_pipe/vendor/german_credit/german.data)",
        "licence": "CC BY 4.0",
        "citation": "Hofmann 1994, Statlog (German Credit Data), UCI Machine Learning Repository",
        "kind": "tabular",
        "input_shape": [dim],
        "num_classes": 2,
        "class_names": class_names,
        "class_counts": {"train": _class_counts(y_tr, 2), "test": _class_counts(y_te, 2)},
        "n_train": int(x_tr.shape[0]),
        "n_test": int(x_te.shape[0]),
        # The encoding already standardises, so models need no further normalisation.
        "mean": [0.0] * dim,
        "std": [1.0] * dim,
        "checksum": checksum(bare),
        "split_seed": GERMAN_CREDIT_SPLIT_SEED,
        "encoding": {"columns": columns, "dim": dim},
    }
    return Dataset(x_tr, y_tr, x_te, y_te, card)


def decode_tabular(x: torch.Tensor, encoding: dict) -> dict[str, torch.Tensor]:
    """Invert a card's `encoding` for a [B, D] batch (or one [D] row).

    Returns {"numeric": float [B, n_num] on the original scale, in column order,
    "categorical": long [B, n_cat] index into each column's `categories` (argmax
    of its one-hot block, so soft or reconstructed vectors decode too)}."""
    if x.dim() == 1:
        x = x.unsqueeze(0)
    if x.dim() != 2 or x.shape[1] != encoding["dim"]:
        raise ValueError(f"decode_tabular expects [B, {encoding['dim']}], got {list(x.shape)}")
    x = x if x.is_floating_point() else x.to(torch.float32)
    numeric: list[torch.Tensor] = []
    categorical: list[torch.Tensor] = []
    for col in encoding["columns"]:
        if col["type"] == "numeric":
            numeric.append(x[:, col["index"]] * col["std"] + col["mean"])
        else:
            start = col["start"]
            categorical.append(x[:, start : start + len(col["categories"])].argmax(dim=1))
    b = x.shape[0]
    return {
        "numeric": torch.stack(numeric, dim=1) if numeric else x.new_zeros(b, 0),
        "categorical": torch.stack(categorical, dim=1)
        if categorical
        else torch.zeros(b, 0, dtype=torch.int64, device=x.device),
    }


DATASETS: dict[str, Callable[[Path], Dataset]] = {
    "fashion_mnist": load_fashion_mnist,
    "mnist": functools.partial(_load_torchvision, "mnist"),
    "cifar10": functools.partial(_load_torchvision, "cifar10"),
    "cifar100": functools.partial(_load_torchvision, "cifar100"),
    "stl10": functools.partial(_load_torchvision, "stl10"),
    "german_credit": load_german_credit,
}
"""Registry used by `load_dataset`; each loader takes the cache directory."""


class DownloadParams(BaseModel):
    """The download section: which dataset, and where downloads and staged raw files go."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str = "fashion_mnist"
    cache_dir: str = Field("~/.cache/uia-pipe", min_length=1, description="outside the repository")

    @field_validator("dataset")
    @classmethod
    def _known(cls, v: str) -> str:
        return one_of("dataset", v, DATASETS)
