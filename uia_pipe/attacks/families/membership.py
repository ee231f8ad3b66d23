"""Membership inference with both models as an attack family
(`attacks/membership.py`). The attacker's records are the public test set
(the server trains on the training set only: the pool, D_u and θ₀'s data are
never among them). Its numbers rest on `targets` deleted records per
question: those of the run's requests, then pairs the evaluator makes on the
pool exactly as the server made θ and θ_u (released through the defence under
test, where there is one)."""

from __future__ import annotations

import dataclasses
import math
import time

import pandas as pd
import torch
from torch import nn

from ... import roc
from ...errors import UiaError
from ...executor import LOCAL, Executor
from .. import membership as mi
from ...tasks import TASKS
from ..protocol import Attack, Context
from ..setting import Setting

# Summary keys of each question kept under a defence (defend.json: "membership.<question>_<key>"): the
# population attack's, which the sweep runs without U-LiRA's shadows or bootstrap intervals, on at most
# 20 deleted records a question (each defence is applied to every audit pair: fine-tuning 100 pairs for
# 20 epochs alone would cost a minute on 2 cores).
_DEFENDED = ("auc", "balanced_accuracy", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr")


def defended_config(cfg: mi.Config) -> mi.Config:
    return cfg.model_copy(update={"lira_shadows": 0, "bootstrap": 0, "targets": min(cfg.targets, 20)})


def check(setting: Setting, cfg: mi.Config) -> None:
    """The server's recipe is known (the unlearn stage records it) and k leaves records to retain."""
    if setting.finetune is None or setting.method_config is None or setting.outside_y is None:
        raise UiaError("attack.membership: the run lacks the fine-tune's settings, the method's config or the "
                       "pool (made by an older unlearn stage: rerun it)")
    if max(setting.ks, default=0) >= len(setting.du_y):
        raise UiaError(f"attack.membership: a request removes all of D_u (k = {max(setting.ks)}): "
                       "nothing is retained to compare with")


def server_of(setting: Setting) -> mi.Server:
    return mi.Server(setting.theta_pretrained, setting.finetune, setting.finetune_seed, setting.method,
                     setting.method_config, len(setting.du_y), setting.ks[0])


def _sample(g: torch.Generator, count: int, k: int) -> torch.Tensor:
    return torch.randperm(count, generator=g)[:k]


def targets(setting: Setting, server: mi.Server, cfg: mi.Config, seed: int, executor: Executor = LOCAL
            ) -> list[mi.Pair]:
    """The evaluator's audit: the run's requests (θ_u filled in by run), then made pairs on the pool until
    `targets` deleted records are scored. Each deleted record has a never-member and a retained partner."""
    g = torch.Generator().manual_seed(seed)
    pairs = []
    for req in setting.requests:
        forget = setting.forget_mask(req)
        k = int(forget.sum())
        kept = torch.nonzero(~forget)[:, 0][_sample(g, int((~forget).sum()), k)]
        never = _sample(g, len(setting.outside_y), k)
        pairs.append(mi.Pair(setting.theta_original, None,
                             {"deleted": setting.du_x[forget], "retained": setting.du_x[kept],
                              "never": setting.outside_x[never]},
                             {"deleted": setting.du_y[forget], "retained": setting.du_y[kept],
                              "never": setting.outside_y[never]}, request=req["index"]))
    have = sum(len(p.y["deleted"]) for p in pairs)
    if have < cfg.targets:
        pool_x = torch.cat([setting.du_x, setting.outside_x])
        pool_y = torch.cat([setting.du_y, setting.outside_y])
        pairs += mi.make_pairs(server, pool_x, pool_y, math.ceil((cfg.targets - have) / server.k), seed + 1,
                              executor, "audit pair")
    return pairs


def _candidates(pairs: list[mi.Pair]) -> tuple[torch.Tensor, torch.Tensor]:
    """Every pair's candidates in Queried's order (deleted, never, retained)."""
    xs = [p.x[r] for p in pairs for r in ("deleted", "never", "retained")]
    ys = [p.y[r] for p in pairs for r in ("deleted", "never", "retained")]
    return torch.cat(xs), torch.cat(ys)


def prepare(setting: Setting, cfg: mi.Config, ctx: Context) -> tuple[dict, dict]:
    """The attacker's shadow pairs, classifiers and U-LiRA statistics; the evaluator's audit pairs."""
    check(setting, cfg)
    if ctx.public_y is None:
        raise UiaError("attack.membership: needs labelled public records (the attacker's shadow data)")
    server, seed = server_of(setting), ctx.seed
    started = time.perf_counter()
    shadows = mi.make_pairs(server, ctx.public_x, ctx.public_y, cfg.shadows, seed + 7, ctx.executor, "shadow pair")
    queried = mi.Queried()
    for pair in shadows:
        queried.add(pair)
    classifiers = mi.train_classifiers(queried, cfg, seed)
    shadow_seconds = time.perf_counter() - started
    started = time.perf_counter()
    audit = targets(setting, server, cfg, seed + 11, ctx.executor)
    made_seconds = time.perf_counter() - started
    lira, lira_seconds = None, 0.0
    x, y = _candidates(audit)
    if cfg.lira_shadows:
        started = time.perf_counter()
        lira = mi.lira_shadows(server, x, y, ctx.public_x, ctx.public_y, shadows, cfg, seed + 13, ctx.executor)
        lira_seconds = time.perf_counter() - started
    n = len(y)
    stats = {"shadow_pairs": len(shadows), "shadow_seconds": shadow_seconds, "audit_pairs": len(audit),
             "audit_seconds": made_seconds, "lira_seconds": lira_seconds,
             "lira_seconds_per_candidate": lira_seconds / n if lira else 0.0}
    return {"classifiers": classifiers, "audit": audit, "lira": lira, "config": cfg}, stats


def run(setting: Setting, thetas_u: list[nn.Module], cfg: mi.Config, ctx: Context) -> pd.DataFrame:
    """One row per audit candidate: its pair's request (−1 for a made pair), role and the score of every
    scorer (classifier per feature, and lira) for each question."""
    prepared = ctx.prepared["membership"]
    by_index = dict(zip((r["index"] for r in setting.requests), thetas_u))
    queried = mi.Queried()
    for j, pair in enumerate(prepared["audit"]):
        if pair.request >= 0:
            theta_u = by_index[pair.request]
        elif ctx.release is not None:
            theta_u = ctx.release(pair.theta, pair.theta_u, *pair.release, ctx.seed + 1000 + j)
        else:
            theta_u = pair.theta_u
        if ctx.limits.observe is not None:  # an access level: the attacker's copies of both released models
            pair, theta_u = dataclasses.replace(pair, theta=ctx.limits.observe(pair.theta)), ctx.limits.observe(theta_u)
        queried.add(pair, theta_u)
    roles, y, lp, lp_u, request = queried.arrays()
    frame = pd.DataFrame({"request": request, "role": roles})
    statistic = mi.drop(lp, lp_u, y)
    for q in mi.QUESTIONS:
        for name, s in mi.classifier_scores(prepared["classifiers"], cfg.features, q, y, lp, lp_u).items():
            frame[f"{q}.{name}"] = s
        frame[q] = frame[f"{q}.{cfg.primary}"]
        if prepared["lira"] is not None:
            frame[f"{q}.lira"] = prepared["lira"].score(q, statistic)
    if ctx.on_request is not None:
        for req in setting.requests:
            ctx.on_request("membership", req["index"])
    return frame


def score(setting: Setting, frame: pd.DataFrame) -> pd.DataFrame:
    """Per request of the run: the primary classifier's P(deleted) of its deleted records (mean) under each
    question, and whether it says deleted (> 0.5)."""
    rows = []
    for req in setting.requests:
        own = frame[(frame["request"] == req["index"]) & (frame["role"] == "deleted")]
        row = {"request": req["index"]}
        for q in mi.QUESTIONS:
            row[f"{q}_score"] = float(own[q].mean())
            row[f"{q}_detected"] = bool(row[f"{q}_score"] > 0.5)
        rows.append(row)
    return pd.DataFrame(rows)


def _scorers(frame: pd.DataFrame, question: str) -> list[str]:
    return [c.split(".", 1)[1] for c in frame.columns if c.startswith(f"{question}.")]


def _threshold(scorer: str) -> float:
    return 0.0 if scorer == "lira" else 0.5  # log likelihood ratio / classifier probability


def pooled(setting: Setting, frame: pd.DataFrame, cfg: mi.Config) -> dict:
    """Per question: the primary scorer's AUC, balanced accuracy and TPR at 1% and 0.1% FPR with bootstrap
    intervals, U-LiRA's the same ("lira_" keys), every scorer's AUC ("auc_<scorer>"); candidate counts."""
    primary, out = cfg.primary, {}
    for q in mi.QUESTIONS:
        m = mi.question_mask(frame["role"].to_numpy(), q)
        labels = (frame["role"].to_numpy()[m] == "deleted")
        for scorer in _scorers(frame, q):
            s = frame[f"{q}.{scorer}"].to_numpy()[m]
            if scorer in (primary, "lira"):
                lead = "" if scorer == primary else "lira_"
                out.update({f"{q}_{lead}{k}": v for k, v in
                            roc.summary(labels, s, _threshold(scorer), cfg.bootstrap, seed=0).items()})
            out[f"{q}_auc_{scorer}"] = roc.auc(labels, s)
        chen = [out[f"{q}_auc_{f}"] for f in mi.CHEN if f"{q}_auc_{f}" in out]
        if chen:
            out[f"{q}_auc_best_chen"] = max(chen)
        out[f"{q}_candidates"] = int(m.sum())
    out["positives"] = int((frame["role"] == "deleted").sum())
    return out


def summarise(frame: pd.DataFrame, stats: dict) -> dict:
    """The run's own requests (the share whose deleted record the primary classifier flags) and the attack's
    cost: shadow and audit pairs with their seconds, U-LiRA's seconds per candidate, 2 queries a candidate."""
    return {**{f"{q}_requests_detected": float(frame[f"{q}_detected"].mean()) for q in mi.QUESTIONS},
            **stats, "queries_per_candidate": 2}


def roc_points(setting: Setting, thetas_u: list[nn.Module], cfg: mi.Config, ctx: Context) -> dict[str, pd.DataFrame]:
    """ROC curves of the primary scorer, U-LiRA and Chen et al.'s best feature, each question (DVC plots)."""
    frame = ctx.earlier["membership"]
    rows = []
    for q in mi.QUESTIONS:
        m = mi.question_mask(frame["role"].to_numpy(), q)
        labels = frame["role"].to_numpy()[m] == "deleted"
        chen = [f for f in mi.CHEN if f in cfg.features]
        best = max(chen, key=lambda f: roc.auc(labels, frame[f"{q}.{f}"].to_numpy()[m])) if chen else None
        for scorer in dict.fromkeys([cfg.primary, "lira", best]):
            if scorer is None or f"{q}.{scorer}" not in frame:
                continue
            fpr, tpr = roc.curve(labels, frame[f"{q}.{scorer}"].to_numpy()[m])
            rows.append(pd.DataFrame({"question": q, "scorer": scorer, "fpr": fpr, "tpr": tpr}))
    return {"membership_roc": pd.concat(rows, ignore_index=True)}


ATTACK = Attack(config=mi.Config, run=run, score=score, summarise=summarise, prefix="mi_", prepare=prepare,
                plots=roc_points, pooled=pooled, check=check, defended_config=defended_config,
                defended_pooled=tuple(f"{q}_{k}" for q in mi.QUESTIONS for k in _DEFENDED), tasks=TASKS)
