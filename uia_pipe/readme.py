"""The README's results table, built from the pipeline's metrics files so that no number in the README is
typed by hand: `uia readme` rewrites the block between BEGIN and END after `make run`. Pure: the metrics
come in as dicts, the README as text; the command reads and writes the files."""

from __future__ import annotations

from .errors import UiaError
from .report import cell, interval, markdown_table

# Column -> (metrics file, dotted key from a method's root in that file). attack.json and unlearn.json hold
# unlearn.method's numbers at their root and each compared method's under COMPARE.<method>. A column whose key
# no method has is left out; a key renamed in the metrics is renamed here, in one line.
COLUMNS: dict[str, tuple[str, str]] = {
    "s / request": ("unlearn", "seconds_per_request"),
    "forget acc.": ("unlearn", "forget_accuracy"),
    "test acc.": ("unlearn", "test_accuracy"),
    "agrees with retrain": ("unlearn", "retrain_agreement_forget"),
    "PSNR (dB)": ("attack", "feature_recovery.psnr_mean"),
    "mean-image PSNR (dB)": ("attack", "feature_recovery.baseline_psnr"),
    "label acc.": ("attack", "label_inference.accuracy"),
    "membership AUC": ("attack", "membership.never_auc"),
    "TPR@1% FPR": ("attack", "membership.never_tpr_at_1pct_fpr"),
    "re-id top-1": ("attack", "compound.reid_top1"),
}
COMPARE = "compare"
# unlearn.method's name: evaluate.json has a section <prefix><method> for every method, compared or not.
METHOD_SECTIONS = ("evaluate", "method_")
MAIN = "unlearn.method"  # the first row's name where no file names the method
# A value's interval sits beside it (its key less "_mean"): "<key>_ci95_low" and "_high", or "<key>_ci95", a
# half-width (feature recovery's Student-t interval).
LOW, HIGH, HALF = "_ci95_low", "_ci95_high", "_ci95"
MEAN = "_mean"
FILES = tuple(dict.fromkeys([*(file for file, _ in COLUMNS.values()), METHOD_SECTIONS[0]]))  # what is read
MISSING = cell(float("nan"))  # the report's mark for a number a method does not have

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def _lookup(section, dotted: str):
    """section[a][b]... for the key "a.b..."; a key that itself holds a dot (`..._0.1pct_fpr`) is found whole."""
    if not isinstance(section, dict):
        return None
    if dotted in section:
        return section[dotted]
    head, dot, rest = dotted.partition(".")
    return _lookup(section.get(head), rest) if dot else None


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _methods(metrics: dict[str, dict]) -> list[str]:
    """unlearn.method first, then the compared methods in the order the stages ran them."""
    compared = list(dict.fromkeys(m for file in FILES for m in (metrics.get(file, {}).get(COMPARE) or {})))
    file, prefix = METHOD_SECTIONS
    named = [k.removeprefix(prefix) for k in metrics.get(file, {}) if k.startswith(prefix)]
    main = next((m for m in named if m not in compared), MAIN)
    return [main, *compared]


def _cell(root, key: str) -> str | None:
    """The value at `key` under `root` with its interval where the file holds one; None where it holds no value."""
    value = _number(_lookup(root, key))
    if value is None:
        return None
    base = key.removesuffix(MEAN)
    low, high, half = (_number(_lookup(root, base + suffix)) for suffix in (LOW, HIGH, HALF))
    if low is None and half is not None:
        low, high = value - half, value + half
    return cell(value) if low is None or high is None else f"{cell(value)} {interval(low, high)}"


def results_table(metrics: dict[str, dict]) -> str:
    """A markdown table: one row per unlearning method (unlearn.method, then each of unlearn.compare), one column
    per COLUMNS entry that some method's file holds, each cell the value [95% interval] where there is one.
    `metrics` maps a file's name (metrics/<name>.json) to its contents; a missing file's columns are left out."""
    main, *compared = _methods(metrics)
    roots = {main: {file: metrics.get(file, {}) for file in FILES},
             **{m: {file: (metrics.get(file, {}).get(COMPARE) or {}).get(m) for file in FILES} for m in compared}}
    rows = {m: {name: _cell(root[file], key) for name, (file, key) in COLUMNS.items()} for m, root in roots.items()}
    shown = [name for name in COLUMNS if any(row[name] is not None for row in rows.values())]
    if not shown:
        names = ", ".join(f"{file}.json" for file in FILES)
        raise UiaError(f"no metrics file holds any of the results table's keys ({names}; run the pipeline first: "
                       "`make run`)")
    return markdown_table(["method", *shown], [[method, *(row[name] or MISSING for name in shown)]
                                              for method, row in rows.items()])


def replace_block(text: str, block: str) -> str:
    """`text` with what lies between the BEGIN and END markers replaced by `block`, every other byte kept."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise UiaError(f"the README needs one {BEGIN} line before one {END} line around its results table")
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    return f"{head}{BEGIN}\n{block}\n{END}{tail}"
