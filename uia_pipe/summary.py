"""The evaluate stage's algorithm: per-request results of every stage → the headline numbers with
intervals, and the report's content. Every family's numbers reach the tables through what it declares
(`attacks.protocol.Number`, passed in as `numbers`: family -> its declarations, in registry order); nothing
here names a family. Pure: tables in, dicts and a `report.Report` out."""

from __future__ import annotations

import math

import pandas as pd

from .report import Report, interval
from .stats import mean_ci, sign_test, wilson_ci
from .tasks import QUALITY


def _interval(values, level: float) -> dict[str, float]:
    values = [float(v) for v in values if pd.notna(v)]
    mean, half = mean_ci(values, level)
    return {"mean": mean, "ci95_low": mean - half, "ci95_high": mean + half}


def _base(key: str) -> str:
    """The stem of a key's interval keys: `<stem>_ci95_low/_high` (psnr_mean -> psnr)."""
    return key.removesuffix("_mean")


def _over_requests(n, values: pd.Series, level: float) -> dict[str, float]:
    """The mean of a per-request column and its interval as `n` declares it, under `n.key`."""
    stem = _base(n.key)
    if n.interval == "wilson":
        hits, count = int(values.astype(bool).sum()), len(values)
        low, high = wilson_ci(hits, count, level)
        return {n.key: hits / count, f"{stem}_ci95_low": low, f"{stem}_ci95_high": high}
    ci = _interval(values, level)
    return {n.key: ci["mean"], f"{stem}_ci95_low": ci["ci95_low"], f"{stem}_ci95_high": ci["ci95_high"]}


def numbers_only(section: dict) -> dict[str, float]:
    """Numbers of a summary, NaNs, booleans and sub-sections left out (the JSON stays valid for DVC)."""
    return {k: float(v) for k, v in section.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)}


def headline(train: dict, unlearn_rows: pd.DataFrame, attack: dict, attack_rows: pd.DataFrame, numbers: dict,
             level: float = 0.95) -> dict[str, dict[str, float]]:
    """One level of nesting, numbers only: θ and θ_u's quality, the unlearning's cost, the attack stage's
    seconds, and each family's numbers as attack.json holds them, those declared with a per-request column
    and an interval recomputed over the requests at `level`, with the number of requests."""
    out: dict[str, dict[str, float]] = {
        "model": {"test_accuracy": train["test_accuracy"], "pretrain_test_accuracy": train["pretrain_test_accuracy"]},
        "unlearning": {
            "requests": len(unlearn_rows),
            "seconds_per_request": float(unlearn_rows["seconds"].mean()),
            "test_accuracy": float(unlearn_rows["test_accuracy"].mean()),
            "forget_accuracy": float(unlearn_rows["forget_accuracy"].mean()),
            "retain_accuracy": float(unlearn_rows["retain_accuracy"].mean()),
        },
        "attack": {"seconds": attack["seconds"]},
    }
    for family, declared in numbers.items():
        if family not in attack:
            continue
        section = dict(attack[family])
        for n in declared:
            column = f"{family}.{n.column}"
            if n.column and n.interval and column in attack_rows:
                section.update(_over_requests(n, attack_rows[column].dropna(), level))
        section.setdefault("requests", len(attack_rows))
        out[family] = section
    return {k: numbers_only(sec) for k, sec in out.items()}


# The most numbers `dvc exp show` gets (metrics/headline.json, the one file dvc.yaml declares as metrics).
HEADLINE_LIMIT = 25


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def lead(section: dict, declared) -> str | None:
    """A family's lead: the first number it declares that its summary (`section`) reports (the first
    declared, unless the run's task leaves it out, e.g. PSNR on a tabular record)."""
    return next((n.key for n in declared if _number(section.get(n.key))), None)


def headline_metrics(train: dict, unlearning: dict, attack: dict, numbers: dict,
                     limit: int = HEADLINE_LIMIT) -> dict[str, dict[str, float]]:
    """metrics/headline.json, what `dvc exp show` compares across experiments: θ's test accuracy
    (train.json), unlearn.method's cost and utility (`unlearning`: seconds_per_request, test_accuracy,
    forget_accuracy), the attack stage's seconds, each family's lead (`lead`) for unlearn.method (attack.json)
    and for each compared method (attack.json's compare.<method>). Named as in evaluate.json (`model.`,
    `unlearning.`, `attack.`, `<family>.<key>`, `method_<name>.<family>.<key>`): one level of nesting, numbers
    only. At most `limit` numbers: compared methods beyond it are left out (evaluate.json holds them all)."""
    # the leads first: `dvc exp show` collapses the columns that do not fit its terminal from the right
    out: dict[str, dict[str, float]] = {}
    leads = {family: lead(attack.get(family, {}), declared) for family, declared in numbers.items()}
    for family, key in leads.items():
        if key is not None:
            out[family] = {key: attack[family][key]}
    rest = {"model": {"test_accuracy": train["test_accuracy"]},
            "unlearning": {k: unlearning[k] for k in ("seconds_per_request", "test_accuracy", "forget_accuracy")},
            "attack": {"seconds": attack["seconds"]}}
    for method, sections in attack.get("compare", {}).items():
        row = {f"{family}.{key}": sections[family][key] for family, key in leads.items()
               if key is not None and _number(sections.get(family, {}).get(key))}
        if row and sum(map(len, [*out.values(), *rest.values()])) + len(row) <= limit:
            out[f"method_{method}"] = row
    out.update(rest)
    out = {name: {k: float(v) for k, v in section.items() if _number(v)} for name, section in out.items()}
    assert sum(map(len, out.values())) <= limit, f"headline: more than {limit} numbers"
    return out


def by_method(attack: dict, main: str) -> dict[str, dict]:
    """Each method's attack.json sections: unlearn.method's at the top, each compared one's under compare."""
    return {main: attack, **attack.get("compare", {})}


# The unlearning challenge's numbers of a method (attack.json `epsilon`, `epsilon_control`: evaluation.epsilon).
EPSILON = {"forget_score": "ε forget score", "epsilon_median": "median ε", "epsilon_q90": "ε 90th pct.",
           "final_score": "final score"}

# What a certified method reports on each removal (unlearning.methods.REPORTS), averaged over the requests.
CERTIFICATE = ("gradient_residual", "residual_bound", "removal_budget", "within_budget", "removals_in_budget")


def methods_table(unlearn_rows: pd.DataFrame, method_rows: pd.DataFrame, attack: dict, main: str, numbers: dict,
                  level: float = 0.95) -> pd.DataFrame:
    """One row per unlearning method (in the order they ran): its cost and efficacy, and every family's
    numbers declared for the methods table as "<family>.<key>" — over the same requests, with their
    intervals (`<family>.<stem>_ci95_low/_high`)."""
    runs, out = by_method(attack, main), []
    for name, attacked in method_rows.groupby("method", sort=False):
        un = unlearn_rows[unlearn_rows["method"] == name]
        row = {"method": name, "requests": len(attacked), "seconds_per_request": un["seconds"].mean(),
               "forget_accuracy": un["forget_accuracy"].mean(), "test_accuracy": un["test_accuracy"].mean(),
               "retrain_agreement_forget": un["retrain_agreement_forget"].mean()}
        for family, declared in numbers.items():
            summary = runs.get(name, {}).get(family, {})
            for n in declared:
                if "methods" not in n.tables:
                    continue
                column = f"{family}.{n.column}"
                if n.column and n.interval and column in attacked:
                    row.update({f"{family}.{k}": v for k, v in
                                _over_requests(n, attacked[column].dropna(), level).items()})
                elif n.key in summary:
                    stem = _base(n.key)
                    row.update({f"{family}.{k}": summary[k] for k in (n.key, f"{stem}_ci95_low", f"{stem}_ci95_high")
                                if k in summary})
        row.update({k: un[k].mean() for k in CERTIFICATE if k in un and un[k].notna().any()})
        row.update({f"epsilon.{k}": v for k, v in runs.get(name, {}).get("epsilon", {}).items() if k in EPSILON})
        out.append(row)
    return pd.DataFrame(out)


def compare_methods(method_rows: pd.DataFrame, main: str, numbers: dict,
                    level: float = 0.95) -> dict[str, dict[str, float]]:
    """Did each compared method leak more than `main` on the same requests? Paired over requests, for every
    number a family declares for the methods table with a per-request column: a mean's difference with its
    Student-t interval, or, for a proportion (Wilson), the hits that differ with an exact sign test.
    `<family>.<key>_leaked_more`: 1 (significantly more leaked at `level`), -1 (less) or 0 (no significant
    difference), read in the number's direction (`higher_leaks`)."""
    base = method_rows[method_rows["method"] == main].set_index("request")
    out = {}
    for name, rows in method_rows[method_rows["method"] != main].groupby("method", sort=False):
        rows = rows.set_index("request").loc[base.index]
        entry: dict[str, float] = {}
        for family, declared in numbers.items():
            for n in declared:
                column, key = f"{family}.{n.column}", f"{family}.{n.key}"
                if "methods" not in n.tables or not (n.column and n.interval) or column not in rows:
                    continue
                sign = 1 if n.higher_leaks else -1
                if n.interval == "wilson":
                    mine, theirs = rows[column].astype(bool), base[column].astype(bool)
                    more, less = int((mine & ~theirs).sum()), int((~mine & theirs).sum())
                    p = sign_test(more, less)
                    entry.update({f"{key}_diff": float(mine.mean() - theirs.mean()), f"{key}_hits_more": more,
                                  f"{key}_hits_fewer": less, f"{key}_sign_test_p": p,
                                  f"{key}_leaked_more": sign * float((more > less) - (more < less)) if p < 1 - level
                                  else 0.0})
                else:
                    diff = _interval(rows[column] - base[column], level)
                    if math.isnan(diff["mean"]):
                        continue
                    entry.update({f"{key}_diff": diff["mean"], f"{key}_diff_ci95_low": diff["ci95_low"],
                                  f"{key}_diff_ci95_high": diff["ci95_high"],
                                  f"{key}_leaked_more": sign * float((diff["ci95_low"] > 0) - (diff["ci95_high"] < 0))})
        out[f"{name}_vs_{main}"] = {**entry, "requests": len(rows)}
    return out


def method_sections(methods: pd.DataFrame) -> dict[str, dict[str, float]]:
    """The methods table for evaluate.json: `method_<name>` -> its numbers (one level of nesting)."""
    return {f"method_{row.pop('method')}": numbers_only(row) for row in methods.to_dict("records")}


def declared(numbers: dict, table: str) -> dict[str, str]:
    """"<family>.<key>" -> display name of every number declared for `table` ("defence", "access", "figure")."""
    return {f"{family}.{n.key}": f"{family.replace('_', ' ')}: {n.name}"
            for family, ns in numbers.items() for n in ns if table in n.tables}


def defence_table(defend: dict[str, dict[str, float]], defend_rows: pd.DataFrame) -> pd.DataFrame:
    """defend.json as a table, one row per (defence, strength) in the order they ran, with the requests each
    averages (defend.csv)."""
    counts = defend_rows.groupby(["defence", "strength"], sort=False)["request"].count()
    rows = []
    for (name, strength), n in counts.items():
        rows.append({"defence": name, "strength": strength, "test_accuracy": math.nan, "forget_accuracy": math.nan,
                     **defend.get(f"{name}:{strength:g}", {}), "requests": n})  # NaN: left out of defend.json
    return pd.DataFrame(rows)


# The access stage's own numbers (its effort), beside the families' (metrics/access.json).
ACCESS_EFFORT = {"seconds_per_request": "s / request", "queries_per_request": "queries / request",
                 "probe_queries": "probe queries (once)", "paper_hours_per_request": "h / request at the paper's scale"}


def access_table(access: dict[str, dict[str, dict[str, float]]]) -> pd.DataFrame:
    """metrics/access.json as a table: level, dimension, value, method, served and every number of the
    entry (NaN where a level was not servable or a family does not report the key), in the order the levels
    ran."""
    rows = []
    for level, methods in access.items():
        dimension, _, value = level.partition(":")
        for method, entry in methods.items():
            rows.append({"level": level, "dimension": dimension, "value": value or level, "method": method,
                         "served": bool(entry.get("served", 1.0)), **{k: v for k, v in entry.items() if k != "served"}})
    return pd.DataFrame(rows).dropna(axis=1, how="all")


def access_headline(table: pd.DataFrame) -> dict[str, dict[str, dict[str, float]]]:
    """The access table's numbers for evaluate.json and the summary run: {level: {method: {column: value}}}."""
    skip = {"level", "dimension", "value", "method", "served", "steps_per_request"}
    out: dict = {}
    for row in table.to_dict("records"):
        out.setdefault(row["level"], {})[row["method"]] = {
            c: float(v) for c, v in row.items() if c not in skip and isinstance(v, float) and v == v}
    return out


SEED = "base.seed"


def over_seeds(runs: list[dict], metrics: tuple[str, ...], level: float = 0.95) -> pd.DataFrame:
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




STRENGTH = {"noise": "σ (× ‖θ_u − θ‖)", "prune": "rate", "finetune": "epochs on D_u \\ X",
            "noisy_unlearning": "σ (× C)"}


def _label(family: str) -> str:
    return family.replace("_", " ")


def _interval_of(section: dict, key: str) -> str:
    stem = _base(key)
    low, high = section.get(f"{stem}_ci95_low", math.nan), section.get(f"{stem}_ci95_high", math.nan)
    return "" if low != low or high != high else interval(low, high)


def _with_interval(section: dict, key: str) -> str:
    value = section.get(key, math.nan)
    if value != value:
        return ""
    folded = _interval_of(section, key)
    return f"{value:.3g}" + (f" {folded}" if folded else "")


def build_report(setting: dict, head: dict, numbers: dict, threats: dict[str, str], figures: dict[str, str],
                 small_sample: int = 30, level: float = 0.95, defences: pd.DataFrame | None = None,
                 methods: pd.DataFrame | None = None, comparisons: dict[str, dict[str, float]] | None = None,
                 grids: dict[str, pd.DataFrame] | None = None, access: pd.DataFrame | None = None) -> Report:
    """The report: setting, headline table, methods side by side, defences, access levels, grids, figures,
    threat models, caveats and every family's numbers. `setting` holds the run's description (dataset,
    model, method, N, k, requests, ...); `head` evaluate.json's sections (`headline`); `numbers` each family's
    declarations; `threats` each family's threat model; `figures` maps a figure's file name to its caption;
    `grids` each grid's tables as `uia table` wrote them (grids/<name>.csv: a column "metric", the row
    param's, one per column value); `access` the access stage's table (`access_table`)."""
    r = Report("Unlearning inversion: what the deletion leaked")
    pct = f"{level:.0%}"
    families = [f for f in numbers if f in head]
    r.heading("Setting")
    r.bullets([f"{k}: {v}" for k, v in setting.items()])
    r.heading("Headline results")
    un = head["unlearning"]
    quality = QUALITY.get(setting.get("task", "classification"), "accuracy")
    rows = [[f"θ test {quality}", head["model"]["test_accuracy"], "", ""],
            [f"θ_u test {quality} (mean)", un["test_accuracy"], "", ""],
            [f"θ_u forget {quality} (mean)", un.get("forget_accuracy", math.nan), "", ""],
            ["unlearning seconds / request", un["seconds_per_request"], "", ""]]
    for family in families:
        section = head[family]
        rows += [[f"{_label(family)}: {n.name}", section[n.key], _interval_of(section, n.key),
                  section.get(n.baseline, "") if n.baseline else ""]
                 for n in numbers[family] if "headline" in n.tables and n.key in section]
    rows += [["attack seconds (every family)", head["attack"]["seconds"], "", ""]]
    r.table(["quantity", "value", f"{pct} interval", "baseline guess"], rows)
    if methods is not None and len(methods) > 1:
        _methods_section(r, methods, comparisons or {}, numbers, pct, quality, head.get("epsilon_control"))
    if defences is not None and len(defences):
        r.heading("Defences")
        r.para("Each defence at each strength on the first requests' θ_u, then every attack family again (each "
               "with its sweep settings); means over requests, pooled numbers over the family's own candidates, "
               "which are released through the same defence. Strength: "
               + "; ".join(f"{k}: {v}" for k, v in STRENGTH.items()) + ".")
        shown = {c: name for c, name in declared(numbers, "defence").items() if c in defences}
        r.table(["defence", "strength", f"test {quality}", f"forget {quality}", *shown.values(), "requests"],
                [[row["defence"], row["strength"], row["test_accuracy"], row["forget_accuracy"],
                  *(row[c] for c in shown), int(row["requests"])] for _, row in defences.iterrows()])
    if access is not None and len(access):
        _access_section(r, access, declared(numbers, "access"))
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
    r.bullets([f"{_label(name)}: {text}" for name, text in threats.items() if name in families])
    r.heading("Caveats")
    r.bullets(_caveats(head, numbers, families, defences, methods, small_sample, pct))
    r.heading("Every attack family")
    r.para("Each family of the attack registry on unlearn.method's requests, its numbers as the attack stage "
           f"wrote them (metrics/attack.json), a quantity's {pct} interval beside it where there is one.")
    r.table(["family", "quantity", "value", f"{pct} interval"],
            [[_label(name), *row] for name in families for row in _with_intervals(head[name])])
    return r


def _caveats(head: dict, numbers: dict, families: list[str], defences, methods, small_sample: int,
             pct: str) -> list[str]:
    out = []
    for family in families:
        section = head[family]
        n_requests = int(section.get("requests", 0))
        for n in numbers[family]:
            stem = _base(n.key)
            if "headline" not in n.tables or n.interval is None or f"{stem}_ci95_high" not in section:
                continue
            if n_requests < small_sample:
                out.append(f"{_label(family)}'s {n.name} rests on {n_requests} requests: its {pct} interval is "
                           f"{section[f'{stem}_ci95_high'] - section[f'{stem}_ci95_low']:.3g} wide.")
            break  # a family's lead number speaks for its sample
    if defences is not None and len(defences) and defences["requests"].max() < small_sample:
        out.append(f"Each defence point averages {int(defences['requests'].max())} requests; differences "
                   "between nearby strengths are within noise.")
    for family in families:
        for n in numbers[family]:
            column, guess = f"{family}.{n.key}", head[family].get(n.baseline) if n.baseline else None
            if defences is None or guess is None or column not in defences or "defence" not in n.tables:
                continue
            worse = defences[column] < guess if n.higher_leaks else defences[column] > guess
            if worse.any():
                out.append(f"Some defended models leave {_label(family)}'s {n.name} worse than its baseline guess "
                           f"({guess:.3g}): the attack failed there (the defence moved θ_u by far more than the "
                           "unlearning update, which drowns it), and an attacker who models the defence may do "
                           "better.")
    if methods is None or len(methods) < 2:
        out.append("One unlearning method only: list others in unlearn.compare to attack them on the same "
                   "requests, or compare the summary runs of two experiments in MLflow (see the README).")
    return out


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


def _methods_section(r: Report, methods: pd.DataFrame, comparisons: dict, numbers: dict, pct: str,
                     quality: str, control: dict | None = None) -> None:
    r.heading("Unlearning methods side by side")
    r.para("Every method unlearns the same requests from the same θ and every attack family runs against each "
           "alike (`unlearn.compare`); a number's interval in brackets. Agreement: θ_u's predictions on the "
           "forgotten samples against retraining without them.")
    shown = {c: name for c, name in declared(numbers, "methods").items() if c in methods}
    shown.update({f"epsilon.{k}": name for k, name in EPSILON.items() if f"epsilon.{k}" in methods})
    r.table(["method", "s / request", f"forget {quality}", f"test {quality}", "agreement with retrain",
             *shown.values()],
            [[row["method"], row["seconds_per_request"], row["forget_accuracy"], row["test_accuracy"],
              row["retrain_agreement_forget"], *(_with_interval(row, c) for c in shown)]
             for row in methods.to_dict("records")])
    if control:
        r.para(f"ε: the unlearning challenge's per-example ε over a forget set of {int(control['forget_examples'])} "
               f"records, {int(control['models'])} models unlearned against as many retrained (attack.epsilon); "
               "a forget score of 1 is indistinguishable from retraining. The control, retrained against other "
               f"retrained models, the best any method can score at this M: forget score "
               f"{control['forget_score']:.3g}, median ε {control['epsilon_median']:.3g}.")
    verdict = {1.0: "more", -1.0: "less", 0.0: "no significant difference"}
    lines = [f"{row['method']}: removal certificate — gradient residual {row['gradient_residual']:.3g}, Guo et al.'s "
             f"bound {row['residual_bound']:.3g} against the budget σε/c = {row['removal_budget']:.3g}; "
             f"{row['within_budget']:.0%} of removals within it, each covering {row['removals_in_budget']:.3g} such "
             "removals before retraining is due"
             for _, row in methods.iterrows() if pd.notna(row.get("residual_bound", math.nan))]
    names = declared(numbers, "methods")
    for key, c in comparisons.items():
        other, main = key.split("_vs_")
        parts = []
        for number, name in names.items():
            if f"{number}_leaked_more" not in c:
                continue
            if f"{number}_sign_test_p" in c:
                parts.append(f"{name}: {verdict[c[f'{number}_leaked_more']]} (found in {int(c[f'{number}_hits_more'])} "
                             f"requests where {main} was not, missed in {int(c[f'{number}_hits_fewer'])} where {main} "
                             f"found it; sign test p = {c[f'{number}_sign_test_p']:.3g})")
            else:
                parts.append(f"{name}: {verdict[c[f'{number}_leaked_more']]} ({c[f'{number}_diff']:+.3g}, paired "
                             f"{pct} interval {interval(c[f'{number}_diff_ci95_low'], c[f'{number}_diff_ci95_high'])})")
        lines.append(f"Did {other} leak more than {main} over {int(c['requests'])} requests? " + "; ".join(parts) + ".")
    r.bullets(lines)


def _access_section(r: Report, t: pd.DataFrame, names: dict[str, str]) -> None:
    r.heading("What a weaker attacker gets")
    r.para("Every attack family again with less than the paper's attacker holds, one access level at a time "
           "(attack.access), on the first requests of each method; means over those requests. layers: only the "
           "last L layers' update; precision: the released models rounded; staleness: θ_u published after R "
           "further deletions (or T fine-tuning steps); knowledge: N guessed, θ₀ unknown, labels only as "
           "inferred; queries: label-inference queries per request; output: top-k or label-only outputs. The "
           "last column prices the reference's feature recovery (10,000 steps × 5 restarts a request) at the "
           "step cost measured here, on this run's device. Not servable: the server could not release at that "
           "level (its weights diverged, or its method cannot serve further requests there; metrics/access.csv "
           "says which).")
    headers = {**{c: n for c, n in names.items() if c in t}, **{c: n for c, n in ACCESS_EFFORT.items() if c in t}}
    r.table(["level", "method", *headers.values()],
            [[row["level"], row["method"], *(row[c] if row["served"] else "not servable" if i == 0 else ""
                                             for i, c in enumerate(headers))] for _, row in t.iterrows()])
