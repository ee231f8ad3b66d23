"""The compound attack: all three at once — feature recovery's reconstruction picks the nearest of M + 1
candidate records the attacker holds; label inference's class, then membership's score, decide between near
ties. The candidates are the evaluator's line-up: the deleted record and M others from the server's pool,
seeded per request.

(iii) feature recovery's reconstruction (with the labels its own `labels`
setting gives it) ranks the candidates by distance, nearest first; among the
candidates within `tolerance` of the nearest distance — the reconstruction
cannot tell them apart — (ii) label inference's class comes first, then (i)
membership's primary classifier's score on (θ, θ_u). Each link thus decides
where the stronger one before it is unsure. Re-identification top-1 / top-5:
the deleted record among the first one / five. Each link is scored alone too (membership's ranking; a uniform pick
among the candidates of the inferred class; the nearest candidate to the
reconstruction), beside chance 1/(M+1). Runs after the three families, on
their results."""

from __future__ import annotations

import math

import pandas as pd
import torch

from ...stats import wilson_ci
from .. import membership as mi
from ..protocol import Attack, Context, Grant, Number
from ..schema.compound import Config  # the settings, in the schema leaf

LINKS = {"membership": "membership", "label": "label inference", "feature_recovery": "feature recovery",
         "compound": "the chain"}


def ranks(membership: torch.Tensor, label_ok: torch.Tensor, distance: torch.Tensor, tolerance: float) -> dict:
    """Position (0 = first) of candidate 0 under each link alone and under the chain; the label link as its
    expected top-1 / top-5 of a uniform pick among the candidates it keeps."""
    def position(order: list[int]) -> int:
        return order.index(0)

    def by(*keys) -> list[int]:  # candidates sorted by the keys, ties broken against candidate 0
        return sorted(range(len(distance)), key=lambda c: (*(float(k[c]) for k in keys), c == 0))

    near = distance <= distance.min() * (1 + tolerance)
    chain = by(~near, ~label_ok & near, -membership * near, distance)  # label and membership rank near-ties only
    kept = int(label_ok.sum())
    return {"membership": position(by(-membership)), "feature_recovery": position(by(distance)),
            "compound": position(chain),
            "label_top1": float(label_ok[0]) / kept if kept else 0.0,
            "label_top5": float(label_ok[0]) * min(5, kept) / kept if kept else 0.0}


def run(grant: Grant, cfg: Config, ctx: Context) -> list[list[dict]]:
    """Per request, per removed sample that feature recovery covered: each link's rank of it among its
    line-up (`grant.question`, the evaluator's: the sample first, then M rivals from the server's pool)."""
    prepared = ctx.prepared["membership"]
    classifiers, mcfg = prepared["classifiers"], prepared["config"]
    out = []
    for j, (index, theta_u, lineups) in enumerate(zip(grant.requests, grant.thetas_u, grant.question)):
        recovery, inferred = ctx.earlier["feature_recovery"][j], ctx.earlier["label_inference"][j]
        labels = set(inferred.predicted)
        recon = recovery.result.reconstruction.detach().double().flatten(1)
        rows = []
        for i, (x, y) in lineups:
            lp, lp_u = mi.log_posteriors(grant.theta_original, x, y), mi.log_posteriors(theta_u, x, y)
            member = sum(torch.from_numpy(mi.classifier_scores(classifiers, [mcfg.primary], q, y, lp, lp_u)[mcfg.primary])
                         for q in mi.QUESTIONS) / len(mi.QUESTIONS)
            distance = torch.cdist(x.double().flatten(1), recon).min(1).values
            label_ok = torch.tensor([int(c) in labels for c in y])
            rows.append({"sample": i, **ranks(member.double(), label_ok, distance, cfg.tolerance),
                         "label_right": bool(label_ok[0])})
        out.append(rows)
        if ctx.on_request is not None:
            ctx.on_request("compound", index)
    return out


def score(setting, results: list[list[dict]]) -> pd.DataFrame:
    """One row per request: each link's top-1 and top-5 re-identification, averaged over its covered samples."""
    rows = []
    for req, samples in zip(setting.requests, results):
        row = {"request": req["index"], "samples": len(samples)}
        for link in LINKS:
            for top in (1, 5):
                if link == "label":
                    values = [s[f"label_top{top}"] for s in samples]
                else:
                    values = [float(s[link] < top) for s in samples]
                row[f"{link}_top{top}"] = sum(values) / len(values) if values else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def summarise(frame: pd.DataFrame, results: list[list[dict]], cfg: Config, stats: dict) -> dict:
    """Each link's top-1 / top-5 over the requests, the chain's top-1 with its Wilson interval; chance, a
    uniform guess among the M + 1 candidates; the queries a request costs (each candidate on θ and θ_u,
    beside those of the three links)."""
    out = {}
    for link in LINKS:
        for top in (1, 5):
            out[f"{link}_top{top}"] = float(frame[f"{link}_top{top}"].mean())
    scored = frame["compound_top1"].dropna()
    low, high = wilson_ci(int(round(scored.sum())), len(scored))
    out.update({"reid_top1": out["compound_top1"], "reid_top1_ci95_low": low, "reid_top1_ci95_high": high,
                "reid_top5": out["compound_top5"], "requests": len(scored)})
    n = cfg.candidates + 1
    return {**out, "chance_top1": 1 / n, "chance_top5": min(5, n) / n, "candidates": n, "queries_per_request": 2 * n}


NUMBERS = (
    Number("reid_top1", "re-identification top-1", "compound_top1", ("headline", "methods", "defence", "access"),
           baseline="chance_top1"),
    Number("reid_top5", "re-identification top-5", "compound_top5", ("headline",)),
    Number("chance_top1", "chance top-1", tables=("headline", "methods")),
    *(Number(f"{link}_top1", f"{LINKS[link]} alone, top-1", f"{link}_top1", ("headline",)) for link in LINKS
      if link != "compound"),
)

ATTACK = Attack(config=Config, run=run, score=score, summarise=summarise, numbers=NUMBERS)
