"""Beyond classification: regression and an autoencoder, trained, unlearned and attacked on real data."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from conftest import invoke, run_all_stages, small_params
from uia_pipe import tasks
from uia_pipe.attacks import ATTACKS
from uia_pipe.attacks.feature_recovery import Config, analytic_input, recover
from uia_pipe.attacks.membership import log_posteriors
from uia_pipe.attacks.protocol import for_task
from uia_pipe.attacks.view import AttackerView
from uia_pipe.config import OptimParams
from uia_pipe.data import as_inputs, load_dataset
from uia_pipe.metrics import image_scores
from uia_pipe.models import Reconstructor, build_model, clone, from_spec
from uia_pipe.training import evaluate, fit
from uia_pipe.unlearning import approx, exact
from uia_pipe.unlearning.config import ApproxConfig, ExactConfig
from uia_pipe.unlearning.problem import UnlearningProblem


def _diabetes():
    ds = load_dataset("diabetes", Path("."))  # bundled with scikit-learn: the cache is not read
    return ds.x_train.double(), ds.y_train.double(), ds.card


def _trained(name: str, x, y, card, task: str = "regression", dtype=torch.float64, epochs: int = 30):
    torch.manual_seed(0)
    d = card["input_shape"][0]
    model = build_model(name, {} if name == "linear" else {"hidden": [32]}, (d,), tasks.num_outputs(task, card),
                        [0.0] * d, [1.0] * d, task).to(dtype)
    fit(model, x, y, OptimParams(epochs=epochs, lr=0.01, momentum=0.9, batch_size=32), seed=0)
    return model


def test_regression_loss_and_quality_are_the_squared_error_and_r2():
    out = torch.tensor([[1.0], [2.0], [4.0]])
    y = torch.tensor([1.0, 3.0, 2.0])
    assert float(tasks.loss(out, y)) == pytest.approx((0 + 1 + 4) / 3)
    assert tasks.quality("regression", out, y) == pytest.approx(1 - 5 / 2)  # Σ(y − ȳ)² = 2
    # an autoencoder's output is its residual: the loss against zero is the reconstruction's MSE
    residual = torch.full((2, 1, 4, 4), 0.1)
    assert float(tasks.loss(residual, tasks.targets("autoencoder", residual, torch.tensor([3, 4])))) == \
        pytest.approx(0.01)
    assert tasks.quality("autoencoder", residual, torch.zeros(2)) == pytest.approx(20.0)


def test_linear_regression_deleted_row_in_closed_form():
    """approx and exact unlearning of one diabetes row from a linear regression: the row read off the
    update in closed form (ΔW/Δb) to 1e-5, and its target value from the bias's residual."""
    x, y, card = _diabetes()
    model = _trained("linear", x, y, card)
    assert evaluate(model, x, y)["accuracy"] > 0.4  # R² of a linear fit on diabetes
    du_x, du_y = x[:32], y[:32]
    theta0 = clone(model)
    theta = clone(theta0)
    finetune = OptimParams(epochs=1, lr=1e-3, batch_size=128)
    fit(theta, du_x, du_y, finetune, seed=1)
    problem = UnlearningProblem(theta0, theta, du_x, du_y, finetune, 1)
    forget = torch.zeros(32, dtype=torch.bool)
    forget[7] = True
    for method, unlearn, cfg, step in (("approx", approx.unlearn, ApproxConfig(eta=0.5), 0.5),
                                       ("exact", exact.unlearn, ExactConfig(), finetune.lr)):
        theta_u = unlearn(problem, forget, cfg)
        view = AttackerView(theta, theta_u, theta0 if method == "exact" else None, method, (x.shape[1],), 1, 32, 1,
                            step=step)
        from uia_pipe.attacks.feature_recovery.update import _attack_point, observed_update
        delta = observed_update(view)
        row = analytic_input(_attack_point(view), delta, view.input_shape)
        assert (row - du_x[7]).abs().max() < 1e-5, method
        result, _ = recover(view, Config(iterations=20, restarts=1, box="none"), seed=0)
        assert (result.reconstruction.double() - du_x[7]).abs().max() < 1e-4, method
        assert result.label_source == "residuals"
        assert abs(float(result.values[0]) - float(du_y[7])) < 1e-4, method


def test_regression_mlp_recovers_the_row_and_value_beyond_the_baselines():
    x, y, card = _diabetes()
    model = _trained("tabular_mlp", x.float(), y.float(), card, dtype=torch.float32)
    theta_u = copy.deepcopy(model)
    g = torch.autograd.grad(tasks.loss(theta_u(x[:1].float()), y[:1].float()), list(theta_u.parameters()))
    with torch.no_grad():
        for p, gi in zip(theta_u.parameters(), g):
            p.add_(gi)
    view = AttackerView(model, theta_u, None, "approx", (x.shape[1],), 1, 32, 1, step=1.0)
    result, _ = recover(view, Config(iterations=200, restarts=1, box="none"), seed=0)
    mae = float((result.reconstruction - x[:1].float()).abs().mean())
    baseline = float((x[:1] - x.mean(0)).abs().mean())  # the training mean row, in sd units
    assert mae < baseline / 2
    assert abs(float(result.values[0] - y[0])) < abs(float(y[0])) / 2  # better than the mean value (0)


def test_linear_encoder_autoencoder_inverted_exactly():
    """An autoencoder whose encoder is one linear layer: the removed digit is ΔW_i/Δb_i of the encoder's
    update (closed form, to 1e-5), and the attack's reconstruction scores far above 30 dB."""
    ds = load_dataset("digits", Path("."))
    x = as_inputs(ds.x_train[:400]).double()
    torch.manual_seed(0)
    model = Reconstructor(nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Linear(16, 64)),
                          torch.tensor([0.3]).reshape(-1, 1, 1), torch.tensor([0.4]).reshape(-1, 1, 1)).double()
    y = tasks.targets("autoencoder", x, ds.y_train[:400]).double()
    before = evaluate(model, x, y)["accuracy"]
    fit(model, x, y, OptimParams(epochs=20, lr=0.1, momentum=0.9, batch_size=32), seed=0)
    assert evaluate(model, x, y)["accuracy"] > before + 3  # reconstruction PSNR improved by training
    theta_u = copy.deepcopy(model)
    g = torch.autograd.grad(tasks.loss(theta_u(x[5:6]), y[5:6]), list(theta_u.parameters()))
    with torch.no_grad():
        for p, gi in zip(theta_u.parameters(), g):
            p.add_(gi)
    view = AttackerView(model, theta_u, None, "approx", (1, 8, 8), 64, 32, 1)
    from uia_pipe.attacks.feature_recovery.update import observed_update
    assert (analytic_input(model, observed_update(view), (1, 8, 8)) - x[5]).abs().max() < 1e-5
    result, _ = recover(view, Config(iterations=30, restarts=1), seed=0)
    assert result.label_source == "none"
    assert float(image_scores(result.reconstruction, x[5:6].float())["psnr"][0]) > 30


def test_task_wrappers_round_trip_through_the_spec():
    spec = {"model": "mlp", "config": {"hidden": [8]}, "input_shape": [1, 8, 8], "num_classes": 64,
            "mean": [0.3], "std": [0.4], "task": "autoencoder"}
    model = from_spec(spec)
    assert tasks.task_of(model) == "autoencoder" and isinstance(model, Reconstructor)
    x = torch.rand(3, 1, 8, 8)
    assert torch.allclose(model.reconstruct(x), model(x) + x) and model(x).shape == x.shape
    assert tasks.task_of(from_spec({**spec, "task": "regression", "num_classes": 1})) == "regression"
    assert tasks.task_of(from_spec({k: v for k, v in spec.items() if k != "task"} | {"num_classes": 10})) == \
        "classification"


def test_families_for_each_task_and_membership_likelihood():
    text = {"exposure", "extraction", "text_recovery"}
    assert list(for_task(ATTACKS, "classification")) == [name for name in ATTACKS if name not in text]
    assert set(for_task(ATTACKS, "regression")) == {"feature_recovery", "membership"}
    assert set(for_task(ATTACKS, "language_model")) == {"membership"} | text
    model = build_model("linear", {}, (3,), 1, [0.0] * 3, [1.0] * 3, "regression")
    x, y = torch.randn(4, 3), torch.randn(4)
    lp = log_posteriors(model, x, y)
    assert lp.shape == (4, 1)
    assert torch.allclose(lp[:, 0], -(model(x)[:, 0].double() - y.double()) ** 2)


def _params(tmp_path, **train) -> Path:
    raw = small_params()
    raw["download"]["cache_dir"] = str(tmp_path / "cache")
    raw["train"].update(train)
    raw["unlearn"].update(requests=2, k=1)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.slow
def test_regression_runs_every_stage_on_german_credit_amount(tmp_path):
    raw = yaml.safe_load(_params(tmp_path, task="regression", model="tabular_mlp").read_text())
    raw["download"]["dataset"] = "german_credit_amount"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    run_all_stages(tmp_path / "params.yaml", tmp_path)
    attack = json.loads((tmp_path / "attack.json").read_text())
    for run in (attack, attack["compare"]["approx"]):
        fr = run["feature_recovery"]
        assert fr["numeric_mae_std"] < fr["baseline_numeric_mae_std"] / 2
        assert fr["value_mae_std"] < fr["baseline_value_mae_std"] / 2
        assert 0 <= run["membership"]["never_auc"] <= 1
        assert "label_inference" not in run and "compound" not in run
    head = json.loads((tmp_path / "evaluate.json").read_text())
    fr = head["feature_recovery"]  # attack.json's one name, its interval over the requests beside it
    assert {"value_mae_std", "value_mae_std_ci95_low"} <= set(fr) and "label_inference" not in head
    access = json.loads((tmp_path / "access.json").read_text())
    assert "output:label" not in access and "queries:2" not in access and "layers:1" in access
    assert "feature recovery: value MAE (sd)" in (tmp_path / "reports" / "report.md").read_text()
    # labels handed over need classes: one line before any attack
    raw["attack"]["feature_recovery"]["labels"] = "oracle"
    (tmp_path / "oracle.yaml").write_text(yaml.safe_dump(raw))
    result = invoke("attack", "--params", str(tmp_path / "oracle.yaml"), "--data", str(tmp_path / "data"),
                    "--trained", str(tmp_path / "train"), "--unlearned", str(tmp_path / "unlearn"),
                    "--out", str(tmp_path / "oracle"), "--metrics", str(tmp_path / "oracle.json"),
                    "--details", str(tmp_path / "oracle.csv"), "--methods", str(tmp_path / "oracle_methods.csv"),
                    "--plots", str(tmp_path / "oracle_plots"), code=2)
    assert "attack.feature_recovery.labels: oracle needs classes" in result.output
    assert not (tmp_path / "oracle.json").exists()


@pytest.mark.slow
def test_classification_only_methods_and_datasets_refused_in_one_line(tmp_path):
    params = _params(tmp_path, task="regression")
    raw = yaml.safe_load(params.read_text())
    raw["unlearn"]["compare"] = ["exact", "scrub"]
    params.write_text(yaml.safe_dump(raw))
    result = invoke("check", "--params", str(params), code=2)
    assert "unlearn.compare: scrub needs classes" in result.output and len(result.output.strip().splitlines()) == 1
    # german_credit is a classification dataset: a regression run stops in train, before writing anything
    params = _params(tmp_path, task="regression")
    invoke("download", "--params", str(params), "--out", str(tmp_path / "data"))
    result = invoke("train", "--params", str(params), "--data", str(tmp_path / "data"), "--out",
                    str(tmp_path / "train"), "--metrics", str(tmp_path / "t.json"), "--curve", str(tmp_path / "c.csv"),
                    code=2)
    assert "train.task=regression: german_credit is a classification dataset" in result.output
    assert not (tmp_path / "train").exists() and not (tmp_path / "t.json").exists()
