"""Certified removal (Guo, Goldstein, Hannun & van der Maaten, ICML 2020).

The server serves θ₀'s feature extractor, frozen, under a convex head fitted
on D_u: K one-vs-all L2-regularised logistic regressions on x̃ = [φ(x), 1] / s
(φ = θ₀'s penultimate features, s = max ‖[φ, 1]‖ over D_u so that ‖x̃‖ ≤ 1),
class c minimising
    L_c(w) = Σ_i log(1 + exp(−y_ic wᵀx̃_i)) + λn/2 ‖w − a_c‖² + b_cᵀw,
with anchor a_c = θ₀'s head row c in x̃ coordinates (public: θ₀ never saw D_u)
and the loss perturbation b ~ N(0, σ²I), drawn once. Removing X is one Newton
step per class from the served head on the objective without X.

What is certified: the head. With ‖∇L(w⁻; D \\ X)‖ ≤ σε/c, c = √(2 log(1.5/δ)),
the released head is (ε, δ)-indistinguishable from one retrained on D \\ X
(Guo's Theorem 3; Corollary 2 bounds the residual from data alone). What is
not: the feature extractor is θ₀'s, public and never fitted on D_u, so nothing
about it needs certifying; s is fixed at serve time and kept. A sequence of
removals spends the budget: `certificate` says how many removals of this size
one budget covers before the server must retrain.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import CertifiedConfig as Config
from .problem import UnlearningProblem, head_of, penultimate
from ..models import clone

GAMMA = 0.25  # Lipschitz constant of the logistic loss's second derivative


@dataclass(frozen=True)
class CertifiedHead:
    """The served head's data and fit: x (n, d+1) = x̃ over D_u, y (K, n) in ±1,
    anchor and noise (K, d+1), w (K, d+1) the fitted head, scale = s."""

    x: torch.Tensor
    y: torch.Tensor
    anchor: torch.Tensor
    noise: torch.Tensor
    w: torch.Tensor
    scale: float
    model: nn.Module


def _gradient(w, x, y, mu, anchor, noise):
    """∇L_c for every class, stacked (K, d+1), and the logistic curvatures (K, n)."""
    m = y * (w @ x.T)
    return (-y * torch.sigmoid(-m)) @ x + mu * (w - anchor) + noise, torch.sigmoid(m) * torch.sigmoid(-m)


def _objective(w, x, y, mu, anchor, noise):
    return F.softplus(-y * (w @ x.T)).sum(1) + mu / 2 * ((w - anchor) ** 2).sum(1) + (noise * w).sum(1)


def _solve(x, curv, mu, r):
    """(xᵀ diag(curv_c) x + μI)⁻¹ r_c for every class by Woodbury: n × n systems only."""
    s = curv.sqrt()
    m = s[:, :, None] * (x @ x.T) * s[:, None, :] + mu * torch.eye(len(x), dtype=x.dtype, device=x.device)
    z = torch.linalg.solve(m, (s * (r @ x.T)).unsqueeze(-1)).squeeze(-1)
    return (r - (s * z) @ x) / mu


def _newton(x, y, mu, anchor, noise, iterations):
    """Minimise every L_c from the anchor: Newton steps, halved until the objective does not rise."""
    w, tol = anchor.clone(), 1e-10 * max(len(x), 1)
    for _ in range(iterations):
        grad, curv = _gradient(w, x, y, mu, anchor, noise)
        if grad.norm() < tol:
            break
        step, f0 = _solve(x, curv, mu, grad), _objective(w, x, y, mu, anchor, noise)
        t = torch.ones(len(w), 1, dtype=w.dtype, device=w.device)
        for _ in range(40):
            worse = _objective(w - t * step, x, y, mu, anchor, noise) > f0 + 1e-13 * f0.abs()
            if not worse.any():
                break
            t[worse] /= 2
        w = w - t * step
    return w


def _with_head(model: nn.Module, w: torch.Tensor, scale: float) -> nn.Module:
    model, d = clone(model), w.shape[1] - 1
    head = head_of(model)
    with torch.no_grad():
        head.weight.copy_((w[:, :d] / scale).to(head.weight))
        head.bias.copy_((w[:, d] / scale).to(head.bias))
    return model


@functools.lru_cache(maxsize=2)
def build(problem: UnlearningProblem, cfg: Config) -> CertifiedHead:
    """Fit the served head once per (problem, config); requests reuse it."""
    theta0 = problem.theta_pretrained
    head = head_of(theta0)
    if head.bias is None:
        raise ValueError("certified needs a head with a bias")
    phi = penultimate(theta0, problem.du_x).double()
    x = torch.cat([phi, torch.ones(len(phi), 1, dtype=phi.dtype, device=phi.device)], 1)
    scale = x.norm(dim=1).max().item()
    x = x / scale
    k = head.out_features
    y = torch.where(problem.du_y.to(x.device)[None, :] == torch.arange(k, device=x.device)[:, None], 1.0, -1.0).double()
    anchor = scale * torch.cat([head.weight.detach(), head.bias.detach()[:, None]], 1).double()
    gen = torch.Generator().manual_seed(problem.finetune_seed)
    noise = (cfg.sigma * torch.randn(k, x.shape[1], generator=gen, dtype=torch.float64)).to(x.device)
    w = _newton(x, y, cfg.l2 * len(x), anchor, noise, cfg.iterations)
    return CertifiedHead(x, y, anchor, noise, w, scale, _with_head(theta0, w, scale))


def serve(problem: UnlearningProblem, cfg: Config) -> nn.Module:
    """The model served before any deletion: θ₀ with the fitted convex head."""
    return clone(build(problem, cfg).model)


def _removal(problem: UnlearningProblem, forget: torch.Tensor, cfg: Config):
    """Guo's Newton removal of X: (fit, w⁻, H⁻¹Δ per class, mask of D \\ X)."""
    fit = build(problem, cfg)
    forget = forget.to(fit.x.device)
    keep = ~forget
    if not keep.any():
        raise ValueError("certified cannot remove all of D_u (no data left to take a Newton step on)")
    _, curv = _gradient(fit.w, fit.x, fit.y, 0.0, fit.anchor, fit.noise)
    m = fit.y[:, forget] * (fit.w @ fit.x[forget].T)
    delta = int(forget.sum()) * cfg.l2 * (fit.w - fit.anchor) + (-fit.y[:, forget] * torch.sigmoid(-m)) @ fit.x[forget]
    step = _solve(fit.x[keep], curv[:, keep], cfg.l2 * int(keep.sum()), delta)
    return fit, fit.w + step, step, keep


def unlearn(problem: UnlearningProblem, forget: torch.Tensor, cfg: Config) -> nn.Module:
    """The served model with its head moved by one Newton removal step per class."""
    if not forget.any():
        return serve(problem, cfg)
    fit, w, _, _ = _removal(problem, forget, cfg)
    return _with_head(fit.model, w, fit.scale)


def certificate(problem: UnlearningProblem, forget: torch.Tensor, cfg: Config) -> dict[str, float]:
    """The removal's gradient residual, Guo's data-dependent bound on it, and the budget σε/c it is kept against."""
    fit, w, step, keep = _removal(problem, forget, cfg)
    x = fit.x[keep]
    grad, _ = _gradient(w, x, fit.y[:, keep], cfg.l2 * len(x), fit.anchor, fit.noise)
    bound = (GAMMA * torch.linalg.matrix_norm(x, ord=2) * step.norm(dim=1) * (step @ x.T).norm(dim=1)).norm().item()
    budget = cfg.sigma * cfg.epsilon / math.sqrt(2 * math.log(1.5 / cfg.delta))
    covered = 0.0 if budget == 0 else math.inf if bound == 0 else float(math.floor(budget / bound))
    return {"gradient_residual": grad.norm().item(), "residual_bound": bound, "removal_budget": budget,
            "within_budget": float(budget > 0 and bound <= budget), "removals_in_budget": covered}
