"""evaluate on small synthetic per-request results: the intervals, the report, the figures."""

from __future__ import annotations

import json
import math
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from scipy import stats as sps
from typer.testing import CliRunner

from stages.cli import app
from tests.conftest import committed_params_text
from uia_pipe import summary
from uia_pipe.attacks import ATTACKS
from uia_pipe.report import Report

PSNR = [20.0, 22.0, 30.0, 24.0, 19.0]
CORRECT = [True, True, False, True, True]
NUMBERS = {name: attack.numbers for name, attack in ATTACKS.items()}  # what each family declares
FR, LI = "feature_recovery.", "label_inference."


def _attack_rows(psnr=PSNR, correct=CORRECT) -> pd.DataFrame:
    n = len(psnr)
    return pd.DataFrame({
        "request": range(n), FR + "k": 1, FR + "iterations": 100, FR + "seconds": [1.0, 2.0, 3.0, 2.0, 2.0],
        FR + "label_accuracy": 1.0, FR + "psnr": psnr, FR + "ssim": [0.5, 0.6, 0.9, 0.7, 0.4], FR + "mse": [0.01] * n,
        FR + "baseline_psnr": [10.0] * n, FR + "psnr_gain": [p - 10.0 for p in psnr], LI + "correct": correct,
        LI + "queries": 100, LI + "true_label": [0, 1, 2, 1, 0], LI + "predicted": [0, 1, 1, 1, 0],
    })


def _unlearn_rows(method: str = "exact") -> pd.DataFrame:
    return pd.DataFrame({"method": method, "request": range(5), "seconds": [0.1] * 5, "test_accuracy": [0.8] * 5,
                         "forget_accuracy": [1.0, 0, 1, 1, 1], "retain_accuracy": [0.9] * 5,
                         "retrain_agreement_forget": 1.0})


APPROX_PSNR = [23.0, 23.0, 31.0, 28.0, 21.0]  # paired differences from PSNR: 3, 1, 1, 4, 2
APPROX_CORRECT = [True, True, True, True, True]


def _method_rows() -> pd.DataFrame:
    return pd.concat([_attack_rows().assign(method="exact"),
                      _attack_rows(APPROX_PSNR, APPROX_CORRECT).assign(method="approx")], ignore_index=True)


def test_methods_are_compared_paired_over_the_same_requests():
    c = summary.compare_methods(_method_rows(), "exact", NUMBERS)["approx_vs_exact"]
    diffs = [a - b for a, b in zip(APPROX_PSNR, PSNR)]
    mean, sd = sum(diffs) / 5, math.sqrt(sum((d - 2.2) ** 2 for d in diffs) / 4)
    half = sps.t.ppf(0.975, 4) * sd / math.sqrt(5)
    psnr, acc = FR + "psnr_mean", LI + "accuracy"
    assert c[f"{psnr}_diff"] == pytest.approx(mean) and c[f"{psnr}_diff_ci95_low"] == pytest.approx(mean - half)
    assert c[f"{psnr}_diff_ci95_low"] > 0 and c[f"{psnr}_leaked_more"] == 1.0  # every pair higher
    # labels: approx finds one request exact missed, misses none: sign test p = 1 (one discordant pair)
    assert (c[f"{acc}_hits_more"], c[f"{acc}_hits_fewer"], c[f"{acc}_sign_test_p"]) == (1, 0, 1.0)
    assert c[f"{acc}_leaked_more"] == 0.0 and c[f"{acc}_diff"] == pytest.approx(0.2)
    # the other way round the verdict flips
    back = summary.compare_methods(_method_rows(), "approx", NUMBERS)["exact_vs_approx"]
    assert back[f"{psnr}_leaked_more"] == -1.0 and back[f"{psnr}_diff"] == pytest.approx(-mean)

    table = summary.methods_table(pd.concat([_unlearn_rows(), _unlearn_rows("approx")]), _method_rows(), ATTACK,
                                  "exact", NUMBERS)
    assert list(table["method"]) == ["exact", "approx"]
    assert table[psnr].tolist() == pytest.approx([sum(PSNR) / 5, sum(APPROX_PSNR) / 5])
    assert table[acc].tolist() == pytest.approx([0.8, 1.0])


def test_an_error_leaks_more_when_it_falls():
    """A number declared with higher_leaks=False (an error) reads its paired difference the other way."""
    rows = _method_rows().rename(columns={FR + "psnr": FR + "numeric_mae_std"})
    c = summary.compare_methods(rows, "exact", NUMBERS)["approx_vs_exact"]
    assert c[FR + "numeric_mae_std_diff_ci95_low"] > 0 and c[FR + "numeric_mae_std_leaked_more"] == -1.0


def test_a_certified_method_s_removal_budget_reaches_the_methods_table_and_report():
    certificate = {"gradient_residual": [1e-4] * 5, "residual_bound": [0.01, 0.01, 0.03, 0.01, 0.01],
                   "removal_budget": [0.02] * 5, "within_budget": [1.0, 1.0, 0.0, 1.0, 1.0],
                   "removals_in_budget": [2.0, 2.0, 0.0, 2.0, 2.0]}
    unlearn = pd.concat([_unlearn_rows(), _unlearn_rows("approx").assign(**certificate)], ignore_index=True)
    table = summary.methods_table(unlearn, _method_rows(), ATTACK, "exact", NUMBERS)
    assert math.isnan(table["within_budget"][0]) and table["within_budget"][1] == pytest.approx(0.8)
    assert table["residual_bound"][1] == pytest.approx(0.014)
    r = Report("methods")
    summary._methods_section(r, table, {}, NUMBERS, "95%", "accuracy")
    text = " ".join(b[1] for b in r.blocks if b[0] == "li")
    assert "approx: removal certificate" in text and "80% of removals within it" in text
    assert "exact: removal certificate" not in text


def _defend_rows() -> pd.DataFrame:
    rows = []
    for name, strengths in {"noise": [0.0, 1.0], "prune": [0.0, 0.5]}.items():
        for s in strengths:
            for r in range(2):
                rows.append({"defence": name, "strength": s, "request": r, "test_accuracy": 0.8 - 0.1 * s,
                             "forget_accuracy": 1.0, FR + "psnr": 25 - 5 * s, FR + "ssim": 0.5,
                             LI + "correct": float(r == 0), FR + "label_accuracy": 1.0})
    return pd.DataFrame(rows)


def _defend_json() -> dict:
    frame = _defend_rows()
    return {f"{d}:{s:g}": {"test_accuracy": g["test_accuracy"].mean(), "forget_accuracy": 1.0,
                           FR + "psnr_mean": g[FR + "psnr"].mean(), LI + "accuracy": g[LI + "correct"].mean()}
            for (d, s), g in frame.groupby(["defence", "strength"], sort=False)}


ATTACK = {"seconds": 12.0, "label_inference": {"accuracy": 0.8, "queries_per_request": 100, "probe_queries": 500,
                                             "seconds": 1.0},
          "feature_recovery": {"psnr_mean": sum(PSNR) / 5, "baseline_psnr": 10.0},
          "membership": {"never_auc": 0.8, "never_auc_ci95_low": 0.7, "never_auc_ci95_high": 0.9},
          "compare": {"approx": {"membership": {"never_auc": 0.95}}}}
TRAIN = {"test_accuracy": 0.85, "pretrain_test_accuracy": 0.84}


def test_headline_intervals_are_student_t_and_wilson():
    head = summary.headline(TRAIN, _unlearn_rows(), ATTACK, _attack_rows(), NUMBERS)
    fr, li = head["feature_recovery"], head["label_inference"]
    n, mean = len(PSNR), sum(PSNR) / len(PSNR)
    sd = math.sqrt(sum((v - mean) ** 2 for v in PSNR) / (n - 1))
    half = sps.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    assert fr["psnr_mean"] == pytest.approx(mean)
    assert (fr["psnr_ci95_low"], fr["psnr_ci95_high"]) == pytest.approx((mean - half, mean + half))
    assert fr["psnr_gain_mean"] == pytest.approx(mean - 10.0)
    # Wilson for 4 of 5: centre (p + z²/2n)/(1 + z²/n), known values
    assert li["accuracy"] == 0.8
    assert (li["accuracy_ci95_low"], li["accuracy_ci95_high"]) == pytest.approx((0.3755, 0.9638), abs=1e-4)
    assert head["unlearning"]["forget_accuracy"] == pytest.approx(0.8)
    assert li["queries_per_request"] == 100 and li["probe_queries"] == 500
    assert head["membership"] == {**ATTACK["membership"], "requests": 5.0}  # pooled: as the attack stage gave it
    assert all(isinstance(v, float) for sec in head.values() for v in sec.values())


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.tables, self.stack = [], 0, []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        self.tables += tag == "table"
        if tag not in ("img", "meta"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack.pop() == tag


@pytest.fixture
def inputs(tmp_path) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "card.json").write_text(json.dumps({"name": "synthetic", "num_classes": 3}))
    (tmp_path / "train.json").write_text(json.dumps(TRAIN))
    pd.DataFrame({"phase": ["pretrain", "pretrain", "finetune"], "epoch": [1, 2, 1], "loss": [1.0, 0.5, 0.4],
                  "accuracy": [0.6, 0.8, 0.85]}).to_csv(tmp_path / "curve.csv", index=False)
    pd.concat([_unlearn_rows(), _unlearn_rows("approx")]).to_csv(tmp_path / "unlearn.csv", index=False)
    _method_rows().to_csv(tmp_path / "methods.csv", index=False)
    (tmp_path / "attack.json").write_text(json.dumps(ATTACK))
    _attack_rows().to_csv(tmp_path / "attack.csv", index=False)
    (tmp_path / "attack" / "grids").mkdir(parents=True)
    (tmp_path / "attack" / "compare" / "approx" / "grids").mkdir(parents=True)
    for i in range(len(PSNR)):
        plt.imsave(tmp_path / "attack" / "grids" / f"request_{i:03d}.png", [[0.0, 1.0], [0.5, 0.2]], cmap="gray")
        plt.imsave(tmp_path / "attack" / "compare" / "approx" / "grids" / f"request_{i:03d}.png", [[0.2, 0.7]],
                   cmap="gray")
    _defend_rows().to_csv(tmp_path / "defend.csv", index=False)
    (tmp_path / "defend.json").write_text(json.dumps(_defend_json()))
    for name in ("reconstructions.png", "label_confusion.png"):  # the families' own figures, captioned
        plt.imsave(tmp_path / "attack" / name, [[0.0, 1.0]], cmap="gray")
    (tmp_path / "attack" / "captions.json").write_text(json.dumps({
        "reconstructions.png": "best and worst", "label_confusion.png": "removed label against inferred label"}))
    (tmp_path / "params.yaml").write_text(committed_params_text())
    return tmp_path


@pytest.mark.slow
def test_evaluate_stage_writes_metrics_figures_and_a_self_contained_report(inputs):
    t = inputs
    result = CliRunner().invoke(app, [
        "evaluate", "--params", str(t / "params.yaml"), "--data", str(t / "data"),
        "--train-metrics", str(t / "train.json"), "--train-curve", str(t / "curve.csv"),
        "--unlearn-details", str(t / "unlearn.csv"), "--attack-metrics", str(t / "attack.json"),
        "--attack-details", str(t / "attack.csv"), "--attack-methods", str(t / "methods.csv"),
        "--attack-out", str(t / "attack"), "--defend-metrics", str(t / "defend.json"),
        "--defend-details", str(t / "defend.csv"), "--metrics", str(t / "evaluate.json"),
        "--headline", str(t / "headline.json"), "--reports", str(t / "reports")])
    assert result.exit_code == 0, result.output
    head = json.loads((t / "evaluate.json").read_text())
    few = json.loads((t / "headline.json").read_text())
    assert few["feature_recovery"] == {"psnr_mean": head["feature_recovery"]["psnr_mean"]}
    assert all(head[s][k] == v for s, section in few.items() for k, v in section.items())
    assert head["feature_recovery"]["psnr_mean"] == pytest.approx(sum(PSNR) / len(PSNR))
    assert head["unlearning"]["requests"] == 5  # unlearn.method's rows only
    assert head["approx_vs_exact"][FR + "psnr_mean_leaked_more"] == 1.0
    assert head["method_approx"]["membership.never_auc"] == 0.95  # a compared method's pooled number

    md = (t / "reports" / "report.md").read_text()
    linked = [line.split("](")[1].rstrip(")") for line in md.splitlines() if line.startswith("![")]
    assert {"reconstructions.png", "reconstructions_all.png", "defences.png", "label_confusion.png",
            "training_curves.png"} <= set(linked)
    assert all((t / "reports" / name).is_file() for name in linked)
    for phrase in ("white-box server", "black-box user", "## Caveats", "rests on 5 requests"):
        assert phrase in md
    assert "| noise | 1 |" in md
    assert "## Every attack family" in md and "| label inference | probe_queries | 500 |  |" in md
    assert md.index("## Every attack family") > md.index("## Caveats")  # the long table closes the report
    rows = summary._with_intervals({"accuracy": 1.0, "accuracy_ci95_low": 0.68, "accuracy_ci95_high": 1.0,
                                    "psnr_mean": 29.3, "psnr_ci95_low": 23.5, "psnr_ci95_high": 35.1, "seconds": 3.0})
    assert rows == [["accuracy", "1", "[0.68, 1]"], ["psnr_mean", "29.3", "[23.5, 35.1]"], ["seconds", "3", ""]]
    assert "| approx | 0.1 |" in md and "Did approx leak more than exact over 5 requests?" in md
    assert "feature recovery: PSNR (dB): more (+2.2, paired 95% interval" in md
    assert "| exact | 0.1 | 0.8 | 0.8 | 1 | 0.8 [0.376, 0.964] |" in md  # methods: a number and its interval

    parser = _Collect()
    parser.feed((t / "reports" / "report.html").read_text())
    parser.close()
    assert len(parser.images) == len(linked) and all(s.startswith("data:image/png;base64,") for s in parser.images)
    assert parser.tables == 4 and parser.stack == []  # headline, methods, defences, attack families


def test_every_request_of_every_method_is_one_figure_row_per_method():
    from uia_pipe import figures

    grids = {m: {i: [[0.0, 1.0], [0.5, 0.2]] for i in range(len(PSNR))} for m in ("exact", "approx")}
    defences = summary.defence_table(_defend_json(), _defend_rows())
    panels = {"defence": {FR + "psnr_mean": "PSNR"}}
    made = figures.report_figures(defences, None, panels, [{"phase": "pretrain", "epoch": 1, "loss": 1.0,
                                                            "accuracy": 0.5}], grids)
    fig, caption = made["reconstructions_all.png"]
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 2 * len(PSNR) and "every request of every method" in caption.lower()
    assert [ax.get_title() for ax in shown][:2] == ["request 0", "request 1"]
    assert [t.get_text() for t in fig.axes[0].texts] == ["exact"]
    assert "defences.png" in made and "access.png" not in made
    plt.close("all")


def test_defence_table_holds_defend_json_and_the_requests_per_strength():
    table = summary.defence_table(_defend_json(), _defend_rows())
    assert list(table["defence"]) == ["noise", "noise", "prune", "prune"]
    row = table[(table.defence == "noise") & (table.strength == 1.0)].iloc[0]
    assert row[FR + "psnr_mean"] == 20 and row[LI + "accuracy"] == 0.5 and row.requests == 2


def test_a_familys_declared_numbers_reach_the_methods_table_without_naming_it():
    """The methods table and report read what each family declares: membership's pooled AUC, with its
    interval, for unlearn.method and as attack.json's compare section holds it for another method."""
    table = summary.methods_table(pd.concat([_unlearn_rows(), _unlearn_rows("approx")]), _method_rows(), ATTACK,
                                  "exact", NUMBERS)
    auc = "membership.never_auc"
    assert table[auc].tolist() == [0.8, 0.95] and table["membership.never_auc_ci95_low"][0] == 0.7
    head = summary.headline(TRAIN, _unlearn_rows(), ATTACK, _attack_rows(), NUMBERS)
    doc = summary.build_report({"dataset": "x"}, head, NUMBERS, {"membership": "a user"}, {}, methods=table)
    from uia_pipe.report import markdown
    text = markdown(doc)
    assert "## Unlearning methods side by side" in text and "| 0.95 |" in text and "0.8 [0.7, 0.9]" in text
    assert "membership: a user" in text


def test_the_headline_file_holds_each_familys_declared_lead_for_every_method_in_at_most_25_numbers():
    """metrics/headline.json (what `dvc exp show` compares): built from the registry's declarations, so a
    family registered with its own Number adds its lead for every method; the names are evaluate.json's."""
    from uia_pipe.attacks.protocol import Number

    unlearning = {"seconds_per_request": 0.1, "test_accuracy": 0.8, "forget_accuracy": 0.6, "requests": 5}
    attack = {**ATTACK, "compare": {"approx": {f: dict(ATTACK[f]) for f in NUMBERS if f in ATTACK}}}
    head = summary.headline_metrics(TRAIN, unlearning, attack, NUMBERS)
    count = sum(map(len, head.values()))
    assert count <= summary.HEADLINE_LIMIT == 25
    assert all(isinstance(v, float) for section in head.values() for v in section.values())
    leads = {f: ns[0].key for f, ns in NUMBERS.items() if f in ATTACK}  # each family's first declared
    assert {f: list(head[f]) for f in leads} == {f: [k] for f, k in leads.items()}
    assert set(head["method_approx"]) == {f"{f}.{k}" for f, k in leads.items()}
    assert head["model"] == {"test_accuracy": TRAIN["test_accuracy"]} and head["attack"] == {"seconds": ATTACK["seconds"]}
    assert set(head["unlearning"]) == {"seconds_per_request", "test_accuracy", "forget_accuracy"}

    toy = {**NUMBERS, "toy": (Number("leak", "toy leak"), Number("other", "not the lead"))}
    attack["toy"] = {"leak": 0.7, "other": 0.1}
    attack["compare"]["approx"]["toy"] = {"leak": 0.9}
    more = summary.headline_metrics(TRAIN, unlearning, attack, toy)
    assert more["toy"] == {"leak": 0.7} and more["method_approx"]["toy.leak"] == 0.9
    assert sum(map(len, more.values())) == count + 2
    many = {**attack, "compare": {f"m{i}": attack["compare"]["approx"] for i in range(10)}}
    assert sum(map(len, summary.headline_metrics(TRAIN, unlearning, many, toy).values())) <= 25


def test_the_committed_headline_file_is_evaluate_json_s_numbers_under_their_names():
    root = Path(__file__).resolve().parents[1] / "metrics"
    head = json.loads((root / "headline.json").read_text())
    evaluated = json.loads((root / "evaluate.json").read_text())
    assert 0 < sum(map(len, head.values())) <= 25
    assert all(evaluated[s][k] == v for s, section in head.items() for k, v in section.items())
    attack = json.loads((root / "attack.json").read_text())
    again = summary.headline_metrics(json.loads((root / "train.json").read_text()), evaluated["unlearning"], attack,
                                     NUMBERS)
    assert again == head
