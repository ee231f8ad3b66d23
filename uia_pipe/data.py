"""Dataset registry: name -> loader(cache_dir, settings) -> `Dataset`.

Images come back as uint8 [N, C, H, W] (call `as_inputs` for float [0, 1]),
tabular data as float32 [N, D] already encoded; labels are int64 [N], or for a
regression set (card "task": "regression") the float32 target standardised
with the train rows' mean and std (the card's "target" decodes it). Every
dataset carries a JSON-serialisable card (provenance, licence, class counts,
train-split statistics, checksum) so that a run records exactly what it saw.

Image sets are read by torchvision's own dataset classes. The ones that work
without a network are Fashion-MNIST (from the Debian package
``dataset-fashion-mnist``), German Credit (vendored in ``vendor/``), and
scikit-learn's bundled digits and diabetes; the others need torchvision's
download, or its files already under ``cache_dir``. `image_folder` and `csv`
read the user's own files, named in the download section (`DownloadParams`).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch
import torchvision

from uia_pipe.atomic import atomic_path
# The download section's schema, re-exported: data.DownloadParams, ...
from uia_pipe.data_config import DATASET_NAMES, CsvParams, DownloadParams, ImageFolderParams  # noqa: F401
from uia_pipe.encoding import decode_tabular  # noqa: F401  (a card's encoding inverted, for scoring)
from uia_pipe.errors import UiaError

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
"""Where the Debian package ``dataset-fashion-mnist`` installs the gzipped IDX files."""

GERMAN_CREDIT_FILE = Path(__file__).parent / "vendor/german_credit/german.data"

GERMAN_CREDIT_SPLIT_SEED = 0
GERMAN_CREDIT_N_TRAIN = 800
DIGITS_SPLIT_SEED = 0
DIABETES_SPLIT_SEED = 0
TRAIN_FRACTION = 0.8
"""Of the bundled sets split here (digits, diabetes); German Credit keeps its 800 of 1,000."""

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

_USER_DATA = "the user's own data"

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

    Images: x uint8 [N, C, H, W]; tabular: x float32 [N, D]. y int64 [N], or
    float32 [N] (the standardised target) where the card says "task": "regression".
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
    if x.dtype == torch.int64:  # a text record's character indices
        return x
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


class Loader(Protocol):
    """A registry entry. Only the user-data loaders read `settings` (the download
    section; None: its defaults), so the others may be called with cache_dir alone."""

    def __call__(self, cache_dir: Path, settings: DownloadParams | None = None, /) -> Dataset: ...


def load_dataset(name: str, cache_dir: Path, settings: DownloadParams | None = None) -> Dataset:
    """The dataset registered as `name`, read or fetched under `cache_dir`;
    `settings` (the download section) name the user's files for image_folder and csv.

    Raises UiaError (one line) for an unknown name or a dataset that cannot be
    fetched or read."""
    loader = DATASETS.get(name)
    if loader is None:
        known = ", ".join(sorted(DATASETS))
        raise UiaError(f"dataset={name}: unknown dataset; known: {known}")
    return loader(Path(cache_dir), settings)


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
    split_seed: int | None = None,
) -> Dataset:
    """Assemble an image Dataset and its card from uint8 NCHW tensors (`split_seed`:
    of a split made here rather than the publisher's, recorded on the card)."""
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
    if split_seed is not None:
        card["split_seed"] = split_seed
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


def _load_torchvision(
    name: str,
    cache_dir: Path,
    settings: DownloadParams | None = None,
    *,
    download: bool = True,
    source: str | None = None,
) -> Dataset:
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


def load_fashion_mnist(cache_dir: Path, settings: DownloadParams | None = None) -> Dataset:
    """Fashion-MNIST, 60k/10k 1x28x28. Offline from the Debian package when
    installed (staged into cache_dir), else torchvision's download."""
    staged = _stage_debian_fashion_mnist(cache_dir)
    source = _TORCHVISION["fashion_mnist"].source
    if staged:
        source = f"Debian package dataset-fashion-mnist ({DEBIAN_FASHION_MNIST}); {source}"
    return _load_torchvision("fashion_mnist", cache_dir, download=not staged, source=source)


def load_digits(cache_dir: Path, settings: DownloadParams | None = None) -> Dataset:
    """scikit-learn's bundled 8x8 digits (`cache_dir` unused): 1,797 images of
    10 classes, counts 0..16 stored as round(v * 255 / 16) (half to even) in
    uint8 [N, 1, 8, 8]; a fixed permutation (seed DIGITS_SPLIT_SEED) puts
    TRAIN_FRACTION of them in train."""
    bunch = _sklearn("digits", "load_digits")
    x = torch.from_numpy(bunch.images).mul(255 / 16).round().to(torch.uint8).unsqueeze(1)
    y = torch.from_numpy(bunch.target).to(torch.int64)
    train_idx, test_idx = _seeded_split(len(y), round(len(y) * TRAIN_FRACTION), DIGITS_SPLIT_SEED)
    return _image_dataset(
        name="digits",
        x_train=x[train_idx].contiguous(),
        y_train=y[train_idx],
        x_test=x[test_idx].contiguous(),
        y_test=y[test_idx],
        class_names=[str(c) for c in bunch.target_names],
        source="UCI Machine Learning Repository, Optical Recognition of Handwritten Digits "
        "(https://archive.ics.uci.edu/ml/datasets/Optical+Recognition+of+Handwritten+Digits): "
        "its 1,797-image test set as bundled with scikit-learn (sklearn.datasets.load_digits)",
        licence="CC BY 4.0",
        citation="Alpaydin & Kaynak 1998, Optical Recognition of Handwritten Digits, UCI Machine Learning Repository",
        split_seed=DIGITS_SPLIT_SEED,
    )


def _read_image(file: str, mode: str, size: tuple[int, int]) -> torch.Tensor:
    """One image file as uint8 [C, H, W]: converted to `mode` (L or RGB), resized
    to size = (height, width) bilinearly, aspect ratio not kept."""
    from PIL import Image

    try:
        with Image.open(file) as im:
            im = im.convert(mode).resize((size[1], size[0]), Image.Resampling.BILINEAR)
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError, ...
        raise UiaError(f"download.image_folder.path: cannot read image {_shown(file)} ({_one_line(exc)})") from exc
    a = torch.from_numpy(np.array(im, dtype=np.uint8))
    return a.unsqueeze(0) if a.dim() == 2 else a.permute(2, 0, 1)


def load_image_folder(cache_dir: Path, settings: DownloadParams | None = None) -> Dataset:
    """The user's images under download.image_folder.path (`cache_dir` unused),
    one subfolder a class (torchvision's ImageFolder; classes sorted by folder
    name), each converted to `channels` and resized to `size`, as uint8 NCHW.
    The split is stratified: each class puts round(count * test_fraction), at
    least one and at most count - 1, of its images in test (seed split_seed)."""
    cfg = (settings or DownloadParams()).image_folder
    root = _user_path("download.image_folder.path", cfg.path, "image_folder", folder=True)
    try:
        found = torchvision.datasets.ImageFolder(str(root), allow_empty=True)
    except FileNotFoundError as exc:  # no class folder at all
        raise UiaError(f"download.image_folder.path: no class folders in {root} "
                       "(expected one subfolder of images per class)") from exc
    except OSError as exc:
        raise UiaError(f"download.image_folder.path: cannot read {root} ({_one_line(exc)})") from exc
    y = torch.tensor(found.targets, dtype=torch.int64)
    if len(y) == 0:
        extensions = ", ".join(torchvision.datasets.folder.IMG_EXTENSIONS)
        raise UiaError(f"download.image_folder.path: no images in the class folders of {root} "
                       f"(expected files ending {extensions})")
    _two_per_class("download.image_folder.path", found.classes, y, "image")
    mode = "L" if cfg.channels == 1 else "RGB"
    x = torch.empty((len(y), cfg.channels, *cfg.size), dtype=torch.uint8)
    for i, (file, _) in enumerate(found.samples):
        x[i] = _read_image(file, mode, cfg.size)
    train_idx, test_idx = _stratified_split(y, cfg.test_fraction, cfg.split_seed)
    return _image_dataset(
        name="image_folder",
        x_train=x[train_idx].contiguous(),
        y_train=y[train_idx],
        x_test=x[test_idx].contiguous(),
        y_test=y[test_idx],
        class_names=list(found.classes),
        source=str(root),
        licence=_USER_DATA,
        citation=f"none ({_USER_DATA})",
        split_seed=cfg.split_seed,
    )


# --------------------------------------------------------------------------- splits and user files


def _seeded_split(n: int, n_train: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, test) row indices: the first n_train of a permutation seeded with `seed`, and the rest."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[:n_train], perm[n_train:]


def _n_test(n: int, fraction: float) -> int:
    """round(n * fraction), at least 1 and at most n - 1 (n >= 2)."""
    return min(max(round(n * fraction), 1), n - 1)


def _stratified_split(y: torch.Tensor, test_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, test) row indices, each in the order of one seeded permutation; every
    class (of at least 2 rows) puts `_n_test(count, test_fraction)` rows in test."""
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    in_test = torch.zeros(len(y), dtype=torch.bool)
    for c in y.unique().tolist():
        members = perm[y[perm] == c]
        in_test[members[: _n_test(len(members), test_fraction)]] = True
    return perm[~in_test[perm]], perm[in_test[perm]]


def _shown(text: str) -> str:
    """`text` as a message shows it: itself, or its repr where printing it would break the line."""
    return text if text.isprintable() else repr(text)


def _listed(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(_shown(n) for n in names[:limit])
    return shown if len(names) <= limit else f"{shown}, ... ({len(names)} in all)"


def _user_path(key: str, value: str | None, dataset: str, *, folder: bool) -> Path:
    """The resolved path that `key` holds; UiaError when it is null, missing or of the wrong kind."""
    what = "a folder of class subfolders" if folder else "a CSV file"
    if value is None:
        raise UiaError(f"{key}: null; set it to {what} (download.dataset: {dataset} reads it)")
    path = Path(value).expanduser().resolve()
    if not path.exists():
        raise UiaError(f"{key}: {path} does not exist")
    if path.is_dir() != folder:
        raise UiaError(f"{key}: {path} is not {what}")
    return path


def _two_per_class(key: str, class_names: list[str], y: torch.Tensor, unit: str) -> None:
    """UiaError naming the first class with fewer than 2 rows: a split needs one for train, one for test."""
    for name, count in zip(class_names, _class_counts(y, len(class_names))):
        if count < 2:
            units = unit if count == 1 else f"{unit}s"
            raise UiaError(f"{key}: class {name!r} has {count} {units}; each class needs at least 2 (train and test)")


def _sklearn(name: str, loader: str, **kwargs: Any) -> Any:
    """scikit-learn's bundled data set, `sklearn.datasets.<loader>(**kwargs)` (files
    shipped in the package: no network)."""
    try:
        import sklearn.datasets

        return getattr(sklearn.datasets, loader)(**kwargs)
    except Exception as exc:  # ImportError, or the package's files missing or damaged
        raise UiaError(
            f"dataset={name}: cannot read scikit-learn's bundled copy ({_one_line(exc)}); "
            "pip install -r requirements.txt"
        ) from exc


# --------------------------------------------------------------------------- tabular

_Column = tuple[str, "torch.Tensor | list[str]"]
"""(name, values): numeric columns as float64 [N], categorical ones as one string a row."""


def _standardise(v: torch.Tensor, train_idx: torch.Tensor) -> tuple[torch.Tensor, float, float]:
    """(v - mean) / std with the train rows' mean and population std (1 where they are constant)."""
    mean = float(v[train_idx].mean())
    std = float(v[train_idx].std(unbiased=False))
    std = std if std > 0 else 1.0
    return (v - mean) / std, mean, std


def _encode(columns: list[_Column], train_idx: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """x float32 [N, D] and its `encoding` (see `decode_tabular`): numeric columns
    standardised (`_standardise`), categorical ones one-hot over their sorted values."""
    described: list[dict[str, Any]] = []
    blocks: list[torch.Tensor] = []
    dim = 0
    for name, values in columns:
        if isinstance(values, torch.Tensor):
            z, mean, std = _standardise(values, train_idx)
            blocks.append(z.unsqueeze(1))
            described.append({"name": name, "type": "numeric", "index": dim, "mean": mean, "std": std})
            dim += 1
        else:
            categories = sorted(set(values))
            index = {c: i for i, c in enumerate(categories)}
            code = torch.tensor([index[s] for s in values], dtype=torch.int64)
            blocks.append(torch.nn.functional.one_hot(code, len(categories)).to(torch.float64))
            described.append({"name": name, "type": "categorical", "start": dim, "categories": categories})
            dim += len(categories)
    return torch.cat(blocks, dim=1).to(torch.float32), {"columns": described, "dim": dim}


def _target_stats(v: torch.Tensor) -> dict[str, float]:
    return {
        "mean": float(v.mean()),
        "std": float(v.std(unbiased=False)),
        "min": float(v.min()),
        "max": float(v.max()),
    }


def _tabular_dataset(
    *,
    name: str,
    columns: list[_Column],
    y: torch.Tensor,
    train_idx: torch.Tensor,
    test_idx: torch.Tensor,
    split_seed: int,
    source: str,
    licence: str,
    citation: str,
    class_names: list[str] | None = None,
    target: str | None = None,
) -> Dataset:
    """Encode `columns` and assemble the Dataset and its card. Classification
    (`class_names`): y int64 codes. Regression (`target`, its column name): y
    float64 raw values, stored float32 standardised with the train rows' mean
    and population std, which the card's "target" holds to decode."""
    x, encoding = _encode(columns, train_idx)
    dim = encoding["dim"]
    card: dict[str, Any] = {"name": name, "source": source, "licence": licence, "citation": citation, "kind": "tabular"}
    if class_names is None:
        z, mean, std = _standardise(y, train_idx)
        card["task"] = "regression"
        card["input_shape"] = [dim]
        card["num_classes"] = 0
        card["target"] = {"name": target, "mean": mean, "std": std}
        card["target_stats"] = {"train": _target_stats(y[train_idx]), "test": _target_stats(y[test_idx])}
        y = z.to(torch.float32)
    else:
        k = len(class_names)
        card["input_shape"] = [dim]
        card["num_classes"] = k
        card["class_names"] = list(class_names)
        card["class_counts"] = {"train": _class_counts(y[train_idx], k), "test": _class_counts(y[test_idx], k)}
    x_tr, y_tr, x_te, y_te = x[train_idx].contiguous(), y[train_idx], x[test_idx].contiguous(), y[test_idx]
    card["n_train"] = int(x_tr.shape[0])
    card["n_test"] = int(x_te.shape[0])
    # The encoding already standardises, so models need no further normalisation.
    card["mean"] = [0.0] * dim
    card["std"] = [1.0] * dim
    card["checksum"] = checksum(Dataset(x_tr, y_tr, x_te, y_te, card={}))
    card["split_seed"] = split_seed
    card["encoding"] = encoding
    return Dataset(x_tr, y_tr, x_te, y_te, card)


_GERMAN_CREDIT_CARD = {
    "source": "UCI Machine Learning Repository, Statlog (German Credit Data), doi:10.24432/C5NC77 "
    "(vendored: uia_pipe/vendor/german_credit/german.data)",
    "licence": "CC BY 4.0",
    "citation": "Hofmann 1994, Statlog (German Credit Data), UCI Machine Learning Repository",
}


def _read_german_credit(path: Path, name: str = "german_credit") -> tuple[list[list[str]], list[int]]:
    """Raw attribute strings (20 per row) and class codes (1/2) from german.data;
    errors name `name`, the dataset being loaded."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise UiaError(f"dataset={name}: cannot read {path} ({_one_line(exc)}); reinstall uia-pipe") from exc
    rows: list[list[str]] = []
    classes: list[int] = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 21 or fields[20] not in ("1", "2"):
            raise UiaError(
                f"dataset={name}: {path} line {lineno}: expected 20 attributes and a class 1|2, "
                f"got {len(fields)} fields; restore the original UCI german.data"
            )
        rows.append(fields[:20])
        classes.append(int(fields[20]))
    return rows, classes


def _german_credit(name: str) -> tuple[list[_Column], list[int], torch.Tensor, torch.Tensor]:
    """The vendored file as columns in UCI attribute order, its class codes (1|2),
    and the fixed (train, test) split: GERMAN_CREDIT_N_TRAIN rows of a permutation
    seeded with GERMAN_CREDIT_SPLIT_SEED."""
    path = GERMAN_CREDIT_FILE
    rows, classes = _read_german_credit(path, name)
    columns: list[_Column] = []
    for j, (attribute, numeric) in enumerate(_GERMAN_CREDIT_ATTRIBUTES):
        values: torch.Tensor | list[str] = [r[j] for r in rows]
        if numeric:
            try:
                values = torch.tensor([float(s) for s in values], dtype=torch.float64)
            except ValueError as exc:
                raise UiaError(
                    f"dataset={name}: {path} attribute A{j + 1} ({attribute}) is not numeric "
                    f"({_one_line(exc)}); restore the original UCI german.data"
                ) from exc
        columns.append((attribute, values))
    train_idx, test_idx = _seeded_split(len(rows), GERMAN_CREDIT_N_TRAIN, GERMAN_CREDIT_SPLIT_SEED)
    return columns, classes, train_idx, test_idx


def load_german_credit(cache_dir: Path, settings: DownloadParams | None = None) -> Dataset:
    """UCI Statlog German Credit (vendored; `cache_dir` unused), 800/200 rows.

    The split is a fixed permutation (seed GERMAN_CREDIT_SPLIT_SEED). Columns
    follow the UCI attribute order: numeric ones standardised with the train
    rows' mean and population std, categorical ones one-hot over the codes in
    the file (sorted). Labels: 0 = good (class 1), 1 = bad (class 2). The
    card's `encoding` inverts this (see `decode_tabular`)."""
    columns, classes, train_idx, test_idx = _german_credit("german_credit")
    return _tabular_dataset(
        name="german_credit",
        columns=columns,
        y=torch.tensor([c - 1 for c in classes], dtype=torch.int64),
        train_idx=train_idx,
        test_idx=test_idx,
        split_seed=GERMAN_CREDIT_SPLIT_SEED,
        class_names=["good", "bad"],
        **_GERMAN_CREDIT_CARD,
    )


def load_german_credit_amount(cache_dir: Path, settings: DownloadParams | None = None) -> Dataset:
    """German Credit as regression (`cache_dir` unused): the target is
    credit_amount (A5), taken out of the features; the good/bad class becomes
    the last feature, categorical `credit_risk`. Rows, split and the other
    columns' encoding as german_credit's."""
    columns, classes, train_idx, test_idx = _german_credit("german_credit_amount")
    j = [c for c, _ in columns].index("credit_amount")
    _, amount = columns.pop(j)
    columns.append(("credit_risk", ["good" if c == 1 else "bad" for c in classes]))
    assert isinstance(amount, torch.Tensor)
    return _tabular_dataset(
        name="german_credit_amount",
        columns=columns,
        y=amount,
        train_idx=train_idx,
        test_idx=test_idx,
        split_seed=GERMAN_CREDIT_SPLIT_SEED,
        target="credit_amount",
        **_GERMAN_CREDIT_CARD,
    )


def load_diabetes(cache_dir: Path, settings: DownloadParams | None = None) -> Dataset:
    """scikit-learn's bundled diabetes data, unscaled (`cache_dir` unused): 442
    patients, 10 baseline features (sex categorical, codes "1" and "2"; the other
    nine numeric), target disease progression one year later. A fixed permutation
    (seed DIABETES_SPLIT_SEED) puts TRAIN_FRACTION of the rows in train."""
    bunch = _sklearn("diabetes", "load_diabetes", scaled=False)
    features = torch.from_numpy(bunch.data).to(torch.float64)
    columns: list[_Column] = [
        (name, [f"{v:g}" for v in features[:, j].tolist()]) if name == "sex" else (name, features[:, j].clone())
        for j, name in enumerate(bunch.feature_names)
    ]
    y = torch.from_numpy(bunch.target).to(torch.float64)
    train_idx, test_idx = _seeded_split(len(y), round(len(y) * TRAIN_FRACTION), DIABETES_SPLIT_SEED)
    return _tabular_dataset(
        name="diabetes",
        columns=columns,
        y=y,
        train_idx=train_idx,
        test_idx=test_idx,
        split_seed=DIABETES_SPLIT_SEED,
        target="disease_progression",
        source="https://www4.stat.ncsu.edu/~boos/var.select/diabetes.html, as bundled with scikit-learn "
        "(sklearn.datasets.load_diabetes(scaled=False))",
        licence="no licence stated; see source (redistributed in scikit-learn, BSD 3-Clause)",
        citation="Efron, Hastie, Johnstone & Tibshirani 2004, Least Angle Regression, Annals of Statistics 32(2)",
    )


def _numbers(frame: Any, column: str) -> tuple[np.ndarray, str | None]:
    """A text column as float64, and the first value that is not a finite number (None if all are)."""
    import pandas as pd

    v = np.array(pd.to_numeric(frame[column], errors="coerce"), dtype=np.float64)  # a writable copy
    bad = ~np.isfinite(v)
    return v, (str(frame[column].iloc[int(bad.argmax())]) if bad.any() else None)


def load_csv(cache_dir: Path, settings: DownloadParams | None = None) -> Dataset:
    """The user's table at download.csv.path (`cache_dir` unused), header first,
    read with pandas. download.csv.target is predicted: classification: its
    distinct values, sorted as strings, are the classes, split stratified as
    image_folder's; regression: a number, standardised (see `_tabular_dataset`),
    a seeded split. The other columns are the features, in file order: those in
    download.csv.categorical one-hot, the rest numeric, standardised."""
    cfg = (settings or DownloadParams()).csv
    path = _user_path("download.csv.path", cfg.path, "csv", folder=False)
    if cfg.target is None:
        raise UiaError("download.csv.target: null; name the column to predict")
    import pandas as pd

    try:
        # As text: categories and class names are the file's own spelling.
        frame = pd.read_csv(path, dtype=str)
    except Exception as exc:  # pandas raises ParserError, EmptyDataError, UnicodeDecodeError, OSError, ...
        raise UiaError(f"download.csv.path: cannot read {path} ({_one_line(exc)})") from exc
    names = [str(c) for c in frame.columns]
    for key, wanted in [("target", cfg.target), *(("categorical", c) for c in cfg.categorical)]:
        if wanted not in names:
            raise UiaError(f"download.csv.{key}: column {wanted!r} not in {path} (columns: {_listed(names)})")
    features = [c for c in names if c != cfg.target]
    if not features:
        raise UiaError(f"download.csv.path: {path} has no column besides the target {cfg.target!r}")
    if len(frame) < 2:
        raise UiaError(f"download.csv.path: {path} has {len(frame)} data rows; a split needs at least 2 "
                       "(train and test)")
    missing = frame.isna().to_numpy()
    if missing.any():
        row, col = (int(i[0]) for i in np.nonzero(missing))
        raise UiaError(f"download.csv.path: {path} has a missing value in column {names[col]!r}, "
                       f"data row {row + 1}; fill or drop it")

    columns: list[_Column] = []
    for name in features:
        if name in cfg.categorical:
            columns.append((name, frame[name].tolist()))
            continue
        v, bad = _numbers(frame, name)
        if bad is not None:
            raise UiaError(f"download.csv.categorical: column {name!r} of {path} is not numeric (value {bad!r}); "
                           "list it under download.csv.categorical, or fix the file")
        columns.append((name, torch.from_numpy(v)))

    card = {"name": "csv", "source": str(path), "licence": _USER_DATA, "citation": f"none ({_USER_DATA})"}
    if cfg.task == "regression":
        v, bad = _numbers(frame, cfg.target)
        if bad is not None:
            raise UiaError(f"download.csv.target: column {cfg.target!r} of {path} is not numeric (value {bad!r}); "
                           "task: regression predicts a number")
        y = torch.from_numpy(v)
        train_idx, test_idx = _seeded_split(len(y), len(y) - _n_test(len(y), cfg.test_fraction), cfg.split_seed)
        return _tabular_dataset(columns=columns, y=y, train_idx=train_idx, test_idx=test_idx,
                                split_seed=cfg.split_seed, target=cfg.target, **card)
    labels = frame[cfg.target].tolist()
    class_names = sorted(set(labels))
    if len(class_names) < 2:
        raise UiaError(f"download.csv.target: column {cfg.target!r} of {path} holds one class "
                       f"({class_names[0]!r}); classification needs at least 2")
    index = {c: i for i, c in enumerate(class_names)}
    y = torch.tensor([index[s] for s in labels], dtype=torch.int64)
    _two_per_class("download.csv.target", class_names, y, "row")
    train_idx, test_idx = _stratified_split(y, cfg.test_fraction, cfg.split_seed)
    return _tabular_dataset(columns=columns, y=y, train_idx=train_idx, test_idx=test_idx,
                            split_seed=cfg.split_seed, class_names=class_names, **card)


TINYSHAKESPEARE_FILE = Path(__file__).parent / "vendor/tinyshakespeare/input.txt.gz"


def _text_dataset(text: str, name: str, settings: DownloadParams | None, **card: Any) -> Dataset:
    """Records of `text` for a character-level language model (`uia_pipe.text`): its last
    download.text.test_fraction held out for test, the canaries of download.canaries appended to the
    training records (where the card records them)."""
    from . import text as lm

    cfg = settings or DownloadParams()
    length, canaries = cfg.text.length, cfg.canaries
    n_test = max(round(len(text) * cfg.text.test_fraction), length + 1)
    train_text, test_text = text[:-n_test], text[-n_test:]
    if len(train_text) < 2 * (length + 1):
        raise UiaError(f"download.text.length: {name} has {len(text)} characters, too few for two training "
                       f"records of {length + 1} and a test record; shorten download.text.length")
    head = len(canaries.template) + canaries.digits + 1
    if canaries.count and head > length + 1:
        raise UiaError(f"download.canaries.template: a canary ({head} characters with its secret) must fit a "
                       f"record of {length + 1} (download.text.length + 1)")
    vocab = lm.vocabulary(text, canaries.template + "\n")
    x_train, y_train = lm.records(lm.encode(train_text, vocab), length)
    x_test, y_test = lm.records(lm.encode(test_text, vocab), length)
    card = {"name": name, "kind": "text", "task": "language_model", "input_shape": [length],
            "num_classes": len(vocab), "vocab": vocab, "mean": [0.0], "std": [1.0], **card}
    if canaries.count:
        cx, cy, record = lm.canary_records(canaries, test_text, length, vocab)
        card["canaries"] = {"first_row": len(x_train), **record}
        x_train, y_train = torch.cat([x_train, cx]), torch.cat([y_train, cy])
    ds = Dataset(x_train, y_train, x_test, y_test, {**card, "n_train": len(x_train), "n_test": len(x_test)})
    ds.card["checksum"] = checksum(ds)
    return ds


def _read_text(key: str, path: Path) -> str:
    """The UTF-8 text of `path`; UiaError naming `key` when it is empty or not UTF-8."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UiaError(f"{key}: cannot read {path} ({_one_line(exc)})") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UiaError(f"{key}: {path} is not UTF-8 text (byte {exc.start}); convert it to UTF-8") from None
    if not text:
        raise UiaError(f"{key}: {path} is empty; a language model needs text")
    return text


def load_tinyshakespeare(cache_dir: Path, settings: DownloadParams | None = None) -> Dataset:
    """Tiny Shakespeare (vendored; `cache_dir` unused) as character records (`_text_dataset`)."""
    text = gzip.decompress(TINYSHAKESPEARE_FILE.read_bytes()).decode("utf-8")
    return _text_dataset(text, "tinyshakespeare", settings, source="karpathy/char-rnn data/tinyshakespeare "
                         "(vendored: uia_pipe/vendor/tinyshakespeare)", licence="public domain",
                         citation="Shakespeare's plays, as collected by A. Karpathy for char-rnn (2015)")


def load_text(cache_dir: Path, settings: DownloadParams | None = None) -> Dataset:
    """The user's UTF-8 text file at download.text.path (`cache_dir` unused) as character records."""
    cfg = settings or DownloadParams()
    path = cfg.text.path
    if path is None:
        raise UiaError("download.text.path: null; set it to a UTF-8 text file (download.dataset: text reads it)")
    resolved = Path(path).expanduser().resolve()
    if not resolved.exists():
        raise UiaError(f"download.text.path: {resolved} does not exist")
    if not resolved.is_file():
        raise UiaError(f"download.text.path: {resolved} is not a file")
    text = _read_text("download.text.path", resolved)
    return _text_dataset(text, "text", cfg, source=str(resolved), licence=_USER_DATA,
                         citation=f"none ({_USER_DATA})")


DATASETS: dict[str, Loader] = {
    "fashion_mnist": load_fashion_mnist,
    "mnist": functools.partial(_load_torchvision, "mnist"),
    "cifar10": functools.partial(_load_torchvision, "cifar10"),
    "cifar100": functools.partial(_load_torchvision, "cifar100"),
    "stl10": functools.partial(_load_torchvision, "stl10"),
    "digits": load_digits,
    "german_credit": load_german_credit,
    "german_credit_amount": load_german_credit_amount,
    "diabetes": load_diabetes,
    "image_folder": load_image_folder,
    "csv": load_csv,
    "tinyshakespeare": load_tinyshakespeare,
    "text": load_text,
}
"""Registry used by `load_dataset`; each loader takes (cache_dir, settings)."""
assert tuple(DATASETS) == DATASET_NAMES, "data.DATASETS and data_config.DATASET_NAMES disagree"
