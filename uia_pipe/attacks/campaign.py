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
from .view import AttackerView, sisa_shard_views

# The update the feature-recovery attacker assumes for each unlearning method:
# "exact" (Δ from θ, θ_u and θ₀ as `exact_update` says, gradients at θ₀) for
# retraining without X, "approx" (θ_u − θ, gradients at θ) for every method
# that moves θ itself.
ASSUMED_UPDATE = {"exact": "exact", "retrain": "exact"}


@dataclass(frozen=True)
class SisaStore:
    """A SISA server's checkpoint store: slices[s][j] are the D_u indices of
    shard s's slice j, before[s][j] its checkpoint after slices 0..j−1, and
    after[r][s][j] the same after request r's deletion."""

    slices: list[list[list[int]]]
    before: list[list[nn.Module]]
    after: list[list[list[nn.Module]]]


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
    finetune_batch_size: int | None = None  # B of the fine-tune θ₀ → θ (label inference's θ₀ reference)
    sisa: SisaStore | None = None  # the checkpoint store, where the method is sisa

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
    label-count error when k > 1, and the queries spent on θ_u. Where
    `cfg.reference` applies to the method, the probes must carry θ₀'s outputs
    (stages.common.cached_probes) and the attacker is granted N, k and B."""
    views = [(li.oracle(setting.theta_original, cfg), li.oracle(theta_u, cfg)) for theta_u in thetas_u]
    ks = [len(r["forget"]) for r in setting.requests]
    weights = None
    if li.uses_reference(cfg, setting.method):
        if setting.finetune_batch_size is None:
            raise ValueError("the θ₀-referenced label inference needs the fine-tune's batch size")
        weights = [li.reference_weight(len(setting.du_y), k, setting.finetune_batch_size) for k in ks]
    results = [r for r, _ in li.infer_many(views, probes, cfg, k=ks, reference_weight=weights)]
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


def summarise_label_inference(frame: pd.DataFrame, probe_queries: int, reference_queries: int = 0) -> dict:
    """`reference_queries`: queries of θ₀ for its outputs on the probes (once, like probe_queries of θ)."""
    n, hits = len(frame), int(frame["correct"].sum())
    low, high = wilson_ci(hits, n)
    out = {"accuracy": hits / n, "accuracy_ci95_low": low, "accuracy_ci95_high": high,
           "queries_per_request": float(frame["queries"].mean()),
           "probe_queries": probe_queries, "probe_queries_per_request": probe_queries / n,
           "reference_queries": reference_queries}
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
    sisa_view: str = "ensemble",
) -> tuple[pd.DataFrame, list[fr.Result]]:
    """One row per request: iterations, seconds, label accuracy and the
    recovery's scores beside the baselines (PSNR/MSE/SSIM on [0,1] images, or
    decoded-feature errors on tabular rows).

    Under SISA with its checkpoint store and sisa_view="shard" the attacker
    inverts the changed shard's retrained stage (view.sisa_shard_views), and a
    request is scored on the removed samples those views cover (`k_attacked`;
    all of them for k = 1); with "ensemble" it attacks the served ensemble's
    parameters like any other method (the default, and what the defend stage
    needs: a defence transforms the released θ_u, never the server's store)."""
    assumed = ASSUMED_UPDATE.get(setting.method, "approx")
    rows, results = [], []
    for j, (req, theta_u) in enumerate(zip(setting.requests, thetas_u)):
        forget = torch.tensor(req["forget"])
        given_all = {"oracle": setting.du_y[forget], "inferred": inferred[j] if inferred else None}.get(cfg.labels)
        started = time.perf_counter()
        if setting.sisa is not None and sisa_view == "shard":
            result, forget = _recover_sisa(setting, j, forget, cfg, seed + req["index"], given_all, progress)
        else:
            view = AttackerView(
                setting.theta_original, theta_u, setting.theta_pretrained if assumed == "exact" else None, assumed,
                tuple(setting.card["input_shape"]), setting.card["num_classes"], len(setting.du_y), len(forget),
                setting.finetune_batch_size,
            )
            result, _ = fr.recover(view, cfg, seed + req["index"], labels=given_all, progress=progress)
        truth, labels = setting.du_x[forget], setting.du_y[forget]
        row = {"request": req["index"], "k": len(req["forget"]), "k_attacked": len(forget),
               "iterations": result.iterations, "loss": result.loss,
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


def accuracy_against_queries(
    setting: Setting, thetas_u: list[nn.Module], probes: li.Probes, cfg: li.Config, probe_queries: int,
    per_class: tuple[int, ...] = (1, 2, 3, 5, 10, 20, 50),
) -> pd.DataFrame:
    """Label inference again with only the first m probes of each class, for
    each m up to the number made: accuracy against the queries each request
    costs, and the probe-generation queries those probes took (an even share)."""
    most = int(torch.bincount(probes.target).max())
    rows = []
    for m in sorted({min(m, most) for m in per_class}):
        subset = probes.first_per_class(m)
        frame, _ = label_inference(setting, thetas_u, subset, cfg)
        rows.append({"probes_per_class": m, "queries_per_request": float(frame["queries"].mean()),
                     "probe_queries": probe_queries * len(subset) / len(probes),
                     "accuracy": float(frame["correct"].mean())})
    return pd.DataFrame(rows)


def both(
    setting: Setting, thetas_u: list[nn.Module], probes: li.Probes, li_cfg: li.Config, fr_cfg: fr.Config, seed: int,
    sisa_view: str = "ensemble",
) -> tuple[pd.DataFrame, list[li.Result], pd.DataFrame, list[fr.Result]]:
    """Label inference, then feature recovery with the labels it inferred (when
    `fr_cfg.labels` asks for them): the rows and results of each."""
    li_frame, li_results = label_inference(setting, thetas_u, probes, li_cfg)
    ks = [len(r["forget"]) for r in setting.requests]
    fr_frame, fr_results = feature_recovery(setting, thetas_u, fr_cfg, seed, inferred_labels(li_results, ks),
                                            sisa_view=sisa_view)
    return li_frame, li_results, fr_frame, fr_results


def per_request_table(fr_frame: pd.DataFrame, li_frame: pd.DataFrame) -> pd.DataFrame:
    """Both attacks' rows side by side, label inference's columns prefixed `li_`."""
    return fr_frame.merge(li_frame.add_prefix("li_").rename(columns={"li_request": "request"}), on="request")


def _recover_sisa(setting: Setting, position: int, forget: torch.Tensor, cfg: fr.Config, seed: int,
                  given: torch.Tensor | None, progress) -> tuple[fr.Result, torch.Tensor]:
    """The SISA-aware attack on one request: one recovery per changed shard,
    joined. Returns the result and the D_u indices of the samples it covers,
    in the order of its reconstructions."""
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
        result, _ = fr.recover(view, cfg, seed + 7919 * shard, labels=labels, progress=progress)
        parts.append(result)
        covered += idx
    if len(parts) == 1:
        return parts[0], torch.tensor(covered)
    joined = fr.Result(
        reconstruction=torch.cat([r.reconstruction for r in parts]), labels=torch.cat([r.labels for r in parts]),
        label_source=parts[0].label_source, loss=sum(r.loss for r in parts) / len(parts),
        restart_losses=[x for r in parts for x in r.restart_losses], curve=parts[0].curve,
        iterations=sum(r.iterations for r in parts), seconds=sum(r.seconds for r in parts),
    )
    return joined, torch.tensor(covered)


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
