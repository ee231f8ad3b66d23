"""End to end: `dvc repro` in a fresh git repository on a shrunken config."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml

from tests.conftest import repo_copy, run_ok, small_params
from uia_pipe.config import section_hash

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> tuple[Path, dict]:
    """The repository (as git sees it, less a run's outputs) on the shrunken params, committed."""
    return repo_copy(tmp_path_factory.mktemp("e2e"), params=small_params())


def test_repro_then_noop_then_experiment_skips_download_and_train(repo):
    path, env = repo
    first = run_ok(["dvc", "repro"], path, env)
    for stage in ("download", "train", "unlearn", "attack", "defend", "access", "evaluate"):
        assert f"Running stage '{stage}'" in first
    access = json.loads((path / "metrics" / "access.json").read_text())
    assert {"full", "layers:1", "output:label"} <= set(access) and set(access["full"]) == {"exact", "approx"}
    assert (path / "metrics" / "unlearn.json").is_file()
    defend = json.loads((path / "metrics" / "defend.json").read_text())
    assert {"noise:0", "noise:1", "prune:0.5", "finetune:1", "noisy_unlearning:1"} <= set(defend)
    assert all(isinstance(v, float) for entry in defend.values() for v in entry.values())
    assert len(pd.read_csv(path / "metrics" / "defend.csv")) == 8 * 2
    assert 0 <= defend["noise:1"]["membership.never_auc"] <= 1 and "membership.retained_auc" in defend["prune:0.5"]
    evaluated = json.loads((path / "metrics" / "evaluate.json").read_text())
    headline = json.loads((path / "metrics" / "headline.json").read_text())  # dvc.yaml's one metrics file
    assert 0 < sum(map(len, headline.values())) <= 25 and "method_approx" in headline
    assert {"feature_recovery", "label_inference", "unlearning", "attack", "approx_vs_exact", "membership",
            "compound", "method_exact", "method_approx"} <= set(evaluated)
    assert evaluated["membership"]["never_candidates"] >= 40 and "compound.reid_top1" in evaluated["method_approx"]
    assert "## Unlearning methods side by side" in (path / "reports" / "report.md").read_text()
    assert "## What a weaker attacker gets" in (path / "reports" / "report.md").read_text()
    assert evaluated["access"]["layers:1"]["approx"]["seconds_per_request"] > 0
    roc = pd.read_csv(path / "metrics" / "plots" / "membership_roc.csv")
    assert set(roc["question"]) == {"never", "retained"} and roc["fpr"].between(0, 1).all()
    assert (path / "reports" / "report.html").is_file() and (path / "reports" / "defences.png").is_file()

    second = run_ok(["dvc", "repro"], path, env)
    assert "Running stage" not in second

    run_ok(["git", "add", "-A"], path, env)
    run_ok(["git", "commit", "-qm", "baseline"], path, env)
    exp = run_ok(["dvc", "exp", "run", "-S", "unlearn.method=approx"], path, env)
    assert "Running stage 'unlearn'" in exp
    assert "Running stage 'download'" not in exp and "Running stage 'train'" not in exp
    assert yaml.safe_load((path / "params.yaml").read_text())["unlearn"]["method"] == "approx"


def test_the_tracking_store_holds_one_summary_run_per_experiment(repo):
    path, env = repo
    if not (path / "metrics" / "evaluate.json").is_file():
        run_ok(["dvc", "repro"], path, env)
    client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("uia-pipe")
    digest = section_hash(small_params())  # evaluate logs params.yaml as written: every key of every section
    runs = [r for r in client.search_runs([experiment.experiment_id],
                                          f"tags.summary = 'true' and tags.params_hash = '{digest}'")
            if not r.data.tags.get("dvc_exp_name")]
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["unlearn.method"] == "exact" and run.data.params["defend.max_requests"] == "2"
    assert "feature_recovery.categorical_accuracy" in run.data.metrics
    assert "label_inference.accuracy_ci95_low" in run.data.metrics
    assert "membership.never_auc" in run.data.metrics and "method_approx.compound.reid_top1" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.html", "report.md", "defences.png", "evaluate.json"} <= artifacts

    exp = [r for r in client.search_runs([experiment.experiment_id], "tags.summary = 'true'")
           if r.data.tags["dvc_exp_name"]]
    assert {r.data.params["unlearn.method"] for r in exp} == {"approx"}
