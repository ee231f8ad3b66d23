"""The README's task pairs run through DVC to the end: `dvc exp run -S ...` on a regression and an autoencoder,
where families that attack classifiers only (label inference, the compound chain) do not run and no stage
declares an output they would have written."""

from __future__ import annotations

import json
import math
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


# The language model on the vendored Tiny Shakespeare, shrunk to seconds: short records, a tiny LSTM, 3-digit
# secrets, four canaries of four copies each, every request deleting one canary's copies.
LANGUAGE_MODEL = [
    "download.dataset=tinyshakespeare", "download.text.length=32", "download.canaries.count=4",
    "download.canaries.repeats=4", "download.canaries.controls=4", "download.canaries.digits=3",
    "train.task=language_model", "train.model=char_lstm", "train.char_lstm.hidden=16", "train.char_lstm.embedding=8",
    "train.pool_size=64", "train.n=32", "train.pretrain.max_samples=256", "train.pretrain.epochs=1",
    "train.pretrain.lr=1.0", "train.finetune.epochs=3", "train.finetune.lr=1.0", "train.finetune.batch_size=16",
    "unlearn.selection=canary", "unlearn.requests=4", "attack.membership.shadows=2", "attack.membership.targets=16",
    "attack.membership.lira_shadows=0", "attack.membership.trees=10",
]


def test_the_language_model_runs_every_stage_through_dvc(repo):
    path, env = repo
    out = run_ok(["dvc", "exp", "run", *(a for s in LANGUAGE_MODEL for a in ("-S", s))], path, env)
    for stage in ("download", "train", "unlearn", "attack", "defend", "access", "evaluate"):
        assert f"Running stage '{stage}'" in out
    attack = json.loads((path / "metrics" / "attack.json").read_text())
    assert {"exposure", "extraction", "text_recovery", "membership"} <= set(attack)
    assert not {"label_inference", "feature_recovery", "compound"} & set(attack)
    exposure = attack["exposure"]
    assert exposure["secrets"] == 1000 and exposure["max_exposure"] == pytest.approx(math.log2(1000))
    for key in ("exposure_theta", "exposure_theta_u", "control_theta"):
        assert 0 <= exposure[key] <= exposure["max_exposure"]
    assert 0 <= attack["extraction"]["top1"] <= 1 and 0 <= attack["text_recovery"]["char_accuracy"] <= 1
    assert 0 <= attack["membership"]["never_auc"] <= 1
    assert "approx" in attack["compare"]
    requests = (path / "metrics" / "attack_requests.csv").read_text()
    assert "exposure.exposure_theta_u" in requests and "extraction.top1" in requests
    report = (path / "reports" / "report.md").read_text()
    for row in ("exposure under θ (bits)", "exposure under θ_u (bits)", "never-inserted exposure under θ (bits)",
                "two-model extraction, top-1", "two-model extraction, median rank", "text recovery, character accuracy"):
        assert f": {row} |" in report.split("## Defences")[0]  # the headline table (the baseline column: θ_u's control)
    assert json.loads((path / "metrics" / "headline.json").read_text())["exposure"] == {
        "exposure_theta_u": exposure["exposure_theta_u"]}  # dvc exp show's lead: what the deletion left
    summary = json.loads((path / "metrics" / "evaluate.json").read_text())  # the MLflow summary run's metrics
    for family, keys in {"exposure": ("exposure_theta", "exposure_theta_u", "control_theta", "control_theta_u"),
                         "extraction": ("top1", "median_rank", "exposure"),
                         "text_recovery": ("char_accuracy", "baseline_char_accuracy", "edit_distance")}.items():
        assert all(math.isfinite(summary[family][k]) for k in keys)
    assert "Running stage" not in run_ok(["dvc", "repro"], path, env)
    # the transformer, with 8-digit canaries: 10^8 secrets, the Secret Sharer's estimate from random secrets
    transformer = [s for s in LANGUAGE_MODEL if not s.startswith(("train.model=", "download.canaries.digits="))] + [
        "train.model=char_transformer", "train.char_transformer.dim=16", "train.char_transformer.heads=2",
        "train.char_transformer.depth=1", "download.canaries.digits=8", "attack.exposure.samples=2000",
        "attack.extraction.samples=2000", "attack.extraction.beam=50"]
    out = run_ok(["dvc", "exp", "run", *(a for s in transformer for a in ("-S", s))], path, env)
    for stage in ("download", "train", "unlearn", "attack", "defend", "access", "evaluate"):
        assert f"Running stage '{stage}'" in out
    attack = json.loads((path / "metrics" / "attack.json").read_text())
    exposure = attack["exposure"]
    assert exposure["secrets"] == 10 ** 8 and exposure["estimated"] == 1
    for key in ("exposure_theta", "exposure_theta_u", "control_theta"):
        assert 0 <= exposure[key] <= math.log2(10 ** 8)
    assert 0 <= attack["extraction"]["top1"] <= 1 and attack["extraction"]["median_rank"] >= 1
