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
from torch import nn

from .config import ScrubConfig as Config
from .problem import UnlearningProblem, forget_and_retain, sgd_steps
from ..models import clone


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
