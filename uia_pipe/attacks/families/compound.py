"""The compound attack: membership, label inference and feature recovery
chained to re-identify a deleted record among M + 1 candidates the attacker
holds (the record and M others from the server's pool, seeded per request).

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
from torch import nn

from ...errors import UiaError
from ...stats import wilson_ci
from .. import membership as mi
from ..protocol import Attack, Context
from ..schema.compound import Config  # the settings, in the schema leaf
from ..setting import Setting

NEEDS = ("label_inference", "feature_recovery", "membership")
LINKS = ("membership", "label", "feature_recovery", "compound")


def candidate_set(setting: Setting, removed: torch.Tensor, m: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The deleted record's rivals: m records of the pool other than the request's removed ones (D_u's
    retained and never-member records alike), seeded."""
    kept = torch.ones(len(setting.du_y), dtype=torch.bool)
    kept[removed] = False
    x = torch.cat([setting.du_x[kept], setting.outside_x])
    y = torch.cat([setting.du_y[kept], setting.outside_y])
    pick = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:m]
    return x[pick], y[pick]


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


def check(setting: Setting, cfg: Config) -> None:
    """Enough pool records for M rivals of every request."""
    if setting.outside_y is None:
        raise UiaError("attack.compound: the run lacks the pool's records (rerun train and unlearn)")
    room = len(setting.du_y) + len(setting.outside_y) - max(setting.ks, default=0)
    if cfg.candidates > room:
        raise UiaError(f"attack.compound.candidates: at most {room} (the pool less a request's k); "
                       f"got {cfg.candidates}")


def run(setting: Setting, thetas_u: list[nn.Module], cfg: Config, ctx: Context) -> list[list[dict]]:
    """Per request, per removed sample that feature recovery covered: each link's rank of it."""
    missing = [name for name in NEEDS if name not in ctx.earlier]
    if missing:
        raise UiaError(f"attack.compound: needs the {', '.join(missing)} attack families to run before it")
    prepared = ctx.prepared["membership"]
    classifiers, mcfg = prepared["classifiers"], prepared["config"]
    out = []
    for j, (req, theta_u) in enumerate(zip(setting.requests, thetas_u)):
        recovery, inferred = ctx.earlier["feature_recovery"][j], ctx.earlier["label_inference"][j]
        labels = set(inferred.predicted)
        recon = recovery.result.reconstruction.detach().double().flatten(1)
        rows = []
        for i in recovery.covered.tolist():
            others_x, others_y = candidate_set(setting, torch.tensor(req["forget"]), cfg.candidates,
                                               ctx.seed + 104_729 * (req["index"] + 1) + i)
            x = torch.cat([setting.du_x[i: i + 1], others_x])
            y = torch.cat([setting.du_y[i: i + 1], others_y])
            lp, lp_u = mi.log_posteriors(setting.theta_original, x, y), mi.log_posteriors(theta_u, x, y)
            member = sum(torch.from_numpy(mi.classifier_scores(classifiers, [mcfg.primary], q, y, lp, lp_u)[mcfg.primary])
                         for q in mi.QUESTIONS) / len(mi.QUESTIONS)
            distance = torch.cdist(x.double().flatten(1), recon).min(1).values
            label_ok = torch.tensor([int(c) in labels for c in y])
            rows.append({"sample": i, **ranks(member.double(), label_ok, distance, cfg.tolerance),
                         "label_right": bool(label_ok[0])})
        out.append(rows)
        if ctx.on_request is not None:
            ctx.on_request("compound", req["index"])
    return out


def score(setting: Setting, results: list[list[dict]]) -> pd.DataFrame:
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


def summarise(frame: pd.DataFrame, stats: dict) -> dict:
    """Each link's top-1 / top-5 over the requests, the chain's top-1 with its Wilson interval, and chance."""
    out = {}
    for link in LINKS:
        for top in (1, 5):
            out[f"{link}_top{top}"] = float(frame[f"{link}_top{top}"].mean())
    scored = frame["compound_top1"].dropna()
    low, high = wilson_ci(int(round(scored.sum())), len(scored))
    out.update({"reid_top1": out["compound_top1"], "reid_top1_ci95_low": low, "reid_top1_ci95_high": high,
                "reid_top5": out["compound_top5"], "requests": len(scored)})
    return out


def chance(setting: Setting, results: list[list[dict]], cfg: Config) -> dict:
    """A uniform guess among the M + 1 candidates; the queries a request costs (each candidate on θ and θ_u,
    beside those of the three links)."""
    n = cfg.candidates + 1
    return {"chance_top1": 1 / n, "chance_top5": min(5, n) / n, "candidates": n, "queries_per_request": 2 * n}


def defended(frame: pd.DataFrame) -> pd.DataFrame:
    """Under a defence: the chain's top-1 (defend.json: compound.reid_top1_mean)."""
    return pd.DataFrame({"compound.reid_top1": frame["compound_top1"]})


ATTACK = Attack(config=Config, run=run, score=score, summarise=summarise, prefix="cmp_", pooled=chance,
                check=check, defended=defended)
