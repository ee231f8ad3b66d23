"""Shapley-guided SISA: SISA whose shards are dealt by the data's Shapley values.

Values: KNN-Shapley (Jia et al., "Efficient task-specific data valuation for
nearest neighbor algorithms", VLDB 2019, Theorem 1), exact in closed form for
the K-nearest-neighbour utility U(S) = (1/K) Σ_{j ≤ min(K,|S|)} 1[y_{α_j(S)} = y_v].
The features are θ₀'s penultimate activations on D_u (θ₀ is public and never
saw D_u) and each sample of D_u validates the others, so valuation needs no
held-out data.

Sharding: D_u ranked by value (descending, ties by index) is dealt in snake
order (0, 1, …, S−1, S−1, …, 0, …) to the S shards, so each shard holds an
equal share of high- and low-value samples. SISA's accuracy loss comes from
each shard model seeing 1/S of the data; a shard dealt mostly low-value
(mislabelled-looking, redundant) samples drags the ensemble down. Within a
shard a seeded permutation orders the samples, cut into R slices; the rest is
SISA exactly (sisa.train, sisa.retrain): per-shard training from θ₀ with a
checkpoint after each slice, the ensemble served, a deletion retrains only the
shards holding X from the checkpoint before X's first slice. Unlearning stays
exact.

Not chosen: weighting each sample's fine-tune step by its value and undoing
it at deletion. A Shapley value measures a sample's contribution to utility
averaged over all subsets, while removal needs its leave-one-out effect on the
parameters, which influence (unlearning.influence) already estimates.

Cost: valuation O(N² d + N² log N) on N feature vectors of dimension d (one
θ₀ forward pass over D_u, pairwise distances, a sort per sample), once per
problem; training and each deletion cost what SISA's do.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from ..models import Ensemble
from . import sisa
from .config import ShapleyConfig as Config
from .problem import UnlearningProblem, penultimate
from .sisa import SisaSystem


def _sorted_values(match: torch.Tensor, k: int) -> torch.Tensor:
    """Theorem 1's recursion for each row: match[m, i] = 1[y of the (i+1)-th
    nearest training point = y_v of validation point m]; returns the values in
    that (sorted) order, float64."""
    n = match.shape[1]
    match = match.to(torch.float64)
    k = max(1, min(k, n))
    i = torch.arange(1, n, dtype=torch.float64)  # 1 … N−1
    steps = (match[:, :-1] - match[:, 1:]) * torch.clamp(i, max=k) / (k * i)
    # s_i = s_N + Σ_{t=i}^{N−1} steps_t: a reverse cumulative sum.
    tail = torch.flip(torch.cumsum(torch.flip(steps, [1]), 1), [1])
    last = match[:, -1:] / n
    return torch.cat([last + tail, last], 1)


def _distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances in float64 without the matmul shortcut, so that
    equal points tie exactly and the order is deterministic."""
    return torch.cdist(a.to(torch.float64), b.to(torch.float64), compute_mode="donot_use_mm_for_euclid_dist")


def knn_shapley(train_f: torch.Tensor, train_y: torch.Tensor, val_f: torch.Tensor, val_y: torch.Tensor,
                k: int) -> torch.Tensor:
    """Exact KNN-Shapley values (float64, one per training point) of the
    training set for the utility averaged over the validation points; K is
    clamped to the training-set size, distance ties broken by index."""
    n = len(train_y)
    if n == 0 or len(val_y) == 0:
        return torch.zeros(n, dtype=torch.float64)
    order = torch.sort(_distances(val_f, train_f), dim=1, stable=True).indices
    match = train_y.cpu()[order] == val_y.cpu()[:, None]
    values = torch.zeros(len(val_y), n, dtype=torch.float64).scatter_(1, order, _sorted_values(match, k))
    return values.mean(0)


def in_sample_values(f: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """KNN-Shapley values of a set that validates itself: for validation point
    j the training set is the others, and point i's value is the mean of its
    values over the j ≠ i (float64; zeros where N < 2)."""
    n = len(y)
    if n < 2:
        return torch.zeros(n, dtype=torch.float64)
    dist = _distances(f, f)
    dist.fill_diagonal_(float("inf"))  # j sorts last in its own row: drop it
    order = torch.sort(dist, dim=1, stable=True).indices[:, :-1]
    match = y.cpu()[order] == y.cpu()[:, None]
    values = torch.zeros(n, n, dtype=torch.float64).scatter_(1, order, _sorted_values(match, k))
    return values.sum(0) / (n - 1)


def values(problem: UnlearningProblem, cfg: Config) -> torch.Tensor:
    """The in-sample KNN-Shapley values of D_u on θ₀'s penultimate features, K = cfg.neighbours."""
    f = penultimate(problem.theta_pretrained, problem.du_x).cpu()
    return in_sample_values(f.flatten(1), problem.du_y, cfg.neighbours)


def balanced_shards(values_: torch.Tensor, shards: int) -> list[torch.Tensor]:
    """Indices ranked by value (descending, ties by index) dealt to `shards` in
    snake order 0, 1, …, S−1, S−1, …, 0, …; each shard's indices in rank order.
    Values equal to 1e-12 tie: KNN-Shapley values are rationals, many of them
    equal (1/(N−1) for every sample whose neighbours all share its label), and
    float summation splits such ties by rounding noise."""
    rank = torch.sort(values_.to(torch.float64).round(decimals=12), descending=True, stable=True).indices
    p = torch.arange(len(rank))
    turn, seat = p // shards, p % shards
    shard = torch.where(turn % 2 == 0, seat, shards - 1 - seat)
    return [rank[shard == s] for s in range(shards)]


def layout(problem: UnlearningProblem, cfg: Config) -> list[list[torch.Tensor]]:
    """The slice layout: the snake deal of D_u by value, each shard's samples
    in a seeded random order (finetune_seed) cut into R slices."""
    n = len(problem.du_y)
    if cfg.shards * cfg.slices > n:
        raise ValueError(f"shapley needs shards × slices ≤ N ({cfg.shards} × {cfg.slices} > {n})")
    gen = torch.Generator().manual_seed(problem.finetune_seed)
    out = []
    for part in balanced_shards(values(problem, cfg), cfg.shards):
        part = part[torch.randperm(len(part), generator=gen)]
        out.append(list(torch.tensor_split(part, cfg.slices)))
    return out


@functools.lru_cache(maxsize=2)
def build(problem: UnlearningProblem, cfg: Config) -> SisaSystem:
    """Value the data and train the system once per (problem, config); requests reuse it."""
    return sisa.train(problem, layout(problem, cfg))


def serve(problem: UnlearningProblem, cfg: Config) -> nn.Module:
    """The model served before any deletion: the ensemble of final shard models."""
    return sisa.serve(problem, cfg, build)


def unlearn(problem: UnlearningProblem, forget: torch.Tensor, cfg: Config) -> nn.Module:
    """Retrain only the shards holding X, from the checkpoint before X's first slice."""
    return sisa.unlearn(problem, forget, cfg, build)


def server_state(problem: UnlearningProblem, cfg: Config, forget: torch.Tensor | None = None) -> tuple[Ensemble, dict]:
    """The checkpoint store (before any deletion, or after deleting `forget`) and the slice index, as sisa's."""
    return sisa.server_state(problem, cfg, forget, build)
