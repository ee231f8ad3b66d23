"""Probing samples for label inference: inputs on which the served model θ is
confidently one class, so that the change θ → θ_u can be read class by class.

Strategies form a registry, name -> function, all with one signature:

    strategy(oracle, cfg, seed, *, input_shape, num_classes, auxiliary=None, model=None)
        -> (Probes, stats)

`oracle` is the attacker's `QueryOracle` on θ; every input a strategy
evaluates goes through it (finite differences included) and is counted, and a
strategy stops cleanly, returning what it finished, once the oracle's budget or
`cfg.budget` would be exceeded. Probes depend only on θ, so they are made once
per served model and reused for every deletion request.

- zoo: the reference's data-free probes. Zeroth-order coordinate-wise Adam
  (Chen et al., ZOO) on the probe's log-odds of class c, from Gaussian noise
  clamped to [0,1], with symmetric finite differences x ± h·e_i evaluated as
  batched queries, until θ gives c at least `threshold`. Optionally in a
  reduced search space (`zoo.resolution`, ZOO's attack-space reduction) that is
  upsampled to the input size.
- noise: unoptimised random inputs, labelled by θ's argmax: the floor.
- auxiliary: public in-distribution samples the caller passes (a split
  disjoint from the training data); per class, the ones θ is most confident on.
- whitebox: gradient ascent on the same objective with θ's weights (`model`);
  costs gradient evaluations, not queries.

`to_boundary` moves probes next to θ's decision boundary by bisection with
label-only queries: the probes that label-only access needs to see flips.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .schema.probes import STRATEGY_NAMES, ProbeConfig, WhiteboxConfig, ZooConfig, _Config  # noqa: F401  (re-exported)
from .view import BudgetExhausted, QueryOracle


@dataclass(frozen=True)
class Probes:
    """Probing samples and θ's outputs on them.

    x: [P, *input_shape] float32 in [0,1]; target: [P] the class each was made
    for; before: [P, C] float64, θ's outputs in `access` mode (what the oracle
    returned); reached: [P] whether θ gives the target at least the threshold
    (under label access: whether θ's label is the target); reference: [P, C]
    float64 or None, θ₀'s outputs in the same access mode, for the
    θ₀-referenced statistic against exact unlearning (label_inference.with_reference).
    """

    x: torch.Tensor
    target: torch.Tensor
    before: torch.Tensor
    reached: torch.Tensor
    access: str
    reference: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.x)

    @property
    def label(self) -> torch.Tensor:
        """θ's argmax on each probe: the class the decision files it under."""
        return self.before.argmax(1)

    def first_per_class(self, m: int) -> "Probes":
        """The first m probes made for each class (fewer probes, fewer queries)."""
        keep = torch.cat([torch.nonzero(self.target == c).flatten()[:m] for c in self.target.unique()]).sort().values
        return Probes(self.x[keep], self.target[keep], self.before[keep], self.reached[keep], self.access,
                      None if self.reference is None else self.reference[keep])


class _Stop(Exception):
    """The query budget would be exceeded by the next batch."""


class _Meter:
    """Counts queries against the strategy's own budget and the oracle's, and
    refuses a batch whole rather than spending part of it."""

    def __init__(self, oracle: QueryOracle, budget: int | None, batch: int = 4096):
        self.oracle = oracle
        self.start = oracle.queries
        self.budget = budget
        self.batch = batch
        self.exhausted = False

    @property
    def spent(self) -> int:
        return self.oracle.queries - self.start

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        if n == 0:
            return torch.zeros(0, 0, dtype=torch.float64)
        over_own = self.budget is not None and self.spent + n > self.budget
        over_oracle = self.oracle.budget is not None and self.oracle.queries + n > self.oracle.budget
        if over_own or over_oracle:
            self.exhausted = True
            raise _Stop
        try:
            return torch.cat([self.oracle(x[i : i + self.batch]) for i in range(0, n, self.batch)])
        except BudgetExhausted as err:  # another user of the oracle got there first
            self.exhausted = True
            raise _Stop from err


def _log_odds(out: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """log p_c − log(1 − p_c) from float64 outputs, with 1 − p_c summed from the
    other classes where they are visible (no cancellation near p_c ≈ 1)."""
    p = out.gather(1, cls[:, None]).squeeze(1)
    rest = out.sum(1) - p
    rest = torch.where(rest > 0, rest, 1.0 - p)  # top-1 access: only p_c is visible
    tiny = torch.finfo(out.dtype).tiny
    return p.clamp_min(tiny).log() - rest.clamp_min(tiny).log()


def _start(n: int, shape: tuple[int, ...], kind: str, gen: torch.Generator) -> torch.Tensor:
    if kind == "uniform":
        return torch.rand((n, *shape), generator=gen)
    return torch.randn((n, *shape), generator=gen).clamp_(0, 1)


def _targets(num_classes: int, per_class: int) -> torch.Tensor:
    return torch.arange(num_classes).repeat_interleave(per_class)


def _confidence(out: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    return out.gather(1, cls[:, None]).squeeze(1)


def _reached(out: torch.Tensor, cls: torch.Tensor, threshold: float, access: str) -> torch.Tensor:
    if access == "label":
        return out.argmax(1) == cls
    return _confidence(out, cls) >= threshold


def _stats(name: str, probes: Probes, meter: _Meter, **extra) -> dict:
    counts = torch.bincount(probes.label, minlength=probes.before.shape[1]) if len(probes) else torch.zeros(0)
    return {
        "strategy": name,
        "queries": meter.spent,
        "probes": len(probes),
        "queries_per_probe": meter.spent / max(len(probes), 1),
        "reached": int(probes.reached.sum()),
        "classes_covered": int((counts > 0).sum()),
        "per_class_counts": counts.tolist(),
        "budget_exhausted": meter.exhausted,
        **extra,
    }


def zoo(
    oracle: QueryOracle,
    cfg: ProbeConfig,
    seed: int,
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    auxiliary: torch.Tensor | None = None,
    model: nn.Module | None = None,
) -> tuple[Probes, dict]:
    """`cfg.per_class` probes per class by zeroth-order coordinate Adam, all
    probes advanced together so each iteration is a few large oracle calls.

    Per iteration and unfinished probe: `coordinates` coordinates drawn without
    replacement, 2 queries each (x ± h·e_i, kept inside [0,1] and divided by
    the true spacing), then 1 query of the updated probe. A probe stops once
    θ gives its class ≥ threshold. On budget exhaustion the finished probes
    and the unfinished ones (reached=False) come back as they stand.
    Stats: queries, queries per probe, iterations per finished probe.
    """
    z = cfg.zoo
    gen = torch.Generator().manual_seed(seed)
    meter = _Meter(oracle, cfg.budget, z.batch)
    channels = input_shape[0]
    spatial = len(input_shape) == 3 and z.resolution is not None
    space = (channels, z.resolution, z.resolution) if spatial else tuple(input_shape)

    def lift(v: torch.Tensor) -> torch.Tensor:
        v = v.reshape(len(v), *space)
        if spatial and space[1:] != tuple(input_shape[1:]):
            v = F.interpolate(v, size=tuple(input_shape[1:]), mode="bilinear", align_corners=False)
        return v

    target = _targets(num_classes, cfg.per_class)
    n = len(target)
    d = math.prod(space)
    k = min(z.coordinates, d)
    v = _start(n, space, cfg.noise, gen).reshape(n, d)
    m = torch.zeros(n, d, dtype=torch.float64)
    s = torch.zeros(n, d, dtype=torch.float64)
    t = torch.zeros(n, d)
    out = torch.zeros(n, num_classes, dtype=torch.float64)
    done = torch.zeros(n, dtype=torch.bool)
    started = False
    iterations = torch.zeros(n, dtype=torch.long)
    try:
        out = meter(lift(v))
        started = True
        done = _reached(out, target, cfg.threshold, oracle.access)
        for _ in range(z.max_iterations):
            act = torch.nonzero(~done).flatten()
            if len(act) == 0:
                break
            a = len(act)
            coords = torch.rand(a, d, generator=gen).argsort(1)[:, :k]
            base = v[act]
            here = base.gather(1, coords)
            hi = (here + z.h).clamp(max=1.0)
            lo = (here - z.h).clamp(min=0.0)
            plus = base[:, None, :].repeat(1, k, 1)
            minus = plus.clone()
            own, eye = torch.arange(a)[:, None], torch.arange(k)
            plus[own, eye, coords] = hi
            minus[own, eye, coords] = lo
            batch = torch.cat([plus, minus], 1).reshape(a * 2 * k, d)
            cls = target[act].repeat_interleave(2 * k)
            f = -_log_odds(meter(lift(batch)), cls).reshape(a, 2, k)
            g = (f[:, 0] - f[:, 1]) / (hi - lo).double()
            rows = act[:, None].expand(a, k)
            mi = z.beta1 * m[rows, coords] + (1 - z.beta1) * g
            si = z.beta2 * s[rows, coords] + (1 - z.beta2) * g * g
            ti = t[rows, coords] + 1
            m[rows, coords], s[rows, coords], t[rows, coords] = mi, si, ti
            step = (mi / (1 - z.beta1**ti)) / ((si / (1 - z.beta2**ti)).sqrt() + 1e-8)
            conf = _confidence(out[act], target[act])
            lr = torch.where(conf > z.fine_above, z.lr_fine, z.lr).double()[:, None]
            moved = base.clone()
            moved.scatter_(1, coords, (here.double() - lr * step).clamp(0, 1).float())
            out[act] = meter(lift(moved))  # committed only once θ's outputs on it are in
            v[act] = moved
            iterations[act] += 1
            done[act] = _reached(out[act], target[act], cfg.threshold, oracle.access)
    except _Stop:
        pass
    keep = slice(None) if started else slice(0)  # without θ's outputs a probe cannot be filed
    probes = Probes(lift(v)[keep], target[keep], out[keep], done[keep].clone(), oracle.access)
    iterations, done = iterations[keep], done[keep]
    finished = iterations[done].double()
    return probes, _stats(
        "zoo", probes, meter,
        coordinates_per_iteration=k,
        search_dimensions=d,
        mean_iterations=float(finished.mean()) if len(finished) else float("nan"),
    )


def noise(
    oracle: QueryOracle,
    cfg: ProbeConfig,
    seed: int,
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    auxiliary: torch.Tensor | None = None,
    model: nn.Module | None = None,
) -> tuple[Probes, dict]:
    """num_classes × per_class random inputs (`cfg.noise`), each targeted at
    whatever class θ gives it: unoptimised, so they cover few classes."""
    gen = torch.Generator().manual_seed(seed)
    meter = _Meter(oracle, cfg.budget)
    x = _start(num_classes * cfg.per_class, tuple(input_shape), cfg.noise, gen)
    try:
        out = meter(x)
    except _Stop:
        x, out = x[:0], torch.zeros(0, num_classes, dtype=torch.float64)
    label = out.argmax(1)
    probes = Probes(x, label, out, _reached(out, label, cfg.threshold, oracle.access), oracle.access)
    return probes, _stats("noise", probes, meter)


def auxiliary(
    oracle: QueryOracle,
    cfg: ProbeConfig,
    seed: int,
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    auxiliary: torch.Tensor | None = None,
    model: nn.Module | None = None,
) -> tuple[Probes, dict]:
    """Per class, the `per_class` auxiliary samples θ labels with that class at
    the highest confidence (fewer where θ labels fewer so). Queries: one per
    auxiliary sample evaluated; the samples are taken in a seeded order, so a
    budget smaller than the set evaluates a random part of it."""
    if auxiliary is None or len(auxiliary) == 0:
        raise ValueError("the auxiliary strategy needs auxiliary samples")
    gen = torch.Generator().manual_seed(seed)
    aux = auxiliary[torch.randperm(len(auxiliary), generator=gen)].float()
    meter = _Meter(oracle, cfg.budget)
    outs: list[torch.Tensor] = []
    chunk = 512
    try:
        for i in range(0, len(aux), chunk):
            outs.append(meter(aux[i : i + chunk]))
    except _Stop:
        pass
    out = torch.cat(outs) if outs else torch.zeros(0, num_classes, dtype=torch.float64)
    aux = aux[: len(out)]
    label = out.argmax(1)
    keep = []
    for c in range(num_classes):
        mine = torch.nonzero(label == c).flatten()
        order = _confidence(out[mine], label[mine]).argsort(descending=True)
        keep.append(mine[order[: cfg.per_class]])
    idx = torch.cat(keep) if keep else torch.zeros(0, dtype=torch.long)
    probes = Probes(
        aux[idx], label[idx], out[idx], _reached(out[idx], label[idx], cfg.threshold, oracle.access), oracle.access
    )
    return probes, _stats("auxiliary", probes, meter, evaluated=len(out))


def whitebox(
    oracle: QueryOracle,
    cfg: ProbeConfig,
    seed: int,
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    auxiliary: torch.Tensor | None = None,
    model: nn.Module | None = None,
) -> tuple[Probes, dict]:
    """Adam on the input, ascending θ's log-odds of the target class with θ's
    weights (`model`), from the same start as zoo, until ≥ threshold. The
    gradient steps are counted as `gradient_evaluations`; the oracle is asked
    once per probe at the end, for the outputs the decision compares."""
    if model is None:
        raise ValueError("the whitebox strategy needs the model's weights")
    w = cfg.whitebox
    gen = torch.Generator().manual_seed(seed)
    meter = _Meter(oracle, cfg.budget)
    target = _targets(num_classes, cfg.per_class)
    x = _start(len(target), tuple(input_shape), cfg.noise, gen)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    x = x.to(device).requires_grad_(True)
    tgt = target.to(device)
    opt = torch.optim.Adam([x], lr=w.lr)
    active = torch.ones(len(target), dtype=torch.bool, device=device)
    evaluations = 0
    logit_threshold = math.log(cfg.threshold / (1 - cfg.threshold))
    for _ in range(w.max_steps):
        logits = model(x).double()
        evaluations += int(active.sum())
        lp = logits.log_softmax(1)
        own = lp.gather(1, tgt[:, None]).squeeze(1)
        rest = lp.scatter(1, tgt[:, None], -math.inf).logsumexp(1)
        odds = own - rest
        active = active & (odds < logit_threshold + 0.05)  # a small margin over float32 rounding
        if not active.any():
            break
        frozen = x.detach()[~active].clone()
        opt.zero_grad(set_to_none=True)
        (-(odds * active).sum()).backward()
        opt.step()
        with torch.no_grad():
            x.clamp_(0, 1)
            x[~active] = frozen  # Adam's momentum would carry finished probes on
    model.train(was_training)
    x = x.detach().cpu()
    try:
        out = meter(x)
    except _Stop:
        x, target, out = x[:0], target[:0], torch.zeros(0, num_classes, dtype=torch.float64)
    probes = Probes(x, target, out, _reached(out, target, cfg.threshold, oracle.access), oracle.access)
    return probes, _stats("whitebox", probes, meter, gradient_evaluations=evaluations)


def to_boundary(
    oracle: QueryOracle, probes: Probes, steps: int, seed: int, budget: int | None = None
) -> tuple[Probes, dict]:
    """Each probe bisected `steps` times towards a probe θ labels differently
    (a seeded partner of another class), keeping the end θ still labels as the
    probe: it lands within 2^-steps of the segment from the boundary, where a
    small change of θ flips its label. One query per probe and step; on budget
    exhaustion the probes keep the last bisection finished for all."""
    label = probes.label
    gen = torch.Generator().manual_seed(seed)
    n = len(probes)
    partner = torch.full((n,), -1, dtype=torch.long)
    for i in range(n):
        others = torch.nonzero(label != label[i]).flatten()
        if len(others):
            partner[i] = others[torch.randint(len(others), (1,), generator=gen)]
    movable = torch.nonzero(partner >= 0).flatten()
    if not len(movable):  # θ labels every probe alike: no boundary to move towards
        return probes, {"boundary_queries": 0, "boundary_steps": 0, "boundary_moved": 0}
    meter = _Meter(oracle, budget)
    lo = torch.zeros(len(movable), dtype=torch.float64)  # fraction towards the partner, still own label
    hi = torch.ones(len(movable), dtype=torch.float64)
    a, b = probes.x[movable], probes.x[partner[movable]]
    before = probes.before.clone()
    done = 0
    shape = (-1,) + (1,) * (a.dim() - 1)
    try:
        for _ in range(steps):
            mid = (lo + hi) / 2
            out = meter((a + (b - a) * mid.float().reshape(shape)).clamp(0, 1))
            same = out.argmax(1) == label[movable]
            lo = torch.where(same, mid, lo)
            hi = torch.where(same, hi, mid)
            done += 1
    except _Stop:
        pass
    x = probes.x.clone()
    x[movable] = (a + (b - a) * lo.float().reshape(shape)).clamp(0, 1)
    try:
        before[movable] = meter(x[movable])
    except _Stop:
        x = probes.x  # the outputs must match the inputs; keep the originals
    moved = replace(probes, x=x, before=before, reference=None)  # θ₀'s outputs were for the old x
    return moved, {"boundary_queries": meter.spent, "boundary_steps": done, "boundary_moved": len(movable)}


Strategy = Callable[..., tuple[Probes, dict]]

STRATEGIES: dict[str, Strategy] = {
    "zoo": zoo,
    "noise": noise,
    "auxiliary": auxiliary,
    "whitebox": whitebox,
}
assert tuple(STRATEGIES) == STRATEGY_NAMES, "probes.STRATEGIES and schema.probes.STRATEGY_NAMES disagree"
