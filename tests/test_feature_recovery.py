"""Facts about feature recovery: the sign of Δ, closed-form and optimised
inversion, analytic labels, and the attacker's view."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from uia_pipe import metrics
from uia_pipe.attacks import feature_recovery as fr
from uia_pipe.attacks.view import AttackerView
from uia_pipe.config import OptimParams
from uia_pipe.models import build_model
from uia_pipe.unlearning import METHODS, UnlearningProblem
from uia_pipe.unlearning.problem import clone


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
                     "num_classes", "n", "k"}
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
    return fr._Objective(model, fr.observed_update(view), 0.0, True).value(x, y)


def test_objective_is_lowest_at_the_true_sample_approx(tiny_problem):
    view = _approx_view(tiny_problem, 4)
    x, y = tiny_problem.du_x[4:5], tiny_problem.du_y[4:5]
    at_truth = _objective_at(view, x, y)
    gen = torch.Generator().manual_seed(0)
    at_random = [_objective_at(view, torch.rand(x.shape, generator=gen), y) for _ in range(5)]
    assert at_truth < 1e-4 < min(at_random)
    # the opposite orientation would make the truth the worst point
    flipped = fr._Objective(view.theta_original, {k: -v for k, v in fr.observed_update(view).items()}, 0.0, True)
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
    at_truth32 = fr._Objective(tiny_problem.theta_pretrained, d32, 0.0, True).value(x, y)
    assert at_truth <= at_truth32 + 1e-6


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
    obj = fr._Objective(view.theta_original, fr.observed_update(view), 1e-3, True)
    xs = torch.rand(2, 1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    losses, grads = obj.batched_step(xs, y[:1])
    for r in range(2):
        loss, g = obj.step(xs[r], y[:1])
        assert torch.allclose(losses[r], loss.to(losses.dtype), atol=1e-5)
        assert torch.allclose(grads[r], g, atol=1e-5, rtol=1e-3)


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


def test_yaml_yes_and_no_select_batching():
    assert fr.Config(batch_restarts=True).batch_restarts == "yes"
    assert fr.Config(batch_restarts=False).batch_restarts == "no"
    with pytest.raises(ValueError):
        fr.Config(batch_restarts="sometimes")
