"""Amnesiac unlearning (Graves, Nagisetty & Ganesh, AAAI 2021): the server
records the parameter update of every batch of its training on D_u; deleting
X subtracts the updates of the batches that held any of X, then optionally
repairs with a few descent steps on D_u \\ X.

The record is the fine-tune's, replayed here from θ₀ with the run's settings
and seed (the training is deterministic, and the replay must reproduce θ,
checked), so that the train stage stays method-agnostic and choosing this
method reruns unlearn only."""

from __future__ import annotations

import functools

import torch
from torch import nn

from .. import tasks
from .config import AmnesiacConfig as Config
from .problem import UnlearningProblem, forget_and_retain, sgd_steps
from ..models import clone
from ..training import fit


@functools.lru_cache(maxsize=2)
def record(problem: UnlearningProblem) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
    """(D_u indices of the batch, the update it made to each parameter) for every step of the fine-tune."""
    model = clone(problem.theta_pretrained)
    before = [p.detach().clone() for p in model.parameters()]
    steps = []

    def on_step(idx: torch.Tensor) -> None:
        after = [p.detach().clone() for p in model.parameters()]
        steps.append((idx.clone(), [a - b for a, b in zip(after, before)]))
        before[:] = after

    fit(model, problem.du_x, problem.du_y, problem.finetune, problem.finetune_seed, batchnorm_eval=True,
        on_step=on_step)
    for p, q in zip(model.parameters(), problem.theta_original.parameters()):
        if not torch.allclose(p, q, rtol=1e-5, atol=1e-7):
            raise ValueError("amnesiac: replaying the fine-tune from θ₀ did not reproduce θ; "
                             "the record needs the run's exact fine-tune settings and seed")
    return steps


def unlearn(problem: UnlearningProblem, forget: torch.Tensor, cfg: Config) -> nn.Module:
    """θ minus the recorded updates of every batch holding a sample of X, then `repair_steps` on D_u \\ X."""
    model = clone(problem.theta_original)
    steps = record(problem)
    with torch.no_grad():
        for idx, updates in steps:
            if forget[idx].any():
                for p, u in zip(model.parameters(), updates):
                    p.sub_(u)
    if cfg.repair_steps and (~forget).any():
        _, _, xr, yr = forget_and_retain(problem, forget, next(model.parameters()).device)
        sgd_steps(model, lambda m: tasks.loss(m(xr), yr), cfg.repair_steps, cfg.repair_lr)
    return model
