"""The unlearning challenge's per-example ε (google-deepmind/unlearning_evaluation, metric.py), its decision
rules on fixed inputs written from the definition, and the block through `dvc exp run` on real data: exact
unlearning scores like the control (retrained against retrained)."""

from __future__ import annotations

import json
import math

import mlflow
import numpy as np
import pandas as pd
import pytest

from tests.conftest import repo_copy, run_ok, small_params
from uia_pipe.evaluation import epsilon_metric as em
from uia_pipe.evaluation.epsilon import seeded
from uia_pipe.unlearning.config import FinetuneConfig, ApproxConfig


def test_logit_confidence_is_the_log_odds_of_the_true_class():
    logits = np.array([[2.0, -1.0], [0.0, math.log(3.0)], [1.0, 1.0]])
    assert em.logit_confidence(logits, np.array([0, 1, 0])) == pytest.approx([3.0, math.log(3.0), 0.0])
    three = np.array([[1.0, 2.0, 3.0]])  # p = e^1 / (e^1 + e^2 + e^3) against the rest
    p = math.exp(1) / (math.exp(1) + math.exp(2) + math.exp(3))
    assert em.logit_confidence(three, np.array([0]))[0] == pytest.approx(math.log(p / (1 - p)))


def test_a_rule_gives_the_larger_of_the_two_bounds_and_no_estimate_where_one_error_rate_is_zero():
    tpr, fpr = np.array([0.75, 1.0, 0.5, 0.9, 0.5]), np.array([0.25, 0.0, 0.0, 0.3, 0.5])
    eps = em.rule_epsilons(tpr, fpr)
    d = em.DELTA
    assert eps[0] == pytest.approx(math.log((1 - d - 0.25) / 0.25))
    assert eps[1] == math.inf  # perfect separation
    assert math.isnan(eps[2])  # FPR = 0 < FNR: too few samples to tell
    assert eps[3] == pytest.approx(max(math.log((1 - d - 0.3) / 0.1), math.log((1 - d - 0.1) / 0.3)))
    assert eps[4] == 0.0  # a coin: floored at 0


def test_disjoint_samples_give_the_cap():
    rng = np.random.default_rng(0)
    assert em.example_epsilon(rng.normal(100, 1, 32), rng.normal(0, 1, 32)) == em.EPSILON_CAP
    # one sample a point mass (M identical models) against a spread one: the cap without a test
    assert em.example_epsilon(np.zeros(32), rng.normal(0, 1, 32)) == em.EPSILON_CAP


def test_identical_samples_give_zero_and_one_overlap_gives_log_m_minus_one():
    x = np.random.default_rng(1).normal(0, 1, 32)
    assert em.example_epsilon(x, x.copy()) == 0.0
    assert em.example_epsilon(np.full(8, 3.0), np.full(8, 3.0)) == 0.0  # no rule survives: ε = 0 (metric.py asserts)
    apart = np.arange(32.0)  # one of the other sample's M inside this one's span: FPR = 1/M at best
    other = np.concatenate([[20.5], np.arange(31.0) + 100])
    best = math.log((1 - em.DELTA - 1 / 32) / (1 / 32))
    assert em.example_epsilon(other, apart) == pytest.approx(best, rel=1e-9)
    assert math.ceil(math.log(31)) == len(em.bucket_points(32)) * em.BUCKET  # the score's last bucket


def test_the_double_threshold_rule_catches_a_peaky_sample_inside_a_wide_one():
    rng = np.random.default_rng(2)
    inner = rng.uniform(-0.5, 0.5, 32)
    outer = np.concatenate([rng.uniform(-10, -5, 16), rng.uniform(5, 10, 16)])  # range ratio 0.05: no shortcut
    tpr, fpr = em._single_rates(np.sort(outer), np.sort(inner))
    single = em.rule_epsilons(tpr, fpr)
    assert np.nanmax(single) < math.log(32)  # one threshold leaves half of the wide sample on the wrong side
    assert em.example_epsilon(outer, inner) == em.EPSILON_CAP  # [l, r] around the inner one separates them


def test_two_samples_of_one_normal_distribution_score_as_the_issue_says():
    """The estimator's upward bias at small M: 64 draws a side, median ε ≈ 1.5 and forget score ≈ 0.2."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(64, 150)), rng.normal(size=(64, 150))
    eps = em.epsilons(a, b)
    assert 1.3 < np.median(eps) < 1.8
    assert 0.12 < em.forget_score(eps, 64) < 0.3


def test_the_forget_score_sums_halving_points_over_half_unit_buckets():
    assert em.bucket_points(32) == [1, 0.5, 0.25, 0.125, 2**-4, 2**-5, 2**-6, 2**-7]
    assert em.forget_score(np.array([0.2, 0.5, 1.2, 10.0]), 32) == pytest.approx((1 + 0.5 + 0.25 + 0) / 4)
    assert em.final_score(0.5, 0.9, 1.0, 0.8, 0.8) == pytest.approx(0.45)


def test_each_model_shifts_the_methods_own_seeds_only():
    assert seeded(FinetuneConfig(), 3).seed_offset == FinetuneConfig().seed_offset + 3
    assert seeded(ApproxConfig(), 3) == ApproxConfig()


@pytest.mark.slow
def test_dvc_exp_run_scores_every_method_and_exact_like_the_control(tmp_path):
    """German Credit (small_params): exact (= retraining) against retrained models scores like retrained
    against other retrained models; the numbers reach attack.json, the methods table and the report."""
    path, env = repo_copy(tmp_path, params=small_params())
    out = run_ok(["dvc", "exp", "run", "-S", "attack.epsilon.models=24"], path, env)
    assert "Running stage 'attack'" in out
    attack = json.loads((path / "metrics" / "attack.json").read_text())
    control, exact, approx = attack["epsilon_control"], attack["epsilon"], attack["compare"]["approx"]["epsilon"]
    assert control["models"] == exact["models"] == 24 and control["forget_examples"] == exact["forget_examples"] > 1
    # exact's M models are retrained ones under other seeds: the same distribution, an estimate like the control's
    assert abs(exact["forget_score"] - control["forget_score"]) < 0.35
    assert exact["epsilon_median"] < 3 and control["epsilon_median"] < 3 and exact["epsilon_at_cap"] == 0
    assert approx["forget_score"] <= exact["forget_score"]  # one ascent step is no retraining
    rows = pd.read_csv(path / "metrics" / "attack_methods.csv")
    requests = small_params()["unlearn"]["requests"]  # fewer than forget_requests: X holds them all
    assert rows.groupby("method")["epsilon.epsilon"].count().to_dict() == {"exact": requests, "approx": requests}
    assert rows["epsilon.control"].notna().all()
    evaluate = json.loads((path / "metrics" / "evaluate.json").read_text())
    assert evaluate["method_exact"]["epsilon.forget_score"] == pytest.approx(exact["forget_score"])
    assert "epsilon_control" in evaluate
    assert "The control, retrained against other retrained models" in (path / "reports" / "report.md").read_text()
    client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("uia-pipe")
    logged = [r.data.metrics for r in client.search_runs([experiment.experiment_id], "tags.summary = 'true'")
              if "epsilon_control.forget_score" in r.data.metrics]
    assert logged and logged[0]["method_approx.epsilon.forget_score"] == pytest.approx(approx["forget_score"])
