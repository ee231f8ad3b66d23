"""The README's task pairs run through DVC to the end: `dvc exp run -S ...` on a regression and an autoencoder,
where families that attack classifiers only (label inference, the compound chain) do not run and no stage
declares an output they would have written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, small_params

pytestmark = pytest.mark.slow

# The README's overrides (its "Beyond image classification" how-to), on small_params' shrunken budgets; the
# autoencoder on the bundled digits rather than Fashion-MNIST, which a test machine may not hold.
PAIRS = {
    "regression": ["download.dataset=diabetes", "train.task=regression", "train.model=linear",
                   "train.pool_size=100", "train.pretrain.epochs=50", "train.pretrain.lr=0.01"],
    "autoencoder": ["download.dataset=digits", "train.task=autoencoder", "train.model=mlp"],
}


def _run(cmd: list[str], cwd: Path, env: dict) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> tuple[Path, dict]:
    repo = tmp_path_factory.mktemp("tasks")
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        if rel == "dvc.lock" or rel.startswith(("metrics/", "reports/")) or not (ROOT / rel).is_file():
            continue
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, repo / rel)
    raw = small_params()
    raw["attack"]["access"]["levels"] = ["layers:1", "queries:2", "output:label"]  # two act through label inference
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "uia", "GIT_AUTHOR_EMAIL": "uia@localhost", "GIT_COMMITTER_NAME": "uia",
           "GIT_COMMITTER_EMAIL": "uia@localhost", "DVC_NO_ANALYTICS": "1"}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        _run(cmd, repo, env)
    return repo, env


@pytest.mark.parametrize("task", PAIRS)
def test_a_task_without_classes_runs_every_stage_through_dvc(repo, task):
    path, env = repo
    out = _run(["dvc", "exp", "run", *(a for s in PAIRS[task] for a in ("-S", s))], path, env)
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
    assert "Running stage" not in _run(["dvc", "repro"], path, env)  # the experiment's workspace is complete
