"""Writes are atomic; loading weights never executes code."""

from __future__ import annotations

import pytest
import torch

from uia_pipe import io
from uia_pipe.errors import UiaError
from uia_pipe.models import build_model


def test_atomic_dir_leaves_nothing_when_the_writer_fails(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with io.atomic_dir(target) as tmp:
            io.save_json(tmp / "a.json", {"x": 1})
            raise RuntimeError("interrupted")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_file_keeps_the_old_version_when_the_writer_fails(tmp_path):
    target = tmp_path / "m.json"
    io.save_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError
    assert io.load_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_model_round_trip_through_safetensors(tmp_path):
    torch.manual_seed(0)
    spec = {"model": "convnet", "config": {"width": 2}, "input_shape": [1, 28, 28], "num_classes": 3,
            "mean": [0.5], "std": [0.3]}
    model = build_model(spec["model"], spec["config"], (1, 28, 28), 3, [0.5], [0.3]).eval()
    io.save_model(tmp_path / "m.safetensors", model, spec)
    loaded, spec2 = io.load_model(tmp_path / "m.safetensors")
    assert spec2 == spec
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(loaded(x), model(x))


def test_unreadable_weights_are_a_clean_error(tmp_path):
    bad = tmp_path / "m.safetensors"
    bad.write_bytes(b"\x80\x04 not a safetensors file")
    with pytest.raises(UiaError, match="m.safetensors: not a readable safetensors file"):
        io.load_model(bad)
    with pytest.raises(UiaError, match="file not found"):
        io.load_model(tmp_path / "missing.safetensors")
