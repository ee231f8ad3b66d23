"""Attack campaigns: run each attack on every deletion request of a run and
score it against the truth. The attacks see only their views; the scoring
here is the evaluator's side, which knows what was removed. Used by the
attack stage, and by the defend stage on defended models."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import pandas as pd
import torch
from torch import nn

from ..metrics import baseline_scores, image_scores, match, tabular_metrics
from ..stats import mean_ci, wilson_ci
from . import feature_recovery as fr
from . import label_inference as li
from .view import AttackerView

# The update the feature-recovery attacker assumes for each unlearning method:
# "exact" (count-weighted, gradients at θ₀) for retraining without X, "approx"
# (θ_u − θ, gradients at θ) for every method that moves θ itself.
ASSUMED_UPDATE = {"exact": "exact", "retrain": "exact"}


@dataclass(frozen=True)
class Setting:
    """What the evaluator knows about one run: the models, D_u and the requests."""

    theta_pretrained: nn.Module
    theta_original: nn.Module
    method: str
    card: dict
    du_x: torch.Tensor
    du_y: torch.Tensor
    requests: list[dict]  # {"index", "forget", "target_class"}
    mean_guess: torch.Tensor  # baseline guess of the features (training mean)
    class_guess: torch.Tensor | None  # per-class mean images (images only)
    train_x: torch.Tensor  # pretraining features (tabular decoding baselines)

    @property
    def image(self) -> bool:
        return self.card["kind"] == "image"


def _true_labels(setting: Setting, req: dict) -> torch.Tensor:
    return setting.du_y[torch.tensor(req["forget"])]


def label_inference(
    setting: Setting, thetas_u: list[nn.Module], probes: li.Probes, cfg: li.Config
) -> tuple[pd.DataFrame, list[li.Result]]:
    """One row per request: the class inferred, whether it is right (the
    request's class, or any removed sample's label for random requests), the
    label-count error when k > 1, and the queries spent on θ_u."""
    views = [(li.oracle(setting.theta_original, cfg), li.oracle(theta_u, cfg)) for theta_u in thetas_u]
    ks = [len(r["forget"]) for r in setting.requests]
    results = [r for r, _ in li.infer_many(views, probes, cfg, k=ks)]
    rows = []
    for req, res in zip(setting.requests, results):
        labels = _true_labels(setting, req)
        truth = req["target_class"] if req.get("target_class") is not None else None
        correct = res.predicted[0] == truth if truth is not None else res.predicted[0] in set(labels.tolist())
        row = {"request": req["index"], "predicted": res.predicted[0], "correct": bool(correct),
               "queries": res.queries, "signal": res.signal}
        if res.label_counts is not None and len(labels) > 1:
            true_counts = torch.bincount(labels, minlength=len(res.label_counts)).tolist()
            row["label_count_error"] = sum(abs(a - b) for a, b in zip(res.label_counts, true_counts)) / len(labels)
        row["true_label"] = truth if truth is not None else int(labels.mode().values)
        rows.append(row)
    return pd.DataFrame(rows), results


def summarise_label_inference(frame: pd.DataFrame, probe_queries: int) -> dict:
    n, hits = len(frame), int(frame["correct"].sum())
    low, high = wilson_ci(hits, n)
    out = {"accuracy": hits / n, "accuracy_ci95_low": low, "accuracy_ci95_high": high,
           "queries_per_request": float(frame["queries"].mean()),
           "probe_queries": probe_queries, "probe_queries_per_request": probe_queries / n}
    if "label_count_error" in frame:
        out["label_count_error"] = float(frame["label_count_error"].mean())
    return out


def feature_recovery(
    setting: Setting,
    thetas_u: list[nn.Module],
    cfg: fr.Config,
    seed: int,
    inferred: list[torch.Tensor] | None = None,
    on_request: Callable[[int, fr.Result], None] | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> tuple[pd.DataFrame, list[fr.Result]]:
    """One row per request: iterations, seconds, label accuracy and the
    recovery's scores beside the baselines (PSNR/MSE/SSIM on [0,1] images, or
    decoded-feature errors on tabular rows)."""
    assumed = ASSUMED_UPDATE.get(setting.method, "approx")
    rows, results = [], []
    for j, (req, theta_u) in enumerate(zip(setting.requests, thetas_u)):
        forget = torch.tensor(req["forget"])
        view = AttackerView(
            setting.theta_original, theta_u, setting.theta_pretrained if assumed == "exact" else None, assumed,
            tuple(setting.card["input_shape"]), setting.card["num_classes"], len(setting.du_y), len(forget),
        )
        truth, labels = setting.du_x[forget], setting.du_y[forget]
        given = {"oracle": labels, "inferred": inferred[j] if inferred else None}.get(cfg.labels)
        started = time.perf_counter()
        result, _ = fr.recover(view, cfg, seed + req["index"], labels=given, progress=progress)
        row = {"request": req["index"], "k": len(forget), "iterations": result.iterations, "loss": result.loss,
               "seconds": time.perf_counter() - started, "label_source": result.label_source,
               "label_accuracy": multiset_overlap(result.labels, labels)}
        if setting.image:
            scores = image_scores(result.reconstruction, truth)
            row.update({m: float(v.mean()) for m, v in scores.items()})
            row.update({f"baseline_{m}": float(v.mean()) for m, v in baseline_scores(truth, setting.mean_guess).items()})
            row["class_baseline_psnr"] = float(baseline_scores(truth, setting.class_guess[labels])["psnr"].mean())
        else:
            row.update(tabular_metrics(result.reconstruction, truth, setting.card["encoding"], setting.train_x))
        rows.append(row)
        results.append(result)
        if on_request is not None:
            on_request(req["index"], result)
    return pd.DataFrame(rows), results


def summarise_feature_recovery(frame: pd.DataFrame) -> dict:
    out = {"label_accuracy": float(frame["label_accuracy"].mean()),
           "seconds_per_request": float(frame["seconds"].mean()),
           "iterations_mean": float(frame["iterations"].mean())}
    if "psnr" in frame:
        for m in ("psnr", "mse", "ssim"):
            out[f"{m}_mean"] = float(frame[m].mean())
            out[f"baseline_{m}"] = float(frame[f"baseline_{m}"].mean())
        out["psnr_ci95"] = mean_ci(frame["psnr"].tolist())[1]
        out["class_baseline_psnr"] = float(frame["class_baseline_psnr"].mean())
    else:
        for m in ("numeric_mae_std", "categorical_accuracy", "baseline_numeric_mae_std",
                  "baseline_categorical_accuracy"):
            out[m] = float(frame[m].mean())
    return out


def ordered_for_display(recon: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Reconstructions reordered to face the truth they were scored against."""
    return recon[match(recon, truth)] if len(recon) > 1 else recon


def multiset_overlap(used: torch.Tensor, truth: torch.Tensor) -> float:
    """Fraction of the true labels (as a multiset) that the attack used."""
    size = int(max(used.max(), truth.max())) + 1
    both = torch.minimum(torch.bincount(used.cpu(), minlength=size), torch.bincount(truth.cpu(), minlength=size))
    return float(both.sum() / len(truth))


def inferred_labels(results: list[li.Result], ks: list[int]) -> list[torch.Tensor]:
    """Labels for feature recovery from label inference: the top class for
    k = 1, the estimated label counts expanded for k > 1."""
    out = []
    for res, k in zip(results, ks):
        if k == 1 or res.label_counts is None:
            out.append(torch.tensor([res.predicted[0]] * k))
        else:
            out.append(torch.repeat_interleave(torch.arange(len(res.label_counts)), torch.tensor(res.label_counts))[:k])
    return out
