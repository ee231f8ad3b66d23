"""Label inference as an attack family: a user with query access to θ and θ_u
(`attacks/label_inference.py`), probes made once per served θ and reused."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn

from ... import io
from ...figures import confusion_matrix
from ...stats import wilson_ci
from .. import label_inference as li
from .. import probes as probes_module
from .. import view as view_module
from ..probes import Probes
from ..protocol import Attack, Context
from ..setting import Setting

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


def prepare(setting: Setting, cfg: li.Config, ctx: Context) -> tuple[Probes, dict]:
    """Probes depend only on θ, the probe settings, the seed and the code that
    makes them: made once and kept under ctx.cache_dir/probes, keyed by a hash
    of the four (made afresh without a cache_dir). Where `cfg.reference`
    applies to the run's method they carry θ₀'s outputs too, kept beside them
    under a key that adds θ₀ (stats["reference_queries"])."""
    key = _model_hash(setting.theta_original)
    key.update(json.dumps([cfg.probes.model_dump(mode="json"), cfg.access, cfg.topk, ctx.seed]).encode())
    key.update(_code_hash())
    path = None if ctx.cache_dir is None else ctx.cache_dir / "probes" / f"{key.hexdigest()[:24]}.safetensors"
    probes, stats = _probes_at(path, setting, cfg, ctx)
    if not li.uses_reference(cfg, setting.method):
        return probes, stats
    key.update(_model_hash(setting.theta_pretrained).digest())
    ref_path = None if path is None else path.with_name(f"{key.hexdigest()[:24]}.reference.safetensors")
    if ref_path is not None and ref_path.is_file():
        tensors, meta = io.load_tensors(ref_path)
        return replace(probes, reference=tensors["reference"]), {**stats, **meta}
    probes, more = li.with_reference(probes, li.oracle(setting.theta_pretrained, cfg))
    if ref_path is not None:
        io.save_tensors(ref_path, {"reference": probes.reference}, more)
    return probes, {**stats, **more}


def _probes_at(path: Path | None, setting: Setting, cfg: li.Config, ctx: Context) -> tuple[Probes, dict]:
    if path is not None and path.is_file():
        tensors, meta = io.load_tensors(path)
        return Probes(tensors["x"], tensors["target"], tensors["before"], tensors["reached"], meta["access"]), \
            {**meta["stats"], "cached": True}
    before = li.oracle(setting.theta_original, cfg)
    probes, stats = li.make_probes(before, cfg, ctx.seed, input_shape=tuple(setting.card["input_shape"]),
                                   num_classes=setting.card["num_classes"], auxiliary=ctx.public_x,
                                   model=setting.theta_original)
    stats = {k: v for k, v in stats.items() if isinstance(v, (int, float, str, bool))}
    if path is not None:
        io.save_tensors(path, {"x": probes.x, "target": probes.target, "before": probes.before,
                               "reached": probes.reached}, {"access": probes.access, "stats": stats})
    return probes, {**stats, "cached": False}


def _infer(setting: Setting, thetas_u: list[nn.Module], probes: Probes, cfg: li.Config) -> list[li.Result]:
    """The attacker's side: query access to θ and each θ_u; N, k and B where the
    θ₀-referenced statistic applies to the method."""
    views = [(li.oracle(setting.theta_original, cfg), li.oracle(theta_u, cfg)) for theta_u in thetas_u]
    weights = None
    if li.uses_reference(cfg, setting.method):
        if setting.finetune_batch_size is None:
            raise ValueError("the θ₀-referenced label inference needs the fine-tune's batch size")
        weights = [li.reference_weight(len(setting.du_y), k, setting.finetune_batch_size) for k in setting.ks]
    return [r for r, _ in li.infer_many(views, probes, cfg, k=setting.ks, reference_weight=weights)]


def run(setting: Setting, thetas_u: list[nn.Module], cfg: li.Config, ctx: Context) -> list[li.Result]:
    results = _infer(setting, thetas_u, ctx.prepared["label_inference"], cfg)
    if ctx.on_request is not None:
        for req in setting.requests:
            ctx.on_request("label_inference", req["index"])
    return results


def score(setting: Setting, results: list[li.Result]) -> pd.DataFrame:
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


def summarise(frame: pd.DataFrame, stats: dict) -> dict:
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


def accuracy_against_queries(
    setting: Setting, thetas_u: list[nn.Module], cfg: li.Config, ctx: Context,
    per_class: tuple[int, ...] = (1, 2, 3, 5, 10, 20, 50),
) -> dict[str, pd.DataFrame]:
    """Label inference again with only the first m probes of each class, for
    each m up to the number made: accuracy against the queries each request
    costs, and the probe-generation queries those probes took (an even share)."""
    probes, probe_queries = ctx.prepared["label_inference"], int(ctx.stats["label_inference"].get("queries", 0))
    most = int(torch.bincount(probes.target).max())
    rows = []
    for m in sorted({min(m, most) for m in per_class}):
        subset = probes.first_per_class(m)
        frame = score(setting, _infer(setting, thetas_u, subset, cfg))
        rows.append({"probes_per_class": m, "queries_per_request": float(frame["queries"].mean()),
                     "probe_queries": probe_queries * len(subset) / len(probes),
                     "accuracy": float(frame["correct"].mean())})
    return {"label_queries": pd.DataFrame(rows)}


def outputs(setting: Setting, results: list[li.Result]) -> dict[str, Figure]:
    frame = score(setting, results)
    return {"label_confusion.png": confusion_matrix(frame["true_label"].tolist(), frame["predicted"].tolist(),
                                                    setting.card["num_classes"])}


def defended(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"label_correct": frame["correct"].astype(bool)})


def defended_summary(group: pd.DataFrame) -> dict:
    return {"label_accuracy": group["label_correct"].mean()}


ATTACK = Attack(config=li.Config, run=run, score=score, summarise=summarise, prefix="li_", prepare=prepare,
                outputs=outputs, plots=accuracy_against_queries, defended=defended,
                defended_summary=defended_summary)
