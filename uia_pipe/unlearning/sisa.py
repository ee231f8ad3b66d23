"""SISA (Bourtoule et al., 2021): sharded, isolated, sliced training.

D_u is split into S shards, each into R slices. Shard s's model starts from θ₀
and is fine-tuned on slice 1, then slices 1–2, … (a checkpoint after each);
the served model is the ensemble of the S shard models (mean probability).
Unlearning X retrains only the shards that hold X, from the last checkpoint
before X's first slice, on the same slices without X.

What the attacker sees: the ensemble's parameters before and after, i.e. S
shard models of which only the affected ones changed; the update of a shard is
a fine-tune on ~N/S samples, so exact-unlearning inversion faces a smaller N.
A server that keeps the checkpoints (SISA must, to serve the next deletion)
sees more: see attacks.view.sisa_shard_views.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .config import SisaConfig as Config
from ..models import Ensemble
from ..training import fit
from .problem import UnlearningProblem
from ..models import clone


@dataclass(frozen=True)
class SisaSystem:
    """slices[s][j]: D_u indices of shard s's slice j; checkpoints[s][j]: shard
    s's model after training on slices 0..j-1 (checkpoints[s][0] is θ₀)."""

    slices: list[list[torch.Tensor]]
    checkpoints: list[list[nn.Module]]


def _slice_seed(problem: UnlearningProblem, shard: int, slice_: int) -> int:
    return problem.finetune_seed + 1000 * (shard + 1) + slice_


def _train_slices(problem: UnlearningProblem, model: nn.Module, slices: list[torch.Tensor], shard: int,
                  start: int, forget: torch.Tensor | None) -> list[nn.Module]:
    """Train `model` (a checkpoint before slice `start`) through the remaining
    slices, each stage on the union of slices so far; returns a checkpoint after each."""
    out = []
    for j in range(start, len(slices)):
        seen = torch.cat(slices[: j + 1])
        keep = None if forget is None else ~forget[seen]
        fit(model, problem.du_x[seen], problem.du_y[seen], problem.finetune, _slice_seed(problem, shard, j),
            batchnorm_eval=True, keep=keep)
        out.append(clone(model))
    return out


def layout(problem: UnlearningProblem, cfg: Config) -> list[list[torch.Tensor]]:
    """SISA's slice layout: a seeded random order of D_u cut into S shards of R
    slices; layout[s][j] holds the D_u indices of shard s's slice j."""
    n = len(problem.du_y)
    if cfg.shards * cfg.slices > n:
        raise ValueError(f"sisa needs shards × slices ≤ N ({cfg.shards} × {cfg.slices} > {n})")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(problem.finetune_seed))
    return [list(torch.tensor_split(part, cfg.slices)) for part in torch.tensor_split(order, cfg.shards)]


def train(problem: UnlearningProblem, slices: list[list[torch.Tensor]]) -> SisaSystem:
    """Train the system on a slice layout: each shard from θ₀ through its
    slices, a checkpoint after each (a method that lays D_u out its own way,
    such as shapley, reuses this)."""
    checkpoints = []
    for s, shard_slices in enumerate(slices):
        start = clone(problem.theta_pretrained)
        checkpoints.append([clone(start)] + _train_slices(problem, start, shard_slices, s, 0, None))
    return SisaSystem(slices, checkpoints)


@functools.lru_cache(maxsize=2)
def build(problem: UnlearningProblem, cfg: Config) -> SisaSystem:
    """Train the SISA system once per (problem, config); requests reuse it."""
    return train(problem, layout(problem, cfg))


# What makes the system before any deletion from (problem, cfg): build here, shapley.build there.
Builder = Callable[[UnlearningProblem, Any], SisaSystem]


def ensemble(system: SisaSystem) -> Ensemble:
    """A system's served model: the ensemble of its final shard models."""
    return Ensemble([clone(c[-1]) for c in system.checkpoints]).eval()


def serve(problem: UnlearningProblem, cfg: Config, builder: Builder = build) -> nn.Module:
    """The model served before any deletion: the ensemble of final shard models."""
    return ensemble(builder(problem, cfg))


def affected_shards(system: SisaSystem, forget: torch.Tensor) -> dict[int, int]:
    """shard -> index of the first slice holding a sample of X."""
    out = {}
    for s, shard_slices in enumerate(system.slices):
        for j, idx in enumerate(shard_slices):
            if forget[idx].any():
                out[s] = j
                break
    return out


def retrain(problem: UnlearningProblem, forget: torch.Tensor, cfg: Config, builder: Builder = build) -> SisaSystem:
    """The system after deleting X: each shard holding X retrained from the
    checkpoint before X's first slice, its later checkpoints replaced (SISA
    keeps them for the next deletion); the other shards' checkpoints shared."""
    system = builder(problem, cfg)
    checkpoints = [list(c) for c in system.checkpoints]
    for s, j in affected_shards(system, forget).items():
        model = clone(system.checkpoints[s][j])
        checkpoints[s][j + 1:] = _train_slices(problem, model, system.slices[s], s, j, forget)
    return SisaSystem(system.slices, checkpoints)


def unlearn(problem: UnlearningProblem, forget: torch.Tensor, cfg: Config, builder: Builder = build) -> nn.Module:
    """Retrain only the shards holding X, from the checkpoint before X's first slice."""
    return ensemble(retrain(problem, forget, cfg, builder))


def store(system: SisaSystem) -> Ensemble:
    """Every checkpoint of the system as one flat `Ensemble` (shard-major:
    member s·(R+1) + j is checkpoints[s][j]), so io.save_model can keep it."""
    return Ensemble([clone(m) for c in system.checkpoints for m in c]).eval()


def bookkeeping(system: SisaSystem) -> dict:
    """SISA's index of D_u, JSON-ready: slices[s][j] = the D_u indices of shard s's slice j."""
    return {"slices": [[idx.tolist() for idx in shard] for shard in system.slices]}


def server_state(problem: UnlearningProblem, cfg: Config, forget: torch.Tensor | None = None,
                 builder: Builder = build) -> tuple[Ensemble, dict]:
    """What the server keeps beside the served model: the checkpoint store
    (before any deletion, or after deleting `forget`) as a flat ensemble, and
    SISA's index of D_u."""
    system = builder(problem, cfg) if forget is None else retrain(problem, forget, cfg, builder)
    return store(system), bookkeeping(system)


def unflatten(flat: Ensemble, slices: list[list]) -> list[list[nn.Module]]:
    """checkpoints[s][j] back from `store`'s flat ensemble, given the slice layout."""
    out, members = [], list(flat.members)
    for shard in slices:
        out.append(members[: len(shard) + 1])
        members = members[len(shard) + 1:]
    return out
