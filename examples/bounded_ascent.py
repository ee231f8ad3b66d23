"""An unlearning method of your own, audited without editing uia-pipe: gradient ascent on the forget
set X, projected back into a ball around θ so that the model cannot drift far.

Run it as it is:      dvc exp run -S 'unlearn.method=examples.bounded_ascent:unlearn'
or copy it to plugins/ and point unlearn.method there. Its settings come from `unlearn.plugin`
(e.g. -S 'unlearn.plugin={steps: 20, radius: 0.02}'), validated by the `Config` below."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from uia_pipe.models import clone


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: int = Field(10, ge=1, le=10_000)  # full-batch ascent steps on X
    lr: float = Field(0.01, gt=0)  # step size
    radius: float = Field(0.05, gt=0)  # largest ‖θ_u − θ‖ / ‖θ‖ allowed


def unlearn(problem, forget: torch.Tensor, cfg: Config) -> torch.nn.Module:
    """problem: the server's models and D_u (uia_pipe.unlearning.problem.UnlearningProblem); forget: a
    bool mask over D_u; returns θ_u, a new model of θ's architecture (θ itself stays untouched)."""
    theta = problem.theta_original
    model = clone(theta)
    device = next(model.parameters()).device
    x, y = problem.du_x[forget].to(device), problem.du_y[forget].to(device)
    start = [p.detach().clone() for p in theta.parameters()]
    limit = cfg.radius * torch.sqrt(sum(p.square().sum() for p in start))
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    for _ in range(cfg.steps):
        opt.zero_grad(set_to_none=True)
        (-F.cross_entropy(model(x), y)).backward()
        opt.step()
        with torch.no_grad():  # project back into the ball around θ
            moved = torch.sqrt(sum((p - s).square().sum() for p, s in zip(model.parameters(), start)))
            if moved > limit:
                for p, s in zip(model.parameters(), start):
                    p.copy_(s + (p - s) * (limit / moved))
    return model
