"""Certified removal (Guo et al. 2020): the served head is the objective's
minimiser, one Newton step approximates retraining within the certified
residual, and only the head ever changes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from uia_pipe.config import OptimParams
from uia_pipe.models import Classifier
from uia_pipe.unlearning import certified
from uia_pipe.unlearning.problem import UnlearningProblem, head_of

KEYS = {"gradient_residual", "residual_bound", "removal_budget", "within_budget", "removals_in_budget"}


def _objective(w, x, y, l2, anchor, noise):
    """Σ_c [Σ_i log(1 + exp(−y_ic w_cᵀx_i)) + λn/2 ‖w_c − a_c‖² + b_cᵀw_c], written out independently."""
    return (F.softplus(-y * (w @ x.T)).sum() + l2 * len(x) / 2 * ((w - anchor) ** 2).sum() + (noise * w).sum())


def _gradient(w, *args):
    w = w.detach().clone().requires_grad_(True)
    return torch.autograd.grad(_objective(w, *args), w)[0]


def _retrain(x, y, l2, anchor, noise):
    """The head refitted from zero on (x, y): damped Newton on the full autograd Hessian, to machine precision."""
    w, f = torch.zeros_like(anchor), lambda v: _objective(v.view_as(anchor), x, y, l2, anchor, noise)
    for _ in range(100):
        g = _gradient(w, x, y, l2, anchor, noise)
        if g.norm() < 1e-12:
            break
        step = torch.linalg.solve(torch.autograd.functional.hessian(f, w.flatten()), g.flatten()).view_as(w)
        t = 1.0
        while f(w - t * step) > f(w) and t > 1e-6:
            t /= 2
        w = w - t * step
    assert _gradient(w, x, y, l2, anchor, noise).norm() < 1e-10
    return w


def _head_w(model, scale):
    head = head_of(model)
    return scale * torch.cat([head.weight.detach(), head.bias.detach()[:, None]], 1).double()


@pytest.fixture(scope="module")
def logistic():
    """A pure logistic-regression θ₀ (its penultimate features are the inputs) on float64 data with a signal."""
    gen = torch.Generator().manual_seed(0)
    n, d, c = 40, 5, 3
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = (x @ torch.randn(d, c, generator=gen, dtype=torch.float64)
         + 0.5 * torch.randn(n, c, generator=gen, dtype=torch.float64)).argmax(1)
    torch.manual_seed(0)
    theta0 = Classifier(nn.Sequential(nn.Linear(d, c)), torch.zeros(d), torch.ones(d)).double()
    forget = torch.zeros(n, dtype=torch.bool)
    forget[:4] = True
    return UnlearningProblem(theta0, theta0, x, y, OptimParams(), 0), forget


def _design(problem, cfg):
    """x̃, ±1 labels, anchor and noise as the spec defines them, recomputed here."""
    x = torch.cat([problem.du_x, torch.ones(len(problem.du_x), 1, dtype=torch.float64)], 1)
    scale = x.norm(dim=1).max().item()
    k = head_of(problem.theta_pretrained).out_features
    y = torch.where(problem.du_y[None, :] == torch.arange(k)[:, None], 1.0, -1.0).double()
    noise = cfg.sigma * torch.randn(k, x.shape[1], generator=torch.Generator().manual_seed(problem.finetune_seed),
                                    dtype=torch.float64)
    return x / scale, y, _head_w(problem.theta_pretrained, scale), noise, scale


def test_the_served_head_minimises_the_perturbed_objective_and_is_what_the_model_computes(logistic):
    problem, _ = logistic
    cfg = certified.Config(l2=0.05, sigma=0.1)
    x, y, anchor, noise, scale = _design(problem, cfg)
    fit = certified.build(problem, cfg)
    assert fit.scale == pytest.approx(scale, rel=1e-15)
    assert torch.allclose(fit.anchor, anchor) and torch.equal(fit.noise, noise) and noise.abs().sum() > 0
    served = certified.serve(problem, cfg)
    w = _head_w(served, scale)
    assert _gradient(w, x, y, cfg.l2, anchor, noise).norm() < 1e-9
    assert _gradient(anchor, x, y, cfg.l2, anchor, noise).norm() > 1  # the fit did move
    assert torch.allclose(served(problem.du_x), x @ w.T, atol=1e-12)


def test_one_newton_removal_is_within_its_certified_residual_of_retraining(logistic):
    problem, forget = logistic
    cfg = certified.Config(l2=0.05, sigma=0.1)
    x, y, anchor, noise, scale = _design(problem, cfg)
    keep = ~forget
    retrained = _retrain(x[keep], y[:, keep], cfg.l2, anchor, noise)
    served = _head_w(certified.serve(problem, cfg), scale)
    removed = _head_w(certified.unlearn(problem, forget, cfg), scale)
    cert = certified.certificate(problem, forget, cfg)
    residual = _gradient(removed, x[keep], y[:, keep], cfg.l2, anchor, noise).norm().item()
    assert cert["gradient_residual"] == pytest.approx(residual, rel=1e-6)
    assert 0 < cert["gradient_residual"] <= cert["residual_bound"]
    # L(·; D \ X) is λ(n − k)-strongly convex: the residual bounds the distance to retraining.
    assert (removed - retrained).norm() <= residual / (cfg.l2 * int(keep.sum())) + 1e-10
    assert (removed - retrained).norm() < 0.1 * (served - retrained).norm()


def test_only_the_head_is_served_and_unlearned(tiny_problem):
    cfg = certified.Config()
    theta0 = tiny_problem.theta_pretrained.state_dict()
    head = [n for n, m in tiny_problem.theta_pretrained.named_modules() if m is head_of(tiny_problem.theta_pretrained)]
    head_keys = {f"{head[0]}.weight", f"{head[0]}.bias"}
    served = certified.serve(tiny_problem, cfg).state_dict()
    forget = torch.zeros(len(tiny_problem.du_y), dtype=torch.bool)
    unlearned = certified.unlearn(tiny_problem, forget | (torch.arange(len(forget)) < 3), cfg).state_dict()
    kept = certified.unlearn(tiny_problem, forget, cfg).state_dict()
    for name, value in theta0.items():
        assert torch.equal(kept[name], served[name]), name
        if name in head_keys:
            assert not torch.equal(served[name], value) and not torch.equal(unlearned[name], served[name]), name
        else:
            assert torch.equal(served[name], value) and torch.equal(unlearned[name], value), name
    assert certified.serve(tiny_problem, cfg) is not certified.serve(tiny_problem, cfg)


def test_the_certificate_reports_finite_numbers_and_no_budget_without_noise(tiny_problem):
    forget = torch.arange(len(tiny_problem.du_y)) < 2
    cert = certified.certificate(tiny_problem, forget, certified.Config())
    assert set(cert) == KEYS and all(math.isfinite(v) for v in cert.values())
    assert cert["removal_budget"] > 0 and 0 < cert["gradient_residual"] <= cert["residual_bound"]
    assert cert["within_budget"] == float(cert["residual_bound"] <= cert["removal_budget"])
    noiseless = certified.certificate(tiny_problem, forget, certified.Config(sigma=0.0))
    assert noiseless["removal_budget"] == 0 and noiseless["within_budget"] == 0
    assert noiseless["removals_in_budget"] == 0


def test_a_stronger_regulariser_shrinks_the_residual_bound(tiny_problem):
    forget = torch.arange(len(tiny_problem.du_y)) < 2
    weak = certified.certificate(tiny_problem, forget, certified.Config(l2=0.01))
    strong = certified.certificate(tiny_problem, forget, certified.Config(l2=1.0))
    assert strong["residual_bound"] < 0.1 * weak["residual_bound"]
    assert strong["removals_in_budget"] >= weak["removals_in_budget"]
    assert strong["removals_in_budget"] >= 1  # λ = 1 certifies this removal at the default σ, ε, δ
