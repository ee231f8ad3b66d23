"""The unlearn stage's algorithm: every deletion request unlearned by each
method, timed, beside the gold standard (retraining without X), with the
unlearned model's efficacy. One code path for unlearn.method and the compared
methods."""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
from pydantic import BaseModel
from torch import nn

from .. import io, tasks
from ..config import OptimParams, PretrainParams
from ..data import as_inputs
from ..executor import LOCAL, Executor
from ..models import init_model
from ..requests import DeletionRequest
from ..training import evaluate
from . import exact
from .efficacy import distance_to_retrain, predict
from .methods import REPORTS, SERVER_STATE, resolve, served_model
from .problem import Pretraining, UnlearningProblem

# save(method, name, model): the stage writes `model` as <method's folder>/<name>.safetensors
Save = Callable[[str, str, nn.Module], None]


def load_problem(data: Path, trained: Path, device) -> tuple[UnlearningProblem, dict, torch.Tensor, torch.Tensor]:
    """The server's side as the train stage left it: the problem, θ's model spec and the test set."""
    ds = io.load_dataset_artifact(data)
    theta_pretrained, spec = io.load_model(trained / "theta_pretrained.safetensors", device)
    theta, _ = io.load_model(trained / "theta_original.safetensors", device)
    split, _ = io.load_tensors(trained / "split.safetensors")
    finetune = io.load_json(trained / "finetune.json")
    pretrain = io.load_json(trained / "pretrain.json")
    du, task = split["du"], tasks.task_of(theta)
    du_x, pretrain_x, test_x = (as_inputs(ds.x_train[du]), as_inputs(ds.x_train[split["pretrain"]]),
                                as_inputs(ds.x_test))
    problem = UnlearningProblem(
        theta_pretrained, theta, du_x, tasks.targets(task, du_x, ds.y_train[du]),
        OptimParams(**{k: v for k, v in finetune.items() if k != "seed"}), finetune["seed"],
        Pretraining(
            init=lambda: init_model(spec, pretrain["init_seed"]).to(device),
            x=pretrain_x,
            y=tasks.targets(task, pretrain_x, ds.y_train[split["pretrain"]]),
            settings=PretrainParams(**{k: v for k, v in pretrain.items() if k not in ("seed", "init_seed")}),
            seed=pretrain["seed"],
            augment=pretrain["augment"],
        ),
    )
    return problem, spec, test_x, tasks.targets(task, test_x, ds.y_test)


def unlearn_requests(
    problem: UnlearningProblem,
    requests: list[DeletionRequest],
    methods: dict[str, BaseModel],
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    save: Save,
    on_request: Callable[[], None] | None = None,
    executor: Executor = LOCAL,
) -> tuple[pd.DataFrame, dict[str, dict]]:
    """Each method (name -> its config, in order) on each request. Returns one
    row per (method, request) — seconds, forget / retain / test accuracy and
    agreement with retraining — and per method the server state's index where
    the method keeps one (SISA's slices). Models leave through `save`: the
    served θ as "theta_original", each θ_u as "theta_unlearned_<index>", a
    method's server state as "server_state" and "server_state_<index>".
    The requests are independent: `executor` maps them, one task a request."""
    served, states = {}, {}
    for name, cfg in methods.items():
        served[name] = served_model(name, problem, cfg)
        save(name, "theta_original", served[name])
        if name in SERVER_STATE:  # e.g. SISA's checkpoints: what a server attacker that knows the method diffs
            state, states[name] = SERVER_STATE[name](problem, cfg)
            save(name, "server_state", state)
    done = executor.map(functools.partial(_unlearn_request, problem, methods, served, test_x, test_y), requests,
                        names=[f"request {req.index}" for req in requests],
                        on_done=None if on_request is None else lambda _: on_request())
    rows = []
    for name in methods:
        for req, per_method in zip(requests, done):
            theta_u, state, row = per_method[name]
            save(name, f"theta_unlearned_{req.index:03d}", theta_u)
            if state is not None:
                save(name, f"server_state_{req.index:03d}", state)
            rows.append(row)
    return pd.DataFrame(rows), states


def _unlearn_request(problem: UnlearningProblem, methods: dict[str, BaseModel], served: dict[str, nn.Module],
                     test_x: torch.Tensor, test_y: torch.Tensor, req: DeletionRequest) -> dict[str, tuple]:
    """One request under each method: name -> (θ_u, the server state after it or None, its row)."""
    n = len(problem.du_y)
    du_x, du_y = problem.du_x, problem.du_y
    forget = req.mask(n)
    # The gold standard, retraining without X: X lies in D_u only, so `exact`
    # equals `retrain` bit for bit (tested) at a fraction of the cost.
    gold_u = exact.unlearn(problem, forget, exact.Config())
    gold_pred = predict(gold_u, test_x)  # each θ_u is compared with its request's on the test set
    out = {}
    for name, cfg in methods.items():
        method, _ = resolve(name)
        theta = served[name]
        started = time.perf_counter()
        theta_u = method(problem, forget, cfg)
        seconds = time.perf_counter() - started
        state = SERVER_STATE[name](problem, cfg, forget)[0] if name in SERVER_STATE else None
        report = REPORTS[name](problem, forget, cfg) if name in REPORTS else {}
        test_pred = predict(theta_u, test_x)
        out[name] = (theta_u, state, {
            "method": name,
            "request": req.index,
            "k": len(req.forget),
            "target_class": req.target_class if req.target_class is not None else -1,
            "seconds": seconds,
            "forget_accuracy": evaluate(theta_u, du_x[forget], du_y[forget])["accuracy"],
            "original_forget_accuracy": evaluate(theta, du_x[forget], du_y[forget])["accuracy"],
            "retain_accuracy": evaluate(theta_u, du_x[~forget], du_y[~forget])["accuracy"],
            "test_accuracy": (tasks.quality(tasks.task_of(theta_u), test_pred, test_y.cpu())
                              if test_pred.is_floating_point() else int((test_pred == test_y.cpu()).sum()) / len(test_y)),
            **distance_to_retrain(theta_u, gold_u, du_x[forget], test_x, (test_pred, gold_pred)),
            **report,
        })
    return out


def summarise(frame: pd.DataFrame, main: str) -> dict:
    """unlearn.json: the main method's means over its requests, each compared method's under compare.<name>."""
    per_method = {name: _means(g) for name, g in frame.groupby("method", sort=False)}
    return {**per_method[main], "compare": {name: s for name, s in per_method.items() if name != main}}


KEYS = ("seconds", "forget_accuracy", "retain_accuracy", "test_accuracy", "original_forget_accuracy",
        "retrain_agreement_forget", "retrain_agreement_test", "retrain_param_distance")
ROW = ("method", "request", "k", "target_class")


def _means(frame: pd.DataFrame) -> dict:
    """One method's means over its requests, with those of what its report adds (REPORTS)."""
    out = {("seconds_per_request" if k == "seconds" else k): float(frame[k].mean()) for k in KEYS}
    extra = [c for c in frame.columns if c not in KEYS + ROW and frame[c].notna().any()]
    return {**out, **{c: float(frame[c].mean()) for c in extra}, "requests": len(frame)}
