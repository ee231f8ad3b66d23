"""The evaluate stage's algorithm: per-request results of every stage → the
headline numbers with intervals, and the report's content. Pure: tables in,
dicts and a `report.Report` out."""

from __future__ import annotations

import math

import pandas as pd

from .report import THREAT_MODELS, Report, interval
from .stats import mean_ci, sign_test, wilson_ci
from .tasks import QUALITY


def _interval(values, level: float) -> dict[str, float]:
    values = [float(v) for v in values if pd.notna(v)]
    mean, half = mean_ci(values, level)
    return {"mean": mean, "ci95_low": mean - half, "ci95_high": mean + half}


def headline(train: dict, unlearn_rows: pd.DataFrame, attack: dict, attack_rows: pd.DataFrame,
             level: float = 0.95) -> dict[str, dict[str, float]]:
    """One level of nesting, numbers only (NaN where undefined, e.g. an
    interval over one request, is left out so the JSON stays valid for DVC)."""
    out: dict[str, dict[str, float]] = {
        "model": {"test_accuracy": train["test_accuracy"], "pretrain_test_accuracy": train["pretrain_test_accuracy"]},
        "unlearning": {
            "requests": len(unlearn_rows),
            "seconds_per_request": float(unlearn_rows["seconds"].mean()),
            "test_accuracy": float(unlearn_rows["test_accuracy"].mean()),
            "forget_accuracy": float(unlearn_rows["forget_accuracy"].mean()),
            "retain_accuracy": float(unlearn_rows["retain_accuracy"].mean()),
        },
    }
    fr: dict[str, float] = {"requests": len(attack_rows)}
    metrics = ("psnr", "ssim", "mse") if "psnr" in attack_rows else ("numeric_mae_std", "categorical_accuracy")
    for m in metrics:
        ci = _interval(attack_rows[m], level)
        fr.update({f"{m}_mean": ci["mean"], f"{m}_ci95_low": ci["ci95_low"], f"{m}_ci95_high": ci["ci95_high"]})
    if "psnr" in attack_rows:
        gain = _interval(attack_rows["psnr"] - attack_rows["baseline_psnr"], level)
        fr.update({"baseline_psnr": float(attack_rows["baseline_psnr"].mean()), "psnr_gain_db": gain["mean"],
                   "psnr_gain_ci95_low": gain["ci95_low"]})
    if "label_accuracy" in attack_rows:  # classification: the labels feature recovery used
        fr["label_accuracy"] = float(attack_rows["label_accuracy"].mean())
    if "value_mae_std" in attack_rows:  # regression: the deleted records' target values
        ci = _interval(attack_rows["value_mae_std"], level)
        fr.update({"value_mae_std_mean": ci["mean"], "value_mae_std_ci95_low": ci["ci95_low"],
                   "value_mae_std_ci95_high": ci["ci95_high"],
                   "baseline_value_mae_std": float(attack_rows["baseline_value_mae_std"].mean())})
    out["feature_recovery"] = fr
    out["attack_cost"] = {"seconds": attack["seconds"],
                          "feature_recovery_seconds_per_request": float(attack_rows["seconds"].mean())}
    if "li_correct" in attack_rows:  # label inference attacks classifiers only
        hits, n = int(attack_rows["li_correct"].astype(bool).sum()), len(attack_rows)
        low, high = wilson_ci(hits, n, level)
        out["label_inference"] = {"accuracy": hits / n, "accuracy_ci95_low": low, "accuracy_ci95_high": high,
                                  "requests": n}
        li = attack["label_inference"]
        out["attack_cost"].update({
            "label_queries_per_request": float(attack_rows["li_queries"].mean()),
            "probe_queries": li["probe_queries"],
            "reference_queries": li.get("reference_queries", 0),  # θ₀'s outputs on the probes, once
            "label_inference_seconds": li["seconds"],
        })
    return {k: {m: float(v) for m, v in sec.items() if not (isinstance(v, float) and math.isnan(v))}
            for k, sec in out.items()}


def families(attack: dict, names) -> dict[str, dict[str, float]]:
    """Each attack family's numbers of unlearn.method's run as attack.json holds them, for the families in
    `names` (the registry's order); sub-sections and NaNs left out."""
    return {name: {k: float(v) for k, v in attack[name].items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)}
            for name in names if name in attack}


# The leakage table's numbers: column -> (family, key in its summary).
LEAKAGE = {
    "membership_auc": ("membership", "never_auc"),
    "membership_auc_ci95_low": ("membership", "never_auc_ci95_low"),
    "membership_auc_ci95_high": ("membership", "never_auc_ci95_high"),
    "tpr_at_1pct_fpr": ("membership", "never_tpr_at_1pct_fpr"),
    "tpr_at_0.1pct_fpr": ("membership", "never_tpr_at_0.1pct_fpr"),
    "retained_auc": ("membership", "retained_auc"),
    "lira_auc": ("membership", "never_lira_auc"),
    "best_chen_auc": ("membership", "never_auc_best_chen"),
    "one_model_auc": ("membership", "never_auc_one_model"),
    "reid_top1": ("compound", "reid_top1"),
    "reid_top5": ("compound", "reid_top5"),
    "chance_top1": ("compound", "chance_top1"),
    "psnr": ("feature_recovery", "psnr_mean"),
    "label_accuracy": ("label_inference", "accuracy"),
    "label_inference_seconds": ("label_inference", "seconds"),
    "label_queries_per_request": ("label_inference", "queries_per_request"),
    "probe_queries": ("label_inference", "probe_queries"),
    "membership_queries_per_candidate": ("membership", "queries_per_candidate"),
    "compound_queries_per_request": ("compound", "queries_per_request"),
    "feature_recovery_seconds": ("feature_recovery", "seconds"),
    "membership_seconds": ("membership", "seconds"),
    "membership_shadow_seconds": ("membership", "shadow_seconds"),
    "compound_seconds": ("compound", "seconds"),
}
LINKS = {"membership": "membership", "label": "label inference", "feature_recovery": "feature recovery"}


def leakage_table(attack: dict, main: str) -> pd.DataFrame:
    """One row per unlearning method (unlearn.method first, then the compared ones): membership, compound
    re-identification, PSNR, label accuracy and each family's seconds, as attack.json holds them; and the
    link that carries the compound attack (the best top-1 of a link alone)."""
    rows = []
    for method, run in {main: attack, **attack.get("compare", {})}.items():
        row = {"method": method}
        row.update({col: run.get(family, {}).get(key, math.nan) for col, (family, key) in LEAKAGE.items()})
        compound = run.get("compound", {})
        alone = {link: compound.get(f"{link}_top1", math.nan) for link in LINKS}
        row.update({f"{link}_top1": v for link, v in alone.items()})
        known = {k: v for k, v in alone.items() if v == v}
        best = max(known, key=known.get) if known else None
        row["carried_by"] = LINKS[best] if best and known[best] > row["chance_top1"] else "none above chance"
        rows.append(row)
    return pd.DataFrame(rows)


def leak_metric(rows: pd.DataFrame) -> str:
    """The feature-recovery score where higher means more leaked: PSNR on
    images, categorical accuracy of the decoded features on tabular rows."""
    return "psnr" if "psnr" in rows else "categorical_accuracy"


# What a certified method reports on each removal (unlearning.methods.REPORTS), averaged over the requests.
CERTIFICATE = ("gradient_residual", "residual_bound", "removal_budget", "within_budget", "removals_in_budget")


def methods_table(unlearn_rows: pd.DataFrame, method_rows: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """One row per unlearning method (in the order they ran): cost, efficacy
    and both attacks' success with their intervals, over the same requests."""
    leak, out = leak_metric(method_rows), []
    for name, attacked in method_rows.groupby("method", sort=False):
        un = unlearn_rows[unlearn_rows["method"] == name]
        fr = _interval(attacked[leak], level)
        n = len(attacked)
        labels = {}
        if "li_correct" in attacked:  # label inference attacks classifiers only
            hits = int(attacked["li_correct"].astype(bool).sum())
            low, high = wilson_ci(hits, n, level)
            labels = {"label_accuracy": hits / n, "label_accuracy_ci95_low": low, "label_accuracy_ci95_high": high}
        out.append({"method": name, "requests": n, "seconds_per_request": un["seconds"].mean(),
                    "forget_accuracy": un["forget_accuracy"].mean(), "test_accuracy": un["test_accuracy"].mean(),
                    "retrain_agreement_forget": un["retrain_agreement_forget"].mean(),
                    f"{leak}_mean": fr["mean"], f"{leak}_ci95_low": fr["ci95_low"], f"{leak}_ci95_high": fr["ci95_high"],
                    **labels, **{k: un[k].mean() for k in CERTIFICATE if k in un and un[k].notna().any()}})
    return pd.DataFrame(out)


def compare_methods(method_rows: pd.DataFrame, main: str, level: float = 0.95) -> dict[str, dict[str, float]]:
    """Did each compared method leak more than `main` on the same requests?
    Paired over requests: the mean difference of the feature-recovery score
    with its Student-t interval, and the label-inference hits that differ with
    an exact sign test. `*_leaked_more`: 1 (significantly more at `level`),
    -1 (significantly less) or 0 (no significant difference)."""
    leak = leak_metric(method_rows)
    base = method_rows[method_rows["method"] == main].set_index("request")
    out = {}
    for name, rows in method_rows[method_rows["method"] != main].groupby("method", sort=False):
        rows = rows.set_index("request").loc[base.index]
        diff = _interval(rows[leak] - base[leak], level)
        labels = {}
        if "li_correct" in rows:  # label inference attacks classifiers only
            mine, theirs = rows["li_correct"].astype(bool), base["li_correct"].astype(bool)
            more, less = int((mine & ~theirs).sum()), int((~mine & theirs).sum())
            p = sign_test(more, less)
            labels = {"label_accuracy_diff": float(mine.mean() - theirs.mean()), "label_hits_more": more,
                      "label_hits_fewer": less, "label_sign_test_p": p,
                      "labels_leaked_more": float((more > less) - (more < less)) if p < 1 - level else 0.0}
        out[f"{name}_vs_{main}"] = {
            f"{leak}_diff": diff["mean"], f"{leak}_diff_ci95_low": diff["ci95_low"],
            f"{leak}_diff_ci95_high": diff["ci95_high"],
            "features_leaked_more": float((diff["ci95_low"] > 0) - (diff["ci95_high"] < 0)),
            **labels, "requests": len(rows),
        }
    return out


SEED = "base.seed"
HEADLINE = ("feature_recovery.psnr_mean", "feature_recovery.ssim_mean", "feature_recovery.categorical_accuracy_mean",
            "label_inference.accuracy", "unlearning.test_accuracy", "unlearning.seconds_per_request")
# What a grid's tables show by default (`uia grid`, `uia table`): the paper's two, and membership.
GRID = ("feature_recovery.psnr_mean", "label_inference.accuracy", "membership.never_auc")


def over_seeds(runs: list[dict], metrics: tuple[str, ...] = HEADLINE, level: float = 0.95) -> pd.DataFrame:
    """Intervals over seeds: summary runs whose params differ only in
    base.seed form one setting (the newest run per seed counts); per setting
    and metric, the mean over seeds with its Student-t interval. `setting`
    names the params in which the settings differ ("all" when only one)."""
    groups: dict[tuple, dict[str, dict]] = {}
    for run in runs:  # newest first
        key = tuple(sorted((k, v) for k, v in run["params"].items() if k != SEED))
        groups.setdefault(key, {}).setdefault(run["params"].get(SEED, ""), run)
    varying = sorted({k for key in groups for k, v in key if any(dict(other).get(k) != v for other in groups)})
    rows = []
    for key, by_seed in groups.items():
        params = dict(key)
        setting = ", ".join(f"{k}={params.get(k, '')}" for k in varying) or "all"
        for m in metrics:
            values = [r["metrics"][m] for r in by_seed.values() if m in r["metrics"]]
            if not values:
                continue
            ci = _interval(values, level)
            rows.append({"setting": setting, "metric": m, "seeds": len(values), "mean": ci["mean"],
                         "ci_low": ci["ci95_low"], "ci_high": ci["ci95_high"],
                         "seed_list": " ".join(sorted((s for s, r in by_seed.items() if m in r["metrics"]), key=str))})
    return pd.DataFrame(rows, columns=["setting", "metric", "seeds", "mean", "ci_low", "ci_high", "seed_list"])


def defence_table(defend_rows: pd.DataFrame) -> pd.DataFrame:
    """Mean over requests per (defence, strength), in the order they ran."""
    agg = {"test_accuracy": "mean", "forget_accuracy": "mean", "psnr": "mean", "ssim": "mean",
           "label_correct": "mean", "request": "count"}
    agg = {c: how for c, how in agg.items() if c in defend_rows}  # label_correct: classifiers only
    for c in ("numeric_mae_std", "value_mae_std"):
        if c in defend_rows:
            agg[c] = "mean"
    agg.update({c: "first" for c in MEMBERSHIP_COLUMNS if c in defend_rows})  # pooled: one value a strength
    table = defend_rows.groupby(["defence", "strength"], sort=False).agg(agg).reset_index()
    return table.rename(columns={"label_correct": "label_accuracy", "request": "requests", **MEMBERSHIP_COLUMNS})


# The access table's columns (metrics/access.json keys, one row per level and method), in order.
ACCESS_COLUMNS = ("psnr_mean", "numeric_mae_std_mean", "value_mae_std_mean", "label_accuracy", "membership_auc",
                  "reid_top1",
                  "seconds_per_request", "queries_per_request", "probe_queries", "paper_hours_per_request")


def access_table(access: dict[str, dict[str, dict[str, float]]]) -> pd.DataFrame:
    """metrics/access.json as a table: level, dimension, value, method, served and ACCESS_COLUMNS
    (NaN where a level was not servable or a family does not report the key), in the order the levels ran."""
    rows = []
    for level, by_method in access.items():
        dimension, _, value = level.partition(":")
        for method, entry in by_method.items():
            rows.append({"level": level, "dimension": dimension, "value": value or level, "method": method,
                         "served": bool(entry.get("served", 1.0)),
                         **{c: entry.get(c, float("nan")) for c in ACCESS_COLUMNS}})
    return pd.DataFrame(rows).dropna(axis=1, how="all")


def access_headline(table: pd.DataFrame) -> dict[str, dict[str, dict[str, float]]]:
    """The access table's numbers for evaluate.json and the summary run: {level: {method: {column: value}}}."""
    out: dict = {}
    for row in table.to_dict("records"):
        out.setdefault(row["level"], {})[row["method"]] = {
            c: float(row[c]) for c in ACCESS_COLUMNS if c in row and row[c] == row[c]}
    return out


# Membership's pooled numbers under a defence (defend.csv) -> the defence table's columns.
MEMBERSHIP_COLUMNS = {"membership.never_auc": "membership_auc",
                      "membership.never_tpr_at_1pct_fpr": "membership_tpr_at_1pct_fpr",
                      "membership.retained_auc": "membership_retained_auc"}


STRENGTH = {"noise": "σ (× ‖θ_u − θ‖)", "prune": "rate", "finetune": "epochs on D_u \\ X",
            "noisy_unlearning": "σ (× C)"}


def build_report(setting: dict, head: dict, defences: pd.DataFrame | None, figures: dict[str, str],
                 small_sample: int = 30, level: float = 0.95, methods: pd.DataFrame | None = None,
                 comparisons: dict[str, dict[str, float]] | None = None,
                 families: dict[str, dict[str, float]] | None = None,
                 leakage: pd.DataFrame | None = None, grids: dict[str, pd.DataFrame] | None = None,
                 access: pd.DataFrame | None = None) -> Report:
    """The report: setting, headline table, defences, figures, threat models, caveats.
    `families` holds each attack family's own numbers (see `families`), tabulated as they are.
    `setting` holds the run's description (dataset, model, method, N, k, requests, ...);
    `figures` maps a figure's file name to its caption; `grids` each grid's tables as `uia table` wrote
    them (grids/<name>.csv: a column "metric", the row param's, one per column value); `access` the access
    stage's table (`access_table`)."""
    r = Report("Unlearning inversion: what the deletion leaked")
    pct = f"{level:.0%}"
    r.heading("Setting")
    r.bullets([f"{k}: {v}" for k, v in setting.items()])
    r.heading("Headline results")
    fr, li, un, cost = head["feature_recovery"], head.get("label_inference"), head["unlearning"], head["attack_cost"]
    quality = QUALITY.get(setting.get("task", "classification"), "accuracy")
    rows = [[f"θ test {quality}", head["model"]["test_accuracy"], ""],
            [f"θ_u test {quality} (mean)", un["test_accuracy"], ""],
            [f"θ_u forget {quality} (mean)", un.get("forget_accuracy", math.nan), ""],
            ["unlearning seconds / request", un["seconds_per_request"], ""]]
    if "psnr_mean" in fr:
        rows += [["feature recovery PSNR (dB)", fr["psnr_mean"], _ci(fr, "psnr")],
                 ["feature recovery SSIM", fr["ssim_mean"], _ci(fr, "ssim")],
                 ["mean-image baseline PSNR (dB)", fr["baseline_psnr"], ""]]
    else:
        rows += [["feature recovery numeric MAE (sd)", fr["numeric_mae_std_mean"], _ci(fr, "numeric_mae_std")],
                 ["feature recovery categorical accuracy", fr["categorical_accuracy_mean"],
                  _ci(fr, "categorical_accuracy")]]
    if "value_mae_std_mean" in fr:
        rows += [["value inference MAE (sd)", fr["value_mae_std_mean"], _ci(fr, "value_mae_std")],
                 ["training-mean baseline MAE (sd)", fr["baseline_value_mae_std"], ""]]
    rows += [["attack seconds (every family)", cost["seconds"], ""]]
    if li is not None:
        rows += [["label inference accuracy", li["accuracy"],
                  f"{interval(li['accuracy_ci95_low'], li['accuracy_ci95_high'])} (Wilson)"],
                 ["label queries / request (+ probe queries)", cost["label_queries_per_request"],
                  f"+ {cost['probe_queries']:.0f} once"]]
    r.table(["quantity", "value", f"{pct} interval"], rows)
    if methods is not None and len(methods) > 1:
        _methods_section(r, methods, comparisons or {}, pct)
    if leakage is not None and len(leakage) and leakage["membership_auc"].notna().any():
        _leakage_section(r, leakage, pct)
    if defences is not None and len(defences):
        r.heading("Defences")
        r.para("Each defence at each strength on the first requests' θ_u, then every attack again; means over "
               "requests. Strength: " + "; ".join(f"{k}: {v}" for k, v in STRENGTH.items()) + "."
               + (" Membership: the population attack over these requests and up to 20 deleted records a question "
                  "of audit pairs released through the same defence, by an attacker whose shadows know nothing "
                  "of it." if "membership_auc" in defences else ""))
        shown = {"psnr": "PSNR (dB)", "ssim": "SSIM", "value_mae_std": "value MAE (sd)", "label_accuracy": "label acc.",
                 **{c: c.replace("_", " ") for c in MEMBERSHIP_COLUMNS.values()}}
        extra = [c for c in shown if c in defences]
        r.table(["defence", "strength", f"test {quality}", f"forget {quality}", *(shown[c] for c in extra), "requests"],
                [[row["defence"], row["strength"], row["test_accuracy"], row["forget_accuracy"],
                  *(row[c] for c in extra), int(row["requests"])]
                 for _, row in defences.iterrows()])
    if access is not None and len(access):
        _access_section(r, access)
    if grids:
        r.heading("Grids")
        r.para("Experiments run by `uia grid`, tabulated from their MLflow summary runs by `uia table`: the mean "
               f"over seeds with its {pct} Student-t interval (the mean alone for one seed); grids/<name>.md says "
               "how many experiments and seeds each holds.")
        for name, frame in grids.items():
            for metric, table in frame.groupby("metric", sort=False):
                table = table.drop(columns="metric").dropna(axis=1, how="all")
                r.heading(f"{name}: {metric}", 3)
                r.table(list(table.columns), table.values.tolist())
    r.heading("Figures")
    for name, caption in figures.items():
        r.figure(name, caption)
    r.heading("Threat models")
    r.bullets([f"{name}: {text}" for name, text in THREAT_MODELS.items()])
    r.heading("Caveats")
    caveats = []
    n = int(fr["requests"])
    if n < small_sample and "psnr_ci95_high" in fr:
        caveats.append(f"Feature recovery rests on {n} requests: the {pct} interval of the mean PSNR is "
                       f"{fr['psnr_ci95_high'] - fr['psnr_ci95_low']:.3g} dB wide.")
    elif n < 2:
        caveats.append(f"Feature recovery rests on {n} request: no interval.")
    if li is not None and li["requests"] < small_sample:
        caveats.append(f"Label inference rests on {int(li['requests'])} requests: the {pct} Wilson interval is "
                       f"{li['accuracy_ci95_high'] - li['accuracy_ci95_low']:.3g} wide.")
    if defences is not None and len(defences) and defences["requests"].max() < small_sample:
        caveats.append(f"Each defence point averages {int(defences['requests'].max())} requests; differences "
                       "between nearby strengths are within noise.")
    if defences is not None and "baseline_psnr" in fr and (defences["psnr"] < fr["baseline_psnr"]).any():
        caveats.append("Some defended models score below the mean-image baseline PSNR: the attack failed there "
                       "(the defence moved θ_u by far more than the unlearning update, which drowns it), and "
                       "an attacker who models the defence may do better.")
    if methods is None or len(methods) < 2:
        caveats.append("One unlearning method only: list others in unlearn.compare to attack them on the same "
                       "requests, or compare the summary runs of two experiments in MLflow (see the README).")
    r.bullets(caveats)
    if families:  # long: last, as an appendix
        r.heading("Every attack family")
        r.para("Each family of the attack registry on unlearn.method's requests, its numbers as the attack stage "
               f"wrote them (metrics/attack.json), a quantity's {pct} interval beside it where the stage gave one.")
        r.table(["family", "quantity", "value", f"{pct} interval"],
                [[name, *row] for name, numbers in families.items() for row in _with_intervals(numbers)])
    return r


def _with_intervals(numbers: dict[str, float]) -> list[list]:
    """(quantity, value, interval) rows: a key's `<key>_ci95_low` and `_high` (or those of `<key>` less
    `_mean`) folded into its row's interval."""
    intervals, folded = {}, set()
    for key in numbers:
        base = key.removesuffix("_mean")
        low, high = f"{base}_ci95_low", f"{base}_ci95_high"
        if low in numbers and high in numbers:
            intervals[key] = interval(numbers[low], numbers[high])
            folded |= {low, high}
    return [[key, f"{value:.3g}", intervals.get(key, "")] for key, value in numbers.items() if key not in folded]


def _methods_section(r: Report, methods: pd.DataFrame, comparisons: dict, pct: str) -> None:
    leak = "psnr" if "psnr_mean" in methods else "categorical_accuracy"
    label = "PSNR (dB)" if leak == "psnr" else "categorical acc."
    r.heading("Unlearning methods side by side")
    r.para("Every method unlearns the same requests from the same θ and both attacks run against each alike "
           "(`unlearn.compare`). Agreement: θ_u's predictions on the forgotten samples against retraining without them.")
    labels = "label_accuracy" in methods  # label inference attacks classifiers only
    r.table(["method", "s / request", "forget acc.", "test acc.", "agreement with retrain", label,
             f"{pct} interval", *(["label acc.", f"{pct} interval"] if labels else [])],
            [[row["method"], row["seconds_per_request"], row["forget_accuracy"], row["test_accuracy"],
              row["retrain_agreement_forget"], row[f"{leak}_mean"],
              interval(row[f'{leak}_ci95_low'], row[f'{leak}_ci95_high']),
              *([row["label_accuracy"], interval(row['label_accuracy_ci95_low'], row['label_accuracy_ci95_high'])]
                if labels else [])]
             for _, row in methods.iterrows()])
    verdict = {1.0: "more", -1.0: "less", 0.0: "no significant difference"}
    lines = [f"{row['method']}: removal certificate — gradient residual {row['gradient_residual']:.3g}, Guo et al.'s "
             f"bound {row['residual_bound']:.3g} against the budget σε/c = {row['removal_budget']:.3g}; "
             f"{row['within_budget']:.0%} of removals within it, each covering {row['removals_in_budget']:.3g} such "
             "removals before retraining is due"
             for _, row in methods.iterrows() if pd.notna(row.get("residual_bound", math.nan))]
    for key, c in comparisons.items():
        other, main = key.split("_vs_")
        line = (f"Did {other} leak more than {main}? Features: {verdict[c['features_leaked_more']]} "
                f"({label} {c[f'{leak}_diff']:+.3g}, paired {pct} interval "
                f"{interval(c.get(f'{leak}_diff_ci95_low', math.nan), c.get(f'{leak}_diff_ci95_high', math.nan))} "
                f"over {int(c['requests'])} requests).")
        if "labels_leaked_more" in c:
            line += (f" Labels: {verdict[c['labels_leaked_more']]} (found in {int(c['label_hits_more'])} requests "
                     f"where {main} was not, missed in {int(c['label_hits_fewer'])} where {main} found it; sign "
                     f"test p = {c['label_sign_test_p']:.3g}).")
        lines.append(line)
    r.bullets(lines)


def _leakage_section(r: Report, t: pd.DataFrame, pct: str) -> None:
    r.heading("Membership and re-identification, method by method")
    r.para("Membership: was the candidate deleted or never a member? Chen et al.'s population attack with the "
           "primary feature (AUC with its bootstrap interval, TPR at 1% and 0.1% FPR), the same for deleted vs "
           "retained in D_u, U-LiRA, Chen et al.'s best feature and their one-model baseline. Re-identification: "
           "membership, label inference and feature recovery chained to find the deleted record among the "
           "candidates (top-1, against chance); the link that carries it is the best link alone.")
    r.table(["method", "AUC", f"{pct} interval", "TPR@1%", "TPR@0.1%", "AUC retained", "U-LiRA AUC",
             "Chen best", "one model", "re-id top-1", "chance", "carried by", "PSNR (dB)", "label acc."],
            [[row["method"], row["membership_auc"],
              interval(row['membership_auc_ci95_low'], row['membership_auc_ci95_high']),
              row["tpr_at_1pct_fpr"], row["tpr_at_0.1pct_fpr"], row["retained_auc"], row["lira_auc"],
              row["best_chen_auc"], row["one_model_auc"], row["reid_top1"], row["chance_top1"], row["carried_by"],
              row["psnr"], row["label_accuracy"]] for _, row in t.iterrows()])
    r.para("Attacker cost: seconds of each family on all requests (membership: with its shadow pairs' "
           "seconds; feature recovery queries nothing, it holds both models) and queries of the served models.")
    r.table(["method", "label inference s", "queries / request (+ probes)", "feature recovery s",
             "membership s (shadows)", "queries / candidate", "compound s", "queries / request"],
            [[row["method"], row["label_inference_seconds"],
              f"{row['label_queries_per_request']:.3g} (+ {row['probe_queries']:.0f})"
              if pd.notna(row["label_queries_per_request"]) else math.nan, row["feature_recovery_seconds"],
              f"{row['membership_seconds']:.3g} ({row['membership_shadow_seconds']:.3g})",
              row["membership_queries_per_candidate"], row["compound_seconds"], row["compound_queries_per_request"]]
             for _, row in t.iterrows()])


def _ci(section: dict, m: str) -> str:
    low, high = section.get(f"{m}_ci95_low"), section.get(f"{m}_ci95_high")
    return "" if low is None else interval(low, high)


_ACCESS_HEADERS = {"psnr_mean": "PSNR (dB)", "numeric_mae_std_mean": "numeric MAE (sd)",
                   "label_accuracy": "label acc.", "membership_auc": "membership AUC", "reid_top1": "re-id top-1",
                   "seconds_per_request": "s / request", "queries_per_request": "queries / request",
                   "probe_queries": "probe queries (once)",
                   "paper_hours_per_request": "h / request at the paper's scale"}


def _access_section(r: Report, t: pd.DataFrame) -> None:
    r.heading("What a weaker attacker gets")
    r.para("Every attack family again with less than the paper's attacker holds, one access level at a time "
           "(attack.access), on the first requests of each method; means over those requests. layers: only the "
           "last L layers' update; precision: the released models rounded; staleness: θ_u published after R "
           "further deletions (or T fine-tuning steps); knowledge: N guessed, θ₀ unknown, labels only as "
           "inferred; queries: label-inference queries per request; output: top-k or label-only outputs. "
           "Membership: the population attack on the same requests and audit pairs released alike. The last "
           "column prices the reference's feature recovery (10,000 steps × 5 restarts a request) at the step "
           "cost measured here, on this run's device. Not servable: the server could not release at that level "
           "(its weights diverged, or its method cannot serve further requests there; metrics/access.csv says "
           "which).")
    columns = [c for c in _ACCESS_HEADERS if c in t]
    r.table(["level", "method", *(_ACCESS_HEADERS[c] for c in columns)],
            [[row["level"], row["method"], *(row[c] if row["served"] else "not servable" if i == 0 else ""
                                             for i, c in enumerate(columns))] for _, row in t.iterrows()])
