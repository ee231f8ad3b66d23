"""Shapley-value-guided SISA: D_u is valued by KNN-Shapley (Jia et al., "Towards
Efficient Data Valuation Based on the Shapley Value", AISTATS 2019, and the
closed form of their VLDB 2019 paper, Theorem 1) on θ₀'s penultimate features,
and SISA's shards are dealt so that each holds an equal share of the value.

Why this design: SISA's accuracy loss comes from shard models that each see
1/S of the data; a shard dealt mostly low-value samples (redundant or
mislabelled-looking) drags the ensemble, while value-balanced shards keep every
member as good as a random shard on average and none much worse. A deletion
costs exactly what SISA's does. The other design, a value-weighted Newton or
influence step, was not chosen: a Shapley value is a sample's contribution to
utility averaged over subsets, while removing it calls for its leave-one-out
effect on the parameters, which the influence step already estimates.

Cost: the valuation is O(N² log N) on N feature vectors (each sample of D_u
validates the others, so no held-out data is needed; θ₀ is public, it never
saw D_u), once per problem; then SISA's training.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from . import sisa
from .config import ShapleyConfig as Config
from .problem import UnlearningProblem, penultimate


def knn_shapley(train_f: torch.Tensor, train_y: torch.Tensor, val_f: torch.Tensor, val_y: torch.Tensor,
                k: int) -> torch.Tensor:
    """Exact Shapley values of the training points for the K-nearest-neighbour utility
    U(S) = (1/K) Σ_{j ≤ min(K, |S|)} 1[y_{α_j(S)} = y_v], averaged over the validation points
    (Euclidean distance, ties by index)."""
    n = len(train_y)
    k = min(k, n)
    values = torch.zeros(n, dtype=torch.float64)
    dist = torch.cdist(val_f.double(), train_f.double())
    for v in range(len(val_y)):
        order = torch.from_numpy(dist[v].numpy().argsort(kind="stable"))
        match = (train_y[order] == val_y[v]).double()
        s = torch.zeros(n, dtype=torch.float64)
        s[n - 1] = match[n - 1] / n
        for i in range(n - 2, -1, -1):  # i is 0-based: rank i + 1
            s[i] = s[i + 1] + (match[i] - match[i + 1]) / k * min(k, i + 1) / (i + 1)
        values[order] += s
    return values / max(len(val_y), 1)


def in_sample_values(f: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """Each sample validates the others: sample i's value is the mean over j ≠ i of its KNN-Shapley
    value for validation point j on the training set D \\ {j}."""
    n = len(y)
    total = torch.zeros(n, dtype=torch.float64)
    for j in range(n):
        rest = torch.arange(n) != j
        total[rest] += knn_shapley(f[rest], y[rest], f[j : j + 1], y[j : j + 1], k)
    return total / max(n - 1, 1)


def values(problem: UnlearningProblem, cfg: Config) -> torch.Tensor:
    """The in-sample KNN-Shapley values of D_u on θ₀'s features."""
    f = penultimate(problem.theta_pretrained, problem.du_x).cpu()
    return in_sample_values(f, problem.du_y.cpu(), cfg.neighbours)


def balanced_shards(value: torch.Tensor, shards: int) -> list[torch.Tensor]:
    """Indices dealt to `shards` shards in snake order of decreasing value (0, 1, …, S−1, S−1, …, 0, …)."""
    ranked = sorted(range(len(value)), key=lambda i: (-float(value[i]), i))
    out: list[list[int]] = [[] for _ in range(shards)]
    for rank, i in enumerate(ranked):
        lap, pos = divmod(rank, shards)
        out[pos if lap % 2 == 0 else shards - 1 - pos].append(i)
    return [torch.tensor(s, dtype=torch.long) for s in out]


def layout(problem: UnlearningProblem, cfg: Config) -> list[list[torch.Tensor]]:
    """Value-balanced shards, each in a seeded order cut into R slices."""
    n = len(problem.du_y)
    if cfg.shards * cfg.slices > n:
        raise ValueError(f"shapley needs shards × slices ≤ N ({cfg.shards} × {cfg.slices} > {n})")
    gen = torch.Generator().manual_seed(problem.finetune_seed)
    out = []
    for shard in balanced_shards(values(problem, cfg), cfg.shards):
        ordered = shard[torch.randperm(len(shard), generator=gen)]
        out.append(list(torch.tensor_split(ordered, cfg.slices)))
    return out


@functools.lru_cache(maxsize=2)
def build(problem: UnlearningProblem, cfg: Config) -> sisa.SisaSystem:
    """Value, lay out and train the system once per (problem, config); requests reuse it."""
    return sisa.train(problem, layout(problem, cfg))


def serve(problem: UnlearningProblem, cfg: Config) -> nn.Module:
    return sisa.serve(problem, cfg, build)


def unlearn(problem: UnlearningProblem, forget: torch.Tensor, cfg: Config) -> nn.Module:
    """SISA's deletion on the value-balanced system: only the shards holding X retrain."""
    return sisa.unlearn(problem, forget, cfg, build)


def server_state(problem: UnlearningProblem, cfg: Config, forget: torch.Tensor | None = None):
    return sisa.server_state(problem, cfg, forget, build)
