"""Label inference (Hu et al.'s "a user is the attacker"): which class did the
deletion request remove? The attacker queries θ (before) and θ_u (after) on
probing samples and reads, per class, how much θ_u lost on the probes θ files
under that class.

Use:

    from uia_pipe.attacks import label_inference as li
    before = li.oracle(theta, cfg)                       # counted black-box access
    probes, pstats = li.make_probes(before, cfg, seed, input_shape=(1, 28, 28), num_classes=10)
    view = BlackBoxView(before, li.oracle(theta_u, cfg), 10, (1, 28, 28))
    result, stats = li.infer(view, probes, cfg)          # one request
    pairs = li.infer_many(views, probes, cfg)            # several, with optional calibration

Probes depend only on θ: make them once per served model and reuse them for
every request. θ's outputs on the probes travel with them, so a request costs
one query of θ_u per probe.

Signals, by access mode (the result says which it used):
- probabilities: `cfg.statistic` — `logit` (default: mean drop of the probe's
  own-class log-odds, log p_c − log(1 − p_c), in float64), `logit_median`, or
  `probability` (the reference's mean drop of p_c).
- topk: the same statistics from the visible entries; a class that leaves the
  top k is read at the largest value it can have.
- label: flip counts, (probes of c that θ_u labels otherwise − probes θ_u newly
  labels c) / probes of c, on probes moved next to θ's decision boundary.

Exact unlearning (redo the fine-tune without X) shifts θ_u by a drift common to
every request (the last minibatch is one sample short), which for confidently
fitted samples is larger than the removed sample's own effect. With
`calibration: leave_one_out`, `infer_many` subtracts per class the median score
of the other requests on the same θ: per-class normalisation against that drift.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Literal, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from .probes import STRATEGIES, ProbeConfig, Probes, to_boundary
from .view import BlackBoxView, QueryOracle

__all__ = [
    "Config", "Result", "STATISTICS", "BlackBoxView", "Probes",
    "oracle", "make_probes", "infer", "infer_many", "class_scores",
]


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    probes: ProbeConfig = Field(ProbeConfig(), description="how probing samples are made (probes.py)")
    statistic: str = Field(
        "logit",
        description="per-class drop under probability/top-k access: logit | logit_median | probability "
        "(reference: probability, the mean drop of p_c)",
    )
    access: Literal["probabilities", "topk", "label"] = Field(
        "probabilities", description="what each query returns (reference: probabilities)"
    )
    topk: int = Field(1, ge=1, description="entries visible under topk access (no reference)")
    calibration: Literal["none", "leave_one_out"] = Field(
        "none",
        description="infer_many only: subtract per class the median score of the other requests on the same θ; "
        "use for exact unlearning, whose θ_u carries a common drift (reference: none)",
    )

    @field_validator("statistic")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in STATISTICS:
            raise ValueError(f"unknown statistic {v!r}; choose from {sorted(STATISTICS)}")
        return v

    @field_validator("probes")
    @classmethod
    def _strategy(cls, v: ProbeConfig) -> ProbeConfig:
        if v.strategy not in STRATEGIES:
            raise ValueError(f"unknown probe strategy {v.strategy!r}; choose from {sorted(STRATEGIES)}")
        return v


@dataclass(frozen=True)
class Result:
    """One request's answer. `ranked`: classes, most likely removed first;
    `scores`: per class (nan where no probe is filed under the class);
    `predicted`: the top n_labels; `label_counts`: estimated removed samples
    per class when k was given; `signal`: what was read; `queries`: model
    evaluations this request cost."""

    ranked: list[int]
    scores: list[float]
    predicted: list[int]
    label_counts: list[int] | None
    signal: str
    queries: int
    probes_per_class: list[int]

    def to_dict(self) -> dict:
        return asdict(self)


def oracle(model: nn.Module, cfg: Config, budget: int | None = None) -> QueryOracle:
    """Counted black-box access to `model` with the access mode of `cfg`."""
    return QueryOracle(model, access=cfg.access, topk=cfg.topk, budget=budget)


def make_probes(
    before: QueryOracle,
    cfg: Config,
    seed: int,
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    auxiliary: torch.Tensor | None = None,
    model: nn.Module | None = None,
) -> tuple[Probes, dict]:
    """Probing samples for θ with `cfg.probes.strategy`, spending queries of
    `before` only (counted there; stats["queries"] is what this call spent).
    `auxiliary`: public samples for the auxiliary strategy; `model`: θ's
    weights for the whitebox strategy. Under label-only access the probes are
    then bisected towards θ's decision boundary (`probes.boundary_steps`).
    Stops cleanly at the budget: stats["budget_exhausted"] says so."""
    start = before.queries
    pcfg = cfg.probes
    probes, stats = STRATEGIES[pcfg.strategy](
        before, pcfg, seed, input_shape=tuple(input_shape), num_classes=num_classes,
        auxiliary=auxiliary, model=model,
    )
    if before.access == "label" and pcfg.boundary_steps > 0 and len(probes):
        left = None if pcfg.budget is None else max(pcfg.budget - (before.queries - start), 0)
        probes, more = to_boundary(before, probes, pcfg.boundary_steps, seed + 1, left)
        stats.update(more)
        stats["budget_exhausted"] = stats["budget_exhausted"] or more["boundary_steps"] < pcfg.boundary_steps
    stats["queries"] = before.queries - start
    stats["queries_per_probe"] = stats["queries"] / max(len(probes), 1)
    return probes, stats


# ---- statistics: (before, after, label, num_classes) -> per-class drop, nan where no probe

_TINY = torch.finfo(torch.float64).tiny


def _own(out: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(p_c, 1 − p_c) per probe for its class c, the second summed from the
    visible other entries (exact under full access, no cancellation near 1);
    a class hidden by top-k is read at the largest value it can have."""
    p = out.gather(1, label[:, None]).squeeze(1)
    visible = out > 0
    shown = out.sum(1)
    hidden = (~visible).sum(1)
    bound = torch.minimum(
        torch.where(visible, out, torch.ones_like(out)).min(1).values, (1.0 - shown).clamp_min(0)
    )
    p = torch.where(p > 0, p, bound)
    rest = out.sum(1) - out.gather(1, label[:, None]).squeeze(1)
    rest = torch.where(hidden > 0, rest + (1.0 - shown).clamp_min(0), rest)
    return p, rest


def _log_odds(out: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    p, rest = _own(out, label)
    return p.clamp_min(_TINY).log() - rest.clamp_min(_TINY).log()


def _per_class(values: torch.Tensor, label: torch.Tensor, num_classes: int, reduce: str) -> torch.Tensor:
    out = torch.full((num_classes,), float("nan"), dtype=torch.float64)
    for c in range(num_classes):
        mine = values[label == c]
        if len(mine):
            out[c] = mine.mean() if reduce == "mean" else mine.median()
    return out


def _probability(before, after, label, num_classes):
    drop = _own(before, label)[0] - _own(after, label)[0]
    return _per_class(drop, label, num_classes, "mean")


def _logit(before, after, label, num_classes):
    return _per_class(_log_odds(before, label) - _log_odds(after, label), label, num_classes, "mean")


def _logit_median(before, after, label, num_classes):
    return _per_class(_log_odds(before, label) - _log_odds(after, label), label, num_classes, "median")


def _label_flips(before, after, label, num_classes):
    now = after.argmax(1)
    out = torch.full((num_classes,), float("nan"), dtype=torch.float64)
    for c in range(num_classes):
        mine = label == c
        if mine.any():
            left = (mine & (now != c)).sum()
            came = (~mine & (now == c)).sum()
            out[c] = (left - came).double() / mine.sum()
    return out


Statistic = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]

STATISTICS: dict[str, Statistic] = {
    "logit": _logit,
    "logit_median": _logit_median,
    "probability": _probability,
}


def _oracles(view: BlackBoxView | tuple[QueryOracle, QueryOracle]) -> tuple[QueryOracle, QueryOracle]:
    if isinstance(view, BlackBoxView):
        return view.before, view.after
    before, after = view
    return before, after


def class_scores(
    view: BlackBoxView | tuple[QueryOracle, QueryOracle], probes: Probes, cfg: Config
) -> tuple[torch.Tensor, str, int]:
    """(per-class score [C] float64, signal used, queries spent): the raw
    drops, before any calibration. θ's outputs are reused from the probes
    when they were recorded in the access mode of θ_u's oracle."""
    before_oracle, after_oracle = _oracles(view)
    start = before_oracle.queries + after_oracle.queries if before_oracle is not after_oracle else after_oracle.queries
    num_classes = probes.before.shape[1]
    after = after_oracle(probes.x)
    if probes.access == after_oracle.access:
        before = probes.before
    else:
        before = before_oracle(probes.x)
    label = before.argmax(1)
    if after_oracle.access == "label":
        scores, signal = _label_flips(before, after, label, num_classes), "label_flips"
    else:
        scores = STATISTICS[cfg.statistic](before, after, label, num_classes)
        signal = cfg.statistic if after_oracle.access == "probabilities" else f"top{after_oracle.topk}_{cfg.statistic}"
    end = before_oracle.queries + after_oracle.queries if before_oracle is not after_oracle else after_oracle.queries
    return scores, signal, end - start


def _decide(
    scores: torch.Tensor, n_labels: int, k: int | None, signal: str, queries: int, counts: list[int]
) -> Result:
    ranking = torch.where(torch.isnan(scores), torch.tensor(-torch.inf, dtype=scores.dtype), scores)
    ranked = ranking.argsort(descending=True, stable=True).tolist()
    label_counts = None
    if k is not None:
        label_counts = _allocate(ranking, k)
    return Result(
        ranked=ranked,
        scores=scores.tolist(),
        predicted=ranked[:n_labels],
        label_counts=label_counts,
        signal=signal,
        queries=queries,
        probes_per_class=counts,
    )


def _allocate(scores: torch.Tensor, k: int) -> list[int]:
    """k removed samples shared among classes in proportion to their positive
    scores (the drops add up, to first order, over the removed samples),
    rounded by largest remainder; all on the top class if none is positive."""
    pos = scores.clamp_min(0).nan_to_num(0.0, posinf=0.0)
    out = torch.zeros(len(scores), dtype=torch.long)
    if pos.sum() <= 0:
        out[int(scores.argmax())] = k
        return out.tolist()
    share = pos / pos.sum() * k
    out = share.floor().long()
    rest = k - int(out.sum())
    if rest > 0:
        out[(share - out).argsort(descending=True)[:rest]] += 1
    return out.tolist()


def infer(
    view: BlackBoxView | tuple[QueryOracle, QueryOracle],
    probes: Probes,
    cfg: Config,
    *,
    n_labels: int = 1,
    k: int | None = None,
    baseline: torch.Tensor | None = None,
) -> tuple[Result, dict]:
    """The removed label(s) of one request from (θ, θ_u) query access.

    `view`: a BlackBoxView or a (before, after) pair of oracles. `n_labels`:
    how many classes the request removed (top-N). `k`: the request's size,
    when known, for the label-count estimate. `baseline`: a per-class score to
    subtract (see infer_many). Stats: queries, signal, probes used.
    """
    scores, signal, queries = class_scores(view, probes, cfg)
    if baseline is not None:
        scores = scores - baseline
        signal += "-calibrated"
    counts = torch.bincount(probes.label, minlength=probes.before.shape[1]).tolist()
    result = _decide(scores, n_labels, k, signal, queries, counts)
    return result, {"queries": queries, "signal": signal, "probes": len(probes)}


def infer_many(
    views: Sequence[BlackBoxView | tuple[QueryOracle, QueryOracle]],
    probes: Probes,
    cfg: Config,
    *,
    n_labels: int | Sequence[int] = 1,
    k: int | Sequence[int | None] | None = None,
) -> list[tuple[Result, dict]]:
    """`infer` for several requests on the same θ. With `cfg.calibration ==
    "leave_one_out"` (and at least 3 requests) each request's scores have the
    per-class median of the other requests' scores subtracted; otherwise
    identical to calling infer on each."""
    n = len(views)
    ns = [n_labels] * n if isinstance(n_labels, int) else list(n_labels)
    ks = list(k) if isinstance(k, Sequence) else [k] * n
    raw = [class_scores(v, probes, cfg) for v in views]
    counts = torch.bincount(probes.label, minlength=probes.before.shape[1]).tolist()
    stack = torch.stack([r[0] for r in raw]) if raw else torch.zeros(0)
    out = []
    for i, (scores, signal, queries) in enumerate(raw):
        if cfg.calibration == "leave_one_out" and n >= 3:
            others = torch.cat([stack[:i], stack[i + 1 :]])
            scores = scores - others.nanmedian(0).values
            signal += "-calibrated"
        result = _decide(scores, ns[i], ks[i], signal, queries, counts)
        out.append((result, {"queries": queries, "signal": signal, "probes": len(probes)}))
    return out
