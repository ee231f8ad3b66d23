"""What every unlearning method is given, and the settings shared by methods."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..training import OptimSettings


@dataclass(frozen=True)
class Pretraining:
    """How θ₀ was made, for methods that retrain from scratch: `init()` returns
    the freshly initialised model train started from; it was then fitted on
    (x, y) with `settings`, `seed` and `augment`."""

    init: Callable[[], nn.Module]
    x: torch.Tensor
    y: torch.Tensor
    settings: OptimSettings
    seed: int
    augment: bool = False


@dataclass(frozen=True)
class UnlearningProblem:
    """The server's side of a deletion request: the models and the data it holds.

    theta_pretrained (θ₀) is the model before the fine-tune on D_u;
    theta_original (θ) is the served model, θ₀ fine-tuned on (du_x, du_y) with
    `finetune` and `finetune_seed`. `pretraining` is there only where the
    server kept what retraining from scratch needs. Methods must not modify
    either model.
    """

    theta_pretrained: nn.Module
    theta_original: nn.Module
    du_x: torch.Tensor
    du_y: torch.Tensor
    finetune: OptimSettings
    finetune_seed: int
    pretraining: Pretraining | None = None


def forget_and_retain(problem: UnlearningProblem, forget: torch.Tensor, device: torch.device):
    """(x_forget, y_forget, x_retain, y_retain) on `device`."""
    return (problem.du_x[forget].to(device), problem.du_y[forget].to(device),
            problem.du_x[~forget].to(device), problem.du_y[~forget].to(device))


def sgd_steps(model: nn.Module, objective: Callable[[nn.Module], torch.Tensor], steps: int, lr: float,
              max_grad_norm: float = 0.0, masks: list[torch.Tensor] | None = None) -> nn.Module:
    """`steps` plain SGD steps on objective(model), batch norm in eval mode;
    max_grad_norm > 0 clips each step's global gradient norm to it; `masks`
    (one per parameter, in order) zero the gradient where they are 0."""
    model.eval()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        objective(model).backward()
        if masks is not None:
            for p, m in zip(model.parameters(), masks):
                if p.grad is not None:
                    p.grad.mul_(m)
        if max_grad_norm > 0:
            nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        opt.step()
    return model


def head_of(model: nn.Module) -> nn.Linear:
    """The model's classification head: its last `nn.Linear` module."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("the model has no linear head (no nn.Linear module)")
    return linears[-1]


@torch.no_grad()
def penultimate(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The head's inputs for x (the penultimate features), model in eval mode, on the model's device."""
    head, captured = head_of(model), []
    hook = head.register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0].detach()))
    try:
        model.eval()
        device = next(model.parameters()).device
        for s in range(0, len(x), batch_size):
            model(x[s : s + batch_size].to(device))
    finally:
        hook.remove()
    return torch.cat(captured) if captured else torch.zeros(0)
