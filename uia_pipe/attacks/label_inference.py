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
    # against exact unlearning: θ₀'s outputs once (P counted queries), then the referenced drop
    probes, rstats = li.with_reference(probes, li.oracle(theta_pretrained, cfg))
    result, stats = li.infer(view, probes, cfg, k=1, reference_weight=li.reference_weight(512, 1, 128))

Probes depend only on θ: make them once per served model and reuse them for
every request. θ's outputs on the probes travel with them (and θ₀'s, when
referenced), so a request costs one query of θ_u per probe.

Signals, by access mode (the result says which it used):
- probabilities: `cfg.statistic` — `logit` (default: mean drop of the probe's
  own-class log-odds, log p_c − log(1 − p_c), in float64), `logit_median`, or
  `probability` (the reference's mean drop of p_c).
- topk: the same statistics from the visible entries; a class that leaves the
  top k is read at the largest value it can have.
- label: flip counts, (probes of c that θ_u labels otherwise − probes θ_u newly
  labels c) / probes of c, on probes moved next to θ's decision boundary.

Exact unlearning (redo the fine-tune without X) shifts θ_u by a drift common to
every request, which for confidently fitted samples is larger than the removed
sample's own effect: with one full-batch step (N ≤ B), θ − θ₀ = −(lr/N)Σ_all g
and θ_u − θ₀ = −(lr/(N−k))Σ_rest g, so θ_u − θ = (lr/N)(Σ_X g − k·mean_rest g),
the removed samples' gradients beside the mean gradient of the rest of D_u. Two
remedies:
- `reference` (one request, needs θ₀: the model served before D_u was fine-tuned
  in, which the user could query then): the per-probe drop plus w·(f(θ) − f(θ₀)),
  w = k/(N−k), i.e. ∝ N·f(θ) − (N−k)·f(θ_u) − k·f(θ₀) ≈ −lr·J·Σ_X g, the output
  image of the count-weighted exact update. Exact for one step to first order in
  the outputs; with N > B the drift is the last minibatch's own mean gradient,
  which no endpoint model shows, and `reference_weight` removes only its
  expectation (see there). `auto` uses θ₀ for exact and retrain only, never
  under label access; the result's signal then ends in `-referenced`.
- `calibration: leave_one_out`: `infer_many` subtracts per class the median score
  of the other requests on the same θ: per-class normalisation against the drift.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Callable, Literal, Sequence

import torch
from torch import nn

from .probes import STRATEGIES, Probes, to_boundary
from .schema.label_inference import STATISTIC_NAMES, Config  # the settings, in the schema leaf
from .view import BlackBoxView, QueryOracle

__all__ = [
    "Config", "Result", "STATISTICS", "BlackBoxView", "Probes",
    "oracle", "make_probes", "infer", "infer_many", "class_scores",
    "with_reference", "reference_weight", "uses_reference",
]


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


# ---- statistics: a per-probe value v (log-odds or p_c of the probe's class) and how a class
# reduces its probes' drops v(θ) − v(θ_u) (+ w·(v(θ) − v(θ₀)) when referenced); nan where no probe

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


def _probability(out: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    return _own(out, label)[0]


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


Value = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

STATISTICS: dict[str, tuple[Value, Literal["mean", "median"]]] = {
    "logit": (_log_odds, "mean"),
    "logit_median": (_log_odds, "median"),
    "probability": (_probability, "mean"),
}
assert tuple(STATISTICS) == STATISTIC_NAMES, "label_inference.STATISTICS and schema.label_inference.STATISTIC_NAMES disagree"


def _drops(name: str, before, after, label, num_classes, reference=None, weight: float = 0.0) -> torch.Tensor:
    value, reduce = STATISTICS[name]
    v = value(before, label)
    drop = v - value(after, label)
    if reference is not None:
        drop = drop + weight * (v - value(reference, label))
    return _per_class(drop, label, num_classes, reduce)


# ---- the θ₀ reference against exact unlearning

RETRAINED = ("exact", "retrain")  # methods whose θ_u is the fine-tune from θ₀ redone without X


def uses_reference(cfg: Config, method: str) -> bool:
    """Whether `cfg` reads the drop against θ₀ for requests unlearned by `method`."""
    if cfg.access == "label" or cfg.reference == "none":
        return False
    return cfg.reference == "pretrained" or method in RETRAINED


def reference_weight(n: int, k: int, batch_size: int) -> float:
    """w in the per-probe score (f(θ) − f(θ_u)) + w·(f(θ) − f(θ₀)), for a
    request removing k of the N = |D_u| samples θ was fine-tuned on from θ₀
    with minibatches of `batch_size` (the server's; the attacker is granted
    it, as it is granted N and k).

    N ≤ B (one step an epoch): w = k/(N−k), so (N−k)·score = N·f(θ) −
    (N−k)·f(θ_u) − k·f(θ₀), the output image of N(θ−θ₀) − (N−k)(θ_u−θ₀) =
    −lr·Σ_X ∇CE(θ₀): exact in parameters for one step, and to first order in
    the outputs. N > B: nb = ⌈N/B⌉ steps an epoch, nb' = ⌈(N−k)/B⌉ after
    removal; with each gradient ≈ the mean gradient ḡ plus its own part,
    θ − θ_u ≈ −lr·[Σ_X ∇CE/B + (nb − nb' − k/B)·ḡ] and θ − θ₀ ≈ −lr·nb·ḡ, so
    w = (k/B − (nb − nb'))/nb (≈ k/N; capping N and N−k at B instead would
    give w = 0, the plain drop). Only first order there: the drift is the mean
    gradient of the last minibatch, whose samples take over the removed ones'
    weight, and ḡ estimates it with that batch's own sampling error.
    """
    if not 0 <= k < n:
        raise ValueError(f"need 0 <= k < N (got k={k}, N={n})")
    if n <= batch_size:
        return k / (n - k)
    steps, steps_after = math.ceil(n / batch_size), math.ceil((n - k) / batch_size)
    return (k / batch_size - (steps - steps_after)) / steps


def with_reference(probes: Probes, pretrained: QueryOracle) -> tuple[Probes, dict]:
    """The probes with θ₀'s outputs on them, one counted query of
    `pretrained` (θ₀'s oracle) per probe, taken once and reused for every
    request. The oracle must return what the probes recorded for θ."""
    if pretrained.access != probes.access:
        raise ValueError(f"θ₀'s oracle gives {pretrained.access} but the probes hold {probes.access} outputs")
    start = pretrained.queries
    reference = pretrained(probes.x) if len(probes) else probes.before.clone()
    return replace(probes, reference=reference), {"reference_queries": pretrained.queries - start}


def _oracles(view: BlackBoxView | tuple[QueryOracle, QueryOracle]) -> tuple[QueryOracle, QueryOracle]:
    if isinstance(view, BlackBoxView):
        return view.before, view.after
    before, after = view
    return before, after


def class_scores(
    view: BlackBoxView | tuple[QueryOracle, QueryOracle], probes: Probes, cfg: Config,
    reference_weight: float | None = None,
) -> tuple[torch.Tensor, str, int]:
    """(per-class score [C] float64, signal used, queries spent): the raw
    drops, before any calibration. θ's outputs are reused from the probes
    when they were recorded in the access mode of θ_u's oracle.
    `reference_weight`: read against θ₀'s outputs carried by the probes
    (see `reference_weight()`); None = the plain drop."""
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
        reference = None
        if reference_weight is not None:
            if probes.reference is None or probes.access != after_oracle.access:
                raise ValueError("the θ₀-referenced statistic needs θ₀'s outputs on the probes in θ_u's "
                                 "access mode (label_inference.with_reference)")
            reference = probes.reference
        scores = _drops(cfg.statistic, before, after, label, num_classes, reference, reference_weight or 0.0)
        signal = cfg.statistic if after_oracle.access == "probabilities" else f"top{after_oracle.topk}_{cfg.statistic}"
        if reference is not None:
            signal += "-referenced"
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
    reference_weight: float | None = None,
) -> tuple[Result, dict]:
    """The removed label(s) of one request from (θ, θ_u) query access.

    `view`: a BlackBoxView or a (before, after) pair of oracles. `n_labels`:
    how many classes the request removed (top-N). `k`: the request's size,
    when known, for the label-count estimate. `baseline`: a per-class score to
    subtract (see infer_many). `reference_weight`: read against θ₀ too (the
    probes must carry θ₀'s outputs: `with_reference`). Stats: queries (of θ_u,
    and of θ where re-asked; θ₀'s were spent once in with_reference), signal,
    probes used.
    """
    scores, signal, queries = class_scores(view, probes, cfg, reference_weight)
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
    reference_weight: float | Sequence[float | None] | None = None,
) -> list[tuple[Result, dict]]:
    """`infer` for several requests on the same θ. With `cfg.calibration ==
    "leave_one_out"` (and at least 3 requests) each request's scores have the
    per-class median of the other requests' scores subtracted; otherwise
    identical to calling infer on each. `reference_weight`: one for all
    requests or one each (see infer)."""
    n = len(views)
    ns = [n_labels] * n if isinstance(n_labels, int) else list(n_labels)
    ks = list(k) if isinstance(k, Sequence) else [k] * n
    ws = list(reference_weight) if isinstance(reference_weight, Sequence) else [reference_weight] * n
    raw = [class_scores(v, probes, cfg, w) for v, w in zip(views, ws)]
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
