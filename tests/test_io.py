"""Writes are atomic; loading weights never executes code."""

from __future__ import annotations

import os
import stat

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


def _killed_inside(writer, target):
    """Run `writer(target)` in a child process that dies mid-write, as a killed stage would."""
    pid = os.fork()
    if pid == 0:
        try:
            with writer(target) as tmp:
                (tmp / "part" if tmp.is_dir() else tmp).write_text("half")
                os._exit(0)
        finally:
            os._exit(1)
    assert os.waitpid(pid, 0)[1] == 0


@pytest.mark.parametrize("writer", [io.atomic_path, io.atomic_dir])
def test_a_write_removes_what_a_killed_write_left_and_nothing_else(tmp_path, writer):
    target = tmp_path / "x"
    _killed_inside(writer, target)
    (debris,) = tmp_path.iterdir()
    assert debris.name.startswith(".x.") and debris.name.endswith(".tmp")
    (tmp_path / ".x.k3j_9q0z.tmp").write_text("stale")  # another killed write
    keep = [".hidden", ".x.notes", ".x.tmp", ".x.abc.tmp", ".xy.k3j_9q0z.tmp", ".y.k3j_9q0z.tmp", "x.k3j_9q0z.tmp"]
    for name in keep:
        (tmp_path / name).write_text("not ours")
    with writer(target) as tmp:
        (tmp / "a" if tmp.is_dir() else tmp).write_text("whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep + ["x"])


def test_a_live_writers_temporary_is_left_alone(tmp_path):
    target = tmp_path / "probes.safetensors"
    with io.atomic_path(target) as first:
        first.write_text("first")
        io.write_text(target, "second")  # a concurrent writer of a shared cache file
        assert first.read_text() == "first"
    assert target.read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


@pytest.mark.parametrize(("umask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_outputs_get_ordinary_permissions_under_the_umask(tmp_path, umask, file_mode, dir_mode):
    old = os.umask(umask)
    try:
        io.save_json(tmp_path / "m.json", {"v": 1})
        with io.atomic_dir(tmp_path / "out") as tmp:
            io.save_json(tmp / "a.json", {"v": 2})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.json").stat().st_mode) == file_mode
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == dir_mode
    assert stat.S_IMODE((tmp_path / "out" / "a.json").stat().st_mode) == file_mode


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
