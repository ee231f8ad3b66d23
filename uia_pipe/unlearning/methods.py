"""The unlearning methods' registry: name -> (function, config type). The name
is the params key (`unlearn.method`) and the key of the method's own settings
section (its config type sits in `config.py`, the schema leaf).

A method is `unlearn(problem, forget, cfg) -> θ_u`: given the server's models
and data (an `UnlearningProblem`) and a bool mask over D_u marking the samples
to forget, it returns a new model and leaves its inputs untouched.
"""

from __future__ import annotations

from typing import Callable

import torch
from pydantic import BaseModel
from torch import nn

from ..config import parse_block
from . import (amnesiac, approx, certified, exact, finetune, fisher, influence, neggrad, plugins, random_label, retrain,
               salun, scrub, shapley, sisa)
from .config import MethodConfig, UnlearnParams
from .problem import UnlearningProblem

METHODS: dict[str, tuple[Callable, type[MethodConfig]]] = {
    "exact": (exact.unlearn, exact.Config),
    "approx": (approx.unlearn, approx.Config),
    "retrain": (retrain.unlearn, retrain.Config),
    "finetune": (finetune.unlearn, finetune.Config),
    "neggrad": (neggrad.unlearn, neggrad.Config),
    "random_label": (random_label.unlearn, random_label.Config),
    "influence": (influence.unlearn, influence.Config),
    "sisa": (sisa.unlearn, sisa.Config),
    "scrub": (scrub.unlearn, scrub.Config),
    "fisher": (fisher.unlearn, fisher.Config),
    "amnesiac": (amnesiac.unlearn, amnesiac.Config),
    "salun": (salun.unlearn, salun.Config),
    "certified": (certified.unlearn, certified.Config),
    "shapley": (shapley.unlearn, shapley.Config),
}

# Methods whose served model is not the train stage's θ (name -> serve(problem, cfg)).
SERVED: dict[str, Callable] = {"sisa": sisa.serve, "certified": certified.serve, "shapley": shapley.serve}

# Methods whose server keeps more than the served model (name ->
# server_state(problem, cfg, forget=None) -> (models as one module, JSON-ready index)).
SERVER_STATE: dict[str, Callable] = {"sisa": sisa.server_state, "shapley": shapley.server_state}

# Methods with a stacked form (name -> unlearn_many(problems, forgets, cfg) -> [θ_u]): the requests of many
# problems at once, each equal up to float rounding to the method's own unlearn.
STACKED: dict[str, Callable] = {"exact": exact.unlearn_many, "approx": approx.unlearn_many}

# Methods that report on each removal beyond efficacy (name -> report(problem, forget, cfg) -> {key: float}),
# e.g. certified removal's gradient residual against its budget.
REPORTS: dict[str, Callable] = {"certified": certified.certificate}


def served_model(name: str, problem: UnlearningProblem, cfg: MethodConfig):
    """θ as the attacker sees it before the deletion under method `name`."""
    serve = SERVED.get(name)
    return serve(problem, cfg) if serve else problem.theta_original


def unlearn_many(name: str, problems: list[UnlearningProblem], forgets: list[torch.Tensor], cfg: MethodConfig
                 ) -> list[nn.Module]:
    """[method(problem, forget, cfg) for each pair of `problems` and `forgets`] under method `name`: stacked
    where the method has a stacked form (STACKED), one group per count of records forgotten (equal up to
    float rounding), else one by one (equal bit for bit)."""
    many = STACKED.get(name)
    if many is None:
        unlearn = resolve(name)[0]
        return [unlearn(p, f, cfg) for p, f in zip(problems, forgets)]
    out: list[nn.Module | None] = [None] * len(problems)
    counts = [int(f.sum()) for f in forgets]
    for count in dict.fromkeys(counts):
        group = [i for i, c in enumerate(counts) if c == count]
        for i, theta_u in zip(group, many([problems[i] for i in group], [forgets[i] for i in group], cfg)):
            out[i] = theta_u
    return out


def resolve(name: str) -> tuple[Callable, type[BaseModel]]:
    """(method, config type) of a built-in method or a plugin (imported and checked on first use)."""
    return METHODS[name] if name in METHODS else plugins.load(name)


def configured(u: UnlearnParams, name: str) -> BaseModel:
    """Method `name`'s settings from the unlearn section: its own block, or `unlearn.plugin` for a plugin,
    validated by the plugin's Config (a one-line error naming the key)."""
    if name in METHODS:
        return getattr(u, name)
    return parse_block(resolve(name)[1], u.plugin, "unlearn.plugin")
