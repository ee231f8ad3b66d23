"""Fisher forgetting, SalUn and Amnesiac unlearning: what each is defined to do, on real computations."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from uia_pipe.config import OptimParams
from uia_pipe.models import clone
from uia_pipe.training import fit
from uia_pipe.unlearning import amnesiac, exact, fisher, salun
from uia_pipe.unlearning.problem import UnlearningProblem


def _forget(problem, *idx) -> torch.Tensor:
    mask = torch.zeros(len(problem.du_y), dtype=torch.bool)
    mask[list(idx)] = True
    return mask


def test_diagonal_fisher_matches_a_per_sample_per_class_loop(tiny_problem):
    model = tiny_problem.theta_original
    x = tiny_problem.du_x[:5]
    got = fisher.diagonal_fisher(model, x)
    want = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    for xi in x:
        logp = F.log_softmax(model(xi[None]), dim=1)[0]
        for c in range(len(logp)):
            grads = torch.autograd.grad(logp[c], list(model.parameters()), retain_graph=True)
            for (name, _), g in zip(model.named_parameters(), grads):
                want[name] += logp[c].exp().detach() * g.square() / len(x)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-9)


def test_fisher_noise_is_smaller_where_the_retained_data_pins_the_weights(tiny_problem):
    """On a bias (no averaging over inputs) the variance is 10 α / F wherever 1/F is under the cap, and
    the cap's α·max_variance·10 elsewhere; the unlearned model differs from θ by exactly that noise under
    the config's seed."""
    forget = _forget(tiny_problem, 0)
    cfg = fisher.Config(alpha=1e-6)
    model = tiny_problem.theta_original
    f = fisher.diagonal_fisher(model, tiny_problem.du_x[~forget])
    std = fisher.noise_std(model, f, cfg)
    bias = "body.0.bias"
    under_cap = 1 / (f[bias] + 1e-8) < cfg.max_variance
    assert under_cap.any()
    torch.testing.assert_close(std[bias][under_cap].square() * (f[bias][under_cap] + 1e-8),
                               torch.full((int(under_cap.sum()),), 10 * cfg.alpha))
    assert (std[bias][~under_cap].square() <= 10 * cfg.alpha * cfg.max_variance * (1 + 1e-5)).all()
    theta_u = fisher.unlearn(tiny_problem, forget, cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    for (name, p), q in zip(model.named_parameters(), theta_u.parameters()):
        torch.testing.assert_close(q - p, std[name] * torch.randn(p.shape, generator=gen))


def test_salun_moves_only_the_salient_weights(tiny_problem):
    forget = _forget(tiny_problem, 0, 1, 2)
    cfg = salun.Config(saliency=0.3, steps=3, lr=0.05)
    theta = tiny_problem.theta_original
    masks = salun.saliency_masks(clone(theta), tiny_problem.du_x[forget], tiny_problem.du_y[forget], cfg.saliency)
    total = sum(m.numel() for m in masks)
    assert abs(sum(float(m.sum()) for m in masks) / total - 0.3) < 0.02
    theta_u = salun.unlearn(tiny_problem, forget, cfg)
    moved = torch.cat([(a != b).flatten() for a, b in zip(theta_u.parameters(), theta.parameters())])
    salient = torch.cat([m.flatten() > 0 for m in masks])
    assert not moved[~salient].any()
    assert moved[salient].float().mean() > 0.9
    everything = salun.unlearn(tiny_problem, forget, salun.Config(saliency=1.0))
    assert all((a != b).any() for a, b in zip(everything.parameters(), theta.parameters()))


def _small_batch_problem(problem: UnlearningProblem) -> UnlearningProblem:
    """tiny_problem's θ₀ fine-tuned on its D_u in batches of 4 (one epoch, no momentum): six updates."""
    settings = OptimParams(epochs=1, lr=0.01, momentum=0.0, batch_size=4)
    theta = clone(problem.theta_pretrained)
    fit(theta, problem.du_x, problem.du_y, settings, 7, batchnorm_eval=True)
    return UnlearningProblem(problem.theta_pretrained, theta, problem.du_x, problem.du_y, settings, 7)


def test_amnesiac_records_one_update_per_batch_that_sum_to_the_fine_tune(tiny_problem):
    problem = _small_batch_problem(tiny_problem)
    steps = amnesiac.record(problem)
    assert [len(idx) for idx, _ in steps] == [4] * 6
    assert sorted(torch.cat([idx for idx, _ in steps]).tolist()) == list(range(24))
    for i, (p0, p) in enumerate(zip(problem.theta_pretrained.parameters(), problem.theta_original.parameters())):
        torch.testing.assert_close(p0 + sum(u[i] for _, u in steps), p)


def test_amnesiac_equals_retraining_when_the_last_batch_held_only_x(tiny_problem):
    """Subtracting the last batch's update undoes exactly the step retraining without X never takes."""
    problem = _small_batch_problem(tiny_problem)
    last, _ = amnesiac.record(problem)[-1]
    forget = _forget(problem, *last.tolist())
    theta_u = amnesiac.unlearn(problem, forget, amnesiac.Config())
    retrained = exact.unlearn(problem, forget, exact.Config())
    for a, b in zip(theta_u.parameters(), retrained.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # a sample of an earlier batch takes that batch's update out too: not retraining any more
    first, _ = amnesiac.record(problem)[0]
    early = _forget(problem, int(first[0]))
    far = amnesiac.unlearn(problem, early, amnesiac.Config())
    retrained = exact.unlearn(problem, early, exact.Config())
    gap = max(float((a - b).detach().abs().max()) for a, b in zip(far.parameters(), retrained.parameters()))
    assert gap > 1e-4


def test_amnesiac_refuses_a_record_that_does_not_reproduce_theta(tiny_problem):
    import pytest

    problem = _small_batch_problem(tiny_problem)
    wrong = dataclasses.replace(problem, finetune_seed=8)
    with pytest.raises(ValueError, match="amnesiac: replaying the fine-tune"):
        amnesiac.unlearn(wrong, _forget(problem, 0), amnesiac.Config())
