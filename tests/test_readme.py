"""The README's results table is the pipeline's, never typed by hand: the committed table equals what
`uia readme` builds from the committed metrics, the command rewrites that block and nothing else, and the
prose around it stays short and free of measured times and machine names (those live in benchmarks/RESULTS.md)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from uia_pipe import readme
from uia_pipe.errors import UiaError

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 250
WALL_TIME = re.compile(r"\d+ min \d+ s")
CPU_NAMES = re.compile(r"EPYC|Xeon", re.IGNORECASE)


def committed(path: str) -> str:
    """A file as committed (HEAD), so that an experiment's metrics left in the workspace by `dvc exp run -S ...`
    do not count against the committed README (outside a git checkout: the file itself)."""
    try:
        return subprocess.run(["git", "show", f"HEAD:{path}"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return (ROOT / path).read_text()


def block(text: str) -> str:
    return text.split(readme.BEGIN)[1].split(readme.END)[0].strip("\n")


def prose(text: str) -> str:
    """The README less its generated block."""
    head, rest = text.split(readme.BEGIN)
    return head + rest.split(readme.END)[1]


def test_the_committed_table_is_the_one_the_committed_metrics_give():
    metrics = {name: json.loads(committed(f"metrics/{name}.json")) for name in readme.FILES}
    assert block(committed("README.md")) == readme.results_table(metrics), \
        "README.md's results table is stale: run `uia readme` and commit README.md with the metrics"


def test_the_readme_is_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= MAX_LINES


def test_the_readme_prose_types_no_wall_time_and_no_machine():
    text = prose((ROOT / "README.md").read_text())
    assert not WALL_TIME.findall(text) and not CPU_NAMES.findall(text)


def test_the_table_has_a_row_per_method_and_skips_a_column_whose_key_is_missing():
    attack = {"feature_recovery": {"psnr_mean": 30.0, "psnr_ci95": 2.0}, "label_inference": {"accuracy": 1.0},
              "compare": {"approx": {"feature_recovery": {"psnr_mean": 40.0}}}}
    table = readme.results_table({"attack": attack, "evaluate": {"method_exact": {}, "method_approx": {}}})
    header, _, first, second = table.splitlines()
    assert "PSNR (dB)" in header and "label acc." in header and "membership AUC" not in header
    assert first.startswith("| exact | 30 [28, 32] | 1 |") and second.startswith("| approx | 40 | – |")


def test_a_readme_without_the_markers_is_a_one_line_error():
    with pytest.raises(UiaError, match="results:begin"):
        readme.replace_block("# no table here\n", "| a |")


def test_the_command_rewrites_the_block_and_nothing_else(tmp_path):
    from stages.cli import app

    copy = tmp_path / "README.md"
    original = (ROOT / "README.md").read_text()
    copy.write_text(original.replace(block(original), "| stale | table |"))
    result = CliRunner().invoke(app, ["readme", "--readme", str(copy), "--metrics", str(ROOT / "metrics")])
    assert result.exit_code == 0, result.output
    rewritten = copy.read_text()
    assert prose(rewritten) == prose(original)
    metrics = {name: json.loads((ROOT / "metrics" / f"{name}.json").read_text()) for name in readme.FILES}
    assert block(rewritten) == readme.results_table(metrics)
    assert [p.name for p in tmp_path.iterdir()] == ["README.md"]  # written through a temporary, renamed in place
    again = CliRunner().invoke(app, ["readme", "--readme", str(copy), "--metrics", str(ROOT / "metrics")])
    assert again.exit_code == 0 and "already up to date" in again.output and copy.read_text() == rewritten
