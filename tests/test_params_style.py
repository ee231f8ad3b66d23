"""params.yaml is written in the style of DVC's own params writer, so `dvc exp run -S key=value`
changes exactly that key's line and `git diff params.yaml` shows the experiment, not a reformatting.

The writer here is the one `dvc exp run -S` calls (dvc.repo.experiments.queue.base ->
dvc.utils.hydra.apply_overrides: ruamel.yaml round-trip load, hydra overrides, dump). It reads the
committed params.yaml (HEAD's), never whatever an experiment left in the working tree."""

import difflib
from pathlib import Path

import pytest
import yaml

from tests.conftest import committed_params_text

apply_overrides = pytest.importorskip("dvc.utils.hydra").apply_overrides


def _set(tmp_path: Path, *overrides: str) -> tuple[str, str]:
    """(committed text, text after DVC applied `overrides` to a copy of it)."""
    before = committed_params_text()
    path = tmp_path / "params.yaml"
    path.write_text(before, encoding="utf-8")
    apply_overrides(path, list(overrides))
    return before, path.read_text(encoding="utf-8")


def _changed_lines(before: str, after: str) -> list[str]:
    diff = difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
    return [line for line in diff if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def test_setting_one_value_changes_exactly_its_line(tmp_path):
    before, after = _set(tmp_path, "unlearn.method=approx")
    old = [line for line in before.splitlines() if line.startswith("  method: exact ")]
    assert len(old) == 1, "params.yaml's unlearn.method is no longer `exact` on one line"
    new = old[0].replace("method: exact ", "method: approx", 1)  # the comment keeps its column
    assert _changed_lines(before, after) == [f"-{old[0]}", f"+{new}"]
    assert yaml.safe_load(after)["unlearn"]["method"] == "approx"


@pytest.mark.parametrize("override, key", [
    ("base.ray.address=auto", ["base", "ray", "address"]),           # null -> a value
    ("attack.feature_recovery.lr=0.2", ["attack", "feature_recovery", "lr"]),
    ("evaluate.small_sample=10", ["evaluate", "small_sample"]),
])
def test_other_single_values_change_one_line(tmp_path, override, key):
    before, after = _set(tmp_path, override)
    assert len(_changed_lines(before, after)) == 2, _changed_lines(before, after)
    expected = yaml.safe_load(before)
    node = expected
    for part in key[:-1]:
        node = node[part]
    node[key[-1]] = yaml.safe_load(override.split("=", 1)[1])
    assert yaml.safe_load(after) == expected


def test_round_trip_without_change_leaves_the_text_identical(tmp_path):
    before, after = _set(tmp_path, "unlearn.method=exact")  # the committed value: nothing changes
    assert yaml.safe_load(before)["unlearn"]["method"] == "exact"
    assert after == before, "\n".join(_changed_lines(before, after)[:20])
