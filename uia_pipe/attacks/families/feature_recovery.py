"""Feature recovery: a white-box server (or anyone holding both releases) that knows θ and θ_u (and θ₀, the
model before the fine-tune on D_u, for exact unlearning), the architecture, N and k; it never sees the
removed samples and inverts the update by gradient matching (`attacks/feature_recovery/`)."""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from dataclasses import dataclass

import pandas as pd
import torch

from ...figures import per_request_scores, reconstruction_grid, reconstruction_pairs
from ...metrics import baseline_scores, image_scores, match, tabular_metrics
from ...stats import mean_ci
from ...tasks import TASKS
from .. import feature_recovery as fr
from .. import label_inference as li
from ..feature_recovery.priors import train_stats_prior
from ..protocol import TABLES, Attack, Context, Grant, Number
from ..view import AttackerView

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


def run(grant: Grant, cfg: fr.Config, ctx: Context) -> list[Recovery]:
    """Each request's job, as the evaluator's side poses it (`grant.question`, `evaluation.grants`): one
    view per part (the served models' update, or, under SISA with the server's checkpoint store, each
    changed shard's retrained stage), the labels handed over where `cfg.labels` asks for them (the
    label-inference family's inferred ones, or the true ones: the reference's assumption, an evaluator's
    gift), a seed; and the positions in D_u its reconstructions stand for. Requests are attacked
    `cfg.batch_requests` at a time (`fr.recover_many`), a batch a task of the executor (under Ray, batches
    small enough that every slot gets one). With `cfg.image_prior` the attacker first trains its prior's CNN
    on the public images (`ctx.public_x`, seeded by the run's seed)."""
    local = ctx.executor.kind == "local"  # a callback reaches no other process
    prior = None
    if cfg.image_prior > 0 and ctx.public_x.dim() == 4:
        prior = train_stats_prior(ctx.public_x, ctx.public_y, cfg.image_prior_epochs, ctx.seed + 31)
    jobs, size = list(grant.question), cfg.batch_requests
    if not local:
        size = max(1, min(size, math.ceil(len(jobs) / ctx.executor.slots)))
    chunks = [list(range(i, min(i + size, len(jobs)))) for i in range(0, len(jobs), size)]

    def done(c: int) -> None:
        if ctx.on_request is not None:
            for j in chunks[c]:
                ctx.on_request("feature_recovery", grant.requests[j])

    made = ctx.executor.map(
        functools.partial(_recover, cfg, ctx.progress if local else None, prior=prior),
        [[jobs[j] for j in c] for c in chunks],
        names=[f"{grant.method}: feature recovery of requests {', '.join(str(grant.requests[j]) for j in c)}"
               for c in chunks], on_done=done)
    return [recovery for batch in made for recovery in batch]


def run_many(grants: list[Grant], cfg: fr.Config, ctx: Context) -> list[list[Recovery]]:
    """`run` of each grant, their requests attacked as one campaign (batches of `cfg.batch_requests` across
    grants: a sweep's cells that invert at one point share their steps)."""
    merged = dataclasses.replace(grants[0], question=[job for g in grants for job in g.question],
                                 requests=tuple(r for g in grants for r in g.requests))
    found, out = iter(run(merged, cfg, ctx)), []
    for g in grants:
        out.append([next(found) for _ in g.question])
    return out


# One request's attack: (view, labels handed over or None, seed) per part, and the D_u positions its
# reconstructions stand for, in order. One part, or one per changed shard under SISA's shard view.
Job = tuple[list[tuple[AttackerView, torch.Tensor | None, int]], torch.Tensor]


def _recover(cfg: fr.Config, progress, jobs: list[Job], prior=None) -> list[Recovery]:
    """A batch of requests' parts recovered together, then each request's parts joined (a task: it holds
    its views, not the run's data); each request's seconds are its share of the batch's."""
    started = time.perf_counter()
    done = iter(fr.recover_many([part for parts, _ in jobs for part in parts], cfg, progress, prior=prior))
    found = [([next(done) for _ in parts], covered) for parts, covered in jobs]
    seconds = (time.perf_counter() - started) / len(jobs)
    out = []
    for parts, covered in found:
        results, steps = [r for r, _ in parts], sum(int(stats["steps"]) for _, stats in parts)
        if len(results) == 1:
            out.append(Recovery(results[0], covered, seconds, steps))
            continue
        joined = fr.Result(
            reconstruction=torch.cat([r.reconstruction for r in results]),
            labels=torch.cat([r.labels for r in results]), label_source=results[0].label_source,
            loss=sum(r.loss for r in results) / len(results),
            restart_losses=[x for r in results for x in r.restart_losses], curve=results[0].curve,
            iterations=sum(r.iterations for r in results), seconds=sum(r.seconds for r in results),
        )
        out.append(Recovery(joined, covered, seconds, steps))
    return out


def score(setting, recoveries: list[Recovery]) -> pd.DataFrame:
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
            row["psnr_gain"] = row["psnr"] - row["baseline_psnr"]
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


def summarise(frame: pd.DataFrame, recoveries: list[Recovery], cfg: fr.Config, stats: dict) -> dict:
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
        out["psnr_gain_mean"] = float(frame["psnr_gain"].mean())
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


def outputs(setting, grant: Grant, recoveries: list[Recovery], cfg: fr.Config, ctx: Context) -> dict:
    """Every reconstruction; each request's removed samples beside their reconstructions (images); each
    request's loss against the iteration (plot data)."""
    out: dict = {"reconstructions.safetensors": {f"request_{r['index']:03d}": rec.result.reconstruction
                                                 for r, rec in zip(setting.requests, recoveries)}}
    frame = score(setting, recoveries)
    if setting.image:
        for req, rec in zip(setting.requests, recoveries):
            truth = setting.du_x[torch.tensor(req["forget"])]
            out[f"grids/request_{req['index']:03d}.png"] = reconstruction_grid(
                truth, ordered_for_display(rec.result.reconstruction, truth),
                title=f"request {req['index']}: {setting.method}\n{rec.result.label_source} labels")
        ranked = frame.sort_values("psnr", kind="stable")
        panels = {}
        for which, row in (("best", ranked.iloc[-1]), ("worst", ranked.iloc[0])):
            j = [r["index"] for r in setting.requests].index(int(row["request"]))
            truth = setting.du_x[torch.tensor(setting.requests[j]["forget"])]
            panels[f"{which}: request {int(row['request'])}, {row['psnr']:.1f} dB"] = \
                (truth, ordered_for_display(recoveries[j].result.reconstruction, truth))
        out["reconstructions.png"] = reconstruction_pairs(panels)
        out["reconstructions.png"].set_label("Feature recovery: removed sample (top) and reconstruction (bottom), "
                                             "best and worst requests")
    elif "categorical_accuracy" in frame:  # tabular rows: the recovered rows' accuracy per request
        out["reconstructions.png"] = per_request_scores(
            frame["request"].tolist(), frame["categorical_accuracy"].tolist(),
            frame["baseline_categorical_accuracy"].tolist(), "categorical accuracy")
        out["reconstructions.png"].set_label("Feature recovery: categorical features recovered per request, "
                                             "against the training mode")
    out["attack_curve"] = pd.DataFrame([{"request": r["index"], "iteration": it, "loss": loss}
                                        for r, rec in zip(setting.requests, recoveries)
                                        for it, loss in rec.result.curve], columns=["request", "iteration", "loss"])
    return out


NUMBERS = (
    Number("psnr_mean", "PSNR (dB)", "psnr", TABLES + ("figure",), "t", baseline="baseline_psnr"),
    Number("ssim_mean", "SSIM", "ssim", ("headline", "defence", "access"), "t", baseline="baseline_ssim"),
    Number("mse_mean", "MSE", "mse", ("headline",), "t", baseline="baseline_mse", higher_leaks=False),
    Number("psnr_gain_mean", "PSNR over the mean image (dB)", "psnr_gain", ("headline",), "t"),
    Number("numeric_mae_std", "numeric MAE (sd)", "numeric_mae_std", TABLES + ("figure",), "t",
           baseline="baseline_numeric_mae_std", higher_leaks=False),
    Number("categorical_accuracy", "categorical accuracy", "categorical_accuracy", TABLES, "t",
           baseline="baseline_categorical_accuracy"),
    Number("value_mae_std", "value MAE (sd)", "value_mae_std", TABLES + ("figure",), "t",
           baseline="baseline_value_mae_std", higher_leaks=False),
    Number("label_accuracy", "labels used, accuracy", "label_accuracy", ("headline", "defence", "access")),
    Number("seconds_per_request", "s / request", "seconds", ("headline",)),
)

ATTACK = Attack(config=fr.Config, run=run, score=score, summarise=summarise, numbers=NUMBERS,
                tasks=tuple(t for t in TASKS if t != "language_model"),  # text: the text_recovery family
                outputs=outputs, run_many=run_many)
