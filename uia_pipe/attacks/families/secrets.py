"""The language model's families (`train.task: language_model`; `attacks/secrets.py`): what the released pair
(θ, θ_u) gives away about a deleted canary, one person's secret-bearing sentences.

- exposure: the Secret Sharer's exposure of the deleted canary's secret under θ and under θ_u alone, beside
  the never-inserted controls' (its floor). The attacker knows the template and the secret's length, and
  ranks every possible secret by the model's likelihood (the exact rank up to 10^6 secrets, above it the Secret
  Sharer's estimate from random secrets: `attacks/secrets.py`).
- extraction: both models: every secret ranked by log p_θ(s) − λ log p_θu(s) (each λ of the config), its
  best guess read as the deleted secret: rank, exposure and top-1 recovery.
- text_recovery: the deleted record itself, without candidates or a template: contrastive decoding of the pair,
  scored by character accuracy and edit distance against the most frequent character at each position.

The evaluator's question is only the public format (`SecretFormat`); the score reads the deleted canary's secret
from the dataset card, never handed to the attacker."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import torch

from ...stats import mean_ci, wilson_ci
from .. import secrets as sec
from ..protocol import Attack, Context, Grant, Number
from ..schema.secrets import MAX_EXACT, ExposureConfig, ExtractionConfig, TextRecoveryConfig

LM = ("language_model",)


def _scores(model, fmt: sec.SecretFormat, cfg, seed: int) -> sec.Exact | sec.Estimated:
    """Every secret ranked by the model's likelihood: exactly up to MAX_EXACT secrets, else estimated."""
    return sec.ranking(model, fmt, cfg.chunk, cfg.samples, seed, getattr(cfg, "beam", 1), MAX_EXACT)


def prepare_exposure(grant: Grant, cfg: ExposureConfig, ctx: Context):
    started = time.perf_counter()
    theta = _scores(grant.theta_original, grant.question, cfg, ctx.seed)
    return theta, {"theta_seconds": time.perf_counter() - started}


def run_exposure(grant: Grant, cfg: ExposureConfig, ctx: Context) -> dict:
    """θ's scores of every secret (prepared once) and each θ_u's."""
    out = []
    for index, theta_u in zip(grant.requests, grant.thetas_u):
        started = time.perf_counter()
        out.append((_scores(theta_u, grant.question, cfg, ctx.seed), time.perf_counter() - started))
        if ctx.on_request is not None:
            ctx.on_request("exposure", index)
    return {"theta": ctx.prepared["exposure"], "theta_u": [s for s, _ in out], "seconds": [t for _, t in out]}


# --- the evaluator's half: the deleted canary's secret from the card -------------------------------------------

def canary_of(setting, req: dict) -> int | None:
    """The canary whose copies request `req` removed (None: it removed corpus records)."""
    canaries = setting.card.get("canaries") or {"texts": []}
    vocab = setting.card["vocab"]
    first = setting.du_x[req["forget"][0]]
    for i, text in enumerate(canaries["texts"]):
        if torch.equal(torch.tensor([vocab.index(c) for c in text[:-1]]), first.cpu()):
            return i
    return None


def _secret(setting, req: dict) -> int | None:
    i = canary_of(setting, req)
    return None if i is None else int(setting.card["canaries"]["secrets"][i])


def _controls(setting) -> list[int]:
    return [int(s) for s in setting.card["canaries"]["controls"]]


def _mean_exposure(ranked, values: list[int]) -> float:
    return float(np.mean([ranked.exposure(v) for v in values])) if values else float("nan")


def score_exposure(setting, results: dict) -> pd.DataFrame:
    """Per request: the deleted secret's exposure under θ and θ_u, the controls' mean exposure under each, the
    controls' largest under θ_u (the never-inserted range's top) and whether the deleted one is within it."""
    controls, rows = _controls(setting), []
    top_theta = max((results["theta"].exposure(v) for v in controls), default=float("nan"))
    for req, scores_u, seconds in zip(setting.requests, results["theta_u"], results["seconds"]):
        secret = _secret(setting, req)
        nan = float("nan")
        e, e_u = ((results["theta"].exposure(secret), scores_u.exposure(secret))
                  if secret is not None else (nan, nan))
        top_u = max((scores_u.exposure(v) for v in controls), default=nan)
        rows.append({"request": req["index"], "exposure_theta": e, "exposure_theta_u": e_u,
                     "control_theta": _mean_exposure(results["theta"], controls),
                     "control_theta_u": _mean_exposure(scores_u, controls), "control_top_theta": top_theta,
                     "control_top_theta_u": top_u, "within_controls": float(e_u <= top_u), "seconds": seconds})
    return pd.DataFrame(rows)


SHARES = ("within_controls", "secret_found")  # 0/1 per request: Wilson intervals


def _t(frame: pd.DataFrame, column: str, key: str) -> dict:
    """The mean of a column over requests with its interval: Wilson's for a share (SHARES), else Student-t."""
    values = frame[column].dropna()
    if column in SHARES:
        low, high = wilson_ci(int(values.sum()), len(values))
        return {key: float(values.mean()), f"{key}_ci95_low": low, f"{key}_ci95_high": high}
    mean, half = mean_ci(values.tolist())
    return {key: mean, f"{key}_ci95_low": mean - half, f"{key}_ci95_high": mean + half}


def summarise_exposure(frame: pd.DataFrame, results: dict, cfg: ExposureConfig, stats: dict) -> dict:
    size = results["theta"].size
    out = {"secrets": size, "max_exposure": math.log2(size), "estimated": float(size > MAX_EXACT)}
    for column in ("exposure_theta", "exposure_theta_u", "control_theta", "control_theta_u", "within_controls"):
        out.update(_t(frame, column, column))
    out["control_top_theta"] = float(frame["control_top_theta"].iloc[0]) if len(frame) else float("nan")
    out["seconds_per_request"] = float(frame["seconds"].mean())
    return {**out, **stats}


# --- extraction ----------------------------------------------------------------------------------------------

def prepare_extraction(grant: Grant, cfg: ExtractionConfig, ctx: Context):
    return _scores(grant.theta_original, grant.question, cfg, ctx.seed), {}


def run_extraction(grant: Grant, cfg: ExtractionConfig, ctx: Context) -> list[dict]:
    """Per request, per λ: the ranking's scores and its top guess."""
    theta, out = ctx.prepared["extraction"], []
    for index, theta_u in zip(grant.requests, grant.thetas_u):
        started = time.perf_counter()
        scores_u = _scores(theta_u, grant.question, cfg, ctx.seed)
        ranked = {w: theta.combine(scores_u, w) for w in cfg.weights}
        out.append({"ranked": ranked, "guess": {w: r.best() for w, r in ranked.items()},
                    "seconds": time.perf_counter() - started})
        if ctx.on_request is not None:
            ctx.on_request("extraction", index)
    return out


def _name(w: float) -> str:
    return f"{w:g}".replace(".", "_")


def score_extraction(setting, results: list[dict]) -> pd.DataFrame:
    rows = []
    for req, res in zip(setting.requests, results):
        secret, row = _secret(setting, req), {"request": req["index"], "seconds": res["seconds"]}
        for i, (w, ranked) in enumerate(res["ranked"].items()):
            lead = "" if i == 0 else f"lambda_{_name(w)}_"
            if secret is None:
                row.update({f"{lead}rank": float("nan"), f"{lead}exposure": float("nan"), f"{lead}top1": float("nan")})
                continue
            row.update({f"{lead}rank": ranked.rank(secret), f"{lead}exposure": ranked.exposure(secret),
                        f"{lead}top1": float(res["guess"][w] == secret)})
        rows.append(row)
    return pd.DataFrame(rows)


def summarise_extraction(frame: pd.DataFrame, results: list[dict], cfg: ExtractionConfig, stats: dict) -> dict:
    out = {"weight": cfg.weights[0]}
    for i, w in enumerate(cfg.weights):
        lead = "" if i == 0 else f"lambda_{_name(w)}_"
        hits = frame[f"{lead}top1"].dropna()
        low, high = wilson_ci(int(hits.sum()), len(hits))
        out.update({f"{lead}top1": float(hits.mean()), f"{lead}top1_ci95_low": low, f"{lead}top1_ci95_high": high,
                    f"{lead}median_rank": float(frame[f"{lead}rank"].median())})
        out.update(_t(frame, f"{lead}exposure", f"{lead}exposure"))
    out["seconds_per_request"] = float(frame["seconds"].mean())
    return out


# --- text recovery -------------------------------------------------------------------------------------------

def run_text(grant: Grant, cfg: TextRecoveryConfig, ctx: Context) -> list[dict]:
    out = []
    vocab = grant.num_outputs
    for index, theta_u in zip(grant.requests, grant.thetas_u):
        started = time.perf_counter()
        text = sec.contrastive_decode(grant.theta_original, theta_u, grant.input_shape[0], vocab, cfg.beam, cfg.weight)
        out.append({"tokens": text, "seconds": time.perf_counter() - started})
        if ctx.on_request is not None:
            ctx.on_request("text_recovery", index)
    return out


def edit_distance(a: list[int], b: list[int]) -> int:
    """Levenshtein distance."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _baseline(setting) -> torch.Tensor:
    """The mean text: each position's most frequent character over the pretraining records (the last one's
    repeated for the record's final character)."""
    mode = setting.train_x.mode(0).values
    return torch.cat([mode, mode[-1:]])


def score_text(setting, results: list[dict]) -> pd.DataFrame:
    """Per request: the recovered record against the first deleted record (its L + 1 characters): character
    accuracy, edit distance over the length, and the mean text's; the share of the secret's digits recovered
    in place where the record is a canary."""
    base, rows = _baseline(setting), []
    card = setting.card
    for req, res in zip(setting.requests, results):
        i = req["forget"][0]
        truth = torch.cat([setting.du_x[i], setting.du_y[i][-1:]]).cpu()
        got = res["tokens"]
        n = len(truth)
        row = {"request": req["index"], "char_accuracy": float((got == truth).double().mean()),
               "edit_distance": edit_distance(got.tolist(), truth.tolist()) / n,
               "baseline_char_accuracy": float((base == truth).double().mean()),
               "baseline_edit_distance": edit_distance(base.tolist(), truth.tolist()) / n,
               "seconds": res["seconds"]}
        text = "".join(card["vocab"][t] for t in got.tolist())
        c = canary_of(setting, req)
        if c is not None:
            start = len(card["canaries"]["template"])
            span = slice(start, start + card["canaries"]["digits"])
            row["secret_accuracy"] = float((got[span] == truth[span]).double().mean())
            row["secret_found"] = float(card["canaries"]["secrets"][c] in text)  # anywhere in the recovered text
        row["text"] = text.replace("\n", "\\n")  # one CSV line
        rows.append(row)
    return pd.DataFrame(rows)


def summarise_text(frame: pd.DataFrame, results: list[dict], cfg: TextRecoveryConfig, stats: dict) -> dict:
    out = {}
    for column in ("char_accuracy", "edit_distance", "baseline_char_accuracy", "baseline_edit_distance",
                   "secret_accuracy", "secret_found"):
        if column in frame:
            out.update(_t(frame, column, column))
    out["seconds_per_request"] = float(frame["seconds"].mean())
    return out


EXPOSURE = Attack(config=ExposureConfig, run=run_exposure, score=score_exposure, summarise=summarise_exposure,
                  prepare=prepare_exposure, tasks=LM, numbers=(
                      Number("exposure_theta_u", "exposure under θ_u (bits)", "exposure_theta_u",
                             ("headline", "methods", "defence", "access", "figure"), "t",
                             baseline="control_theta_u"),  # the lead (headline.json): what the deletion left
                      Number("exposure_theta", "exposure under θ (bits)", "exposure_theta", ("headline", "methods"), "t"),
                      Number("control_theta", "never-inserted exposure under θ (bits)", "control_theta",
                             ("headline", "methods"), "t"),
                      Number("within_controls", "θ_u within the never-inserted range", "within_controls",
                             ("headline", "methods"), "t", higher_leaks=False),
                  ))
EXTRACTION = Attack(config=ExtractionConfig, run=run_extraction, score=score_extraction,
                    summarise=summarise_extraction, prepare=prepare_extraction, tasks=LM, numbers=(
                        Number("top1", "two-model extraction, top-1", "top1",
                               ("headline", "methods", "defence", "access", "figure"), "wilson"),
                        Number("exposure", "two-model extraction, exposure (bits)", "exposure",
                               ("headline", "methods"), "t"),
                        Number("median_rank", "two-model extraction, median rank", tables=("headline", "methods"),
                               higher_leaks=False),
                    ))
TEXT_RECOVERY = Attack(config=TextRecoveryConfig, run=run_text, score=score_text, summarise=summarise_text,
                       tasks=LM, numbers=(
                           Number("char_accuracy", "text recovery, character accuracy", "char_accuracy",
                                  ("headline", "methods", "defence", "access", "figure"), "t",
                                  baseline="baseline_char_accuracy"),
                           Number("edit_distance", "text recovery, edit distance / length", "edit_distance",
                                  ("headline", "methods"), "t", baseline="baseline_edit_distance",
                                  higher_leaks=False),
                           Number("secret_accuracy", "text recovery, secret digits in place", "secret_accuracy",
                                  ("headline", "methods"), "t"),
                           Number("secret_found", "text recovery, secret in the text", "secret_found",
                                  ("headline", "methods"), "t"),
                       ))
