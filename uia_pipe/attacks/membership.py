"""Membership inference against unlearning, with both models.

Two questions about a candidate record and a released pair (θ, θ_u): was it
deleted, or never a member ("never")? Was it deleted, or kept in D_u
("retained")? Two attacks answer them:

- Population attack (Chen et al., CCS 2021): the attacker plays the server on
  its own data — θ_s = θ₀ fine-tuned on N of its records, θ_s,u = θ_s with k
  of them unlearned by the same method — and trains a classifier on features
  of the two models' posteriors on deleted, never-member and retained
  records: Chen et al.'s five (direct_diff, sorted_diff, l2_distance,
  direct_concat, sorted_concat), their one-model baseline (θ's posterior), and
  ours, `logit_diff`: the change of the logit-scaled confidences (log p/(1−p),
  in which posteriors near 1 keep their small changes), the candidate's own
  label first, then sorted as θ ranks the classes.
- Per-example likelihood ratio (U-LiRA style, Hayes et al. 2024): for each
  candidate, shadow pairs in which it was deleted and pairs in which it was
  kept or never seen; the drop of its logit-scaled true-label confidence,
  φ(θ) − φ(θ_u), gets a Gaussian under each (means per candidate, variance
  pooled over candidates: Carlini et al.'s fixed-variance variant for few
  shadows), and the log ratio is the score.

The attacker knows θ₀, the fine-tune recipe, N, k and the unlearning method
with its settings (the paper's threat model); its records are its own, disjoint
from the server's training set. Posteriors are read as log-probabilities.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from .. import tasks
from ..executor import LOCAL, Executor
# The settings and the feature names live in the schema leaf; re-exported here.
from .schema.membership import BASELINE, CHEN, FEATURES, OURS, Config, Feature  # noqa: F401

QUESTIONS = ("never", "retained")  # deleted vs never a member; deleted vs retained in D_u


@dataclass
class Pair:
    """One released deletion: θ, θ_u, and the candidates scored on it. `request`
    is the run's request index, or −1 for a pair the evaluator made; `release`
    holds what a defence applied to a made pair needs (its D_u split)."""

    theta: nn.Module
    theta_u: nn.Module
    x: dict[str, torch.Tensor]  # role ("deleted", "never", "retained") -> records
    y: dict[str, torch.Tensor]
    request: int = -1
    release: tuple | None = None  # (forget_x, forget_y, retain_x, retain_y)


def make_pairs(server, x: torch.Tensor, y: torch.Tensor, count: int, seed: int,
               executor: Executor = LOCAL, what: str = "pair", stack: int = 1,
               made: Sequence[tuple[nn.Module, nn.Module]] = ()) -> list[Pair]:
    """`count` pairs on records of (x, y): each fine-tunes on N of them, unlearns k, and keeps as candidates
    the k deleted, k never drawn and k retained records. The pairs are made independently through
    `executor` (a failure names `what` and the pair's number), one by one (`server.pair`), or, with
    `stack` > 1, `stack` consecutive pairs a task, made at once (`server.pairs`: the same pairs up to float
    rounding; the chunks do not depend on the executor, so neither do the numbers). Pair i is the same
    whatever `count` is: `made` holds the (θ, θ_u) of the first pairs, made before, and only the rest are made."""
    g = torch.Generator().manual_seed(seed)
    n, k = server.n, server.k
    orders = [torch.randperm(len(x), generator=g) for _ in range(count)]
    forget = torch.zeros(n, dtype=torch.bool)
    forget[:k] = True
    made = list(made)[:count]
    records = [(x[o[:n]], y[o[:n]]) for o in orders[len(made):]]
    if stack > 1:
        starts = range(0, len(records), stack)
        chunks = executor.map(functools.partial(_pairs, server, forget), [records[s: s + stack] for s in starts],
                              names=[f"{server.method}: {what}s {len(made) + s}-{len(made) + min(s + stack, len(records)) - 1}"
                                     for s in starts])
        models = made + [pair for chunk in chunks for pair in chunk]
    else:
        models = made + executor.map(functools.partial(_pair, server, forget), records,
                                     names=[f"{server.method}: {what} {i}" for i in range(len(made), count)])
    pairs = []
    for order, (theta, theta_u) in zip(orders, models):
        members, outside = order[:n], order[n:]
        roles = {"deleted": members[:k], "retained": members[k: 2 * k], "never": outside[:k]}
        pairs.append(Pair(theta, theta_u, {r: x[i] for r, i in roles.items()}, {r: y[i] for r, i in roles.items()},
                          release=(x[members[:k]], y[members[:k]], x[members[k:]], y[members[k:]])))
    return pairs


def _pair(server, forget: torch.Tensor, records: tuple[torch.Tensor, torch.Tensor]):
    return server.pair(*records, forget)


def _pairs(server, forget: torch.Tensor, chunk: list[tuple[torch.Tensor, torch.Tensor]]):
    made = server.pairs(torch.stack([x for x, _ in chunk]), torch.stack([y for _, y in chunk]),
                        [forget[None]] * len(chunk))
    return [(theta, thetas_u[0]) for theta, thetas_u in made]


@torch.no_grad()
def log_posteriors(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of `model` on x, float64 [B, C]; for a regressor or an autoencoder, whose
    targets y are values, one column: the Gaussian log-likelihood of y up to its constant, −(squared
    error), so that every feature below reads it as the true label's log-probability; for a language model,
    whose targets are a record's next characters, the record's mean log-likelihood per character."""
    model.eval()
    device = next(model.parameters()).device
    out = model(x.to(device)).double()
    if not y.is_floating_point() and y.dim() == 1:
        return F.log_softmax(out, dim=1).cpu()
    # floored where a diverged model's error overflows what the attack's classifiers read (float32)
    return -tasks.per_sample(out, y.to(device)).cpu()[:, None].nan_to_num(nan=1e30, posinf=1e30).clamp(max=1e30)


def _true_column(y: torch.Tensor) -> torch.Tensor:
    """Each candidate's column of its log-posteriors: its label, or the one column of a likelihood."""
    return torch.zeros(len(y), 1, dtype=torch.long) if y.is_floating_point() or y.dim() > 1 else y[:, None]


def log_odds(logp: torch.Tensor) -> torch.Tensor:
    """log p/(1−p) from log p, stable for p near 0 and 1."""
    return logp - torch.log(-torch.expm1(logp.clamp(max=-1e-300)))


def features(name: str, lp: torch.Tensor, lp_u: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """One feature construction of candidates whose log-posteriors under θ and θ_u are lp and lp_u;
    `sorted` means in the order of θ's posterior (Chen et al.'s convention)."""
    p, p_u = lp.exp(), lp_u.exp()
    order = torch.argsort(p, dim=1)
    out = {
        "direct_diff": lambda: p - p_u,
        "sorted_diff": lambda: p.gather(1, order) - p_u.gather(1, order),
        "l2_distance": lambda: (p - p_u).norm(dim=1, keepdim=True),
        "direct_concat": lambda: torch.cat([p, p_u], 1),
        "sorted_concat": lambda: torch.cat([p.gather(1, order), p_u.gather(1, order)], 1),
        "one_model": lambda: p,
        "logit_diff": lambda: _logit_diff(lp, lp_u, y, order),
    }[name]()
    return out.numpy()


def _logit_diff(lp, lp_u, y, order):
    phi = log_odds(lp)
    d = phi - log_odds(lp_u)
    col = _true_column(y)
    return torch.cat([d.gather(1, col), phi.gather(1, col), d.gather(1, order)], 1)


def drop(lp: torch.Tensor, lp_u: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """U-LiRA's statistic: the fall of the logit-scaled true-label confidence from θ to θ_u, through asinh
    (a large ascent step moves log-odds by thousands, a fine-tune by thousandths: asinh keeps the small
    ones and tames the tails the Gaussians cannot fit)."""
    col = _true_column(y)
    return torch.asinh(log_odds(lp).gather(1, col) - log_odds(lp_u).gather(1, col))[:, 0].numpy()


@dataclass
class Queried:
    """Candidates of some pairs, queried on both models: role, label, log-posteriors."""

    roles: list[str] = field(default_factory=list)
    y: list[torch.Tensor] = field(default_factory=list)
    lp: list[torch.Tensor] = field(default_factory=list)
    lp_u: list[torch.Tensor] = field(default_factory=list)
    request: list[int] = field(default_factory=list)

    def add(self, pair: Pair, theta_u: nn.Module | None = None) -> None:
        theta_u = pair.theta_u if theta_u is None else theta_u
        for role in ("deleted", "never", "retained"):
            x = pair.x[role]
            self.roles += [role] * len(x)
            self.request += [pair.request] * len(x)
            self.y.append(pair.y[role])
            self.lp.append(log_posteriors(pair.theta, x, pair.y[role]))
            self.lp_u.append(log_posteriors(theta_u, x, pair.y[role]))

    def arrays(self) -> tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray]:
        return np.array(self.roles), torch.cat(self.y), torch.cat(self.lp), torch.cat(self.lp_u), np.array(self.request)


def question_mask(roles: np.ndarray, question: str) -> np.ndarray:
    return (roles == "deleted") | (roles == question)


def train_classifiers(shadow: Queried, cfg: Config, seed: int) -> dict[tuple[str, str], object]:
    """(question, feature) -> a classifier fitted on the shadow candidates (deleted = 1)."""
    roles, y, lp, lp_u, _ = shadow.arrays()
    out = {}
    for q in QUESTIONS:
        m = question_mask(roles, q)
        target = (roles[m] == "deleted").astype(int)
        for name in cfg.features:
            X = features(name, lp[m], lp_u[m], y[m])
            if cfg.classifier == "random_forest":
                clf = RandomForestClassifier(cfg.trees, min_samples_leaf=2, random_state=seed, n_jobs=1)
            else:
                clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
            out[q, name] = clf.fit(X, target)
    return out


def classifier_scores(classifiers: dict, names, question: str, y, lp, lp_u) -> dict[str, np.ndarray]:
    """feature -> P(deleted) of each candidate under the question's classifier, for the features `names`."""
    return {name: classifiers[question, name].predict_proba(features(name, lp, lp_u, y))[:, 1] for name in names}


@dataclass(frozen=True)
class Lira:
    """Per candidate, the mean drop with it deleted (`deleted`) and with it kept (`retained`) or never seen
    (`never`), and the pooled standard deviation of each side."""

    means: dict[str, np.ndarray]
    std: dict[str, float]

    def score(self, question: str, statistic: np.ndarray) -> np.ndarray:
        """log N(s; μ_deleted, σ²) − log N(s; μ_question, σ²) per candidate."""
        def loglik(side):
            return -0.5 * ((statistic - self.means[side]) / self.std[side]) ** 2 - np.log(self.std[side])
        return loglik("deleted") - loglik(question)


def lira_shadows(server, x: torch.Tensor, y: torch.Tensor, own_x: torch.Tensor, own_y: torch.Tensor,
                 never: list[Pair], cfg: Config, seed: int, executor: Executor = LOCAL) -> Lira:
    """Shadow statistics for candidates (x, y). Each is planted, `lira_group` at a time, in the fine-tune
    set of `lira_shadows` shadow pairs per group (the other records the attacker's own), which delete
    the group's candidates in turn: a candidate's drop where it was deleted, and where its neighbour was
    (it was retained). Its never-seen drops come from the population shadows `never`, which never held it.
    The (group, shadow) fine-tunes are independent: `executor` maps them."""
    g = torch.Generator().manual_seed(seed)
    n, k = server.n, server.k
    # groups of at least max(k + 1, lira_group) candidates (a retained neighbour for each), at most N
    groups = max(math.ceil(len(x) / n), len(x) // max(k + 1, cfg.lira_group), 1)
    units = []  # (first candidate, the group's records, its fill from the attacker's own, who neighbours whom)
    for idx in torch.tensor_split(torch.arange(len(x)), groups):
        for _ in range(cfg.lira_shadows):
            fill = torch.randperm(len(own_x), generator=g)[: n - len(idx)]
            order = torch.randperm(len(idx), generator=g)  # a fresh retained partner each shadow
            units.append((int(idx[0]), x[idx], y[idx], own_x[fill], own_y[fill], order))
    if cfg.stack > 1:
        chunks = _lira_chunks([len(unit[5]) for unit in units], cfg.stack)
        found = [d for chunk in executor.map(functools.partial(_lira_units, server), [units[a:b] for a, b in chunks],
                                             names=[f"{server.method}: U-LiRA shadows {a}-{b - 1}" for a, b in chunks])
                 for d in chunk]
    else:
        found = executor.map(functools.partial(_lira_unit, server), units,
                             names=[f"{server.method}: U-LiRA shadow {i}" for i in range(len(units))])
    drops = {r: np.full((cfg.lira_shadows, len(x)), np.nan) for r in ("deleted", "retained")}
    for u, (unit, d) in enumerate(zip(units, found)):
        start, order, s, m = unit[0], unit[5], u % cfg.lira_shadows, len(unit[5])
        for j in range(m):
            deleted = int(order[j])
            drops["deleted"][s, start + deleted] = d[j][deleted]
            if m > k:
                kept = int(order[(j + k) % m])
                drops["retained"][s, start + kept] = d[j][kept]
    drops["never"] = np.stack([drop(log_posteriors(p.theta, x, y), log_posteriors(p.theta_u, x, y), y) for p in never])
    means = {r: np.nanmean(d, 0) for r, d in drops.items()}
    # one variance per side, pooled over candidates (Carlini et al.'s fixed variance, for few shadows)
    std = {r: float(max(np.sqrt(np.nanmean(np.nanvar(d, 0, ddof=1))) if len(d) > 1 else 0.0, 1e-12))
           for r, d in drops.items()}
    return Lira(means, std)


def _lira_forgets(n: int, k: int, order: torch.Tensor) -> torch.Tensor:
    """[m, n] masks: the deletion of each of a group's m candidates with its k − 1 neighbours in `order`."""
    m = len(order)
    forgets = torch.zeros(m, n, dtype=torch.bool)
    for j in range(m):
        forgets[j, order[[(j + i) % m for i in range(min(k, m))]]] = True
    return forgets


def _lira_unit(server, unit) -> list[np.ndarray]:
    """One U-LiRA shadow of one group: θ fine-tuned on the group and its fill, then each candidate's
    deletion (with its k − 1 neighbours in `order`) in turn; every candidate's drop under each."""
    _, gx, gy, fill_x, fill_y, order = unit
    problem = server.problem(torch.cat([gx, fill_x]), torch.cat([gy, fill_y]))
    lp = log_posteriors(server.served(problem), gx, gy)
    return [drop(lp, log_posteriors(server.unlearn(problem, forget), gx, gy), gy)
            for forget in _lira_forgets(server.n, server.k, order)]


def _lira_chunks(sizes: list[int], stack: int) -> list[tuple[int, int]]:
    """Consecutive units as (start, stop), each chunk's deletions (a unit's `size`) at most `stack` but for a
    unit alone larger."""
    chunks, start, held = [], 0, 0
    for i, size in enumerate(sizes):
        if held and held + size > stack:
            chunks.append((start, i))
            start, held = i, 0
        held += size
    return chunks + [(start, len(sizes))] if sizes else chunks


def _lira_units(server, units) -> list[list[np.ndarray]]:
    """`_lira_unit` of each of `units`, made at once (`server.pairs`)."""
    made = server.pairs(torch.stack([torch.cat([u[1], u[3]]) for u in units]),
                        torch.stack([torch.cat([u[2], u[4]]) for u in units]),
                        [_lira_forgets(server.n, server.k, u[5]) for u in units])
    out = []
    for (_, gx, gy, *_rest), (theta, thetas_u) in zip(units, made):
        lp = log_posteriors(theta, gx, gy)
        out.append([drop(lp, log_posteriors(theta_u, gx, gy), gy) for theta_u in thetas_u])
    return out
