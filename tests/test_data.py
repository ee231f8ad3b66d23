"""uia_pipe.data: loaders read tiny stand-ins in the real on-disk formats,
offline failures are one-line UiaErrors, German Credit encodes and decodes.

No test touches the network: every torchvision download entry point is
patched to raise, and md5 checks are relaxed to "file exists" so the tiny
stand-ins pass torchvision's integrity checks.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import struct
from collections import Counter
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar
import torchvision.datasets.mnist
import torchvision.datasets.stl10
import torchvision.datasets.utils

from uia_pipe import data
from uia_pipe.data import (
    DATASETS,
    Dataset,
    as_inputs,
    checksum,
    decode_tabular,
    load_dataset,
)
from uia_pipe.errors import UiaError

CARD_KEYS = {
    "name",
    "source",
    "licence",
    "citation",
    "kind",
    "input_shape",
    "num_classes",
    "class_names",
    "class_counts",
    "n_train",
    "n_test",
    "mean",
    "std",
    "checksum",
}
IMAGE_DATASETS = ["fashion_mnist", "mnist", "cifar10", "cifar100", "stl10"]


def _raise_offline(*args: object, **kwargs: object) -> None:
    raise URLError("offline (test)")


def _exists_only(fpath: str | Path, md5: str | None = None) -> bool:
    return os.path.isfile(fpath)


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No network and no Debian package, whatever this machine has."""
    for module in (
        torchvision.datasets.utils,
        torchvision.datasets.mnist,
        torchvision.datasets.cifar,
        torchvision.datasets.stl10,
    ):
        monkeypatch.setattr(module, "download_and_extract_archive", _raise_offline)
    monkeypatch.setattr(torchvision.datasets.utils, "download_url", _raise_offline)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian-package")


@pytest.fixture
def relaxed_md5(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand-in files cannot match torchvision's md5s; accept any that exist."""
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", _exists_only)
    monkeypatch.setattr(torchvision.datasets.stl10, "check_integrity", _exists_only)


# --------------------------------------------------------------------------- writers


def _idx_bytes(a: np.ndarray) -> bytes:
    """IDX (ubyte) encoding: magic 0x000008<ndim>, big-endian dims, raw bytes."""
    assert a.dtype == np.uint8
    return struct.pack(">I", 0x0800 | a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()


def _mnist_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    rng.shuffle(labels)
    return images, labels


def _write_mnist_like(directory: Path, *, gz: bool) -> dict[str, np.ndarray]:
    """Train 23 / test 7 images in torchvision's (or Debian's .gz) file names."""
    directory.mkdir(parents=True, exist_ok=True)
    x_tr, y_tr = _mnist_split(23, 1)
    x_te, y_te = _mnist_split(7, 2)
    arrays = {
        "train-images-idx3-ubyte": x_tr,
        "train-labels-idx1-ubyte": y_tr,
        "t10k-images-idx3-ubyte": x_te,
        "t10k-labels-idx1-ubyte": y_te,
    }
    for name, a in arrays.items():
        if gz:
            with gzip.open(directory / f"{name}.gz", "wb") as f:
                f.write(_idx_bytes(a))
        else:
            (directory / name).write_bytes(_idx_bytes(a))
    return {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te}


def _cifar_batch(n: int, num_classes: int, seed: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, num_classes, size=n)]
    return images, labels


def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def _write_cifar10(root: Path) -> dict[str, np.ndarray]:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    xs, ys = [], []
    for i in range(1, 6):
        x, y = _cifar_batch(4, 10, i)
        _pickle(d / f"data_batch_{i}", {"data": x.reshape(len(x), -1), "labels": y})
        xs.append(x)
        ys += y
    x_te, y_te = _cifar_batch(6, 10, 9)
    _pickle(d / "test_batch", {"data": x_te.reshape(len(x_te), -1), "labels": y_te})
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _pickle(d / "batches.meta", {"label_names": names})
    return {"x_train": np.concatenate(xs), "y_train": np.array(ys), "x_test": x_te, "y_test": np.array(y_te)}


def _write_cifar100(root: Path) -> dict[str, np.ndarray]:
    d = root / "cifar-100-python"
    d.mkdir(parents=True)
    x_tr, y_tr = _cifar_batch(9, 100, 3)
    x_te, y_te = _cifar_batch(5, 100, 4)
    coarse = [0] * 9
    _pickle(d / "train", {"data": x_tr.reshape(9, -1), "fine_labels": y_tr, "coarse_labels": coarse})
    _pickle(d / "test", {"data": x_te.reshape(5, -1), "fine_labels": y_te, "coarse_labels": coarse[:5]})
    _pickle(d / "meta", {"fine_label_names": [f"class{i:02d}" for i in range(100)], "coarse_label_names": []})
    return {"x_train": x_tr, "y_train": np.array(y_tr), "x_test": x_te, "y_test": np.array(y_te)}


def _write_stl10(root: Path) -> dict[str, np.ndarray]:
    d = root / "stl10_binary"
    d.mkdir(parents=True)
    rng = np.random.default_rng(5)
    out = {}
    for split, n in (("train", 6), ("test", 4)):
        x = rng.integers(0, 256, size=(n, 3, 96, 96), dtype=np.uint8)
        y = np.arange(n, dtype=np.uint8) % 10
        # STL-10 stores each channel column-major; labels are 1-based.
        (d / f"{split}_X.bin").write_bytes(np.ascontiguousarray(x.transpose(0, 1, 3, 2)).tobytes())
        (d / f"{split}_y.bin").write_bytes((y + 1).tobytes())
        out[f"x_{split}"], out[f"y_{split}"] = x, y
    # Not a whole image: reading it would fail, so this proves it is not read.
    (d / "unlabeled_X.bin").write_bytes(b"garbage")
    names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    (d / "class_names.txt").write_text("\n".join(names) + "\n")
    return out


# --------------------------------------------------------------------------- checks


def _check_image_dataset(ds: Dataset, expected: dict[str, np.ndarray], name: str, num_classes: int) -> None:
    c = 1 if name in ("mnist", "fashion_mnist") else 3
    for split in ("train", "test"):
        x, y = getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}")
        want_x = expected[f"x_{split}"]
        if want_x.ndim == 3:
            want_x = want_x[:, None]
        assert x.dtype == torch.uint8 and y.dtype == torch.int64
        assert x.shape == want_x.shape and x.shape[1] == c
        assert torch.equal(x, torch.from_numpy(want_x))
        assert torch.equal(y, torch.from_numpy(expected[f"y_{split}"].astype(np.int64)))

    card = ds.card
    assert CARD_KEYS <= card.keys()
    json.loads(json.dumps(card, allow_nan=False))
    assert card["name"] == name and card["kind"] == "image"
    assert card["input_shape"] == list(ds.x_train.shape[1:])
    assert card["num_classes"] == num_classes == len(card["class_names"])
    assert all(isinstance(s, str) for s in card["class_names"])
    assert card["n_train"] == len(ds.y_train) and card["n_test"] == len(ds.y_test)
    assert card["class_counts"]["train"] == torch.bincount(ds.y_train, minlength=num_classes).tolist()
    assert card["class_counts"]["test"] == torch.bincount(ds.y_test, minlength=num_classes).tolist()
    v = ds.x_train.double() / 255
    assert card["mean"] == pytest.approx(v.mean(dim=(0, 2, 3)).tolist(), abs=1e-9)
    assert card["std"] == pytest.approx(v.std(dim=(0, 2, 3), unbiased=False).tolist(), abs=1e-7)
    assert card["checksum"] == checksum(ds)
    assert card["licence"] and card["citation"] and card["source"]


# --------------------------------------------------------------------------- image sets


def test_fashion_mnist_from_debian_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    debian = tmp_path / "debian"
    expected = _write_mnist_like(debian, gz=True)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", debian)
    cache = tmp_path / "cache"

    ds = load_dataset("fashion_mnist", cache)

    _check_image_dataset(ds, expected, "fashion_mnist", 10)
    raw = cache / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(
        ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    )
    assert "dataset-fashion-mnist" in ds.card["source"]
    assert ds.card["licence"].startswith("MIT")
    assert ds.card["class_names"][0] == "T-shirt/top"
    # Staged files are reused, and the result is the same.
    assert load_dataset("fashion_mnist", cache).card["checksum"] == ds.card["checksum"]


def test_a_broken_debian_file_stages_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    debian = tmp_path / "debian"
    _write_mnist_like(debian, gz=True)
    broken = debian / "t10k-images-idx3-ubyte.gz"
    broken.write_bytes(broken.read_bytes()[:-20])  # cut short, as by an interrupted install
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", debian)
    cache = tmp_path / "cache"

    with pytest.raises(UiaError, match="cannot decompress .*t10k-images-idx3-ubyte.gz"):
        load_dataset("fashion_mnist", cache)
    # The files before it are staged whole; the broken one leaves neither a file nor a temporary.
    raw = cache / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"]


def test_fashion_mnist_from_torchvision_raw_folder(tmp_path: Path) -> None:
    expected = _write_mnist_like(tmp_path / "FashionMNIST" / "raw", gz=False)
    ds = load_dataset("fashion_mnist", tmp_path)
    _check_image_dataset(ds, expected, "fashion_mnist", 10)
    assert "dataset-fashion-mnist" not in ds.card["source"]


def test_mnist(tmp_path: Path) -> None:
    expected = _write_mnist_like(tmp_path / "MNIST" / "raw", gz=False)
    ds = load_dataset("mnist", tmp_path)
    _check_image_dataset(ds, expected, "mnist", 10)
    assert "CC BY-SA 3.0" in ds.card["licence"]


def test_cifar10(tmp_path: Path, relaxed_md5: None) -> None:
    expected = _write_cifar10(tmp_path)
    ds = load_dataset("cifar10", tmp_path)
    _check_image_dataset(ds, expected, "cifar10", 10)
    assert ds.card["class_names"][1] == "automobile"


def test_cifar100(tmp_path: Path, relaxed_md5: None) -> None:
    expected = _write_cifar100(tmp_path)
    ds = load_dataset("cifar100", tmp_path)
    _check_image_dataset(ds, expected, "cifar100", 100)


def test_stl10_labelled_splits_only(tmp_path: Path, relaxed_md5: None) -> None:
    expected = _write_stl10(tmp_path)
    ds = load_dataset("stl10", tmp_path)
    _check_image_dataset(ds, expected, "stl10", 10)
    assert ds.card["input_shape"] == [3, 96, 96]


@pytest.mark.parametrize("name", IMAGE_DATASETS)
def test_offline_without_files_is_one_line_error(tmp_path: Path, name: str) -> None:
    with pytest.raises(UiaError) as info:
        load_dataset(name, tmp_path)
    msg = str(info.value)
    assert "\n" not in msg
    assert f"dataset={name}:" in msg and str(tmp_path) in msg
    assert "fashion_mnist" in msg and "german_credit" in msg
    assert "apt-get install dataset-fashion-mnist" in msg


def test_unknown_dataset_lists_known_ones(tmp_path: Path) -> None:
    with pytest.raises(UiaError, match="known: cifar10, cifar100, fashion_mnist, german_credit, mnist, stl10"):
        load_dataset("imagenet", tmp_path)
    assert set(DATASETS) == {"fashion_mnist", "mnist", "cifar10", "cifar100", "stl10", "german_credit"}


_REAL_DEBIAN = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(
    not all(
        (_REAL_DEBIAN / f"{f}.gz").is_file()
        for f in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    ),
    reason="Debian package dataset-fashion-mnist not installed",
)
def test_real_debian_fashion_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", _REAL_DEBIAN)
    ds = load_dataset("fashion_mnist", tmp_path)
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert ds.card["num_classes"] == 10
    assert ds.card["class_counts"]["train"] == [6000] * 10
    assert ds.card["class_counts"]["test"] == [1000] * 10
    # Published Fashion-MNIST train statistics.
    assert ds.card["mean"][0] == pytest.approx(0.2860, abs=1e-3)
    assert ds.card["std"][0] == pytest.approx(0.3530, abs=1e-3)
    json.dumps(ds.card, allow_nan=False)


# --------------------------------------------------------------------------- german credit


@pytest.fixture(scope="module")
def german() -> Dataset:
    return load_dataset("german_credit", Path("unused"))


def _raw_german_rows() -> list[list[str]]:
    return [line.split() for line in data.GERMAN_CREDIT_FILE.read_text().splitlines() if line.strip()]


def test_german_credit_split_and_card(german: Dataset) -> None:
    card = german.card
    d = card["encoding"]["dim"]
    assert german.x_train.shape == (800, d) and german.x_test.shape == (200, d)
    assert german.x_train.dtype == torch.float32 and german.y_train.dtype == torch.int64
    counts = [a + b for a, b in zip(card["class_counts"]["train"], card["class_counts"]["test"])]
    assert counts == [700, 300]
    assert card["class_counts"]["train"] == torch.bincount(german.y_train, minlength=2).tolist()
    assert card["kind"] == "tabular" and card["input_shape"] == [d]
    assert card["class_names"] == ["good", "bad"] and card["num_classes"] == 2
    assert card["mean"] == [0.0] * d and card["std"] == [1.0] * d
    assert card["checksum"] == checksum(german)
    assert isinstance(card["split_seed"], int)
    assert "10.24432/C5NC77" in card["source"] and card["licence"] == "CC BY 4.0"
    assert CARD_KEYS <= card.keys()
    json.loads(json.dumps(card, allow_nan=False))
    # Deterministic: a second load is identical.
    assert load_dataset("german_credit", Path("unused")).card["checksum"] == card["checksum"]


def test_german_credit_encoding(german: Dataset) -> None:
    columns = german.card["encoding"]["columns"]
    numeric = [c for c in columns if c["type"] == "numeric"]
    categorical = [c for c in columns if c["type"] == "categorical"]
    assert len(numeric) == 7 and len(categorical) == 13
    idx = [c["index"] for c in numeric]
    x = german.x_train[:, idx].double()
    assert x.mean(dim=0).abs().max() < 1e-5
    assert (x.std(dim=0, unbiased=False) - 1).abs().max() < 1e-5
    covered = set(idx)
    for c in categorical:
        block = torch.cat([german.x_train, german.x_test])[:, c["start"] : c["start"] + len(c["categories"])]
        assert set(block.unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(block.sum(dim=1), torch.ones(1000))
        covered |= set(range(c["start"], c["start"] + len(c["categories"])))
    assert covered == set(range(german.card["encoding"]["dim"]))


def test_german_credit_decode_round_trips(german: Dataset) -> None:
    encoding = german.card["encoding"]
    columns = encoding["columns"]
    num_attr = [j for j, c in enumerate(columns) if c["type"] == "numeric"]
    cat_attr = [j for j, c in enumerate(columns) if c["type"] == "categorical"]
    raw = _raw_german_rows()
    perm = torch.randperm(len(raw), generator=torch.Generator().manual_seed(german.card["split_seed"])).tolist()

    out = decode_tabular(german.x_train[:5], encoding)
    assert out["numeric"].shape == (5, 7) and out["categorical"].dtype == torch.int64
    for b, row in enumerate(perm[:5]):
        fields = raw[row]
        want = torch.tensor([float(fields[j]) for j in num_attr], dtype=out["numeric"].dtype)
        # float32 storage: relative, not absolute, precision (credit amounts reach ~18k).
        torch.testing.assert_close(out["numeric"][b], want, rtol=1e-4, atol=1e-4)
        got = [columns[j]["categories"][k] for j, k in zip(cat_attr, out["categorical"][b].tolist())]
        assert got == [fields[j] for j in cat_attr]
        assert int(german.y_train[b]) == int(fields[20]) - 1

    # Every row of the file, decoded from either split, comes back exactly once.
    both = decode_tabular(torch.cat([german.x_train, german.x_test]), encoding)
    labels = torch.cat([german.y_train, german.y_test]).tolist()
    decoded = Counter()
    for b in range(len(labels)):
        nums = [f"{round(v):d}" for v in both["numeric"][b].tolist()]
        cats = [columns[j]["categories"][k] for j, k in zip(cat_attr, both["categorical"][b].tolist())]
        fields = [""] * 20
        for j, v in zip(num_attr, nums):
            fields[j] = v
        for j, v in zip(cat_attr, cats):
            fields[j] = v
        decoded[tuple(fields + [str(labels[b] + 1)])] += 1
    assert decoded == Counter(tuple(r) for r in raw)


def test_decode_tabular_accepts_one_row(german: Dataset) -> None:
    out = decode_tabular(german.x_test[0], german.card["encoding"])
    assert out["numeric"].shape == (1, 7) and out["categorical"].shape == (1, 13)


# --------------------------------------------------------------------------- helpers


def test_as_inputs() -> None:
    x = torch.tensor([[0, 128, 255]], dtype=torch.uint8)
    y = as_inputs(x)
    assert y.dtype == torch.float32 and y[0, 2] == 1.0 and y[0, 0] == 0.0
    z = torch.tensor([-1.5, 2.0], dtype=torch.float64)
    assert as_inputs(z).dtype == torch.float32 and torch.equal(as_inputs(z), z.float())


def test_checksum_stable_and_sensitive() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (4, 1, 5, 5), generator=g, dtype=torch.uint8)
    y = torch.arange(4)
    ds = Dataset(x, y, x[:2].clone(), y[:2].clone(), card={})
    assert checksum(ds) == checksum(ds) == checksum(Dataset(x.clone(), y.clone(), x[:2], y[:2], card={"a": 1}))
    x2 = x.clone()
    x2[3, 0, 4, 4] ^= 1
    assert checksum(Dataset(x2, y, x[:2], y[:2], card={})) != checksum(ds)
    # Same bytes, different shape: different digest.
    assert checksum(Dataset(x.view(4, 1, 25, 1), y, x[:2], y[:2], card={})) != checksum(ds)
