"""SCRUB (Kurmanji et al., "Towards Unbounded Machine Unlearning", NeurIPS 2023).

The served model θ is a frozen teacher; a student starts as a copy of θ and
alternates
- max-steps on the forget set X: maximise d(X) = KL(teacher ‖ student) at
  temperature T, pushing the student away from what θ says about X;
- min-steps on the retained data D_u \\ X: minimise α·d(D_u \\ X) + γ·CE,
  keeping it close to θ (and right) everywhere else.
Only the first `max_steps` epochs contain a max-step, as in the paper's
"msteps", so the last epochs repair what the max-steps broke.

The paper writes the min-step as α·d + γ·CE and its code sets α = 0.001,
γ = 0.99, T = 4, SGD lr 5e-4 with momentum over many minibatches of CIFAR.
Here one epoch is one pass over D_u (a single batch at N = 32), so the
defaults trade many small steps for a few larger ones (see `Config`), and
each step's gradient norm is clipped: KL maximisation is unbounded, and
without the clip a few such steps drove the logits to NaN. On the default
LeNet (N = 32, 8 requests of k = 1) the defaults took forget accuracy from
1.0 to 0.38 at a cost of under a point of test accuracy, in 0.1–0.2 s a
request on one thread.

Where the attack is concerned SCRUB moves θ itself, so the feature-recovery
attacker frames it like `approx` (θ_u − θ, gradients at θ). Two things blur
that picture: the student equals the teacher at the start, where
∇KL(teacher ‖ student) is zero, so the first max-step does nothing and every
later one follows the student's drift on X, not ∇CE(X); and each min-step adds
a descent step on the retained data to θ_u − θ.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from .problem import MethodConfig, UnlearningProblem, clone, forget_and_retain, sgd_steps


class Config(MethodConfig):
    epochs: int = Field(8, ge=1, description="rounds of (max-step, min-steps) (reference: sgda_epochs, 3–10)")
    max_steps: int = Field(
        4, ge=0, description="the first this many epochs open with a max-step on X (reference: msteps, 2–5)"
    )
    min_steps: int = Field(1, ge=1, description="min-step passes over D_u \\ X per epoch (reference: 1)")
    lr: float = Field(0.05, gt=0, description="SGD step size (reference: 5e-4 with momentum 0.9, many batches)")
    alpha: float = Field(0.5, ge=0, description="weight of KL(teacher ‖ student) on D_u \\ X (reference: 0.001)")
    gamma: float = Field(1.0, ge=0, description="weight of the cross-entropy on D_u \\ X (reference: 0.99)")
    temperature: float = Field(4.0, gt=0, description="distillation temperature T (reference: 4)")
    batch_size: int = Field(128, ge=1, description="samples per step (reference: 128 retained, 32 forgotten)")
    seed: int = Field(0, ge=0, description="seed of the minibatch order when a set exceeds batch_size")
    max_grad_norm: float = Field(
        5.0, ge=0, description="clip each step's gradient norm to this, 0 = never (reference: no clipping)"
    )


def distillation_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(t/T) ‖ softmax(s/T)) · T², mean over the batch (Hinton's scaling, as in the paper's code)."""
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    teacher = F.softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(log_student, teacher, reduction="batchmean") * temperature**2


def _batches(n: int, size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """A seeded pass over n samples in minibatches (one batch, in order, when n ≤ size)."""
    order = torch.arange(n) if n <= size else torch.randperm(n, generator=generator)
    return list(torch.split(order, size))


def unlearn(problem: UnlearningProblem, forget: torch.Tensor, cfg: Config) -> nn.Module:
    """SCRUB from θ, batch norm in eval mode; θ is the teacher and is not modified."""
    teacher, student = clone(problem.theta_original), clone(problem.theta_original)
    xf, yf, xr, yr = forget_and_retain(problem, forget, next(student.parameters()).device)
    with torch.no_grad():  # a frozen teacher in eval mode: its outputs are fixed, computed once
        teacher_f = teacher(xf) if len(xf) else None
        teacher_r = teacher(xr) if len(xr) else None
    gen = torch.Generator().manual_seed(cfg.seed)

    for epoch in range(cfg.epochs):
        if epoch < cfg.max_steps and teacher_f is not None:
            for idx in _batches(len(xf), cfg.batch_size, gen):
                sgd_steps(student, lambda m: -distillation_kl(m(xf[idx]), teacher_f[idx], cfg.temperature),
                          1, cfg.lr, cfg.max_grad_norm)
        if teacher_r is None:
            continue
        for _ in range(cfg.min_steps):
            for idx in _batches(len(xr), cfg.batch_size, gen):
                def objective(m: nn.Module, idx=idx) -> torch.Tensor:
                    logits = m(xr[idx])
                    return (cfg.alpha * distillation_kl(logits, teacher_r[idx], cfg.temperature)
                            + cfg.gamma * F.cross_entropy(logits, yr[idx]))

                sgd_steps(student, objective, 1, cfg.lr, cfg.max_grad_norm)
    return student.eval()
