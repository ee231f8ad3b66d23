"""Feature recovery as an attack family: the server, white-box, inverts the
unlearning update of each request (`attacks/feature_recovery/`)."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn

from ...errors import UiaError
from ...figures import reconstruction_grid
from ...metrics import baseline_scores, image_scores, match, tabular_metrics
from ...stats import mean_ci
from ...tasks import TASKS
from .. import feature_recovery as fr
from .. import label_inference as li
from ..protocol import Attack, Context
from ..setting import Setting
from ..view import AttackerView, Limits, sisa_shard_views, without_batch_norm_stats

# The update the feature-recovery attacker assumes for each unlearning method:
# "exact" (Δ from θ, θ_u and θ₀ as `exact_update` says, gradients at θ₀) for
# retraining without X, "approx" (θ_u − θ, gradients at θ) for every method
# that moves θ itself.
ASSUMED_UPDATE = {"exact": "exact", "retrain": "exact"}


@dataclass(frozen=True)
class Recovery:
    """One request's attack: the result, the D_u indices of the removed samples
    its reconstructions stand for (all of X, or those SISA's changed shards
    cover), in order, and the wall time."""

    result: fr.Result
    covered: torch.Tensor
    seconds: float
    steps: int = 0  # optimiser steps over every restart (the effort behind `seconds`)


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


def run(setting: Setting, thetas_u: list[nn.Module], cfg: fr.Config, ctx: Context) -> list[Recovery]:
    """Each request's view, attacked. Labels: read from Δ (analytic), from the
    label-inference family's results on this run (inferred), or the true ones
    handed over (oracle: the reference's assumption, an evaluator's gift).

    Under SISA with its checkpoint store and ctx.sisa_view "shard" the attacker
    inverts the changed shard's retrained stage (view.sisa_shard_views); with
    "ensemble" it attacks the served ensemble's parameters like any other
    method (what a defence sweep needs: a defence transforms the released θ_u,
    never the server's store)."""
    earlier = ctx.earlier.get("label_inference")
    inferred = inferred_labels(earlier, setting.ks) if earlier else None
    jobs = []
    for j, req in enumerate(setting.requests):
        forget = torch.tensor(req["forget"])
        given = {"oracle": setting.du_y[forget], "inferred": inferred[j] if inferred else None}.get(cfg.labels)
        seed = ctx.seed + req["index"]
        if setting.sisa is not None and ctx.sisa_view == "shard":
            jobs.append(_sisa_parts(setting, j, forget, seed, given))
        else:
            jobs.append(([(_view(setting, thetas_u[j], len(forget), ctx.limits), given, seed)], forget))
    local = ctx.executor.kind == "local"  # a callback reaches no other process
    return ctx.executor.map(
        functools.partial(_recover, cfg, ctx.progress if local else None), jobs,
        names=[f"{setting.method}: feature recovery of request {req['index']}" for req in setting.requests],
        on_done=None if ctx.on_request is None else
        lambda j: ctx.on_request("feature_recovery", setting.requests[j]["index"]))


def _view(setting: Setting, theta_u: nn.Module, k: int, limits: Limits) -> AttackerView:
    """The white-box view of one request, less what an access level withholds: θ₀ (exact is then attacked as
    approx), the true N (a guess instead), parameters outside `limits.visible`, batch norm's statistics."""
    assumed = ASSUMED_UPDATE.get(setting.method, "approx")
    if not limits.pretrained:
        assumed = "approx"
    models = [setting.theta_original, theta_u, setting.theta_pretrained if assumed == "exact" else None]
    if not limits.batch_norm_stats:
        models = [None if m is None else without_batch_norm_stats(m) for m in models]
    return AttackerView(*models, assumed, tuple(setting.card["input_shape"]), setting.num_outputs,
                        limits.n or len(setting.du_y), k, setting.finetune_batch_size, limits.visible,
                        _step(setting, assumed, k))


def _step(setting: Setting, assumed: str, k: int) -> float | None:
    """The update's scale c (Δ = c·Σ_X ∇ℓ) where the server's settings give it: η/k for approx (a mean over
    X), the fine-tune's learning rate for exact (one full-batch step); None for other methods."""
    if assumed == "exact" and setting.method in ASSUMED_UPDATE and setting.finetune is not None:
        return setting.finetune.lr
    eta = getattr(setting.method_config, "eta", None) if setting.method == "approx" else None
    return None if eta is None else eta / k


# One request's attack: (view, labels handed over or None, seed) per part, and the D_u indices its
# reconstructions stand for, in order. One part, or one per changed shard under SISA's shard view.
Job = tuple[list[tuple[AttackerView, torch.Tensor | None, int]], torch.Tensor]


def _recover(cfg: fr.Config, progress, job: Job) -> Recovery:
    """One request's parts recovered and joined (a task: it holds its views, not the run's data)."""
    parts, covered = job
    started = time.perf_counter()
    done = [fr.recover(view, cfg, seed, labels=labels, progress=progress) for view, labels, seed in parts]
    results, steps = [r for r, _ in done], sum(int(stats["steps"]) for _, stats in done)
    if len(results) == 1:
        return Recovery(results[0], covered, time.perf_counter() - started, steps)
    joined = fr.Result(
        reconstruction=torch.cat([r.reconstruction for r in results]), labels=torch.cat([r.labels for r in results]),
        label_source=results[0].label_source, loss=sum(r.loss for r in results) / len(results),
        restart_losses=[x for r in results for x in r.restart_losses], curve=results[0].curve,
        iterations=sum(r.iterations for r in results), seconds=sum(r.seconds for r in results),
    )
    return Recovery(joined, covered, time.perf_counter() - started, steps)


def _sisa_parts(setting: Setting, position: int, forget: torch.Tensor, seed: int, given: torch.Tensor | None) -> Job:
    """The SISA-aware attack on one request: a part per changed shard, inverting its retrained stage from
    the server's checkpoints; the samples it covers, in the order of the parts."""
    store = setting.sisa
    removed = set(forget.tolist())
    located = [[[i for i in idx if i in removed] for idx in shard] for shard in store.slices]
    views = sisa_shard_views(store.before, store.after[position], [[len(i) for i in sh] for sh in store.slices],
                             [[len(i) for i in sh] for sh in located], tuple(setting.card["input_shape"]),
                             setting.card["num_classes"], setting.finetune_batch_size)
    if not views:
        raise ValueError("sisa: no shard changed between the stores before and after the deletion")
    order = forget.tolist()
    parts, covered = [], []
    for shard, stage, view in views:
        idx = located[shard][stage]
        labels = None if given is None else given[torch.tensor([order.index(i) for i in idx])]
        parts.append((view, labels, seed + 7919 * shard))
        covered += idx
    return parts, torch.tensor(covered)


def check(setting: Setting, cfg: fr.Config) -> None:
    """Labels handed over exist for classifiers only: a regressor's residuals are read from Δ, an
    autoencoder needs none."""
    if setting.task != "classification" and cfg.labels != "analytic":
        raise UiaError(f"attack.feature_recovery.labels: {cfg.labels} needs classes; train.task is {setting.task} "
                       "(analytic: a regressor's residuals are read from Δ, an autoencoder needs no label)")


def score(setting: Setting, recoveries: list[Recovery]) -> pd.DataFrame:
    """One row per request: iterations, seconds, steps, label accuracy and the
    recovery's scores beside the baselines (PSNR/MSE/SSIM on [0,1] images, or
    decoded-feature errors on tabular rows), on the removed samples the attack
    covered (`k_attacked`; all of them but under SISA's shard view)."""
    rows = []
    for req, rec in zip(setting.requests, recoveries):
        result = rec.result
        truth, labels = setting.du_x[rec.covered], setting.du_y[rec.covered]
        row = {"request": req["index"], "k": len(req["forget"]), "k_attacked": len(rec.covered),
               "iterations": result.iterations, "loss": result.loss,
               "seconds": rec.seconds, "steps": rec.steps, "label_source": result.label_source}
        if setting.task == "classification":
            row["label_accuracy"] = multiset_overlap(result.labels, labels)
        if result.values is not None:  # regression: the inferred target values against the true ones
            row.update(value_scores(result.values, labels))
        if setting.image:
            scores = image_scores(result.reconstruction, truth)
            row.update({m: float(v.mean()) for m, v in scores.items()})
            row.update({f"baseline_{m}": float(v.mean()) for m, v in baseline_scores(truth, setting.mean_guess).items()})
            if setting.class_guess is not None:
                row["class_baseline_psnr"] = float(baseline_scores(truth, setting.class_guess[labels])["psnr"].mean())
        else:
            row.update(tabular_metrics(result.reconstruction, truth, setting.card["encoding"], setting.train_x))
        rows.append(row)
    return pd.DataFrame(rows)


def value_scores(values: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """Regression's value inference: mean absolute error of the inferred target values (matched as
    multisets: both sorted), and of the training mean (0 on the standardised scale), in the target's
    standard deviations."""
    inferred, true = values.double().sort().values, truth.double().sort().values
    return {"value_mae_std": float((inferred - true).abs().mean()), "baseline_value_mae_std": float(true.abs().mean())}


def summarise(frame: pd.DataFrame, stats: dict) -> dict:
    out = {"seconds_per_request": float(frame["seconds"].mean()), "iterations_mean": float(frame["iterations"].mean())}
    if "label_accuracy" in frame:
        out = {"label_accuracy": float(frame["label_accuracy"].mean()), **out}
    for m in ("value_mae_std", "baseline_value_mae_std"):
        if m in frame:
            out[m] = float(frame[m].mean())
    if "psnr" in frame:
        for m in ("psnr", "mse", "ssim"):
            out[f"{m}_mean"] = float(frame[m].mean())
            out[f"baseline_{m}"] = float(frame[f"baseline_{m}"].mean())
        out["psnr_ci95"] = mean_ci(frame["psnr"].tolist())[1]
        if "class_baseline_psnr" in frame:
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


def outputs(setting: Setting, recoveries: list[Recovery]) -> dict[str, Figure | dict[str, torch.Tensor]]:
    """Each request's removed samples beside their reconstructions (images), and every reconstruction."""
    out: dict = {"reconstructions.safetensors": {f"request_{r['index']:03d}": rec.result.reconstruction
                                                 for r, rec in zip(setting.requests, recoveries)}}
    if setting.image:
        for req, rec in zip(setting.requests, recoveries):
            truth = setting.du_x[torch.tensor(req["forget"])]
            out[f"grids/request_{req['index']:03d}.png"] = reconstruction_grid(
                truth, ordered_for_display(rec.result.reconstruction, truth),
                title=f"request {req['index']}: {setting.method}\n{rec.result.label_source} labels")
    return out


def loss_curves(setting: Setting, thetas_u: list[nn.Module], cfg: fr.Config, ctx: Context) -> dict[str, pd.DataFrame]:
    """Each request's loss against the iteration (DVC plot data)."""
    recoveries = ctx.earlier["feature_recovery"]
    return {"attack_curve": pd.DataFrame([{"request": r["index"], "iteration": it, "loss": loss}
                                          for r, rec in zip(setting.requests, recoveries)
                                          for it, loss in rec.result.curve])}


def defended(frame: pd.DataFrame) -> pd.DataFrame:
    """PSNR and SSIM (NaN on tabular rows), decoded-feature scores where present, and the labels used."""
    out = pd.DataFrame({m: frame[m].astype(float) if m in frame else float("nan") for m in ("psnr", "ssim")},
                       index=frame.index)
    for m in ("numeric_mae_std", "categorical_accuracy", "value_mae_std"):
        if m in frame:
            out[m] = frame[m].astype(float)
    if "label_accuracy" in frame:
        out["fr_label_accuracy"] = frame["label_accuracy"].astype(float)
    return out


def defended_summary(group: pd.DataFrame) -> dict:
    out = {"psnr_mean": group["psnr"].mean(), "ssim_mean": group["ssim"].mean()}
    if "fr_label_accuracy" in group:
        out["feature_label_accuracy"] = group["fr_label_accuracy"].mean()
    for m in ("numeric_mae_std", "categorical_accuracy", "value_mae_std"):
        if m in group:
            out[f"{m}_mean"] = group[m].mean()
    return out


ATTACK = Attack(config=fr.Config, run=run, score=score, summarise=summarise, prefix="", outputs=outputs,
                plots=loss_curves, defended=defended, defended_summary=defended_summary, check=check, tasks=TASKS)
