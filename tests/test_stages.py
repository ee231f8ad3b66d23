"""The stages through their CLI, on German Credit (vendored, seconds to run)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import torch
import pytest
from typer.testing import CliRunner

from stages.cli import app
from uia_pipe import io


def _invoke(*args: str) -> None:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output + result.stderr


@pytest.fixture
def pipeline(tmp_path, params_file) -> Path:
    """download -> train -> unlearn in tmp_path with the shrunken params."""
    p = str(params_file)
    _invoke("download", "--params", p, "--out", str(tmp_path / "dataset"))
    _invoke("train", "--params", p, "--data", str(tmp_path / "dataset"), "--out", str(tmp_path / "train"),
            "--metrics", str(tmp_path / "train.json"), "--curve", str(tmp_path / "curve.csv"))
    _invoke("unlearn", "--params", p, "--data", str(tmp_path / "dataset"), "--trained", str(tmp_path / "train"),
            "--out", str(tmp_path / "unlearn"), "--metrics", str(tmp_path / "unlearn.json"),
            "--details", str(tmp_path / "requests.csv"))
    _invoke("attack", "--params", p, "--data", str(tmp_path / "dataset"), "--trained", str(tmp_path / "train"),
            "--unlearned", str(tmp_path / "unlearn"), "--out", str(tmp_path / "attack"),
            "--metrics", str(tmp_path / "attack.json"), "--details", str(tmp_path / "attack.csv"),
            "--methods", str(tmp_path / "methods.csv"), "--plots", str(tmp_path / "plots"))
    return tmp_path


@pytest.mark.slow
def test_stages_write_the_contracted_metrics_and_artifacts(pipeline):
    card = json.loads((pipeline / "dataset" / "card.json").read_text())
    assert card["name"] == "german_credit" and card["n_train"] == 800

    train = json.loads((pipeline / "train.json").read_text())
    assert 0.6 < train["test_accuracy"] <= 1 and 0.6 < train["pretrain_test_accuracy"] <= 1
    curve = pd.read_csv(pipeline / "curve.csv")
    assert set(curve["phase"]) == {"pretrain", "finetune"}
    for name in ("theta_pretrained", "theta_original"):
        model, spec = io.load_model(pipeline / "train" / f"{name}.safetensors")
        assert spec["model"] == "tabular_mlp"

    unlearn = json.loads((pipeline / "unlearn.json").read_text())
    for key in ("seconds_per_request", "forget_accuracy", "retain_accuracy", "test_accuracy"):
        assert isinstance(unlearn[key], float)
    rows = pd.read_csv(pipeline / "requests.csv")
    # unlearn.method and the compared method (params.yaml: compare [exact, approx]) on the same requests
    assert list(rows["method"]) == ["exact"] * 3 + ["approx"] * 3 and (rows["k"] == 2).all()
    assert rows.groupby("method")["request"].apply(list).to_dict() == {"exact": [0, 1, 2], "approx": [0, 1, 2]}
    requests = json.loads((pipeline / "unlearn" / "requests.json").read_text())
    assert [len(r["forget"]) for r in requests["requests"]] == [2, 2, 2] and requests["compare"] == ["approx"]
    assert len(list((pipeline / "unlearn").glob("theta_unlearned_*.safetensors"))) == 3
    approx = json.loads((pipeline / "unlearn" / "compare" / "approx" / "requests.json").read_text())
    assert approx["method"] == "approx" and approx["requests"] == requests["requests"]
    assert len(list((pipeline / "unlearn" / "compare" / "approx").glob("theta_unlearned_*.safetensors"))) == 3
    assert unlearn["compare"]["approx"]["requests"] == 3

    attack = json.loads((pipeline / "attack.json").read_text())
    fr, li = attack["feature_recovery"], attack["label_inference"]
    # German Credit rows: decoded features, against the training mean/mode guess
    assert 0 <= fr["categorical_accuracy"] <= 1 and fr["numeric_mae_std"] >= 0
    assert 0 <= li["accuracy"] <= 1 and li["accuracy_ci95_low"] <= li["accuracy"] <= li["accuracy_ci95_high"]
    assert li["queries_per_request"] > 0 and li["probe_queries"] > 0
    rows = pd.read_csv(pipeline / "attack.csv")
    assert len(rows) == 3 and {"feature_recovery.numeric_mae_std", "label_inference.correct",
                               "label_inference.queries"} <= set(rows.columns)
    assert (pipeline / "attack" / "label_confusion.png").is_file()
    # accuracy against queries: 1, 2, 3 probes per class (3 made); all of them give the stage's accuracy
    queries = pd.read_csv(pipeline / "plots" / "label_queries.csv")
    assert queries["probes_per_class"].tolist() == [1, 2, 3] and queries["queries_per_request"].is_monotonic_increasing
    assert queries["accuracy"].iloc[-1] == li["accuracy"] and queries["queries_per_request"].iloc[-1] == li["queries_per_request"]
    methods = pd.read_csv(pipeline / "methods.csv")
    assert list(methods["method"]) == ["exact"] * 3 + ["approx"] * 3
    pd.testing.assert_frame_equal(methods[methods["method"] == "exact"].drop(columns="method"), rows)
    assert 0 <= attack["compare"]["approx"]["label_inference"]["accuracy"] <= 1
    # label_inference.reference auto: θ₀'s outputs on the probes (counted, once) read for exact, not for approx
    assert li["reference_queries"] > 0 and (rows["label_inference.signal"] == "logit-referenced").all()
    assert attack["compare"]["approx"]["label_inference"]["reference_queries"] == 0


@pytest.mark.slow
def test_repeating_a_run_gives_identical_metrics(pipeline, params_file, tmp_path):
    """Also from a process whose torch thread count differs: the stages pin base.threads."""
    first = (pipeline / "train.json").read_text(), (pipeline / "requests.csv").read_text()
    p, again = str(params_file), tmp_path / "again"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _invoke("train", "--params", p, "--data", str(pipeline / "dataset"), "--out", str(again / "train"),
                "--metrics", str(again / "train.json"), "--curve", str(again / "curve.csv"))
        assert torch.get_num_threads() == 2  # base.threads
        torch.set_num_threads(1)
        _invoke("unlearn", "--params", p, "--data", str(pipeline / "dataset"), "--trained", str(again / "train"),
                "--out", str(again / "unlearn"), "--metrics", str(again / "unlearn.json"),
                "--details", str(again / "requests.csv"))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    strip = lambda text: {k: v for k, v in json.loads(text).items() if k != "seconds"}  # noqa: E731
    assert strip(first[0]) == strip((again / "train.json").read_text())
    a = pd.read_csv(pipeline / "requests.csv").drop(columns="seconds")
    b = pd.read_csv(again / "requests.csv").drop(columns="seconds")
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.slow
def test_stages_are_tracked_in_mlflow(pipeline, mlflow_store):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=mlflow_store)
    exp = client.get_experiment_by_name("uia-pipe")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=3)
    assert next(r for r in runs if r.data.tags["stage"] == "attack").data.metrics["label_inference.accuracy"] >= 0
    stages = {r.data.tags["stage"] for r in runs}
    assert stages == {"train", "unlearn", "attack"}
    unlearn = next(r for r in runs if r.data.tags["stage"] == "unlearn")
    assert unlearn.data.params["unlearn.method"] == "exact"
    assert "forget_accuracy" in unlearn.data.metrics
    assert len(unlearn.data.tags["params_hash"]) == 12 and unlearn.data.tags["git_commit"]


@pytest.mark.slow
def test_tracking_failure_is_a_warning_and_files_survive(tmp_path, params_file, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "unknownscheme://nowhere")
    with pytest.warns(UserWarning, match="MLflow tracking failed for stage download"):
        _invoke("download", "--params", str(params_file), "--out", str(tmp_path / "d"))
    assert (tmp_path / "d" / "card.json").is_file()


def test_missing_upstream_artifact_is_one_line(tmp_path, params_file):
    (tmp_path / "dataset").mkdir()
    result = CliRunner().invoke(app, ["train", "--params", str(params_file), "--data", str(tmp_path / "dataset"),
                                      "--out", str(tmp_path / "t"), "--metrics", str(tmp_path / "m.json"),
                                      "--curve", str(tmp_path / "c.csv")])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "tensors.safetensors: file not found" in result.stderr
    assert not (tmp_path / "t").exists()


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_image_run_scores_reconstructions_on_the_unit_scale(tmp_path, params_file, precision):
    """A tiny synthetic image dataset through train, unlearn (approx; exact beside it in float64) and attack:
    PSNR/SSIM on [0,1] beside the mean-image baseline, a grid per request; train.precision sets the dtype
    of every saved model."""
    import yaml

    from tests.conftest import tiny_data

    x, y = tiny_data(700, seed=3)
    data = tmp_path / "images"
    io.save_tensors(data / "tensors.safetensors", {"x_train": (x[:600] * 255).round().to(torch.uint8),
                                                   "y_train": y[:600], "x_test": (x[600:] * 255).round().to(torch.uint8),
                                                   "y_test": y[600:]})
    io.save_json(data / "card.json", {"name": "synthetic", "kind": "image", "input_shape": [1, 28, 28],
                                      "num_classes": 3, "mean": [0.5], "std": [0.3], "n_train": 600, "n_test": 100})
    raw = yaml.safe_load(params_file.read_text())
    raw["train"].update(model="lenet", pool_size=100, n=16)
    raw["train"]["lenet"]["width"] = 4
    raw["train"]["precision"] = precision
    raw["unlearn"].update(method="approx", requests=2, k=1, compare=[] if precision == "float32" else ["exact"])
    raw["attack"]["feature_recovery"].update(iterations=40)
    params_file.write_text(yaml.safe_dump(raw))
    p = str(params_file)
    _invoke("train", "--params", p, "--data", str(data), "--out", str(tmp_path / "t"),
            "--metrics", str(tmp_path / "t.json"), "--curve", str(tmp_path / "c.csv"))
    _invoke("unlearn", "--params", p, "--data", str(data), "--trained", str(tmp_path / "t"),
            "--out", str(tmp_path / "u"), "--metrics", str(tmp_path / "u.json"), "--details", str(tmp_path / "u.csv"))
    _invoke("attack", "--params", p, "--data", str(data), "--trained", str(tmp_path / "t"),
            "--unlearned", str(tmp_path / "u"), "--out", str(tmp_path / "a"), "--metrics", str(tmp_path / "a.json"),
            "--details", str(tmp_path / "a.csv"), "--methods", str(tmp_path / "am.csv"), "--plots", str(tmp_path / "p"))
    fr = json.loads((tmp_path / "a.json").read_text())["feature_recovery"]
    rows = pd.read_csv(tmp_path / "a.csv")
    psnr, mse = rows["feature_recovery.psnr"], rows["feature_recovery.mse"]
    assert psnr.between(5, 100).all() and rows["feature_recovery.ssim"].between(-1, 1).all()
    # PSNR and MSE agree on the [0,1] scale: PSNR = -10 log10(MSE)
    assert (psnr - (-10 * mse.map(math.log10))).abs().max() < 1e-3
    # (attack quality is tested in test_feature_recovery; i.i.d. noise images are no target for it)
    assert 5 < fr["baseline_psnr"] < 30 and fr["class_baseline_psnr"] > 0
    assert sorted(p.name for p in (tmp_path / "a" / "grids").iterdir()) == ["request_000.png", "request_001.png"]
    dtype = getattr(torch, precision)
    for name in ("t/theta_pretrained", "t/theta_original", "u/theta_unlearned_000"):
        state, spec = io.load_tensors(tmp_path / f"{name}.safetensors")
        assert spec["dtype"] == precision and all(v.dtype == dtype for v in state.values() if v.is_floating_point())
        assert next(io.load_model(tmp_path / f"{name}.safetensors")[0].parameters()).dtype == dtype
    if precision == "float64":
        methods = pd.read_csv(tmp_path / "am.csv")
        assert set(methods["method"]) == {"approx", "exact"} and methods["feature_recovery.psnr"].between(5, 100).all()
