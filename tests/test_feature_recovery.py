"""Facts about feature recovery: the sign of Δ, closed-form and optimised
inversion, analytic labels, and the attacker's view."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import tiny_data
from uia_pipe import metrics
from uia_pipe.attacks import feature_recovery as fr
from uia_pipe.attacks.feature_recovery import closed_form
from uia_pipe.attacks.feature_recovery.closed_form import _relu_stack
from uia_pipe.attacks.feature_recovery.objective import _Objective, _Stacked
from uia_pipe.attacks.view import AttackerView
from uia_pipe.config import OptimParams
from uia_pipe.data import load_dataset
from uia_pipe.errors import UiaError
from uia_pipe.models import build_model, clone
from uia_pipe.params import parse_params
from uia_pipe.training import fit
from uia_pipe.unlearning.methods import METHODS
from uia_pipe.unlearning.problem import UnlearningProblem


def _pattern(gen: torch.Generator, size: int = 28) -> torch.Tensor:
    """A garment-like image: a bright block with a dark seam on black."""
    x = torch.zeros(1, size, size)
    r0, c0 = torch.randint(2, size // 3, (2,), generator=gen).tolist()
    h, w = torch.randint(size // 3, size // 2 + 2, (2,), generator=gen).tolist()
    x[:, r0 : r0 + h, c0 : c0 + w] = 0.5 + 0.4 * torch.rand(1, generator=gen)
    x[:, r0 + 2 : r0 + h - 2, c0 + w // 2 - 1 : c0 + w // 2 + 1] = 0.1
    return x


def _approx_view(problem: UnlearningProblem, index: int, eta: float = 1.0) -> AttackerView:
    forget = torch.zeros(len(problem.du_x), dtype=torch.bool)
    forget[index] = True
    unlearn, cfg_type = METHODS["approx"]
    theta_u = unlearn(problem, forget, cfg_type(eta=eta))
    return AttackerView(problem.theta_original, theta_u, None, "approx", tuple(problem.du_x.shape[1:]),
                        int(problem.theta_original.body[-1].out_features), len(problem.du_x), 1)


@pytest.fixture(scope="module")
def mlp_problem() -> UnlearningProblem:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    x = torch.stack([_pattern(gen, 12) for _ in range(8)])
    y = torch.arange(8) % 3
    model = build_model("mlp", {"hidden": [32]}, (1, 12, 12), 3, [0.2], [0.3]).eval()
    return UnlearningProblem(model, model, x, y, OptimParams(lr=1e-2, batch_size=8), 0)


# --------------------------------------------------------------------------- threat model


def test_attacker_view_has_no_forget_set():
    names = {f.name for f in dataclasses.fields(AttackerView)}
    assert names == {"theta_original", "theta_unlearned", "theta_pretrained", "method", "input_shape",
                     "num_classes", "n", "k", "finetune_batch_size", "visible", "step"}
    assert not any("forget" in n or "label" in n or n in ("x", "y", "du_x", "du_y") for n in names)


def test_config_rejects_unknown_keys_and_optimizers():
    with pytest.raises(ValueError):
        fr.Config(iters=5)
    with pytest.raises(ValueError):
        fr.Config(optimizer="sgd_magic")


# --------------------------------------------------------------------------- known answer


def test_linear_first_layer_gives_the_input_in_closed_form(mlp_problem):
    view = _approx_view(mlp_problem, 2)
    delta = fr.observed_update(view)
    x = fr.analytic_input(view.theta_original, delta, view.input_shape)
    assert x is not None
    assert torch.allclose(x.float(), mlp_problem.du_x[2], atol=1e-4)


def test_optimisation_recovers_a_linear_first_layer_input(mlp_problem):
    view = _approx_view(mlp_problem, 2)
    cfg = fr.Config(iterations=400, restarts=1, analytic_init=False, tv=0.0, lr=0.05, patience=100)
    result, stats = fr.recover(view, cfg, seed=0)
    assert not stats["analytic_init"]
    assert float(metrics.psnr(result.reconstruction, mlp_problem.du_x[2:3])) > 30


def test_analytic_init_is_used_and_kept(mlp_problem):
    view = _approx_view(mlp_problem, 5)
    result, stats = fr.recover(view, fr.Config(iterations=50, restarts=2, tv=0.0), seed=0)
    assert stats["analytic_init"]
    assert float(metrics.psnr(result.reconstruction, mlp_problem.du_x[5:6])) > 60
    assert result.reconstruction.shape == (1, 1, 12, 12)


# --------------------------------------------------------------------------- the sign of Δ


def _objective_at(view: AttackerView, x: torch.Tensor, y: torch.Tensor) -> float:
    model = view.theta_original if view.method == "approx" else view.theta_pretrained
    return _Objective(model, fr.observed_update(view), 0.0, True).value(x, y)


def test_objective_is_lowest_at_the_true_sample_approx(tiny_problem):
    view = _approx_view(tiny_problem, 4)
    x, y = tiny_problem.du_x[4:5], tiny_problem.du_y[4:5]
    at_truth = _objective_at(view, x, y)
    gen = torch.Generator().manual_seed(0)
    at_random = [_objective_at(view, torch.rand(x.shape, generator=gen), y) for _ in range(5)]
    assert at_truth < 1e-4 < min(at_random)
    # the opposite orientation would make the truth the worst point
    flipped = _Objective(view.theta_original, {k: -v for k, v in fr.observed_update(view).items()}, 0.0, True)
    assert flipped.value(x, y) > 1.99


def test_objective_is_lowest_at_the_true_sample_exact_full_batch(tiny_problem):
    n = len(tiny_problem.du_x)
    full_batch = OptimParams(epochs=1, lr=1e-2, batch_size=n)
    theta = clone(tiny_problem.theta_pretrained)
    from uia_pipe.training import fit

    fit(theta, tiny_problem.du_x, tiny_problem.du_y, full_batch, 1, batchnorm_eval=True)
    problem = UnlearningProblem(tiny_problem.theta_pretrained, theta, tiny_problem.du_x, tiny_problem.du_y,
                                full_batch, 1)
    forget = torch.zeros(n, dtype=torch.bool)
    forget[7] = True
    theta_u = METHODS["exact"][0](problem, forget, METHODS["exact"][1]())
    view = AttackerView(theta, theta_u, tiny_problem.theta_pretrained, "exact", (1, 28, 28), 3, n, 1)
    x, y = tiny_problem.du_x[7:8], tiny_problem.du_y[7:8]
    at_truth = _objective_at(view, x, y)
    gen = torch.Generator().manual_seed(1)
    at_random = [_objective_at(view, torch.rand(x.shape, generator=gen), y) for _ in range(5)]
    assert at_truth < 1e-3 < min(at_random)
    # float32 Δ is worse than float64 Δ (N·(θ−θ₀) amplifies rounding), never better
    d32 = fr.observed_update(view, torch.float32)
    at_truth32 = _Objective(tiny_problem.theta_pretrained, d32, 0.0, True).value(x, y)
    assert at_truth <= at_truth32 + 1e-6


# --------------------------------------------------------------------------- exact: one batch or several


def _flat(d: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([v.reshape(-1).double() for v in d.values()])


def _cos(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    fa, fb = _flat(a), _flat({n: b[n] for n in a})
    return float(fa @ fb / (fa.norm() * fb.norm()))


def _summed_gradient(model, x, y) -> dict[str, torch.Tensor]:
    names = [n for n, _ in model.named_parameters()]
    grads = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), list(model.parameters()))
    return {n: g.double() for n, g in zip(names, grads)}


def test_exact_estimators_are_bit_identical_within_one_batch(tiny_problem):
    """N ≤ B (the default N = 32, B = 128): a = N, b = N − k for both, so the
    default pipeline's Δ does not change whichever estimator is chosen."""
    n = len(tiny_problem.du_x)
    for batch in (n, 128):
        settings = OptimParams(epochs=1, lr=1e-3, batch_size=batch)
        theta = clone(tiny_problem.theta_pretrained)
        fit(theta, tiny_problem.du_x, tiny_problem.du_y, settings, 1, batchnorm_eval=True)
        problem = UnlearningProblem(tiny_problem.theta_pretrained, theta, tiny_problem.du_x, tiny_problem.du_y,
                                    settings, 1)
        for k in (1, 3):
            forget = torch.zeros(n, dtype=torch.bool)
            forget[:k] = True
            theta_u = METHODS["exact"][0](problem, forget, METHODS["exact"][1]())
            view = AttackerView(theta, theta_u, tiny_problem.theta_pretrained, "exact", (1, 28, 28), 3, n, k, batch)
            count = fr.observed_update(view, exact_update="count_weighted")
            by_batch = fr.observed_update(view, exact_update="batch_weighted")
            assert all(torch.equal(count[p], by_batch[p]) for p in count)


class _BatchRecorder(torch.nn.Module):
    """Wraps a model and keeps every input batch it is called on (to read
    which samples formed the retrain's last minibatch)."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner
        self.batches: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.detach().clone())
        return self.inner(x)


def test_several_minibatches_leave_the_last_batchs_mean_gradient_in_the_plain_difference():
    """N = 24 in minibatches of B = 8 (lr 1e-3): to first order the retrain
    without x moves θ by (lr/B)(g_x − Σ_L g/(B−1)), L its last (one short)
    minibatch, so batch_weighted's Δ = B(θ_u − θ) is that vector (cosine
    > 0.97 for every x), not lr·g_x. Measured: neither estimator is exact
    (mean cosine to g_x: count_weighted 0.48, batch_weighted 0.51), both
    still find the sample with the largest gradient (cosine > 0.9)."""
    n, batch, lr = 24, 8, 1e-3
    x, y = tiny_data(256 + n, seed=0)
    torch.manual_seed(0)
    theta0 = build_model("mlp", {"hidden": [32]}, (1, 28, 28), 3, [0.5], [0.3])
    fit(theta0, x[:256], y[:256], OptimParams(epochs=1, lr=0.05, momentum=0.9, batch_size=64), seed=0)
    settings = OptimParams(epochs=1, lr=lr, batch_size=batch)
    theta = clone(theta0)
    du_x, du_y = x[256:], y[256:]
    fit(theta, du_x, du_y, settings, 1, batchnorm_eval=True)
    cos = {name: [] for name in fr.EXACT_UPDATES}
    norms = []
    for i in range(n):
        forget = torch.zeros(n, dtype=torch.bool)
        forget[i] = True
        recorder = _BatchRecorder(clone(theta0))  # exact unlearning's own refit, batches observed
        fit(recorder, du_x, du_y, settings, 1, batchnorm_eval=True, keep=~forget)
        assert all(torch.equal(a, b) for a, b in zip(
            recorder.inner.parameters(), METHODS["exact"][0](
                UnlearningProblem(theta0, theta, du_x, du_y, settings, 1), forget, METHODS["exact"][1]()).parameters()))
        last = torch.tensor([int((du_x.flatten(1) == r.flatten()).all(1).nonzero()[0]) for r in recorder.batches[-1]])
        assert len(last) == batch - 1
        view = AttackerView(theta, recorder.inner, theta0, "exact", (1, 28, 28), 3, n, 1, batch)
        g_x = _summed_gradient(theta0, du_x[forget], du_y[forget])
        g_last = _summed_gradient(theta0, du_x[last], du_y[last])
        predicted = {p: lr * (g_x[p] - g_last[p] / (batch - 1)) for p in g_x}
        deltas = {name: fr.observed_update(view, exact_update=name) for name in fr.EXACT_UPDATES}
        assert _cos(deltas["batch_weighted"], predicted) > 0.97
        for name, delta in deltas.items():
            cos[name].append(_cos(delta, g_x))
        norms.append(float(_flat(g_x).norm()))
    for name, values in cos.items():
        assert sum(values) / n < 0.8, name
        assert values[max(range(n), key=norms.__getitem__)] > 0.9, name
    assert cos["count_weighted"] != cos["batch_weighted"]


def test_batch_weighted_needs_the_batch_size(tiny_problem):
    n = len(tiny_problem.du_x)
    forget = torch.zeros(n, dtype=torch.bool)
    forget[0] = True
    theta_u = METHODS["exact"][0](tiny_problem, forget, METHODS["exact"][1]())
    view = AttackerView(tiny_problem.theta_original, theta_u, tiny_problem.theta_pretrained, "exact", (1, 28, 28), 3,
                        n, 1)
    with pytest.raises(ValueError, match="batch size"):
        fr.observed_update(view, exact_update="batch_weighted")
    with pytest.raises(ValueError, match="unknown exact_update"):
        fr.observed_update(view, exact_update="median")


def test_exact_update_rejects_unknown_values_with_the_key_named():
    with pytest.raises(ValueError, match="unknown exact_update"):
        fr.Config(exact_update="plain")
    with pytest.raises(UiaError, match=r"^params\.yaml: attack\.feature_recovery\.exact_update: unknown exact_update"):
        parse_params({"attack": {"feature_recovery": {"exact_update": "plain"}}})
    assert parse_params({"attack": {"feature_recovery": {"exact_update": "batch_weighted"}}}) \
        .attack.feature_recovery.exact_update == "batch_weighted"


# --------------------------------------------------------------------------- labels


def test_analytic_labels_are_right_for_single_sample_approx(tiny_problem):
    for i in range(len(tiny_problem.du_x)):
        view = _approx_view(tiny_problem, i)
        labels = fr.analytic_labels(fr.observed_update(view), 3, 1)
        assert labels.tolist() == [int(tiny_problem.du_y[i])]


def test_analytic_labels_for_several_samples_allow_repeats():
    delta = {"head.bias": torch.tensor([-0.2, 0.3, -0.9, 0.8])}  # class 2 twice as strong as class 0
    assert fr.analytic_labels(delta, 4, 3).tolist() == [0, 2, 2]
    assert fr.analytic_labels(delta, 4, 2).tolist() == [0, 2]


def test_oracle_labels_must_be_passed(tiny_problem):
    view = _approx_view(tiny_problem, 0)
    with pytest.raises(ValueError):
        fr.recover(view, fr.Config(labels="oracle", iterations=1), seed=0)


# --------------------------------------------------------------------------- a tiny ConvNet


@pytest.fixture(scope="module")
def convnet_view():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(3)
    x = torch.stack([_pattern(gen) for _ in range(16)])
    y = torch.arange(16) % 3
    model = build_model("convnet", {"width": 4}, (1, 28, 28), 3, [0.2], [0.3]).eval()
    problem = UnlearningProblem(model, model, x, y, OptimParams(), 0)
    return _approx_view(problem, 0), x, y


def test_tiny_convnet_update_is_matched_and_labelled(convnet_view):
    """The optimisation drives the cosine gap from ~0.5 to near zero within a
    small budget, with the right analytic label, and reports its bookkeeping."""
    view, x, y = convnet_view
    seen = []
    cfg = fr.Config(iterations=80, restarts=2, prune_after=30, record_every=10)
    result, stats = fr.recover(view, cfg, seed=0, progress=lambda i, loss: seen.append((i, loss)))
    assert result.labels.tolist() == [int(y[0])] and result.label_source == "analytic"
    assert result.reconstruction.shape == (1, 1, 28, 28)
    assert 0 <= float(result.reconstruction.min()) and float(result.reconstruction.max()) <= 1
    assert result.loss < 0.05
    assert result.loss == min(result.restart_losses)
    assert seen and seen[-1][0] <= cfg.iterations
    assert any(s.startswith("pruned") for s in stats["stopped"])
    assert result.curve[0][0] == 1


@pytest.mark.xfail(reason="measured: a width-2..8 ConvNet's gradient leaves most pixels undetermined "
                   "(three 3x3 max-pools keep one path), so matching the update does not pin the image", strict=False)
def test_tiny_convnet_image_beats_the_mean_image(convnet_view):
    view, x, y = convnet_view
    result, _ = fr.recover(view, fr.Config(iterations=80, restarts=1), seed=0)
    ours = float(metrics.psnr(result.reconstruction, x[:1]))
    baseline = float(metrics.baseline_scores(x[:1], metrics.mean_image(x))["psnr"])
    assert ours > baseline + 3


def test_batched_and_sequential_steps_agree(convnet_view):
    view, x, y = convnet_view
    obj = _Objective(view.theta_original, fr.observed_update(view), 1e-3, True)
    xs = torch.rand(2, 1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    losses, grads = _Stacked([obj], [y[:1]]).step([0, 0], xs, torch.zeros(2))
    for r in range(2):
        loss, g = obj.step(xs[r], y[:1])
        assert torch.allclose(losses[r], loss.to(losses.dtype), atol=1e-5)
        assert torch.allclose(grads[r], g, atol=1e-5, rtol=1e-3)


# --------------------------------------------------------------------------- layered guide (R-GAP)


@pytest.fixture(scope="module")
def lenet_problem() -> UnlearningProblem:
    """DLG's LeNet (width 8, ReLU) fitted to 16 garment-like patterns of 4 classes."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    x = torch.stack([_pattern(gen) for _ in range(16)])
    y = torch.arange(16) % 4
    model = build_model("lenet", {"width": 8}, (1, 28, 28), 4, [0.2], [0.3]).eval()
    fit(model, x, y, OptimParams(epochs=5, lr=0.05, batch_size=8), seed=0)
    return UnlearningProblem(model, model, x, y, OptimParams(lr=1e-2, batch_size=16), 0)


def _layer_inputs(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    hooks = [m.register_forward_pre_hook(lambda _, a: seen.append(a[0].detach().reshape(-1).double()))
             for _, m in _relu_stack(model)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


def test_layered_features_read_hidden_activations_from_the_update(lenet_problem):
    """The head's input is exact in closed form; one least-squares layer down is exact
    to solver precision; the scale of Δ does not matter."""
    view = _approx_view(lenet_problem, 0)
    truth = _layer_inputs(view.theta_original, lenet_problem.du_x[:1])
    delta = fr.observed_update(view)
    for depth, bound in ((1, 1e-6), (2, 1e-3)):
        name, a = fr.layered_features(view.theta_original, delta, (1, 28, 28), depth)
        expected = truth[len(truth) - depth]
        assert name == _relu_stack(view.theta_original)[len(truth) - depth][0]
        assert float((a - expected).norm() / expected.norm()) < bound
        _, scaled = fr.layered_features(view.theta_original, {k: 7.0 * d for k, d in delta.items()}, (1, 28, 28), depth)
        assert float((scaled - a).norm() / a.norm()) < 1e-4
    # deeper than the model: the recursion stops at the (normalised) image
    name, u = fr.layered_features(view.theta_original, delta, (1, 28, 28), 99)
    assert name == "body.0" and u.shape == (28 * 28,)


def test_layered_features_separate_jointly_removed_samples(lenet_problem):
    """Two removed samples of different classes: the head's update is fitted as two outer products, and one
    least-squares layer down (a batch of two) is exact to solver precision; in the samples' label order."""
    forget = torch.zeros(len(lenet_problem.du_x), dtype=torch.bool)
    forget[[0, 1]] = True
    theta_u = METHODS["approx"][0](lenet_problem, forget, METHODS["approx"][1](eta=1.0))
    model = lenet_problem.theta_original
    view = AttackerView(model, theta_u, None, "approx", (1, 28, 28), 4, len(forget), 2)
    delta = fr.observed_update(view)
    labels = lenet_problem.du_y[forget]
    assert labels.tolist() == [0, 1]
    truth = _layer_inputs(model, lenet_problem.du_x[forget])
    for depth, bound in ((1, 1e-4), (2, 1e-3)):
        name, a = fr.layered_features(model, delta, (1, 28, 28), depth, labels)
        expected = truth[len(truth) - depth].reshape(2, -1)
        a = a.reshape(2, -1)
        for j in range(2):
            assert float((a[j] - expected[j]).norm() / expected[j].norm()) < bound, (depth, j)
        swapped, _ = fr.layered_features(model, delta, (1, 28, 28), depth, labels.flip(0))[1].reshape(2, -1)
        assert float((swapped - expected[1]).norm() / expected[1].norm()) < bound
    # as many samples as classes: the factors are not identifiable, so no guide
    assert fr.layered_features(model, delta, (1, 28, 28), 2, torch.arange(4)) is None
    config = fr.Config(iterations=5, labels="oracle", k_strategy="joint")
    assert fr.recover(view, config, seed=0, labels=labels)[1]["guide_layer"] is None  # off by default
    result, stats = fr.recover(view, config.model_copy(update={"joint_guide_depth": 2}), seed=0, labels=labels)
    assert stats["guide_layer"] == _relu_stack(model)[-2][0]  # the last conv's input


def test_a_head_fit_that_runs_off_gives_no_guide(lenet_problem, monkeypatch):
    """Seen under a defence with wrongly inferred, repeated labels: L-BFGS left the finite range. The attack
    then runs unguided and still returns a finite reconstruction."""
    forget = torch.zeros(len(lenet_problem.du_x), dtype=torch.bool)
    forget[[0, 4]] = True
    theta_u = METHODS["approx"][0](lenet_problem, forget, METHODS["approx"][1](eta=1.0))
    model = lenet_problem.theta_original
    view = AttackerView(model, theta_u, None, "approx", (1, 28, 28), 4, len(forget), 2)
    monkeypatch.setattr(closed_form, "_head_factors", lambda weight, bias, dw, db, labels, iters: (
        torch.full((len(labels), dw.shape[1]), float("nan"), dtype=dw.dtype), torch.zeros(len(labels), dw.shape[0])))
    assert fr.layered_features(model, fr.observed_update(view), (1, 28, 28), 2, torch.tensor([0, 0])) is None
    config = fr.Config(iterations=5, labels="oracle", joint_guide_depth=2, k_strategy="joint")
    result, stats = fr.recover(view, config, seed=0, labels=torch.tensor([0, 0]))
    assert stats["guide_layer"] is None and torch.isfinite(result.reconstruction).all()


def test_layered_features_need_a_relu_conv_linear_stack(convnet_view):
    view, _, _ = convnet_view  # batch norm and max-pools
    assert fr.layered_features(view.theta_original, fr.observed_update(view), (1, 28, 28), 1) is None


def test_guided_restart_beats_plain_restarts_on_a_lenet(lenet_problem):
    """Four removed patterns, 100 steps: the guide (â = the second conv's input, solved from the head
    down) lifts PSNR well above plain gradient matching, and the winner is chosen by the plain objective."""
    plain, guided = [], []
    for index in range(4):
        view = _approx_view(lenet_problem, index)
        truth = lenet_problem.du_x[index : index + 1]
        for guide, out in ((0.0, plain), (3.0, guided)):
            result, stats = fr.recover(view, fr.Config(iterations=100, guide=guide), seed=0)
            out.append(float(metrics.psnr(result.reconstruction, truth).mean()))
            assert stats["guide_layer"] == (_relu_stack(view.theta_original)[1][0] if guide else None)
            assert result.loss == min(result.restart_losses)
            objective = _Objective(view.theta_original, fr.observed_update(view), 0.01, True)
            assert result.loss == pytest.approx(objective.value(result.reconstruction, result.labels), abs=1e-6)
        if guide:
            assert not any(s.startswith("pruned") for s in stats["stopped"])  # one guided, one plain: both kept
    assert sum(guided) / 4 > sum(plain) / 4 + 5, (plain, guided)


def test_guided_batched_and_sequential_steps_agree(lenet_problem):
    view = _approx_view(lenet_problem, 0)
    delta = fr.observed_update(view)
    guide = fr.layered_features(view.theta_original, delta, (1, 28, 28), 2)
    obj = _Objective(view.theta_original, delta, 1e-3, True, guide)
    xs = torch.rand(2, 1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    y = lenet_problem.du_y[:1]
    losses, grads = _Stacked([obj], [y]).step([0, 0], xs, torch.tensor([3.0, 0.0]))
    for r, weight in enumerate((3.0, 0.0)):
        loss, g = obj.step(xs[r], y, weight)
        assert torch.allclose(losses[r], loss.to(losses.dtype), atol=1e-5)
        assert torch.allclose(grads[r], g, atol=1e-5, rtol=1e-3)
    assert losses[0] > losses[1] - 1e-3 and obj.step(xs[0], y, 3.0)[0] > obj.step(xs[0], y, 0.0)[0]


def test_stacked_steps_keep_each_problems_own_update_labels_and_guide(lenet_problem):
    """One vmapped call over runs of different requests: each run's loss and ∇x are its own objective's."""
    objectives, ys = [], []
    for index in (0, 3):
        view = _approx_view(lenet_problem, index)
        delta = fr.observed_update(view)
        guide = fr.layered_features(view.theta_original, delta, (1, 28, 28), 2) if index == 0 else None
        objectives.append(_Objective(view.theta_original, delta, 1e-3, True, guide))
        ys.append(lenet_problem.du_y[index : index + 1])
    stacked = _Stacked(objectives, ys)
    xs = torch.rand(3, 1, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    runs, weights = [1, 0, 1], torch.tensor([0.0, 2.0, 0.0])
    losses, grads = stacked.step(runs, xs, weights)
    for r, (p, w) in enumerate(zip(runs, weights.tolist())):
        loss, g = objectives[p].step(xs[r], ys[p], w)
        assert torch.allclose(losses[r], loss.to(losses.dtype), atol=1e-5)
        assert torch.allclose(grads[r], g, atol=1e-5, rtol=1e-3)


@pytest.mark.parametrize("vmap", ["no", "yes"])
def test_a_batch_of_requests_recovers_each_as_alone(lenet_problem, vmap):
    """recover_many = recover of each request: bit for bit where steps run one by one, to float rounding
    (the same stopping points) where they are vmapped; one batch, each request its own restarts."""
    cfg = fr.Config(iterations=40, restarts=2, prune_after=10, patience=15, vmap=vmap, guide_depth=2)
    requests = [(_approx_view(lenet_problem, i), None, 7 + i) for i in (0, 2, 5)]
    together = fr.recover_many(requests, cfg)
    for (view, _, seed), (result, stats) in zip(requests, together):
        alone, alone_stats = fr.recover(view, cfg, seed)
        assert stats["stopped"] == alone_stats["stopped"] and result.iterations == alone.iterations
        if vmap == "no":
            assert torch.equal(result.reconstruction, alone.reconstruction) and result.loss == alone.loss
        else:
            assert stats["batched"]
            assert torch.allclose(result.reconstruction, alone.reconstruction, atol=1e-4)
            assert result.loss == pytest.approx(alone.loss, abs=1e-5)
    assert len({float(r.reconstruction.sum()) for r, _ in together}) == 3


# --------------------------------------------------------------------------- finite-difference steps


def _steps_agree(model, delta, x, y, guide=None, weight=0.0) -> float:
    """The finite-difference step's loss equals the double backward's; returns the gradients' relative error."""
    exact = _Objective(model, delta, 1e-3, True, guide)
    fd = _Objective(model, delta, 1e-3, True, guide, finite_difference=True)
    (l1, g1), (l2, g2) = exact.step(x, y, weight), fd.step(x, y, weight)
    assert float(l2) == pytest.approx(float(l1), abs=1e-5)
    return float((g2 - g1).norm() / g1.norm())


def test_finite_difference_step_matches_the_double_backward(convnet_view, lenet_problem):
    """Under the recorded ReLU / max-pool pattern the one-sided difference in θ is the mixed derivative
    to ~1e-3: batch-normed max-pooled ConvNet, a guided LeNet step, two dummies at once, a sigmoid LeNet."""
    gen = torch.Generator().manual_seed(0)
    view, _, y = convnet_view
    assert _steps_agree(view.theta_original, fr.observed_update(view), torch.rand(1, 1, 28, 28, generator=gen),
                        y[:1]) < 1e-2
    view = _approx_view(lenet_problem, 0)
    delta = fr.observed_update(view)
    guide = fr.layered_features(view.theta_original, delta, (1, 28, 28), 2)
    x = torch.rand(2, 1, 28, 28, generator=gen)
    assert _steps_agree(view.theta_original, delta, x[:1], lenet_problem.du_y[:1], guide, 3.0) < 1e-2
    assert _steps_agree(view.theta_original, delta, x, lenet_problem.du_y[:2]) < 1e-2
    torch.manual_seed(1)
    sigmoid = build_model("lenet", {"width": 8, "activation": "sigmoid"}, (1, 28, 28), 4, [0.2], [0.3]).eval()
    noise = {n: torch.randn_like(p) for n, p in sigmoid.named_parameters()}
    assert _steps_agree(sigmoid, noise, x[:1], lenet_problem.du_y[:1]) < 1e-2


def test_finite_difference_steps_recover_as_well_as_the_double_backward(lenet_problem):
    psnr = {"double_backward": [], "finite_difference": []}
    for index in range(4):
        view = _approx_view(lenet_problem, index)
        truth = lenet_problem.du_x[index : index + 1]
        for mode, out in psnr.items():
            result, _ = fr.recover(view, fr.Config(iterations=100, second_order=mode), seed=0)
            out.append(float(metrics.psnr(result.reconstruction, truth).mean()))
    baseline = float(metrics.baseline_scores(lenet_problem.du_x[:4], metrics.mean_image(lenet_problem.du_x))["psnr"]
                     .mean())
    fd, db = (sum(v) / 4 for v in (psnr["finite_difference"], psnr["double_backward"]))
    assert fd > db - 1.5 and fd > baseline + 4, (psnr, baseline)


def test_finite_difference_refuses_a_pattern_it_cannot_replay():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LeakyReLU(), torch.nn.Linear(3, 2))
    delta = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    with pytest.raises(ValueError, match="second_order=finite_difference cannot replay LeakyReLU"):
        _Objective(model, delta, 0.0, False, finite_difference=True)


# --------------------------------------------------------------------------- tabular


def test_tabular_rows_are_recovered_unboxed():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    d = 10
    x = torch.randn(8, d, generator=gen) * 2  # standardised-looking, outside [0, 1]
    y = torch.arange(8) % 2
    model = build_model("tabular_mlp", {"hidden": [16, 8]}, (d,), 2, [0.0] * d, [1.0] * d).eval()
    problem = UnlearningProblem(model, model, x, y, OptimParams(), 0)
    view = _approx_view(problem, 3)
    result, stats = fr.recover(view, fr.Config(iterations=20, restarts=1), seed=0)
    assert stats["analytic_init"]
    assert result.reconstruction.shape == (1, d)
    assert torch.allclose(result.reconstruction, x[3:4], atol=1e-3)


def test_backfitting_separates_jointly_removed_german_credit_rows():
    """k = 2 and 3 real rows removed at once from an MLP (a linear first layer: the single-sample attack is
    closed form): peeling each row off what the others' estimates leave of Δ decodes every categorical field
    the joint attack gets wrong, and the plain objective, which chooses, agrees."""
    ds = load_dataset("german_credit", Path("unused"))
    d = ds.x_train.shape[1]
    torch.manual_seed(0)
    model = build_model("tabular_mlp", {"hidden": [64, 32]}, (d,), 2, ds.card["mean"], ds.card["std"]).eval()
    fit(model, ds.x_train[:600], ds.y_train[:600], OptimParams(epochs=3, lr=0.05, batch_size=64), seed=0)
    du_x, du_y = ds.x_train[600:632], ds.y_train[600:632]
    problem = UnlearningProblem(model, model, du_x, du_y, OptimParams(), 0)
    scores: dict[str, list[dict]] = {"joint": [], "backfit": []}
    for removed in ([0, 1], [2, 3], [6, 7, 8]):
        forget = torch.zeros(len(du_x), dtype=torch.bool)
        forget[removed] = True
        theta_u = METHODS["approx"][0](problem, forget, METHODS["approx"][1](eta=1.0))
        view = AttackerView(model, theta_u, None, "approx", (d,), 2, len(du_x), len(removed))
        for strategy, out in scores.items():
            cfg = fr.Config(iterations=60, restarts=1, prune_after=0, labels="oracle", k_strategy=strategy)
            result, stats = fr.recover(view, cfg, seed=0, labels=du_y[forget])
            out.append(metrics.tabular_metrics(result.reconstruction, du_x[forget], ds.card["encoding"],
                                               ds.x_train[:600]))
            assert result.loss == min(result.restart_losses)
            if strategy == "backfit":
                assert stats["backfit_chosen"] and len(result.restart_losses) == 2
                assert len(stats["backfit_weights"]) == len(removed)
                objective = _Objective(model, fr.observed_update(view), cfg.tv, False)
                assert result.loss == pytest.approx(objective.value(result.reconstruction, result.labels), abs=1e-6)

    def mean(strategy: str, key: str) -> float:
        return sum(s[key] for s in scores[strategy]) / len(scores[strategy])

    assert mean("backfit", "categorical_accuracy") > 0.95 > mean("joint", "categorical_accuracy") + 0.1, scores
    assert mean("backfit", "numeric_mae_std") < 0.5 * mean("joint", "numeric_mae_std"), scores
    assert mean("backfit", "numeric_mae_std") < 0.5 * mean("backfit", "baseline_numeric_mae_std"), scores


def test_yaml_yes_and_no_select_batching():
    assert fr.Config(vmap=True).vmap == "yes"
    assert fr.Config(vmap=False).vmap == "no"
    with pytest.raises(ValueError):
        fr.Config(vmap="sometimes")


def test_campaign_grants_the_finetune_batch_size_to_the_exact_attack(tiny_problem):
    """The evaluator's Setting carries B (models/train/finetune.json) into each
    AttackerView, so batch_weighted runs in the pipeline; without B it cannot."""
    from uia_pipe.attacks.families import feature_recovery as family
    from uia_pipe.attacks.protocol import Context
    from uia_pipe.evaluation import grants
    from uia_pipe.evaluation.setting import Run, Setting

    x, y = tiny_problem.du_x, tiny_problem.du_y
    setting = Setting(
        theta_pretrained=tiny_problem.theta_pretrained, theta_original=tiny_problem.theta_original, method="exact",
        card={"kind": "image", "input_shape": [1, 28, 28], "num_classes": 3}, du_x=x, du_y=y,
        requests=[{"index": 0, "forget": [5]}], mean_guess=metrics.mean_image(x),
        class_guess=metrics.class_mean_images(x, y, 3), train_x=x,
        finetune_batch_size=tiny_problem.finetune.batch_size,
    )
    forget = torch.zeros(len(y), dtype=torch.bool)
    forget[5] = True
    thetas_u = [METHODS["exact"][0](tiny_problem, forget, METHODS["exact"][1]())]
    cfg = fr.Config(iterations=2, restarts=1, exact_update="batch_weighted")
    ctx = Context(seed=0, public_x=x)

    def attacked(setting):
        return family.run(grants.grant(Run(setting, thetas_u, x, y), "feature_recovery", cfg, ctx), cfg, ctx)

    recoveries = attacked(setting)
    assert len(family.score(setting, recoveries)) == 1
    assert recoveries[0].result.reconstruction.shape == (1, 1, 28, 28)
    with pytest.raises(ValueError, match="batch size"):
        attacked(dataclasses.replace(setting, finetune_batch_size=None))


def test_analytic_labels_without_a_negative_class_fall_back_to_the_lowest():
    """A zero or all-positive bias update (seen under an access level that withholds most of Δ) gives k
    labels of the lowest class, not an error."""
    for bias in (torch.zeros(3), torch.tensor([0.3, 0.1, 0.2])):
        delta = {"head.weight": torch.zeros(3, 4), "head.bias": bias}
        labels = fr.analytic_labels(delta, 3, 4)
        assert labels.tolist() == [int(bias.argmin())] * 4
