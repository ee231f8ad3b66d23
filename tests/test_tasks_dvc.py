"""The README's task pairs run through DVC to the end: `dvc exp run -S ...` on a regression and an autoencoder,
where families that attack classifiers only (label inference, the compound chain) do not run and no stage
declares an output they would have written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import repo_copy, run_ok, small_params

pytestmark = pytest.mark.slow

# The README's overrides (its "Beyond image classification" how-to), on small_params' shrunken budgets; the
# autoencoder on the bundled digits rather than Fashion-MNIST, which a test machine may not hold.
PAIRS = {
    "regression": ["download.dataset=diabetes", "train.task=regression", "train.model=linear",
                   "train.pool_size=100", "train.pretrain.epochs=50", "train.pretrain.lr=0.01"],
    "autoencoder": ["download.dataset=digits", "train.task=autoencoder", "train.model=mlp"],
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> tuple[Path, dict]:
    raw = small_params()
    raw["attack"]["access"]["levels"] = ["layers:1", "queries:2", "output:label"]  # two act through label inference
    return repo_copy(tmp_path_factory.mktemp("tasks"), params=raw)


@pytest.mark.parametrize("task", PAIRS)
def test_a_task_without_classes_runs_every_stage_through_dvc(repo, task):
    path, env = repo
    out = run_ok(["dvc", "exp", "run", *(a for s in PAIRS[task] for a in ("-S", s))], path, env)
    for stage in ("download", "train", "unlearn", "attack", "defend", "access", "evaluate"):
        assert f"Running stage '{stage}'" in out
    attack = json.loads((path / "metrics" / "attack.json").read_text())
    assert "feature_recovery" in attack and "membership" in attack
    assert "label_inference" not in attack and "compound" not in attack
    plots = {p.name for p in (path / "metrics" / "plots").iterdir()}
    assert plots == {"attack_curve.csv", "membership_roc.csv"}  # label inference's never written
    access = json.loads((path / "metrics" / "access.json").read_text())
    assert "layers:1" in access and "queries:2" not in access and "output:label" not in access
    reports = path / "reports"
    assert (reports / "report.md").is_file() and not (reports / "label_confusion.png").exists()
    assert "Running stage" not in run_ok(["dvc", "repro"], path, env)  # the experiment's workspace is complete
