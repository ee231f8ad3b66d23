"""Label inference: a black-box user of the service with query access to θ before and θ_u after the
deletion (probabilities, top-k or labels only); it crafts probes on θ and reads which class lost
confidence (`attacks/label_inference.py`). Probes are made once per served θ and reused."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from ...figures import confusion_matrix
from ...stats import wilson_ci
from .. import label_inference as li
from .. import probes as probes_module
from .. import view as view_module
from ..probes import Probes
from ..protocol import TABLES, Attack, Context, Grant, Number

# The code that makes probes: cached probes are keyed by its text too, so an edit remakes them.
_PROBE_CODE = (li, probes_module, view_module)


def _model_hash(model: nn.Module):
    key = hashlib.sha256()
    for name, t in model.state_dict().items():
        key.update(name.encode() + t.detach().cpu().numpy().tobytes())
    return key


def _code_hash() -> bytes:
    key = hashlib.sha256()
    for module in _PROBE_CODE:
        key.update(Path(module.__file__).read_bytes())
    return key.digest()


def prepare(grant: Grant, cfg: li.Config, ctx: Context) -> tuple[Probes, dict]:
    """Probes depend only on θ, the probe settings, the seed and the code that
    makes them: made once and kept in ctx.store under a hash of the four (made
    afresh without a store). Where `cfg.reference` applies to the run's method
    they carry θ₀'s outputs too, kept beside them under a key that adds θ₀
    (stats["reference_queries"])."""
    key = _model_hash(grant.theta_original)
    key.update(json.dumps([cfg.probes.model_dump(mode="json"), cfg.access, cfg.topk, ctx.seed]).encode())
    key.update(_code_hash())
    name = f"probes/{key.hexdigest()[:24]}"
    probes, stats = _probes_at(name, grant, cfg, ctx)
    if not li.uses_reference(cfg, grant.method):
        return probes, stats
    key.update(_model_hash(grant.theta_pretrained).digest())
    ref_name = f"probes/{key.hexdigest()[:24]}.reference"
    found = None if ctx.store is None else ctx.store.load(ref_name)
    if found is not None:
        tensors, meta = found
        return replace(probes, reference=tensors["reference"]), {**stats, **meta}
    probes, more = li.with_reference(probes, li.oracle(grant.theta_pretrained, cfg))
    if ctx.store is not None:
        ctx.store.save(ref_name, {"reference": probes.reference}, more)
    return probes, {**stats, **more}


def _probes_at(name: str, grant: Grant, cfg: li.Config, ctx: Context) -> tuple[Probes, dict]:
    found = None if ctx.store is None else ctx.store.load(name)
    if found is not None:
        tensors, meta = found
        return Probes(tensors["x"], tensors["target"], tensors["before"], tensors["reached"], meta["access"]), \
            {**meta["stats"], "cached": True}
    before = li.oracle(grant.theta_original, cfg)
    probes, stats = li.make_probes(before, cfg, ctx.seed, input_shape=grant.input_shape,
                                   num_classes=grant.num_classes, auxiliary=ctx.public_x, model=grant.theta_original)
    stats = {k: v for k, v in stats.items() if isinstance(v, (int, float, str, bool))}
    if ctx.store is not None:
        ctx.store.save(name, {"x": probes.x, "target": probes.target, "before": probes.before,
                              "reached": probes.reached}, {"access": probes.access, "stats": stats})
    return probes, {**stats, "cached": False}


def _infer(grant: Grant, probes: Probes, cfg: li.Config) -> list[li.Result]:
    """Query access to θ and each θ_u (what the oracle shows: `cfg.access`); N, k and B where the
    θ₀-referenced statistic applies to the method."""
    views = [(li.oracle(grant.theta_original, cfg), li.oracle(theta_u, cfg)) for theta_u in grant.thetas_u]
    weights = None
    if li.uses_reference(cfg, grant.method):
        if grant.finetune is None:
            raise ValueError("the θ₀-referenced label inference needs the fine-tune's batch size")
        weights = [li.reference_weight(grant.n, k, grant.finetune.batch_size) for k in grant.ks]
    return [r for r, _ in li.infer_many(views, probes, cfg, k=list(grant.ks), reference_weight=weights)]


def run(grant: Grant, cfg: li.Config, ctx: Context) -> list[li.Result]:
    results = _infer(grant, ctx.prepared["label_inference"], cfg)
    if ctx.on_request is not None:
        for index in grant.requests:
            ctx.on_request("label_inference", index)
    return results


def score(setting, results: list[li.Result]) -> pd.DataFrame:
    """One row per request: the class inferred, whether it is right (the
    request's class, or any removed sample's label for random requests), the
    label-count error when k > 1, and the queries spent on θ_u."""
    rows = []
    for req, res in zip(setting.requests, results):
        _, labels = setting.truth(req)
        truth = req["target_class"] if req.get("target_class") is not None else None
        correct = res.predicted[0] == truth if truth is not None else res.predicted[0] in set(labels.tolist())
        row = {"request": req["index"], "predicted": res.predicted[0], "correct": bool(correct),
               "queries": res.queries, "signal": res.signal}
        if res.label_counts is not None and len(labels) > 1:
            true_counts = torch.bincount(labels, minlength=len(res.label_counts)).tolist()
            row["label_count_error"] = sum(abs(a - b) for a, b in zip(res.label_counts, true_counts)) / len(labels)
        row["true_label"] = truth if truth is not None else int(labels.mode().values)
        rows.append(row)
    return pd.DataFrame(rows)


def summarise(frame: pd.DataFrame, results: list[li.Result], cfg: li.Config, stats: dict) -> dict:
    """Accuracy with its Wilson interval and the queries: per request, and once
    for the probes (of θ) and θ₀'s outputs on them (`reference_queries`)."""
    n, hits = len(frame), int(frame["correct"].sum())
    low, high = wilson_ci(hits, n)
    probe_queries = int(stats.get("queries", 0))
    out = {"accuracy": hits / n, "accuracy_ci95_low": low, "accuracy_ci95_high": high,
           "queries_per_request": float(frame["queries"].mean()),
           "probe_queries": probe_queries, "probe_queries_per_request": probe_queries / n,
           "reference_queries": int(stats.get("reference_queries", 0))}
    if "label_count_error" in frame:
        out["label_count_error"] = float(frame["label_count_error"].mean())
    return out


def outputs(setting, grant: Grant, results: list[li.Result], cfg: li.Config, ctx: Context,
            per_class: tuple[int, ...] = (1, 2, 3, 5, 10, 20, 50)) -> dict:
    """The confusion matrix; and label inference again with only the first m probes of each class, for
    each m up to the number made: accuracy against the queries each request costs, and the
    probe-generation queries those probes took (an even share) (plot data)."""
    frame = score(setting, results)
    out = {"label_confusion.png": confusion_matrix(frame["true_label"].tolist(), frame["predicted"].tolist(),
                                                   setting.card["num_classes"])}
    out["label_confusion.png"].set_label("Label inference: removed label against inferred label")
    probes, probe_queries = ctx.prepared["label_inference"], int(ctx.stats["label_inference"].get("queries", 0))
    most = int(torch.bincount(probes.target).max())
    rows = []
    for m in sorted({min(m, most) for m in per_class}):
        subset = probes.first_per_class(m)
        frame = score(setting, _infer(grant, subset, cfg))
        rows.append({"probes_per_class": m, "queries_per_request": float(frame["queries"].mean()),
                     "probe_queries": probe_queries * len(subset) / len(probes),
                     "accuracy": float(frame["correct"].mean())})
    out["label_queries"] = pd.DataFrame(rows)
    return out


NUMBERS = (
    Number("accuracy", "accuracy", "correct", TABLES + ("figure",), "wilson"),
    Number("queries_per_request", "queries / request", "queries", ("headline",)),
    Number("probe_queries", "probe queries (once)", tables=("headline",)),
)

ATTACK = Attack(config=li.Config, run=run, score=score, summarise=summarise, numbers=NUMBERS, prepare=prepare,
                outputs=outputs)
