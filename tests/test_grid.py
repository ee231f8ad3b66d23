"""`uia grid` and `uia table`: a grid of DVC experiments, run, then tabulated from MLflow."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from tests.conftest import committed_params, repo_copy, small_params
from uia_pipe import grid, stats
from uia_pipe.errors import UiaError


def test_axes_read_values_as_yaml():
    assert grid.parse_axis("train.n=8,16,32") == ("train.n", [8, 16, 32])
    assert grid.parse_axis("unlearn.method=exact,approx") == ("unlearn.method", ["exact", "approx"])
    for bad in ("train.n", "=1,2", "train.n=", "train.n=8,8"):
        with pytest.raises(UiaError, match="grid"):
            grid.parse_axis(bad)


def test_every_combination_is_checked_before_anything_runs():
    committed = committed_params()
    combos = grid.expand([("unlearn.method", ["exact", "approx"]), ("train.n", [8, 16])], [0, 1], committed, "g")
    assert len(combos) == 8 and combos[0] == {"unlearn.method": "exact", "train.n": 8, "base.seed": 0}
    assert combos[-1] == {"unlearn.method": "approx", "train.n": 16, "base.seed": 1}
    with pytest.raises(UiaError, match=r"grid: train\.m: no such key"):
        grid.expand([("train.m", [1])], [0], committed, "g")
    with pytest.raises(UiaError, match=r"grid: unlearn\.method=nope, base\.seed=0: .*unlearn\.method"):
        grid.expand([("unlearn.method", ["nope"])], [0], committed, "g")
    with pytest.raises(UiaError, match="base.seed through --seeds"):
        grid.expand([("base.seed", [1, 2])], [0], committed, "g")
    with pytest.raises(UiaError, match="name"):
        grid.expand([("train.n", [8])], [0], committed, "no spaces")
    assert grid.overrides({"train.n": 8, "unlearn.compare": ["exact"], "train.lenet.activation": "relu"}) == [
        "-S", "train.n=8", "-S", "unlearn.compare=[exact]", "-S", "train.lenet.activation=relu"]


def _run(exp, seed, n, method, psnr):
    return {"experiment": exp, "params": {"base.seed": str(seed), "train.n": str(n), "unlearn.method": method},
            "metrics": {"feature_recovery.psnr_mean": psnr}}


def test_table_pivots_means_and_intervals_over_seeds():
    runs = [_run("g-000", 0, 8, "exact", 30.0), _run("g-001", 1, 8, "exact", 34.0),
            _run("g-002", 0, 32, "exact", 20.0), _run("g-003", 0, 8, "approx", 40.0),
            _run("other-000", 0, 8, "exact", 99.0), _run("g-000", 0, 8, "exact", 77.0)]  # older run of g-000
    mine = grid.grid_runs(runs, "g")
    assert [r["experiment"] for r in mine] == ["g-000", "g-001", "g-002", "g-003"]
    frame = grid.table(mine, "train.n", "unlearn.method", "feature_recovery.psnr_mean")
    assert list(frame.columns) == ["train.n", "approx", "exact"] and list(frame["train.n"]) == ["8", "32"]
    mean, half = stats.mean_ci([30.0, 34.0])
    assert frame.loc[0, "exact"] == f"32 [{mean - half:.3g}, {mean + half:.3g}]"
    assert frame.loc[1, "exact"] == "20" and frame.loc[1, "approx"] == "–"
    with pytest.raises(UiaError, match="no param train.k"):
        grid.table(mine, "train.k", None, "feature_recovery.psnr_mean")


@pytest.mark.slow
def test_grid_command_queues_runs_and_tabulates_a_2x2_grid(tmp_path):
    """A real 2×2 grid (unlearn.method × train.n, one seed) on the tiny German Credit setting, through DVC's
    queue in a copy of the repository, to a table from MLflow."""
    raw = small_params()
    raw["download"]["cache_dir"] = str(tmp_path / "cache")
    raw["unlearn"].update(compare=[], requests=2)
    raw["attack"]["membership"].update(shadows=10, targets=4, lira_shadows=0, bootstrap=20, trees=10)
    raw["defend"].update(defences=["noise"], max_requests=1)
    repo, env = repo_copy(tmp_path, params=raw, mlflow_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    done = subprocess.run([sys.executable, "-m", "stages.cli", "grid", "tiny", "-S", "unlearn.method=exact,approx",
                           "-S", "train.n=16,32", "--jobs", "2", "--metric", "label_inference.accuracy",
                           "--metric", "unlearning.test_accuracy"],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = (repo / "grids" / "tiny.md").read_text()
    assert "4 experiments, 1 seeds" in table
    for line in ("| unlearn.method | 16 | 32 |", "| approx |", "| exact |"):
        assert line in table, table
    assert "–" not in table, table  # every cell held a number
    csv = (repo / "grids" / "tiny.csv").read_text()
    assert "unlearning.test_accuracy" in csv


def test_the_report_shows_each_grid_table(tmp_path):
    """evaluate reports grids/<name>.csv as `uia table` wrote it: a table per metric."""
    from tests.test_evaluate import ATTACK, NUMBERS, TRAIN, _attack_rows, _unlearn_rows
    from uia_pipe import io, summary
    from uia_pipe.report import markdown

    runs = [_run("g-000", 0, 8, "exact", 30.0), _run("g-001", 1, 8, "exact", 34.0), _run("g-002", 0, 32, "exact", 20.0)]
    frame = grid.table(runs, "train.n", "unlearn.method", "feature_recovery.psnr_mean")
    io.save_csv(tmp_path / "g.csv", frame.assign(metric="feature_recovery.psnr_mean"))
    doc = summary.build_report({"dataset": "x"}, summary.headline(TRAIN, _unlearn_rows(), ATTACK, _attack_rows(),
                                                                  NUMBERS), NUMBERS, {}, {},
                               grids={"g": io.load_csv(tmp_path / "g.csv")})
    text = markdown(doc)
    assert "## Grids" in text and "### g: feature_recovery.psnr_mean" in text
    assert f"| 8 | {frame.loc[0, 'exact']} |" in text and "| 32 | 20 |" in text, text


def test_grid_refuses_a_table_axis_it_does_not_vary_before_queueing(tmp_path):
    from tests.conftest import invoke

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(committed_params()))
    result = invoke("grid", "g", "-S", "train.n=8,16", "--rows", "train.k", "--params", str(params), code=2)
    assert result.stderr.strip() == "error: grid g: --rows train.k is not an axis of the grid (-S train.k=...)"
