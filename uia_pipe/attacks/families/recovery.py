"""Recovery: does θ_u alone give the deleted behaviour back under cheap manipulation? An attacker holding only
the released θ_u and public records (the test set; never the deleted ones) relearns (a few SGD steps on the
public records), quantises the weights (int8 and int4, per channel and per tensor: `weights.quantise`) and prunes
them by global magnitude (`weights.pruned`), each at the configured strengths.

The evaluator scores what comes back on the deleted records (`score`, handed the `Setting`): their loss,
accuracy and logit-scaled confidence of the true class (log p_y − log(1 − p_y), a one-model membership score)
under each manipulated θ_u, and under the same manipulation of the retrained model (`Setting.retrained`: θ₀
fine-tuned without them; for exact unlearning θ_u itself) as the control. The recovery share of a manipulation
at a strength is

    (metric(M(θ_u)) − metric(M(θ_retrained))) / (metric(θ) − metric(θ_retrained))

on the deleted records, pooled over the requests: the numerators' sum over the denominators' sum (a ratio of
means, not the mean of per-request ratios, which requests whose gap θ − θ_retrained is near 0 would swamp),
with a bootstrap interval over requests (`stats.ratio_of_means`). 0: nothing comes back; 1: the deleted
behaviour is back. Strength 0 is θ_u unmanipulated (what unlearning left behind). The control is plain
retraining for every method, as the unlearn stage's agreement with retraining is: for a method that serves
another model (sisa's and shapley's ensembles, certified's head) the share compares different models."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from ...errors import UiaError
from ...stats import ratio_of_means
from ...training import sgd_many
from ...weights import INT_BITS, pruned, rounded
from ..protocol import Attack, Context, Grant, Number
from ..schema.recovery import BITS, Config  # the settings, in the schema leaf

METRICS = ("loss", "logit", "accuracy")
assert {b for b in BITS if b} <= set(INT_BITS.values()), "schema.recovery.BITS names a width weights cannot round to"


def strengths(cfg: Config) -> dict[str, list[tuple[str, float]]]:
    """Each manipulation's (column key, strength) pairs in order; a strength of 0 is the key "none"."""
    quantise = [(f"int{b}_{g}" if b else "none", float(b)) for b in cfg.quantise for g in ("channel", "tensor")]
    return {"relearn": [(f"relearn_{s}" if s else "none", float(s)) for s in cfg.relearn],
            "quantise": list(dict.fromkeys(quantise)),
            "prune": [(f"prune_{f:g}" if f else "none", float(f)) for f in cfg.prune]}


def keys(cfg: Config) -> list[str]:
    """Every manipulated model's key, "none" (θ_u itself) first."""
    return list(dict.fromkeys(["none", *(k for pairs in strengths(cfg).values() for k, _ in pairs)]))


def manipulate(models: list[nn.Module], cfg: Config, public_x: torch.Tensor, public_y: torch.Tensor,
               seed: int) -> list[dict[str, nn.Module]]:
    """Per model, each manipulated copy by key (`keys`): relearning stacked over the models with the same seeded
    batches of public records for each (so two equal models stay equal), quantisation, pruning."""
    out: list[dict[str, nn.Module]] = [{"none": m} for m in models]
    steps = [s for s in cfg.relearn if s]
    if steps:
        relearned = sgd_many(models, public_x, public_y, cfg.relearn_lr, cfg.relearn_batch, steps, seed)
        for s in steps:
            for made, m in zip(out, relearned[s]):
                made[f"relearn_{s}"] = m
    for made in out:
        for key, bits in strengths(cfg)["quantise"]:
            if bits:
                made[key] = rounded(made["none"], key)
        for key, fraction in strengths(cfg)["prune"]:
            if fraction:
                made[key] = pruned(made["none"], fraction)
    return out


@dataclass
class Recovered:
    """The attacker's manipulated θ_u per request, and the recipe that made them (the evaluator repeats it on
    its control): the config, the public records and the seed; the attacker's seconds."""

    requests: tuple[int, ...]
    models: list[dict[str, nn.Module]]
    cfg: Config
    public_x: torch.Tensor
    public_y: torch.Tensor
    seed: int
    seconds: float


def run(grant: Grant, cfg: Config, ctx: Context) -> Recovered:
    """Every request's θ_u manipulated (`manipulate`), from θ_u and the public records alone."""
    if ctx.public_y is None:
        raise UiaError("attack.recovery: needs labelled public records to relearn on")
    started = time.perf_counter()
    models = manipulate(list(grant.thetas_u), cfg, ctx.public_x, ctx.public_y, ctx.seed + 29)
    seconds = time.perf_counter() - started
    if ctx.on_request is not None:
        for index in grant.requests:
            ctx.on_request("recovery", index)
    return Recovered(grant.requests, models, cfg, ctx.public_x, ctx.public_y, ctx.seed + 29, seconds)


@torch.no_grad()
def measure(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """The records' mean cross-entropy, accuracy and logit-scaled confidence of the true class."""
    model.eval()
    device = next(model.parameters()).device
    logp = torch.log_softmax(model(x.to(device)).double(), dim=1).cpu()
    true = logp.gather(1, y.long()[:, None])[:, 0]
    rest = torch.log1p(-true.exp().clamp(max=1 - 1e-12))
    return {"loss": float(-true.mean()), "logit": float((true - rest).mean()),
            "accuracy": float((logp.argmax(1) == y).double().mean())}


# --- the evaluator's half: called with its Setting, which holds the deleted records and the retrained models -

def control(setting, results: Recovered) -> list[dict[str, nn.Module]]:
    """The same manipulations of each request's retrained model (made once per setting and recipe)."""
    key = ("recovery control", results.cfg, results.seed, id(results.public_x), results.requests)
    if key not in setting.made:
        retrained = setting.retrained()
        setting.made[key] = manipulate(retrained, results.cfg, results.public_x, results.public_y, results.seed)
    return setting.made[key]


def score(setting, results: Recovered) -> pd.DataFrame:
    """One row per request: on its deleted records, each metric under θ, the retrained model, and each
    manipulated θ_u ("<key>_<metric>") beside the same manipulation of the retrained model
    ("<key>_<metric>_control"); the attacker's seconds (its share of the batch's)."""
    made = control(setting, results)
    rows = []
    for req, own, ctrl in zip(setting.requests, results.models, made):
        x, y = setting.truth(req)
        row = {"request": req["index"], "seconds": results.seconds / len(results.models)}
        row.update({f"theta_{m}": v for m, v in measure(setting.theta_original, x, y).items()})
        for key, model in own.items():
            row.update({f"{key}_{m}": v for m, v in measure(model, x, y).items()})
            row.update({f"{key}_{m}_control": v for m, v in measure(ctrl[key], x, y).items()})
        rows.append(row)
    return pd.DataFrame(rows)


def share(frame: pd.DataFrame, key: str, metric: str, resamples: int) -> tuple[float, float, float]:
    """The recovery share of manipulation `key` on `metric`, pooled over the requests, with its interval."""
    numerator = frame[f"{key}_{metric}"] - frame[f"{key}_{metric}_control"]
    denominator = frame[f"theta_{metric}"] - frame[f"none_{metric}_control"]
    return ratio_of_means(numerator.tolist(), denominator.tolist(), resamples, seed=0)


def summarise(frame: pd.DataFrame, results: Recovered, cfg: Config, stats: dict) -> dict:
    """Per manipulated key: each metric's share (`cfg.metric`'s with its interval), the deleted records' accuracy
    under the manipulated θ_u and under its control. Per manipulation (`relearn_share`, ...): the largest share
    of `cfg.metric` over its strengths (the evaluator's hindsight pick of the strength, which an attacker without
    the deleted records cannot make: an upper bound over the configured strengths) with that strength's interval
    and the strength itself; `residual_share`: θ_u unmanipulated. Each metric's mean under θ and the retrained
    model; the forget accuracy of θ, θ_u and the retrained model; the attacker's seconds per request."""
    out: dict[str, float] = {}
    for key in keys(cfg):
        for m in METRICS:
            value, low, high = share(frame, key, m, cfg.bootstrap if m == cfg.metric else 0)
            out[f"{key}_{m}_share"] = value
            if m == cfg.metric:
                out.update({f"{key}_{m}_share_ci95_low": low, f"{key}_{m}_share_ci95_high": high})
        out.update({f"{key}_accuracy": float(frame[f"{key}_accuracy"].mean()),
                    f"{key}_accuracy_control": float(frame[f"{key}_accuracy_control"].mean())})
    for name, pairs in [("residual", [("none", 0.0)]), *strengths(cfg).items()]:
        found = [(out[f"{k}_{cfg.metric}_share"], k, s) for k, s in pairs]
        found = [f for f in found if f[0] == f[0]]  # NaN: no gap to recover on these requests
        if found:
            best, key, strength = max(found)
            out.update({f"{name}_share": best, f"{name}_share_ci95_low": out[f"{key}_{cfg.metric}_share_ci95_low"],
                        f"{name}_share_ci95_high": out[f"{key}_{cfg.metric}_share_ci95_high"]})
            if name != "residual":
                out[f"{name}_share_strength"] = strength
    out.update({f"theta_{m}": float(frame[f"theta_{m}"].mean()) for m in METRICS})
    out.update({f"retrained_{m}": float(frame[f"none_{m}_control"].mean()) for m in METRICS})
    out.update({"theta_forget_accuracy": float(frame["theta_accuracy"].mean()),
                "unlearned_forget_accuracy": float(frame["none_accuracy"].mean()),
                "retrained_forget_accuracy": float(frame["none_accuracy_control"].mean()),
                "seconds_per_request": results.seconds / max(len(results.models), 1),
                "requests": len(frame), "queries_per_request": 0})
    return out


NUMBERS = (
    Number("relearn_share", "recovery share, relearning", tables=("headline", "methods", "defence", "access")),
    Number("quantise_share", "recovery share, quantisation", tables=("headline", "methods", "defence", "access")),
    Number("prune_share", "recovery share, pruning", tables=("headline", "methods", "defence", "access")),
    Number("residual_share", "share left unmanipulated", tables=("headline", "methods")),
    Number("unlearned_forget_accuracy", "forget accuracy, θ_u", "none_accuracy", ("methods",), interval="t"),
    Number("retrained_forget_accuracy", "forget accuracy, retrained", "none_accuracy_control", ("methods",),
           interval="t"),
    Number("seconds_per_request", "recovery seconds / request", tables=("headline",), higher_leaks=False),
)

ATTACK = Attack(config=Config, run=run, score=score, summarise=summarise, numbers=NUMBERS)
