"""The recovery family (attack.recovery) on real data: German Credit rows through a small MLP; the control
holds (exact unlearning, where θ_u is the retrained model, recovers nothing), strength 0 is θ_u itself, the
attacker's side never sees the deleted records, a bad setting is one line, and `dvc exp run -S` reaches it."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest
import torch

from tests.conftest import repo_copy, run_ok, small_params
from uia_pipe.attacks.families import recovery
from uia_pipe.attacks.protocol import Context
from uia_pipe.config import OptimParams
from uia_pipe.data import load_german_credit
from uia_pipe.evaluation import grants
from uia_pipe.evaluation.setting import Run, Setting
from uia_pipe.models import clone, init_model
from uia_pipe.stats import ratio_of_means
from uia_pipe.training import fit, sgd_many
from uia_pipe.unlearning.config import ApproxConfig, ExactConfig
from uia_pipe.unlearning.methods import METHODS
from uia_pipe.unlearning.problem import UnlearningProblem
from uia_pipe.weights import pruned

FINETUNE = OptimParams(epochs=3, lr=0.05, batch_size=8)  # several steps: θ departs from the retrained model
SMALL = dict(relearn=(0, 2, 5), quantise=(0, 8, 4), prune=(0.0, 0.3, 0.6), bootstrap=200)


@pytest.fixture(scope="module")
def credit():
    """θ₀: an MLP pretrained on the last 500 German Credit training rows; θ: θ₀ fine-tuned on D_u, the first 32,
    for several steps; the attacker's public records: the test rows."""
    ds = load_german_credit(None)
    spec = dict(model="tabular_mlp", config={"hidden": [24]}, input_shape=[ds.x_train.shape[1]], num_classes=2,
                mean=[0.0], std=[1.0])
    theta0 = init_model(spec, seed=3)
    fit(theta0, ds.x_train[-500:], ds.y_train[-500:], OptimParams(epochs=10, lr=0.1, batch_size=32), 0)
    theta = clone(theta0)
    fit(theta, ds.x_train[:32], ds.y_train[:32], FINETUNE, 1, batchnorm_eval=True)
    return ds, theta0, theta


def _run(credit, method: str, config, requests: int = 8, du_x: torch.Tensor | None = None) -> Run:
    ds, theta0, theta = credit
    du_x = ds.x_train[:32] if du_x is None else du_x
    du_y = ds.y_train[:32]
    reqs = [{"index": i, "forget": [3 * i, 3 * i + 1], "target_class": None} for i in range(requests)]
    setting = Setting(theta0, theta, method, {"kind": "tabular", "input_shape": [du_x.shape[1]], "num_classes": 2},
                      du_x, du_y, reqs, du_x.mean(0), None, ds.x_train[-500:], FINETUNE.batch_size,
                      finetune=FINETUNE, finetune_seed=1, method_config=config)
    problem = UnlearningProblem(theta0, theta, ds.x_train[:32], du_y, FINETUNE, 1)
    unlearn, _ = METHODS[method]
    thetas_u = [unlearn(problem, setting.forget_mask(r), config) for r in reqs]
    return Run(setting, thetas_u, ds.x_test, ds.y_test)


def _attack(run: Run, cfg: recovery.Config, ds) -> tuple[recovery.Recovered, pd.DataFrame, dict]:
    """The family as the campaign runs it: its grant, run, then the evaluator's score and summary."""
    ctx = Context(seed=0, public_x=ds.x_test, public_y=ds.y_test)
    results = recovery.run(grants.grant(run, "recovery", cfg, ctx), cfg, ctx)
    frame = recovery.score(run.setting, results)
    return results, frame, recovery.summarise(frame, results, cfg, {})


def test_exact_unlearning_recovers_nothing_its_control_holds(credit):
    """θ_u of exact unlearning is the retrained model: every manipulation of it matches the control's, so every
    share is 0 within its interval; approx with a large step leaves a share far from 0 on the same records."""
    ds = credit[0]
    cfg = recovery.Config(**SMALL)
    _, frame, out = _attack(_run(credit, "exact", ExactConfig()), cfg, ds)
    assert (frame["theta_loss"] != frame["none_loss_control"]).all()  # a gap to recover on each request
    for key in recovery.keys(cfg):
        for m in ("loss", "logit"):
            assert abs(out[f"{key}_{m}_share"]) < 1e-9, (key, m, out[f"{key}_{m}_share"])
        assert out[f"{key}_loss_share_ci95_low"] <= 0 <= out[f"{key}_loss_share_ci95_high"]
    assert out["unlearned_forget_accuracy"] == out["retrained_forget_accuracy"]
    for name in ("residual", "relearn", "quantise", "prune"):
        assert out[f"{name}_share_ci95_low"] <= 0 <= out[f"{name}_share_ci95_high"]
    _, _, approx = _attack(_run(credit, "approx", ApproxConfig(eta=10.0)), cfg, ds)
    assert abs(approx["residual_share"]) > 1 and not approx["residual_share_ci95_low"] <= 0 <= approx[
        "residual_share_ci95_high"]


def test_a_manipulation_at_strength_zero_gives_the_unmanipulated_numbers(credit):
    ds = credit[0]
    run = _run(credit, "approx", ApproxConfig(eta=1.0))
    model = run.thetas_u[0]
    relearned = sgd_many([model, run.thetas_u[1]], ds.x_test, ds.y_test, 0.1, 16, [0, 3], seed=0)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), relearned[0][0].parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(model.parameters(), relearned[3][0].parameters()))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), pruned(model, 0.0).parameters()))
    zero = recovery.Config(relearn=(0,), quantise=(0,), prune=(0.0,), bootstrap=100)
    assert recovery.keys(zero) == ["none"]
    _, frame, out = _attack(run, zero, ds)
    unmanipulated = [recovery.measure(m, *run.setting.truth(r)) for m, r in zip(run.thetas_u, run.setting.requests)]
    assert frame["none_loss"].tolist() == [u["loss"] for u in unmanipulated]
    for name in ("relearn", "quantise", "prune"):
        assert out[f"{name}_share"] == out["residual_share"] and out[f"{name}_share_strength"] == 0
    # a real manipulation moves the numbers off the unmanipulated ones
    _, moved, _ = _attack(run, recovery.Config(**SMALL), ds)
    for key in ("relearn_5", "int4_tensor", "prune_0.6"):
        assert (moved[f"{key}_loss"] != moved["none_loss"]).all(), key


def test_the_attackers_side_never_sees_the_deleted_records(credit):
    """The family's manipulated models are the same bit for bit whatever the deleted records are (θ_u held
    fixed): what it makes comes from θ_u and the public records alone. The evaluator's score reads them."""
    ds = credit[0]
    cfg = recovery.Config(**SMALL)
    run = _run(credit, "approx", ApproxConfig(eta=1.0), requests=3)
    swapped_x = run.setting.du_x.clone()
    for r in run.setting.requests:
        noise = torch.randn(len(r["forget"]), swapped_x.shape[1], generator=torch.Generator().manual_seed(5))
        swapped_x[r["forget"]] = noise
    other = dataclasses.replace(run, setting=dataclasses.replace(run.setting, du_x=swapped_x))
    first, frame, _ = _attack(run, cfg, ds)
    second, frame_other, _ = _attack(other, cfg, ds)
    for a, b in zip(first.models, second.models):
        assert a.keys() == b.keys()
        for key in a:
            assert all(torch.equal(p, q) for p, q in zip(a[key].parameters(), b[key].parameters()))
    assert not frame["none_loss"].equals(frame_other["none_loss"])  # the evaluator's scoring did read them


def test_the_share_pools_over_requests_rather_than_averaging_ratios():
    # one request with no gap to recover (its ratio would be 5 / 1e-12) leaves the pooled share at (1 + 5) / 2
    share, low, high = ratio_of_means([1.0, 5.0], [2.0, 1e-12], resamples=200, seed=0)
    assert share == pytest.approx(3.0) and low <= share <= high
    assert ratio_of_means([1.0], [0.0])[0] != ratio_of_means([1.0], [0.0])[0]  # nan: nothing to recover


@pytest.mark.slow
def test_dvc_exp_run_sets_a_recovery_key_and_every_table_gets_the_family(tmp_path):
    """`dvc exp run -S attack.recovery.relearn_lr=...` with class requests on small params: the attack stage's
    three files, the defence and access sweeps (a precision level acts on θ_u) and the report carry it."""
    raw = small_params()
    raw["attack"]["access"]["levels"] = ["precision:int4_channel"]
    path, env = repo_copy(tmp_path, params=raw)
    out = run_ok(["dvc", "exp", "run", "-S", "attack.recovery.relearn_lr=0.05", "-S", "unlearn.selection=class"],
                 path, env)
    assert "Running stage 'attack'" in out and "Running stage 'evaluate'" in out
    attack = json.loads((path / "metrics" / "attack.json").read_text())
    for section in (attack["recovery"], attack["compare"]["approx"]["recovery"]):
        assert {"relearn_share", "quantise_share", "prune_share", "residual_share"} <= set(section)
    exact = attack["recovery"]  # unlearn.method: exact, whose θ_u is the retrained model: the control holds
    assert exact["relearn_share_ci95_low"] <= 0 <= exact["relearn_share_ci95_high"]
    assert abs(exact["relearn_share"]) < 0.05
    rows = pd.read_csv(path / "metrics" / "attack_requests.csv")
    assert "recovery.relearn_3_loss_control" in rows
    per_method = pd.read_csv(path / "metrics" / "attack_methods.csv")
    assert set(per_method["method"]) == {"exact", "approx"} and "recovery.prune_0.6_accuracy_control" in per_method
    table = json.loads((path / "metrics" / "evaluate.json").read_text())["method_approx"]  # the methods table
    assert {"recovery.relearn_share", "recovery.relearn_share_ci95_low", "recovery.unlearned_forget_accuracy",
            "recovery.retrained_forget_accuracy"} <= set(table)
    defend = json.loads((path / "metrics" / "defend.json").read_text())
    assert any("recovery.prune_share" in entry for entry in defend.values())
    access = json.loads((path / "metrics" / "access.json").read_text())
    assert "recovery.quantise_share" in json.dumps(access["precision:int4_channel"])
    assert "recovery share, relearning" in (path / "reports" / "report.md").read_text()
