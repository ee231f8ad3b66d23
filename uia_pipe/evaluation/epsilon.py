"""The unlearning challenge's per-example ε of a run's methods (`epsilon_metric`), on the evaluator's side: it
unlearns the deleted records. M models unlearned by the method and M retrained without the forget set X,
each made under its own seed; the control is M retrained against M other retrained models, the best any
method can score at that M.

What varies between the M models is what varies in practice: the order of the records in the fine-tunes and
the method's own randomness. The server's default fine-tune is one full batch, which no seed changes, so the
block makes every model with its own recipe (attack.epsilon: epochs, batch_size, lr, momentum; θ₀ and the
weight decay are the server's): θ = θ₀ fine-tuned on D_u, retrained = θ₀ fine-tuned on D_u \\ X (for a
method that serves another model than θ, its served model made on D_u \\ X), each under its own seed. With
theta: per_model, unlearned model i is the whole server under seed i: θ_i fine-tuned under it, then
unlearned with the method's seeds (config fields `seed`, `seed_offset`) shifted by i; with theta: fixed, one
θ and only the method's seeds vary, so a deterministic method gives M identical models (ε at the cap: a
finding about the method, not an error)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel
from torch import nn

from ..attacks.config import EpsilonParams
from ..config import OptimParams
from ..errors import UiaError
from ..training import fit_many, outputs
from ..unlearning.methods import SERVED, resolve, served_model, unlearn_many
from ..unlearning.problem import UnlearningProblem
from . import epsilon_metric as em
from .server import SAME_AS
from .setting import Setting

QUANTILES = {"q10": 0.1, "q25": 0.25, "median": 0.5, "q75": 0.75, "q90": 0.9}


def forget_mask(setting: Setting, requests: int) -> torch.Tensor:
    """X: the union of the first `requests` requests' records, a bool mask over D_u."""
    mask = torch.zeros(len(setting.du_y), dtype=torch.bool)
    for req in setting.requests[:requests]:
        mask |= setting.forget_mask(req)
    return mask


def seeded(cfg: BaseModel, shift: int) -> BaseModel:
    """The method's config with its own seeds (`seed`, `seed_offset`) shifted by `shift`."""
    fields = [f for f in ("seed", "seed_offset") if f in type(cfg).model_fields]
    return cfg.model_copy(update={f: getattr(cfg, f) + shift for f in fields}) if shift and fields else cfg


@dataclass
class Measured:
    """One side's M models measured: confidences on X [M, |X|] and mean accuracies."""

    confidences: np.ndarray
    forget_accuracy: float
    retain_accuracy: float
    test_accuracy: float


class Maker:
    """The block's models of one setting: θ₀, D_u, X, the recipe and the seeds, with the retrained models
    (shared by every method that serves θ) made once."""

    def __init__(self, setting: Setting, cfg: EpsilonParams, test_x: torch.Tensor, test_y: torch.Tensor):
        self.setting, self.cfg = setting, cfg
        self.forget = forget_mask(setting, cfg.forget_requests)
        self.recipe = OptimParams(epochs=cfg.epochs, lr=cfg.lr, momentum=cfg.momentum,
                                  weight_decay=setting.finetune.weight_decay, batch_size=cfg.batch_size)
        self.test_x, self.test_y = test_x[: cfg.test_records], test_y[: cfg.test_records]
        m = cfg.models
        self.unlearn_seeds = [cfg.seed + i for i in range(m)]
        self.retrain_seeds = [cfg.seed + m + i for i in range(m)]
        self.control_seeds = [cfg.seed + 2 * m + i for i in range(m)]
        self._retrained: dict[tuple, Measured] = {}
        self._thetas: list[nn.Module] | None = None
        self.models_made = 0

    def problem(self, theta: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int) -> UnlearningProblem:
        return UnlearningProblem(self.setting.theta_pretrained, theta, x, y, self.recipe, seed)

    def _fits(self, x: torch.Tensor, y: torch.Tensor, seeds: list[int]) -> list[nn.Module]:
        """θ₀ fine-tuned on (x, y) under each seed, stacked (`fit_many`)."""
        self.models_made += len(seeds)
        return fit_many(self.setting.theta_pretrained, x.expand(len(seeds), *x.shape),
                        y.expand(len(seeds), *y.shape), self.recipe, seeds)

    def measure(self, models: list[nn.Module]) -> Measured:
        s, keep = self.setting, ~self.forget
        conf, acc = [], {"forget": [], "retain": [], "test": []}
        for model in models:
            logits = outputs(model, torch.cat([s.du_x, self.test_x]))
            du, test = logits[: len(s.du_x)], logits[len(s.du_x):]
            conf.append(em.logit_confidence(du[self.forget].numpy(), s.du_y[self.forget].numpy()))
            right = du.argmax(1) == s.du_y
            acc["forget"].append(right[self.forget].float().mean().item())
            acc["retain"].append(right[keep].float().mean().item() if keep.any() else np.nan)
            acc["test"].append((test.argmax(1) == self.test_y).float().mean().item())
        return Measured(np.stack(conf), *(float(np.mean(acc[k])) for k in ("forget", "retain", "test")))

    def retrained(self, method: str, method_config: BaseModel | None, seeds: list[int]) -> Measured:
        """M retrained models: the server's served model made on D_u \\ X under each seed."""
        served = method in SERVED
        key = (method if served else None, tuple(seeds))
        if key not in self._retrained:
            x, y = self.setting.du_x[~self.forget], self.setting.du_y[~self.forget]
            thetas = self._fits(x, y, seeds)
            models = ([served_model(method, self.problem(t, x, y, s), method_config) for t, s in zip(thetas, seeds)]
                      if served else thetas)
            self._retrained[key] = self.measure(models)
        return self._retrained[key]

    def unlearned(self, method: str, method_config: BaseModel) -> Measured:
        """M models unlearned by `method` from θ (one θ per seed, or one for all: theta)."""
        s, m = self.setting, self.cfg.models
        seeds = self.unlearn_seeds if self.cfg.theta == "per_model" else self.unlearn_seeds[:1]
        if self._thetas is None:  # every method unlearns from the same θ_i (methods leave their inputs untouched)
            self._thetas = self._fits(s.du_x, s.du_y, seeds)
        problems = [self.problem(t, s.du_x, s.du_y, seed) for t, seed in zip(self._thetas, seeds)]
        problems = problems if len(problems) == m else problems * m
        configs = [seeded(method_config, i) for i in range(m)]
        forgets = [self.forget] * m
        if all(c == method_config for c in configs):  # no seed of its own: one stacked call where it has one
            models = unlearn_many(method, problems, forgets, method_config)
        else:
            unlearn = resolve(method)[0]
            models = [unlearn(p, self.forget, c) for p, c in zip(problems, configs)]
        self.models_made += m
        return self.measure(models)


def summarise(eps: np.ndarray, models: int, unlearned: Measured, retrained: Measured) -> dict:
    """ε's distribution over X, the forget score, metric.py's utility-adjusted final score, the accuracies."""
    score = em.forget_score(eps, models)
    return {
        "models": models, "forget_examples": len(eps),
        **{f"epsilon_{k}": float(np.quantile(eps, q)) for k, q in QUANTILES.items()},
        "epsilon_at_cap": float(np.mean(eps >= em.EPSILON_CAP)),
        "forget_score": score,
        "final_score": em.final_score(score, unlearned.retain_accuracy, retrained.retain_accuracy,
                                      unlearned.test_accuracy, retrained.test_accuracy),
        "forget_accuracy": unlearned.forget_accuracy, "retrained_forget_accuracy": retrained.forget_accuracy,
        "test_accuracy": unlearned.test_accuracy, "retrained_test_accuracy": retrained.test_accuracy,
    }


@dataclass
class Result:
    summary: dict  # summarise's numbers, with seconds and seconds_per_model
    epsilons: np.ndarray  # per forget example, in D_u order


def method_epsilon(maker: Maker, method: str, method_config: BaseModel) -> Result:
    """`method`'s ε over X against M retrained models (a method retraining from scratch: exact's models)."""
    started, made = time.perf_counter(), maker.models_made
    name = SAME_AS.get(method, method)
    unlearned = maker.unlearned(name, method_config)
    retrained = maker.retrained(name, method_config, maker.retrain_seeds)
    eps = em.epsilons(unlearned.confidences, retrained.confidences)
    seconds = time.perf_counter() - started
    return Result({**summarise(eps, maker.cfg.models, unlearned, retrained), "seconds": seconds,
                   "seconds_per_model": seconds / max(maker.models_made - made, 1)}, eps)


def control_epsilon(maker: Maker) -> Result:
    """M retrained against M other retrained models (other seeds): the score of a perfect method at this M."""
    started, made = time.perf_counter(), maker.models_made
    retrained = maker.retrained("exact", None, maker.retrain_seeds)
    other = maker.retrained("exact", None, maker.control_seeds)
    eps = em.epsilons(other.confidences, retrained.confidences)
    seconds = time.perf_counter() - started
    return Result({**summarise(eps, maker.cfg.models, other, retrained), "seconds": seconds,
                   "seconds_per_model": seconds / max(maker.models_made - made, 1)}, eps)


def per_request(setting: Setting, maker: Maker, eps: np.ndarray) -> dict[int, float]:
    """Request index -> the mean ε of its records in X (requests among the first forget_requests)."""
    where = {int(i): e for i, e in zip(torch.nonzero(maker.forget).flatten(), eps)}
    return {req["index"]: float(np.mean([where[i] for i in req["forget"]]))
            for req in setting.requests[: maker.cfg.forget_requests]}


def check(setting: Setting, cfg: EpsilonParams) -> str | None:
    """Why the block skips `setting` (None: it runs); a forget set holding all of D_u is an error (UiaError)."""
    if not cfg.models:
        return "attack.epsilon.models is 0"
    if setting.task != "classification":
        return f"it needs class confidences (train.task is {setting.task})"
    if setting.finetune is None or setting.method_config is None:
        return "the unlearn stage recorded no recipe to replay (rerun unlearn)"
    if bool(forget_mask(setting, cfg.forget_requests).all()):
        raise UiaError(f"attack.epsilon.forget_requests: the first {cfg.forget_requests} requests delete all of "
                       "D_u, leaving nothing to retrain on; expected fewer")
    return None


def for_runs(runs: dict, cfg: EpsilonParams, on_method: Callable[[str, dict], None] | None = None
             ) -> tuple[dict[str, dict], dict, pd.DataFrame]:
    """Every run's method (runs: method -> `Run`, all on the same θ₀, D_u and requests) against the same
    retrained models, and the control: (method -> its summary, the control's summary, one row per (method,
    request in X) with the request's mean ε, `epsilon.epsilon`, and the control's, `epsilon.control`)."""
    first = next(iter(runs.values()))
    maker = Maker(first.setting, cfg, first.test_x, first.test_y)
    control = control_epsilon(maker)
    if on_method is not None:
        on_method("control", control.summary)
    sections, rows = {}, []
    controls = per_request(first.setting, maker, control.epsilons)
    for name, run in runs.items():
        result = method_epsilon(maker, name, run.setting.method_config)
        sections[name] = result.summary
        rows += [{"method": name, "request": r, "epsilon.epsilon": e, "epsilon.control": controls[r]}
                 for r, e in per_request(run.setting, maker, result.epsilons).items()]
        if on_method is not None:
            on_method(name, result.summary)
    return sections, control.summary, pd.DataFrame(rows)
