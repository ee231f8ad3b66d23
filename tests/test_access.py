"""Weaker attackers (attack.access): each level's transform on a small model, one-line refusals before any
work, and the access stage through every attack family on real data (German Credit)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from pydantic import ValidationError

from tests.conftest import invoke, run_until_unlearned, tiny_data
from uia_pipe import weights
from uia_pipe.evaluation import access
from uia_pipe.attacks.config import AccessParams, attack_params
from uia_pipe.attacks.feature_recovery.objective import _Objective
from uia_pipe.attacks.feature_recovery.update import observed_update
from uia_pipe.attacks.protocol import Context
from uia_pipe.attacks.view import AttackerView
from uia_pipe.config import OptimParams
from uia_pipe.errors import UiaError
from uia_pipe.evaluation.setting import Run
from uia_pipe.models import clone, init_model
from uia_pipe.training import fit
from uia_pipe.unlearning import approx, exact
from uia_pipe.unlearning.config import ApproxConfig, ExactConfig
from uia_pipe.unlearning.problem import UnlearningProblem

LENET = {"model": "lenet", "config": {"width": 4}, "input_shape": [1, 28, 28], "num_classes": 3,
         "mean": [0.5], "std": [0.3]}


def _lenet(seed: int = 0) -> torch.nn.Module:
    return init_model(LENET, seed=seed)


def _nudged(model: torch.nn.Module, scale: float = 1e-3) -> torch.nn.Module:
    out = clone(model)
    with torch.no_grad():
        for i, p in enumerate(out.parameters()):
            p.add_(scale * (i + 1))
    return out


@pytest.mark.parametrize("value, expected", [
    ("1", ["body.7.weight", "body.7.bias"]),
    ("2", ["body.4.weight", "body.4.bias", "body.7.weight", "body.7.bias"]),
    ("body.0+body.7", ["body.0.weight", "body.0.bias", "body.7.weight", "body.7.bias"]),
])
def test_layer_view_holds_exactly_the_named_parameters(value, expected):
    model = _lenet()
    visible = access.visible_parameters(model, value)
    assert list(visible) == expected
    theta_u = _nudged(model)
    for method, pretrained in (("approx", None), ("exact", _nudged(model, -1e-3))):
        view = AttackerView(model, theta_u, pretrained, method, (1, 28, 28), 3, 16, 1, 128, visible)
        assert list(observed_update(view)) == expected
    delta = observed_update(AttackerView(model, theta_u, None, "approx", (1, 28, 28), 3, 16, 1, 128, visible))
    for finite_difference in (False, True):  # the objective's gradient covers the visible parameters only
        objective = _Objective(model, delta, 0.0, True, finite_difference=finite_difference)
        assert objective.names == expected
        loss, gx = objective.step(torch.rand(1, 1, 28, 28), torch.tensor([1]))
        assert torch.isfinite(gx).all() and 0 <= float(loss) <= 2


@pytest.mark.parametrize("value, message", [("5", "the model has 4 parametrised layers"),
                                            ("body.9", "no parametrised layer body.9")])
def test_a_layer_level_the_model_lacks_is_one_line(value, message):
    with pytest.raises(UiaError, match=message):
        access.visible_parameters(_lenet(), value)


def test_int8_round_trips_within_its_step_per_tensor_and_per_channel():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, 20, generator=g) * torch.linspace(0.01, 3, 8)[:, None]  # rows of very different ranges
    per_tensor, per_channel = weights.quantise(w, "int8_tensor"), weights.quantise(w, "int8_channel")
    step = w.abs().max() / 127.5  # torch's symmetric qint8: scale = max|w| / ((127 − (−128)) / 2), zero point 0
    assert (per_tensor - w).abs().max() <= step / 2 + 1e-6
    assert len(torch.unique(per_tensor)) <= 256
    row_steps = w.abs().max(1).values / 127.5
    assert ((per_channel - w).abs().max(1).values <= row_steps / 2 + 1e-6).all()
    assert (per_channel - w).abs().sum() < (per_tensor - w).abs().sum()  # small rows keep their resolution
    bias = torch.randn(8, generator=g)
    assert torch.equal(weights.quantise(bias, "int8_tensor"), bias)  # biases stay float, as in torch's layers
    assert torch.equal(weights.quantise(w, "float16"), w.half().float())
    assert torch.equal(weights.quantise(w, "bfloat16"), w.bfloat16().float())
    int4 = weights.quantise(w, "int4_tensor")  # 16 levels, scale max|w| / 7.5
    assert len(torch.unique(int4)) <= 16 and (int4 - w).abs().max() <= w.abs().max() / 7.5 / 2 + 1e-6


def test_a_rounded_release_leaves_the_server_model_alone():
    model = _lenet()
    before = [p.clone() for p in model.parameters()]
    released = access.rounded(model, "int8_channel")
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(before, released.parameters()))


@pytest.fixture(scope="module")
def server() -> SimpleNamespace:
    """θ₀ on synthetic images, θ = θ₀ fine-tuned on D_u of 20 in one full batch; what `later_requests` reads."""
    x, y = tiny_data(120, seed=5)
    theta0 = _lenet()
    fit(theta0, x[:100], y[:100], OptimParams(epochs=3, lr=0.05, momentum=0.9, batch_size=50), seed=0)
    finetune = OptimParams(epochs=1, lr=0.01, batch_size=128)
    theta = clone(theta0)
    fit(theta, x[100:], y[100:], finetune, seed=1, batchnorm_eval=True)
    return SimpleNamespace(theta_pretrained=theta0, theta=theta, x=x[100:], y=y[100:], finetune=finetune,
                           finetune_seed=1)


def _setting(server, method: str, cfg) -> SimpleNamespace:
    return SimpleNamespace(method=method, method_config=cfg, theta_pretrained=server.theta_pretrained,
                           finetune=server.finetune, finetune_seed=server.finetune_seed)


def _close(a: torch.nn.Module, b: torch.nn.Module, atol: float = 1e-6) -> bool:
    return all(torch.allclose(p, q, atol=atol) for p, q in zip(a.parameters(), b.parameters()))


def test_staleness_applies_the_later_requests_in_order(server):
    """approx: each later request an ascent step from the model the previous one left, on the records the
    server still holds; so the order matters. exact: a retrain without every removed record."""
    cfg = ApproxConfig(eta=0.5)
    forget = torch.zeros(20, dtype=torch.bool)
    forget[3] = True
    problem = UnlearningProblem(server.theta_pretrained, server.theta, server.x, server.y, server.finetune, 1)
    theta_u = approx.unlearn(problem, forget, cfg)
    keep_x, keep_y = server.x[~forget], server.y[~forget]
    stale = access.later_requests(_setting(server, "approx", cfg), theta_u, keep_x, keep_y, 1, 2, seed=9)
    g = torch.Generator().manual_seed(9)
    first = torch.zeros(19, dtype=torch.bool)
    first[torch.randperm(19, generator=g)[:1]] = True
    second = torch.zeros(18, dtype=torch.bool)
    second[torch.randperm(18, generator=g)[:1]] = True
    x1, y1 = keep_x[~first], keep_y[~first]
    step1 = approx.unlearn(UnlearningProblem(server.theta_pretrained, theta_u, keep_x, keep_y, server.finetune, 1),
                           first, cfg)
    by_hand = approx.unlearn(UnlearningProblem(server.theta_pretrained, step1, x1, y1, server.finetune, 1),
                             second, cfg)
    assert _close(stale, by_hand)
    assert not _close(stale, step1) and not _close(stale, theta_u)
    # the same two records in the other order: a different model (the steps are taken where the last left off)
    idx1, idx2 = torch.nonzero(first)[0, 0], torch.nonzero(~first)[:, 0][torch.nonzero(second)[0, 0]]
    other = torch.zeros(19, dtype=torch.bool)
    other[idx2] = True
    swapped1 = approx.unlearn(UnlearningProblem(server.theta_pretrained, theta_u, keep_x, keep_y,
                                                server.finetune, 1), other, cfg)
    rest = ~other
    again = torch.zeros(18, dtype=torch.bool)
    again[int(rest[:idx1].sum())] = True
    swapped = approx.unlearn(UnlearningProblem(server.theta_pretrained, swapped1, keep_x[rest], keep_y[rest],
                                               server.finetune, 1), again, cfg)
    assert not _close(stale, swapped, atol=1e-7)
    assert access.later_requests(_setting(server, "approx", cfg), theta_u, keep_x, keep_y, 1, 0, 9) is theta_u

    # exact, one full-batch fine-tune: the stale model is θ₀ refitted without X and both later records
    ex = access.later_requests(_setting(server, "exact", ExactConfig()), exact.unlearn(problem, forget, ExactConfig()),
                               keep_x, keep_y, 1, 2, seed=9)
    removed = forget.clone()
    removed[torch.nonzero(~forget)[:, 0][idx1]] = True
    removed[torch.nonzero(~forget)[:, 0][idx2]] = True
    assert _close(ex, exact.unlearn(problem, removed, ExactConfig()), atol=1e-6)


def test_a_diverging_server_is_unservable_not_a_crash(server):
    """approx at a huge η cannot serve the next request: the level is recorded, not attacked."""
    problem = UnlearningProblem(server.theta_pretrained, server.theta, server.x, server.y, server.finetune, 1)
    forget = torch.zeros(20, dtype=torch.bool)
    forget[0] = True
    cfg = ApproxConfig(eta=1e30)
    theta_u = approx.unlearn(problem, forget, cfg)
    with pytest.raises(access.Unservable, match="not finite after 1 of 3 further requests"):
        access.later_requests(_setting(server, "approx", cfg), theta_u, server.x[1:], server.y[1:], 1, 3, seed=0)


def test_drift_moves_the_release_by_steps_on_other_data(server):
    moved = access.drifted(server.theta, server.x, server.y, server.finetune, 3, seed=0)
    assert not _close(moved, server.theta) and _close(access.drifted(server.theta, server.x, server.y,
                                                                     server.finetune, 3, seed=0), moved)


def _attacked(model, labels: str = "analytic", classes: int = 3) -> access.Attacked:
    fr_cfg = attack_params()().feature_recovery.model_copy(update={"labels": labels})
    setting = SimpleNamespace(theta_original=model, card={"num_classes": classes}, du_y=torch.zeros(16), ks=[1])
    run = Run(setting, [model], torch.zeros(1, 1, 28, 28), torch.zeros(1, dtype=torch.long))
    return access.Attacked(run, {"feature_recovery": fr_cfg}, Context(0, torch.zeros(1, 1, 28, 28)))


@pytest.mark.parametrize("level, message", [
    ("layers:body.0", "layers:body.0 hides the output layer, which attack.feature_recovery.labels: analytic"),
    ("knowledge:no_batch_norm_stats", "knowledge:no_batch_norm_stats: the model has no batch norm"),
    ("queries:2", "queries:2 buys less than one probe per class"),
])
def test_a_level_hiding_what_an_attack_needs_names_the_level(level, message):
    with pytest.raises(UiaError, match=message):
        access.at_level(level, _attacked(_lenet()))


def test_a_hidden_head_is_fine_with_labels_handed_over():
    out = access.at_level("layers:body.0", _attacked(_lenet(), labels="inferred"))
    assert out.run.limits.visible == ("body.0.weight", "body.0.bias")


@pytest.mark.parametrize("level, message", [
    ("layers:0", "'layers:0': layers takes L >= 1"),
    ("precision:int4", "'precision:int4': precision takes float16 | bfloat16 | int8_tensor | int8_channel"),
    ("staleness:-1", "staleness takes R >= 0"),
    ("speed:3", "is not <dimension>:<level>"),
])
def test_bad_levels_are_refused_by_the_schema(level, message):
    with pytest.raises(ValidationError, match=message):
        AccessParams(levels=(level,))


def test_a_bad_level_is_one_line_before_any_work(tmp_path, params_file):
    raw = yaml.safe_load(params_file.read_text())
    raw["attack"]["access"]["levels"] = ["layers:1", "precision:fp8"]
    params_file.write_text(yaml.safe_dump(raw))
    out = tmp_path / "access.json"
    result = invoke("access", "--params", str(params_file), "--data", str(tmp_path), "--trained", str(tmp_path),
                    "--unlearned", str(tmp_path), "--metrics", str(out), "--details", str(tmp_path / "a.csv"), code=2)
    text = result.stderr.strip()
    assert len(text.splitlines()) == 1 and "attack.access.levels" in text and "precision:fp8" in text
    assert not out.exists()


@pytest.mark.slow
def test_the_access_stage_at_each_level(tmp_path, params_file):
    """German Credit, exact and approx, the conftest's six levels (one per dimension) on one request."""
    t = tmp_path
    common = run_until_unlearned(params_file, t)
    invoke("access", *common, "--metrics", str(t / "access.json"), "--details", str(t / "access.csv"))
    result = json.loads((t / "access.json").read_text())
    levels = yaml.safe_load(params_file.read_text())["attack"]["access"]["levels"]
    assert list(result) == ["full", *levels]
    for level, by_method in result.items():
        assert set(by_method) == {"exact", "approx"}
        for entry in by_method.values():
            assert all(isinstance(v, float) for v in entry.values())
            if entry["served"]:
                assert {"feature_recovery.numeric_mae_std", "label_inference.accuracy", "membership.never_auc",
                        "seconds_per_request", "queries_per_request", "paper_hours_per_request"} <= set(entry)
    full = result["full"]["exact"]
    # 2 classes: queries:2 buys one probe per class, fewer than the full set (auxiliary probes that θ labels alike
    # with the confidence asked)
    assert result["queries:2"]["exact"]["queries_per_request"] <= 2 < full["queries_per_request"]
    # θ₀ withheld: exact unlearning is attacked as approx, a different Δ
    mae = "feature_recovery.numeric_mae_std"
    assert result["knowledge:no_pretrained"]["exact"][mae] != full[mae]
    assert result["knowledge:no_pretrained"]["approx"] == {**result["full"]["approx"], **{
        k: v for k, v in result["knowledge:no_pretrained"]["approx"].items() if "second" in k or "hours" in k}}
    assert result["layers:1"]["exact"][mae] != full[mae]
    assert result["precision:int8_channel"]["exact"][mae] != full[mae]
    frame = __import__("pandas").read_csv(t / "access.csv")
    assert set(frame["level"]) == {"full", *levels} and set(frame["method"]) == {"exact", "approx"}


def test_the_access_table_figure_and_report_section():
    """metrics/access.json → the report's table (an unservable level said so) and one panel column a dimension."""
    from uia_pipe import figures, report, summary

    psnr = "feature_recovery.psnr_mean"
    entry = {psnr: 30.0, "label_inference.accuracy": 1.0, "membership.never_auc": 0.9, "seconds_per_request": 2.0,
             "queries_per_request": 100.0, "served": 1.0}
    result = {"full": {"exact": entry, "approx": entry},
              "layers:1": {"exact": {**entry, psnr: 9.0}, "approx": {**entry, psnr: 10.0}},
              "staleness:4": {"exact": {**entry, psnr: 25.0}, "approx": {"served": 0.0}}}
    table = summary.access_table(result)
    assert list(table["level"]) == ["full", "full", "layers:1", "layers:1", "staleness:4", "staleness:4"]
    assert not table.iloc[-1]["served"] and table.iloc[2][psnr] == 9.0
    assert summary.access_headline(table)["staleness:4"]["approx"] == {}
    fig = figures.access_curves(table, {psnr: "PSNR", "label_inference.accuracy": "label accuracy"})
    assert len(fig.axes) == 2 * 2  # two metrics × two dimensions (full is each curve's first point)
    text = report.markdown(_access_report(table))
    assert "## What a weaker attacker gets" in text and "| staleness:4 | approx | not servable |" in text


def _access_report(table):
    from uia_pipe.report import Report
    from uia_pipe.summary import _access_section

    r = Report("t")
    _access_section(r, table, {"feature_recovery.psnr_mean": "PSNR"})
    return r


def test_unknown_batch_norm_statistics_reset_the_attackers_copies_only():
    from tests.conftest import TINY_SPEC
    from uia_pipe.attacks.view import without_batch_norm_stats

    model = init_model(TINY_SPEC, seed=0)  # ConvNet with batch norm
    x, y = tiny_data(64, seed=1)
    fit(model, x, y, OptimParams(epochs=1, lr=0.05, batch_size=32), seed=0)  # moves the running statistics
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and not torch.equal(norms[0].running_mean, torch.zeros_like(norms[0].running_mean))
    copy = without_batch_norm_stats(model)
    for m in (m for m in copy.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        assert torch.equal(m.running_mean, torch.zeros_like(m.running_mean))
        assert torch.equal(m.running_var, torch.ones_like(m.running_var))
    assert not torch.equal(norms[0].running_mean, torch.zeros_like(norms[0].running_mean))  # the server's untouched
    assert not access.at_level("knowledge:no_batch_norm_stats", _attacked(model)).run.limits.batch_norm_stats


FAMILIES = ("label_inference", "feature_recovery", "membership", "compound")


def _full(model, labels: str = "analytic") -> access.Attacked:
    """Full access to a one-request run of `model`, every family's config (the schema's defaults)."""
    a = attack_params()()
    configs = {name: getattr(a, name) for name in FAMILIES}
    configs["feature_recovery"] = configs["feature_recovery"].model_copy(update={"labels": labels})
    setting = SimpleNamespace(theta_original=model, theta_pretrained=model, card={"num_classes": 3},
                              du_y=torch.zeros(16), ks=[1])
    run = Run(setting, [model], torch.zeros(1, 1, 28, 28), torch.zeros(1, dtype=torch.long))
    return access.Attacked(run, configs, Context(0, torch.zeros(1, 1, 28, 28)))


@pytest.mark.parametrize("level, labels, expected", [
    ("layers:1", "analytic", {"feature_recovery", "compound"}),
    ("knowledge:no_pretrained", "analytic", {"feature_recovery", "compound"}),
    ("knowledge:inferred_labels", "analytic", {"feature_recovery", "compound"}),
    ("output:label", "analytic", {"label_inference", "membership", "compound"}),
    ("output:label", "inferred", {"label_inference", "membership", "feature_recovery", "compound"}),  # reads LI's
    ("precision:int8_channel", "analytic", set(FAMILIES)),
])
def test_a_level_runs_again_the_families_it_acts_through_and_their_readers(level, labels, expected):
    full = _full(_lenet(), labels)
    at = full if level.startswith("precision") else access.at_level(level, full)  # (rounding needs a real setting)
    assert access.rerun(level, full, at, dict.fromkeys(FAMILIES)) == expected


def test_a_level_changing_a_family_it_does_not_name_is_refused():
    """A level declared to act through feature recovery alone that also changed the released θ_u is a
    programming error, never label inference's full-access rows under another release."""
    full = _full(_lenet())
    at = dataclasses.replace(full, run=dataclasses.replace(full.run, thetas_u=[_nudged(_lenet())]))
    with pytest.raises(ValueError, match="layers:1 changes label_inference's released models but ACTS does not"):
        access.rerun("layers:1", full, at, dict.fromkeys(FAMILIES))


@pytest.mark.slow
def test_reused_full_access_rows_equal_the_rows_of_running_the_family_again(tmp_path, params_file):
    """German Credit, approx, one request: at each level, the families it leaves alone (membership and label
    inference at layers:1 and knowledge:no_pretrained, feature recovery at queries:2 and output:label) give
    the same rows taken from full access as run again; every other number too, timings aside."""
    import pandas as pd

    from stages.attacking import attacking
    from uia_pipe.attacks.config import family_configs
    from uia_pipe.config import BaseParams, load_sections
    from uia_pipe.data import DownloadParams
    from uia_pipe.evaluation import sweep
    from uia_pipe.evaluation.campaign import sweep_configs

    raw = yaml.safe_load(params_file.read_text())
    raw["unlearn"].update(method="approx", compare=["approx"])
    params_file.write_text(yaml.safe_dump(raw))
    common = run_until_unlearned(params_file, tmp_path)
    folders = [Path(v) for v in common[3::2]]
    p = load_sections(params_file, base=BaseParams, download=DownloadParams, attack=attack_params())
    configs = sweep_configs(family_configs(p.attack), p.attack.access.iterations)
    levels = ("layers:1", "knowledge:no_pretrained", "queries:2", "output:label")
    runs, frames = {}, {}

    def counted(name, attack):
        def run(*args):
            runs[name] = runs.get(name, 0) + 1
            return attack.run(*args)

        def run_many(grants, *args):  # the sweep's batches: one run a grant
            runs[name] = runs.get(name, 0) + len(grants)
            return attack.run_many(grants, *args)
        return dataclasses.replace(attack, run=run, run_many=run_many if attack.run_many else None)

    with attacking("access", p.base, 1, p.download.cache_dir, *folders, configs, 1) as at:
        attacks = {name: counted(name, attack) for name, attack in at.attacks.items()}
        for reuse in (True, False):
            runs.clear()
            frames[reuse] = sweep.sweep(access.variants(at.runs, levels, attacks, configs, at.context, reuse),
                                        attacks, "access")
            # full, then each level: feature recovery at layers and knowledge, membership at output
            # (a family no level acts through, such as recovery, runs once, at full access)
            assert runs == ({**dict.fromkeys(attacks, 1), "label_inference": 3, "feature_recovery": 3, "membership": 2,
                             "compound": 5} if reuse else dict.fromkeys(attacks, 5))
    timings = ["seconds", "step_seconds"]
    reused, again = (f.drop(columns=timings).reset_index(drop=True) for f in (frames[True], frames[False]))
    pd.testing.assert_frame_equal(reused, again)
    for level, family in (("layers:1", "membership"), ("queries:2", "feature_recovery")):
        row = reused[reused["level"] == level]
        cols = [c for c in reused if c.startswith(f"{family}.")]
        assert cols and row[cols].notna().all().all()
        assert row[cols].equals(again[again["level"] == level][cols])


@pytest.mark.slow
def test_a_sweeps_feature_recovery_as_one_batch_gives_each_cells_own_rows(tmp_path, params_file):
    """Defence cells' feature recovery attacked together (`Attack.run_many`, one batch across cells) gives
    every cell the rows of attacking it alone, where steps run one by one (vmap: no)."""
    import pandas as pd

    from stages.attacking import attacking
    from uia_pipe.attacks.config import family_configs
    from uia_pipe.config import BaseParams, load_sections
    from uia_pipe.data import DownloadParams
    from uia_pipe.defenses.config import DefendParams
    from uia_pipe.evaluation import sweep
    from uia_pipe.evaluation.campaign import attack_run, run_together, sweep_configs

    raw = yaml.safe_load(params_file.read_text())
    raw["unlearn"].update(method="approx", compare=["approx"])
    raw["attack"]["feature_recovery"].update(vmap="no", restarts=2)
    params_file.write_text(yaml.safe_dump(raw))
    common = run_until_unlearned(params_file, tmp_path)
    folders = [Path(v) for v in common[3::2]]
    p = load_sections(params_file, base=BaseParams, download=DownloadParams, attack=attack_params(),
                      defend=DefendParams)
    configs = sweep_configs(family_configs(p.attack), 30)
    defences = {"noise": p.defend.noise, "prune": p.defend.prune}
    frames = {}
    with attacking("defend", p.base, 2, p.download.cache_dir, *folders, configs, 1) as at:
        run = next(iter(at.runs.values()))
        for together in (True, False):
            attacks = at.attacks if together else {
                name: dataclasses.replace(attack, run_many=None) for name, attack in at.attacks.items()}
            ctx = at.context(run)
            frames[together] = sweep.sweep(sweep.defence_variants(run, defences, configs, ctx), attacks, "defence")
        # the batch's seconds count in each run's outcome, as if it had run there
        results, share = run_together([(run, configs, at.context(run), frozenset(at.attacks))], at.attacks)[0][
            "feature_recovery"]
        outcome = attack_run(run, at.attacks, configs, at.context(run), given={"feature_recovery": (results, 1e4)})
        assert share > 0 and outcome.summaries["feature_recovery"]["seconds"] >= 1e4 and outcome.seconds >= 1e4
    together, alone = (f.drop(columns=["seconds"], errors="ignore").reset_index(drop=True) for f in frames.values())
    assert len(together) >= 4 and together.filter(like="feature_recovery.").notna().all().all()
    pd.testing.assert_frame_equal(together, alone)
