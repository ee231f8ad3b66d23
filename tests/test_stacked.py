"""Stacked fine-tunes (`training.fit_many`, `ascend_many`, the server's `pairs`) do the arithmetic of the
one-by-one ones: the same batch order, loss and SGD step, so each model equals its one-by-one twin up to float
rounding (float32 weights within 1e-6 relative and 1e-7 absolute) and predicts the same."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_data
from test_membership import _attack, _setting, credit  # noqa: F401  (credit: a fixture)

from uia_pipe.attacks import membership as mi
from uia_pipe.config import OptimParams
from uia_pipe.evaluation.server import Server
from uia_pipe.models import clone, init_model
from uia_pipe.training import ascend_many, fit, fit_many
from uia_pipe.unlearning.config import ApproxConfig, ExactConfig
from uia_pipe.unlearning.methods import METHODS

LENET = {"model": "lenet", "config": {"width": 8, "activation": "relu"}, "input_shape": [1, 28, 28],
         "num_classes": 3, "mean": [0.5], "std": [0.3]}
CONVNET = {"model": "convnet", "config": {"width": 2}, "input_shape": [1, 28, 28], "num_classes": 3,
           "mean": [0.5], "std": [0.3]}  # batch norm, on its running statistics
RECIPE = OptimParams(epochs=2, lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=8)  # 3 batches an epoch


def assert_same(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7, msg=name)
    assert torch.equal(a(x).argmax(1), b(x).argmax(1))


def _records(count: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = tiny_data(count * n, seed=3)
    return x.view(count, n, 1, 28, 28), y.view(count, n)


@pytest.mark.parametrize("spec", [LENET, CONVNET], ids=["lenet", "convnet"])
def test_fit_many_equals_fit_one_by_one(spec):
    """Momentum, weight decay, several batches and epochs, a seed and a kept subset per model."""
    model = init_model(spec, seed=0)
    x, y = _records(3, 24)
    keep = torch.ones(3, 24, dtype=torch.bool)
    keep[0, :2], keep[1, 5:7], keep[2, [0, 23]] = False, False, False
    seeds = [1, 2, 1]
    many = fit_many(model, x, y, RECIPE, seeds, keep=keep)
    probe = tiny_data(50, seed=9)[0]
    for p in range(3):
        one = clone(model)
        fit(one, x[p], y[p], RECIPE, seeds[p], batchnorm_eval=True, keep=keep[p])
        assert_same(one, many[p], probe)


def test_fit_many_leaves_its_model_untouched_and_refuses_unequal_subsets():
    model = init_model(LENET, seed=0)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = _records(2, 16)
    keep = torch.ones(2, 16, dtype=torch.bool)
    keep[0, 0] = False
    with pytest.raises(ValueError, match="^fit_many: every copy must keep as many records$"):
        fit_many(model, x, y, RECIPE, [0, 0], keep=keep)
    fit_many(model, x, y, RECIPE, [0, 0])
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_ascend_many_is_one_ascent_step_per_model():
    models = [init_model(LENET, seed=s) for s in range(3)]
    x, y = _records(3, 2)
    stepped = ascend_many(models, x, y, 0.5)
    for m, xs, ys, s in zip(models, x, y, stepped):
        one = clone(m)
        grads = torch.autograd.grad(torch.nn.functional.cross_entropy(one(xs), ys), list(one.parameters()))
        with torch.no_grad():
            for p, g in zip(one.parameters(), grads):
                p.add_(g, alpha=0.5)
        assert_same(one, s, x[0])


@pytest.mark.parametrize("method, config", [("exact", ExactConfig()), ("approx", ApproxConfig(eta=1.0)),
                                            ("neggrad", METHODS["neggrad"][1]())])
def test_the_servers_stacked_pairs_equal_its_pairs_one_by_one(method, config):
    """θ and each θ_u made as a batch equal `pair`'s; exact and approx stacked, another method one by one after
    the stacked fine-tune."""
    theta0 = init_model(LENET, seed=0)
    fit(theta0, *tiny_data(128, seed=0), OptimParams(epochs=2, lr=0.05, momentum=0.9, batch_size=32), 0)
    server = Server(theta0, RECIPE, 1, method, config, n=24, k=2)
    x, y = _records(3, 24)
    forgets = torch.zeros(3, 2, 24, dtype=torch.bool)
    forgets[:, 0, :2] = True
    forgets[:, 1, [4, 9]] = True
    made = server.pairs(x, y, list(forgets))
    probe = tiny_data(50, seed=9)[0]
    for p in range(3):
        theta, thetas_u = made[p]
        assert len(thetas_u) == 2
        for f in range(2):
            one, one_u = server.pair(x[p], y[p], forgets[p, f])
            assert_same(one, theta, probe)
            assert_same(one_u, thetas_u[f], probe)


@pytest.mark.parametrize("method, config", [("exact", ExactConfig()), ("approx", ApproxConfig(eta=1.0))])
def test_membership_gives_the_same_numbers_with_pairs_made_stacked(credit, method, config):
    """Shadow, audit and U-LiRA pairs made 16 at a time: every AUC of the attack as made one by one (German
    Credit's tabular MLP; a float-rounding difference in a posterior moves no score's rank)."""
    setting, thetas_u = _setting(credit, method, config, requests=2)
    small = {"shadows": 30, "targets": 20, "lira_shadows": 2, "bootstrap": 50, "trees": 30}
    one = _attack(setting, thetas_u, mi.Config(**small), ds=credit[0])[2]
    stacked = _attack(setting, thetas_u, mi.Config(**small, stack=16), ds=credit[0])[2]
    aucs = [key for key in one if "auc" in key]
    assert len(aucs) > 10 and {key: stacked[key] for key in aucs} == pytest.approx({key: one[key] for key in aucs},
                                                                                     abs=1e-9)
