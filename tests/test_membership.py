"""Membership inference with both models and the compound attack, on German
Credit (vendored, real): known answers, the attacker's split, the ROC
arithmetic and bad params."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import committed_params
from sklearn.metrics import roc_auc_score

from uia_pipe import roc
from uia_pipe.attacks import membership as mi
from uia_pipe.attacks.families import compound, membership
from uia_pipe.attacks.protocol import Context
from uia_pipe.evaluation import grants
from uia_pipe.evaluation.server import server_of
from uia_pipe.evaluation.setting import Run, Setting
from uia_pipe.config import OptimParams
from uia_pipe.data import load_german_credit
from uia_pipe.errors import UiaError
from uia_pipe.models import clone, init_model
from uia_pipe.params import parse_params
from uia_pipe.training import fit
from uia_pipe.unlearning.config import ApproxConfig, ExactConfig
from uia_pipe.unlearning.methods import METHODS
from uia_pipe.unlearning.problem import UnlearningProblem

SMALL = {"shadows": 100, "targets": 40, "lira_shadows": 2, "bootstrap": 200, "trees": 50}
FINETUNE = OptimParams(epochs=1, lr=1e-3, batch_size=128)


@pytest.fixture(scope="module")
def credit():
    """θ₀: a tabular MLP on 500 German Credit training rows; the pool: the other 300, D_u its first 32;
    θ: θ₀ fine-tuned on D_u; the attacker's records: the 200 test rows."""
    ds = load_german_credit(None)
    spec = {"model": "tabular_mlp", "config": {"hidden": [32, 16]}, "input_shape": [ds.x_train.shape[1]],
            "num_classes": 2, "mean": [0.0], "std": [1.0]}
    theta0 = init_model(spec, seed=0)
    fit(theta0, ds.x_train[300:], ds.y_train[300:], OptimParams(epochs=20, lr=0.05, momentum=0.9, batch_size=64), 0)
    theta = clone(theta0)
    fit(theta, ds.x_train[:32], ds.y_train[:32], FINETUNE, 1, batchnorm_eval=True)
    return ds, theta0, theta


def _setting(credit, method: str, config, requests: int = 6) -> tuple[Setting, list]:
    ds, theta0, theta = credit
    du_x, du_y = ds.x_train[:32], ds.y_train[:32]
    reqs = [{"index": i, "forget": [3 * i], "target_class": None} for i in range(requests)]
    setting = Setting(theta0, theta, method, {"kind": "tabular", "input_shape": [du_x.shape[1]], "num_classes": 2},
                      du_x, du_y, reqs, du_x.mean(0), None, ds.x_train[300:], FINETUNE.batch_size,
                      finetune=FINETUNE, finetune_seed=1, method_config=config,
                      outside_x=ds.x_train[32:300], outside_y=ds.y_train[32:300])
    problem = UnlearningProblem(theta0, theta, du_x, du_y, FINETUNE, 1)
    unlearn, _ = METHODS[method]
    thetas_u = []
    for r in reqs:
        forget = torch.zeros(32, dtype=torch.bool)
        forget[r["forget"]] = True
        thetas_u.append(unlearn(problem, forget, config))
    return setting, thetas_u


def _run(setting, thetas_u, ds, release=None) -> Run:
    return Run(setting, thetas_u, ds.x_test, ds.y_test, release=release)


def _attack(setting, thetas_u, cfg, release=None, ds=None):
    """membership's prepare and run on its grant, as the campaign gives them; its pooled numbers."""
    ctx, run = Context(seed=0, public_x=ds.x_test, public_y=ds.y_test), _run(setting, thetas_u, ds, release)
    grant = grants.grant(run, "membership", cfg, ctx)
    ctx.prepared["membership"], ctx.stats["membership"] = membership.prepare(grant, cfg, ctx)
    frame = membership.run(grant, cfg, ctx)
    return ctx, frame, membership._pooled(frame, cfg)


def test_a_large_ascent_step_gives_auc_near_one(credit):
    """approx with a large η moves the deleted record's own confidence most: the per-example test (U-LiRA)
    finds it nearly always; the population classifier, one threshold for every record of a two-class
    table, well above chance."""
    setting, thetas_u = _setting(credit, "approx", ApproxConfig(eta=10.0))
    cfg = mi.Config(**SMALL)
    _, frame, out = _attack(setting, thetas_u, cfg, ds=credit[0])
    assert out["positives"] >= 40 and out["never_candidates"] == 2 * out["positives"]
    assert out["never_lira_auc"] >= 0.95 and out["retained_lira_auc"] >= 0.95, out
    assert out["never_auc_ci95_low"] > 0.6 and out["retained_auc_ci95_low"] > 0.6, out
    assert out["never_auc_ci95_low"] <= out["never_auc"] <= out["never_auc_ci95_high"]
    scored = membership.score(setting, frame)
    assert list(scored["request"]) == list(range(6)) and scored["never_detected"].mean() >= 5 / 6


def test_an_unchanged_model_gives_auc_whose_interval_holds_one_half(credit):
    """θ_u = θ for every request and every made pair (released unchanged): nothing to tell apart."""
    setting, _ = _setting(credit, "approx", ApproxConfig(eta=10.0))
    theta = setting.theta_original
    cfg = mi.Config(**SMALL)
    _, _, out = _attack(setting, [theta] * len(setting.requests), cfg,
                        release=lambda t, t_u, *rest: t, ds=credit[0])
    for q in mi.QUESTIONS:
        for lead in ("", "lira_"):
            assert out[f"{q}_{lead}auc_ci95_low"] <= 0.5 <= out[f"{q}_{lead}auc_ci95_high"], (q, lead, out)


def test_exact_unlearning_leaks_membership_on_real_data(credit):
    """Exact unlearning (fine-tune redone without X) still moves the deleted record's confidence the most."""
    setting, thetas_u = _setting(credit, "exact", ExactConfig())
    _, _, out = _attack(setting, thetas_u, mi.Config(**SMALL), ds=credit[0])
    assert out["never_auc"] > 0.6 and out["never_auc_ci95_low"] > 0.5, out


def test_shadow_records_never_overlap_the_pool_or_du(credit, monkeypatch):
    """The attacker's shadow pairs draw from the public records only; the audit pairs from the pool."""
    setting, thetas_u = _setting(credit, "approx", ApproxConfig(eta=1.0))
    calls = []
    real = mi.make_pairs

    def spy(server, x, y, count, seed, *rest):
        calls.append(x)
        return real(server, x, y, count, seed, *rest)

    monkeypatch.setattr(mi, "make_pairs", spy)
    ds = credit[0]
    _attack(setting, thetas_u, mi.Config(**SMALL), ds=ds)
    audit_x, shadow_x = calls  # the evaluator's audit is asked before the attacker prepares
    assert shadow_x is ds.x_test
    pool = torch.cat([setting.du_x, setting.outside_x])
    assert torch.equal(audit_x, pool)
    same = (shadow_x[:, None, :] == pool[None, :, :]).all(-1)
    assert not same.any(), "a shadow record is also a pool record"


def test_tpr_at_a_fixed_fpr_on_hand_made_scores():
    neg = np.r_[0.85, np.linspace(0.0, 0.5, 99)]
    pos = np.array([0.9, 0.8, 0.6, 0.3])
    labels, scores = np.r_[np.ones(4), np.zeros(100)], np.r_[pos, neg]
    assert roc.tpr_at_fpr(labels, scores, 0.01) == pytest.approx(0.75)  # one false positive allowed: > 0.5
    assert roc.tpr_at_fpr(labels, scores, 0.001) == pytest.approx(0.25)  # none allowed: > 0.85
    assert roc.auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
    fpr, tpr = roc.curve(labels, scores)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc.auc(labels, scores))
    out = roc.summary(labels, scores, 0.5, resamples=200, seed=1)
    assert out["balanced_accuracy"] == pytest.approx((0.75 + 99 / 100) / 2)
    assert out["auc_ci95_low"] <= out["auc"] <= out["auc_ci95_high"]


def test_reidentification_with_an_exact_reconstruction_is_one(credit):
    """Feature recovery that returns the removed record itself re-identifies it among M + 1, and the chain
    keeps it first (no rival lies within any margin of a zero distance)."""
    setting, thetas_u = _setting(credit, "approx", ApproxConfig(eta=1.0))
    ctx, frame, _ = _attack(setting, thetas_u, mi.Config(**SMALL), ds=credit[0])
    ctx.earlier["membership"] = frame
    ctx.earlier["feature_recovery"] = [
        SimpleNamespace(result=SimpleNamespace(reconstruction=setting.du_x[r["forget"]]),
                        covered=torch.tensor(r["forget"])) for r in setting.requests]
    ctx.earlier["label_inference"] = [SimpleNamespace(predicted=[int(setting.du_y[r["forget"][0]])])
                                      for r in setting.requests]
    cfg, run = compound.Config(candidates=99), _run(setting, thetas_u, credit[0])
    grants.check(run, ["compound"], {"compound": cfg})
    results = compound.run(grants.grant(run, "compound", cfg, ctx), cfg, ctx)
    summary = compound.summarise(compound.score(setting, results), results, cfg, {})
    assert summary["reid_top1"] == 1.0 and summary["feature_recovery_top1"] == 1.0
    assert summary["chance_top1"] == pytest.approx(1 / 100)
    assert 0 < summary["label_top1"] < 1  # a uniform pick among the class's candidates


def test_link_ranks_follow_each_link():
    membership_scores = torch.tensor([0.2, 0.9, 0.1, 0.5], dtype=torch.float64)
    label_ok = torch.tensor([True, False, True, True])
    distance = torch.tensor([1.1, 1.0, 2.0, 3.0], dtype=torch.float64)
    r = compound.ranks(membership_scores, label_ok, distance, tolerance=0.0)
    assert (r["membership"], r["feature_recovery"], r["compound"]) == (2, 1, 1)
    assert r["label_top1"] == pytest.approx(1 / 3)
    # within 25% of the nearest, candidate 0 has the inferred label and candidate 1 has not
    assert compound.ranks(membership_scores, label_ok, distance, tolerance=0.25)["compound"] == 0
    # within 250%, candidate 3 joins with the right label and a higher membership score
    assert compound.ranks(membership_scores, label_ok, distance, tolerance=2.5)["compound"] == 1


@pytest.mark.parametrize("block, key, value, expected", [
    ("membership", "shadows", 0, "attack.membership.shadows: Input should be greater than or equal to 1"),
    ("compound", "candidates", 0, "attack.compound.candidates: Input should be greater than or equal to 1"),
    ("membership", "features", ["sorted_diff", "posterior_ratio"], "attack.membership.features.1: Input should be"),
])
def test_bad_membership_params_are_one_clean_line(block, key, value, expected):
    raw = committed_params()
    raw["attack"][block][key] = value
    with pytest.raises(UiaError) as err:
        parse_params(raw)
    assert str(err.value).startswith(f"params.yaml: {expected}") and "\n" not in str(err.value)


def test_more_candidates_than_the_pool_holds_is_refused_before_any_attack(credit):
    setting, _ = _setting(credit, "approx", ApproxConfig(eta=1.0))
    with pytest.raises(UiaError, match=r"^attack.compound.candidates: at most 299 .*got 5000$"):
        grants.check(_run(setting, [], credit[0]), ["compound"], {"compound": compound.Config(candidates=5000)})


def test_committed_defaults_hold_the_issue_sizes():
    """M = 99, and at least 200 candidates (half deleted) per question."""
    attack = yaml.safe_load(yaml.safe_dump(committed_params()["attack"]))
    assert attack["compound"]["candidates"] == 99 and attack["membership"]["targets"] >= 100


def test_a_repeated_attack_gives_identical_numbers(credit):
    """Seeds everywhere: shadows, audit pairs, U-LiRA's planting, the forest and the bootstrap."""
    setting, thetas_u = _setting(credit, "exact", ExactConfig(), requests=2)
    cfg = mi.Config(**{**SMALL, "shadows": 30, "targets": 10})
    first = _attack(setting, thetas_u, cfg, ds=credit[0])[2]
    again = _attack(setting, thetas_u, cfg, ds=credit[0])[2]
    assert first == again


def test_every_lira_candidate_gets_both_sides(credit):
    """Groups never leave a candidate without a retained neighbour (9 candidates, groups of at least 8)."""
    setting, _ = _setting(credit, "approx", ApproxConfig(eta=1.0))
    ds, server = credit[0], server_of(setting)
    shadows = mi.make_pairs(server, ds.x_test, ds.y_test, 3, 0)
    lira = mi.lira_shadows(server, setting.outside_x[:9], setting.outside_y[:9], ds.x_test, ds.y_test, shadows,
                           mi.Config(lira_shadows=2, lira_group=8), 0)
    assert all(np.isfinite(m).all() and len(m) == 9 for m in lira.means.values())
    assert all(np.isfinite(s) and s > 0 for s in lira.std.values())


def _counted(monkeypatch) -> dict[str, int]:
    """Counts of the fine-tunes membership makes: made pairs (shadow and audit) and U-LiRA's shadow units."""
    calls = {"pair": 0, "lira": 0}
    real_pair, real_lira = mi._pair, mi._lira_unit

    def pair(*args):
        calls["pair"] += 1
        return real_pair(*args)

    def lira(*args):
        calls["lira"] += 1
        return real_lira(*args)

    monkeypatch.setattr(mi, "_pair", pair)
    monkeypatch.setattr(mi, "_lira_unit", lira)
    return calls


def _stored_attack(setting, thetas_u, cfg, ds, store, seed: int = 0):
    ctx, run = Context(seed=seed, public_x=ds.x_test, public_y=ds.y_test, store=store), _run(setting, thetas_u, ds)
    grant = grants.grant(run, "membership", cfg, ctx)
    ctx.prepared["membership"], ctx.stats["membership"] = membership.prepare(grant, cfg, ctx)
    frame = membership.run(grant, cfg, ctx)
    return frame, membership._pooled(frame, cfg), ctx.stats["membership"]


def test_kept_shadows_and_audit_pairs_are_reused_with_identical_numbers(credit, tmp_path, monkeypatch):
    """Shadows, U-LiRA's statistics and the audit's made pairs are made once per recipe and seed (the attack,
    defend and access stages share them): a second attack makes no fine-tune and gives every number again."""
    from uia_pipe.evaluation.campaign import FileStore

    setting, thetas_u = _setting(credit, "approx", ApproxConfig(eta=1.0), requests=2)
    cfg, store, calls = mi.Config(**{**SMALL, "shadows": 20, "targets": 10}), FileStore(tmp_path), _counted(monkeypatch)
    frame, pooled, stats = _stored_attack(setting, thetas_u, cfg, credit[0], store)
    assert calls["pair"] == 20 + 8 and calls["lira"] > 0  # 8 audit pairs: 10 targets less the 2 requests'
    calls.update(pair=0, lira=0)
    again, pooled_again, stats_again = _stored_attack(setting, thetas_u, cfg, credit[0], store)
    assert calls == {"pair": 0, "lira": 0}
    pd.testing.assert_frame_equal(frame, again)
    assert pooled == pooled_again
    assert {k: v for k, v in stats.items() if k != "shadow_seconds"} == \
        {k: v for k, v in stats_again.items() if k != "shadow_seconds"}
    # and as if nothing were kept
    fresh = _stored_attack(setting, thetas_u, cfg, credit[0], None)
    pd.testing.assert_frame_equal(frame, fresh[0])

    # the sweeps' audit (fewer targets, no U-LiRA): the kept pairs' prefix, nothing made
    calls.update(pair=0, lira=0)
    _stored_attack(setting, thetas_u, cfg.for_sweep().model_copy(update={"targets": 6}), credit[0], store)
    assert calls == {"pair": 0, "lira": 0}
    # more targets: only the audit pairs beyond those kept are made, equal to those made in one go
    calls.update(pair=0)
    more = cfg.model_copy(update={"targets": 14, "lira_shadows": 0})
    kept = _stored_attack(setting, thetas_u, more, credit[0], store)[0]
    assert calls["pair"] == 4
    pd.testing.assert_frame_equal(kept, _stored_attack(setting, thetas_u, more, credit[0], None)[0])


@pytest.mark.parametrize("change", ["method_config", "seed", "shadows", "code"])
def test_a_changed_recipe_seed_setting_or_code_is_not_served_a_kept_entry(credit, tmp_path, monkeypatch, change):
    from uia_pipe.evaluation.campaign import FileStore

    setting, thetas_u = _setting(credit, "approx", ApproxConfig(eta=1.0), requests=2)
    cfg, store = mi.Config(**{**SMALL, "shadows": 10, "targets": 6, "lira_shadows": 0}), FileStore(tmp_path)
    _stored_attack(setting, thetas_u, cfg, credit[0], store)
    calls, seed = _counted(monkeypatch), 0
    if change == "method_config":
        setting = dataclasses.replace(setting, method_config=ApproxConfig(eta=2.0))
    elif change == "seed":
        seed = 1
    elif change == "shadows":
        cfg = cfg.model_copy(update={"shadows": 11})
    else:
        monkeypatch.setattr(membership, "_code", lambda: b"edited")
    _stored_attack(setting, thetas_u, cfg, credit[0], store, seed)
    # shadows made again; the audit's made pairs too where the server's recipe or the seed changed
    shadows = 11 if change == "shadows" else 10
    assert calls["pair"] == shadows + (4 if change in ("method_config", "seed") else 0)
