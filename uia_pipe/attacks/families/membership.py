"""Membership: a user who knows θ₀, the fine-tune recipe, N, k and the unlearning method, holds labelled
records of its own (the public test set, never the server's training data) and queries θ and θ_u on a
candidate; it trains its classifier (or fits U-LiRA's Gaussians) on shadow pairs it makes itself through the
server's recipe, granted as a replay (`attacks/membership.py`).

Its numbers rest on the evaluator's audit (`grant.question`): the run's requests' deleted records, then
pairs the evaluator makes on the pool exactly as the server made θ and θ_u (released through the defence
under test, where there is one), each with as many never-member and retained candidates."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd
import torch

from ... import roc
from ...errors import UiaError
from ...tasks import TASKS
from .. import membership as mi
from ..protocol import Attack, Context, Grant, Number, digest

def _candidates(pairs: list[mi.Pair]) -> tuple[torch.Tensor, torch.Tensor]:
    """Every pair's candidates in Queried's order (deleted, never, retained)."""
    xs = [p.x[r] for p in pairs for r in ("deleted", "never", "retained")]
    ys = [p.y[r] for p in pairs for r in ("deleted", "never", "retained")]
    return torch.cat(xs), torch.cat(ys)


def prepare(grant: Grant, cfg: mi.Config, ctx: Context) -> tuple[dict, dict]:
    """The attacker's shadow pairs (its own records through the server's replay), classifiers and U-LiRA
    statistics of the audit's candidates. The shadows' queried posteriors, and U-LiRA's statistics, depend only
    on the server's recipe (`grant.server.fingerprint()`), the attacker's records, the settings that make them,
    the seed and the code: kept in ctx.store under a hash of these (made afresh without a store), so the
    attack, defend and access stages make them once. The classifiers are fitted again on the kept posteriors
    (seeded: the same forests)."""
    if ctx.public_y is None:
        raise UiaError("attack.membership: needs labelled public records (the attacker's shadow data)")
    server, seed, store = grant.server, ctx.seed, ctx.store
    audit = grant.question
    x, y = _candidates(audit.pairs)
    shadow_key = "membership/shadows/" + digest("shadow pairs", server.fingerprint(), ctx.public_x, ctx.public_y,
                                                cfg.shadows, cfg.stack, seed + 7, _code())
    lira_key = "membership/lira/" + digest("lira", shadow_key, x, y, cfg.lira_shadows, cfg.lira_group, seed + 13)
    kept = None if store is None else store.load(shadow_key)
    kept_lira = None if store is None or not cfg.lira_shadows else store.load(lira_key)
    lira, lira_seconds = None, 0.0
    if kept is not None and (kept_lira is not None or not cfg.lira_shadows):
        queried, shadow_seconds = _queried(*kept), kept[1]["seconds"]
        if kept_lira is not None:
            lira, lira_seconds = _lira(*kept_lira), kept_lira[1]["seconds"]
    else:  # U-LiRA's never-member side reads the shadow models themselves: made again with it
        started = time.perf_counter()
        shadows = mi.make_pairs(server, ctx.public_x, ctx.public_y, cfg.shadows, seed + 7, ctx.executor,
                                "shadow pair", cfg.stack)
        queried = mi.Queried()
        for pair in shadows:
            queried.add(pair)
        shadow_seconds = time.perf_counter() - started
        if store is not None:
            roles, qy, lp, lp_u, _ = queried.arrays()
            store.save(shadow_key, {"roles": torch.tensor([ROLES.index(r) for r in roles]), "y": qy, "lp": lp,
                                    "lp_u": lp_u}, {"seconds": shadow_seconds})
        if cfg.lira_shadows:
            started = time.perf_counter()
            lira = mi.lira_shadows(server, x, y, ctx.public_x, ctx.public_y, shadows, cfg, seed + 13, ctx.executor)
            lira_seconds = time.perf_counter() - started
            if store is not None:
                store.save(lira_key, {f"mean.{r}": torch.from_numpy(m) for r, m in lira.means.items()},
                           {"std": lira.std, "seconds": lira_seconds})
    started = time.perf_counter()
    classifiers = mi.train_classifiers(queried, cfg, seed)
    n = len(y)
    stats = {"shadow_pairs": cfg.shadows, "shadow_seconds": shadow_seconds + time.perf_counter() - started,
             "audit_pairs": len(audit.pairs), "audit_seconds": audit.seconds, "lira_seconds": lira_seconds,
             "lira_seconds_per_candidate": lira_seconds / n if lira else 0.0}
    return {"classifiers": classifiers, "lira": lira, "config": cfg}, stats


ROLES = ("deleted", "never", "retained")  # a kept shadow candidate's role, by its position here


def _queried(tensors: dict[str, torch.Tensor], meta: dict) -> mi.Queried:
    """Kept shadow candidates as the attacker queried them."""
    roles = [ROLES[i] for i in tensors["roles"].tolist()]
    return mi.Queried(roles, [tensors["y"]], [tensors["lp"]], [tensors["lp_u"]], [-1] * len(roles))


def _lira(tensors: dict[str, torch.Tensor], meta: dict) -> mi.Lira:
    return mi.Lira({k.split(".", 1)[1]: t.numpy() for k, t in tensors.items()}, meta["std"])


def _code() -> bytes:
    """The text of the code that makes the shadows and U-LiRA's statistics from the replay (this module's and
    the algorithms'): an edit makes them anew."""
    return b"".join(Path(m.__file__).read_bytes() for m in (mi, sys.modules[__name__]))


def run(grant: Grant, cfg: mi.Config, ctx: Context) -> pd.DataFrame:
    """One row per audit candidate: its pair's request (−1 for a made pair), role and the score of every
    scorer (classifier per feature, and lira) for each question."""
    prepared = ctx.prepared["membership"]
    queried = mi.Queried()
    for pair in grant.question.pairs:  # each pair's θ_u as released at this run
        queried.add(pair)
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
        for index in grant.requests:
            ctx.on_request("membership", index)
    return frame


def score(setting, frame: pd.DataFrame) -> pd.DataFrame:
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


def _pooled(frame: pd.DataFrame, cfg: mi.Config) -> dict:
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


def summarise(scored: pd.DataFrame, frame: pd.DataFrame, cfg: mi.Config, stats: dict) -> dict:
    """The run's own requests (the share whose deleted record the primary classifier flags), the attack's
    cost (shadow and audit pairs with their seconds, U-LiRA's seconds per candidate, 2 queries a candidate),
    and every audit candidate's numbers pooled (`_pooled`)."""
    return {**{f"{q}_requests_detected": float(scored[f"{q}_detected"].mean()) for q in mi.QUESTIONS},
            **stats, "queries_per_candidate": 2, **_pooled(frame, cfg)}


def outputs(setting, grant: Grant, frame: pd.DataFrame, cfg: mi.Config, ctx: Context) -> dict:
    """ROC curves of the primary scorer, U-LiRA and Chen et al.'s best feature, each question (plot data)."""
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


NUMBERS = (
    Number("never_auc", "AUC, deleted vs never a member", tables=("headline", "methods", "defence", "access", "figure")),
    Number("never_tpr_at_1pct_fpr", "TPR at 1% FPR"),
    Number("never_tpr_at_0.1pct_fpr", "TPR at 0.1% FPR"),
    Number("retained_auc", "AUC, deleted vs retained"),
    Number("never_lira_auc", "U-LiRA AUC", tables=("headline", "methods")),
    Number("never_auc_best_chen", "Chen et al.'s best AUC", tables=("methods",)),
    Number("never_auc_one_model", "one-model AUC", tables=("headline",)),
    Number("queries_per_candidate", "queries / candidate", tables=("headline",)),
)

ATTACK = Attack(config=mi.Config, run=run, score=score, summarise=summarise, numbers=NUMBERS, tasks=TASKS,
                prepare=prepare, outputs=outputs)
