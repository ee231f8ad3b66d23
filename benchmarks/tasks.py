"""Tasks beyond image classification, run by hand (not a test):

    .venv/bin/python benchmarks/tasks.py                  # every pair, ~1 h on 2 cores
    .venv/bin/python benchmarks/tasks.py --only regression-linear-diabetes

Each (task, model, dataset) pair is what `dvc exp run -S <its overrides>` runs: a fresh clone of the
committed repository, params.yaml with the overrides set, and every stage of dvc.yaml in order (their own
commands, timed one by one). Prints and writes benchmarks/tasks.md: per pair and unlearning method (exact,
approx), feature recovery against its baseline (PSNR of images against the training mean image; MAE of a
tabular row's numeric features in standard deviations against the training mean row), value or label
inference against its baseline, membership AUC, θ's test quality and the minutes of the six stages and of
the access stage. Overrides each pair needs beyond the task (a pool the small sets can hold, more epochs
over few rows) are in PAIRS; the access stage runs four levels, one per white-box dimension.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

ACCESS = ["layers:1", "precision:int8_channel", "staleness:1", "knowledge:no_pretrained"]

# name -> the `dvc exp run -S` overrides of the pair
PAIRS: dict[str, dict[str, object]] = {
    "classification-lenet-fashion_mnist": {},
    # with the defaults the ViT had run 20 min, 15 of them in the attack stage, when stopped: a smaller run
    "classification-vit-fashion_mnist": {"train.model": "vit", "train.pretrain.max_samples": 20000,
                                         "unlearn.requests": 4, "attack.label_inference.probes.strategy": "auxiliary",
                                         "defend.max_requests": 1},
    "classification-lenet-digits": {"download.dataset": "digits", "train.pool_size": 300, "train.pretrain.epochs": 20},
    "regression-linear-diabetes": {"download.dataset": "diabetes", "train.task": "regression", "train.model": "linear",
                                   "train.pool_size": 100, "train.pretrain.epochs": 50, "train.pretrain.lr": 0.01},
    "regression-tabular_mlp-diabetes": {"download.dataset": "diabetes", "train.task": "regression",
                                        "train.model": "tabular_mlp", "train.pool_size": 100,
                                        "train.pretrain.epochs": 50, "train.pretrain.lr": 0.01},
    "regression-tabular_mlp-german_credit_amount": {"download.dataset": "german_credit_amount",
                                                    "train.task": "regression", "train.model": "tabular_mlp",
                                                    "train.pool_size": 200, "train.pretrain.epochs": 20,
                                                    "train.pretrain.lr": 0.01},
    "autoencoder-mlp-fashion_mnist": {"train.task": "autoencoder", "train.model": "mlp"},
    "autoencoder-lenet-digits": {"download.dataset": "digits", "train.task": "autoencoder", "train.model": "lenet",
                                 "train.pool_size": 300, "train.pretrain.epochs": 20},
    # the README's language model: 16 canaries of 4 copies in D_u, each request deleting one's copies
    "language_model-char_lstm-tinyshakespeare": {
        "download.dataset": "tinyshakespeare", "train.task": "language_model", "train.model": "char_lstm",
        "train.n": 128, "train.pretrain.epochs": 1, "train.pretrain.lr": 1.0, "train.pretrain.max_samples": 8000,
        "train.pretrain.batch_size": 64, "train.finetune.epochs": 20, "train.finetune.lr": 1.0,
        "train.finetune.momentum": 0.9, "train.finetune.batch_size": 32, "unlearn.selection": "canary",
        "unlearn.requests": 16, "attack.membership.shadows": 8, "attack.membership.lira_shadows": 0},
}

SIX = ("download", "train", "unlearn", "attack", "defend", "evaluate")


def set_key(raw: dict, dotted: str, value) -> None:
    *path, last = dotted.split(".")
    for key in path:
        raw = raw[key]
    raw[last] = value


def run_pair(name: str, overrides: dict, workdir: Path) -> dict:
    """Clone, set the overrides, run every stage; seconds per stage and the metrics files."""
    repo = workdir / name
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    for key, value in {**overrides, "attack.access.levels": ACCESS}.items():
        set_key(raw, key, value)
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    seconds = {}
    for stage, spec in yaml.safe_load((repo / "dvc.yaml").read_text())["stages"].items():
        started = time.perf_counter()
        proc = subprocess.run(spec["cmd"], shell=True, cwd=repo, env=env, capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"{name}: stage {stage} failed:\n{proc.stdout[-1500:]}{proc.stderr[-1500:]}")
        seconds[stage] = time.perf_counter() - started
        print(f"  {name}: {stage} {seconds[stage]:.0f} s", flush=True)
    metrics = {f.stem: json.loads(f.read_text()) for f in (repo / "metrics").glob("*.json")}
    card = json.loads((repo / "data" / "dataset" / "card.json").read_text())
    return {"seconds": seconds, "metrics": metrics, "task": raw["train"]["task"], "model": raw["train"]["model"],
            "dataset": raw["download"]["dataset"], "method": raw["unlearn"]["method"], "classes": card["num_classes"]}


def rows(result: dict) -> list[dict]:
    """One row per unlearning method of a pair."""
    attack, train = result["metrics"]["attack"], result["metrics"]["train"]
    six = sum(result["seconds"][s] for s in SIX) / 60
    out = []
    for method, run in {result["method"]: attack, **attack.get("compare", {})}.items():
        fr, mi, li = run.get("feature_recovery", {}), run.get("membership", {}), run.get("label_inference", {})
        if "text_recovery" in run:  # a language model: the deleted canary's text and secret
            recovery, inference = _text_cells(run)
        else:
            if "psnr_mean" in fr:
                recovery = f"{fr['psnr_mean']:.1f} dB (mean image {fr['baseline_psnr']:.1f})"
            else:
                recovery = (f"MAE {fr['numeric_mae_std']:.3g} sd (mean row {fr['baseline_numeric_mae_std']:.3g}); "
                            f"categorical {fr['categorical_accuracy']:.2f} (mode {fr['baseline_categorical_accuracy']:.2f})")
            if "value_mae_std" in fr:
                inference = f"value MAE {fr['value_mae_std']:.3g} sd (mean {fr['baseline_value_mae_std']:.3g})"
            elif li:
                inference = f"label accuracy {li['accuracy']:.2f} (chance {1 / result['classes']:.2f})"
            else:
                inference = "none (no label)"
        out.append({"task": result["task"], "model": result["model"], "dataset": result["dataset"], "method": method,
                    "feature recovery": recovery, "label / value inference": inference,
                    "membership AUC": f"{mi['never_auc']:.2f}" if "never_auc" in mi else "–",
                    "θ test quality": f"{train['test_accuracy']:.3g}", "six stages (min)": f"{six:.1f}",
                    "access (min)": f"{result['seconds']['access'] / 60:.1f}"})
    return out


def _text_cells(run: dict) -> tuple[str, str]:
    """A language model's recovery cell (the deleted record's text) and inference cell (its secret)."""
    text, e, x = run["text_recovery"], run["exposure"], run["extraction"]
    return (f"text: character accuracy {text['char_accuracy']:.2f} (mean text {text['baseline_char_accuracy']:.2f}), "
            f"secret in it {text['secret_found']:.2f}",
            f"exposure θ {e['exposure_theta']:.1f} → θ_u {e['exposure_theta_u']:.1f} bits (never inserted "
            f"{e['control_theta_u']:.1f}); two-model top-1 {x['top1']:.2f}")


def table(all_rows: list[dict]) -> str:
    cols = list(all_rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in all_rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", choices=sorted(PAIRS), help="run this pair (repeatable); default all")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "tasks.md")
    args = ap.parse_args()
    names = args.only or list(PAIRS)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            results[name] = run_pair(name, PAIRS[name], Path(tmp))
    all_rows = [row for name in names for row in rows(results[name])]
    text = (f"Measured by benchmarks/tasks.py on {os.cpu_count()} CPUs: every stage of each pair from a fresh clone "
            f"(`dvc exp run -S` with the pair's overrides; access at {', '.join(ACCESS)}).\n\n" + table(all_rows))
    args.out.write_text(text)
    (args.out.with_suffix(".json")).write_text(json.dumps(
        {n: {k: v for k, v in r.items() if k != "metrics"} | {"attack": r["metrics"]["attack"]}
         for n, r in results.items()}, indent=1, default=float))
    print(text)


if __name__ == "__main__":
    main()
