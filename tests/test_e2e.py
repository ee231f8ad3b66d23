"""End to end: `dvc repro` in a fresh git repository on a shrunken config."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, small_params

pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, env: dict) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> tuple[Path, dict]:
    repo = tmp_path_factory.mktemp("repo")
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for rel in tracked:
        if rel == "dvc.lock" or rel.startswith("metrics/") or not (ROOT / rel).is_file():
            continue
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, repo / rel)
    (repo / "params.yaml").write_text(yaml.safe_dump(small_params(), sort_keys=False))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "GIT_AUTHOR_NAME": "uia", "GIT_AUTHOR_EMAIL": "uia@localhost",
        "GIT_COMMITTER_NAME": "uia", "GIT_COMMITTER_EMAIL": "uia@localhost",
        "DVC_NO_ANALYTICS": "1",
        "MLFLOW_TRACKING_URI": os.environ["MLFLOW_TRACKING_URI"],
    }
    _run(["git", "init", "-q"], repo, env)
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "init"], repo, env)
    return repo, env


def test_repro_then_noop_then_experiment_skips_download_and_train(repo):
    path, env = repo
    first = _run(["dvc", "repro"], path, env)
    for stage in ("download", "train", "unlearn"):
        assert f"Running stage '{stage}'" in first
    assert (path / "metrics" / "unlearn.json").is_file()

    second = _run(["dvc", "repro"], path, env)
    assert "Running stage" not in second

    _run(["git", "add", "-A"], path, env)
    _run(["git", "commit", "-qm", "baseline"], path, env)
    exp = _run(["dvc", "exp", "run", "-S", "unlearn.method=approx"], path, env)
    assert "Running stage 'unlearn'" in exp
    assert "Running stage 'download'" not in exp and "Running stage 'train'" not in exp
    assert yaml.safe_load((path / "params.yaml").read_text())["unlearn"]["method"] == "approx"
