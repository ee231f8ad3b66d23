"""Feature recovery's image priors and APRIL's closed-form start: a ViT's patches read from the patch and
position embeddings' update, the patch-order and batch-norm-statistics priors as terms of each run's
objective (alike one at a time, vmapped and by a finite difference), and both chosen in params through DVC."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import repo_copy, run_ok, small_params
from uia_pipe import metrics
from uia_pipe.attacks import feature_recovery as fr
from uia_pipe.attacks.feature_recovery.objective import _Objective, _Stacked
from uia_pipe.attacks.feature_recovery.priors import model_patch, patch_jumps, train_stats_prior
from uia_pipe.attacks.view import AttackerView
from uia_pipe.config import OptimParams
from uia_pipe.models import build_model
from uia_pipe.training import fit
from uia_pipe.unlearning.methods import METHODS
from uia_pipe.unlearning.problem import UnlearningProblem

VIT = {"patch": 4, "dim": 32, "depth": 1, "heads": 2, "mlp_ratio": 2}


def _images(n: int, seed: int, size: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth blobs on black in 3 classes by position (patch borders do not jump in them)."""
    gen = torch.Generator().manual_seed(seed)
    grid = torch.arange(size, dtype=torch.float32)
    y = torch.arange(n) % 3
    centre = torch.rand(n, 2, generator=gen) * size / 3 + (y[:, None] * size / 4 + size / 8)
    d2 = (grid[None, :, None] - centre[:, 0, None, None]) ** 2 + (grid[None, None, :] - centre[:, 1, None, None]) ** 2
    return torch.exp(-d2 / (size / 2)).unsqueeze(1), y


def _problem(model_name: str, config: dict) -> UnlearningProblem:
    torch.manual_seed(0)
    x, y = _images(24, 0)
    model = build_model(model_name, config, (1, 12, 12), 3, [0.2], [0.3]).eval()
    fit(model, x, y, OptimParams(epochs=5, lr=0.05, batch_size=8), seed=0)
    return UnlearningProblem(model, model, x[:16], y[:16], OptimParams(lr=1e-2, batch_size=16), 0)


@pytest.fixture(scope="module")
def vit_problem() -> UnlearningProblem:
    return _problem("vit", VIT)


@pytest.fixture(scope="module")
def lenet_problem() -> UnlearningProblem:
    return _problem("lenet", {"width": 4})


@pytest.fixture(scope="module")
def prior():
    x, y = _images(64, 1)
    return train_stats_prior(x, y, 1, 0, widths=(4, 8))


def _view(problem: UnlearningProblem, index: int) -> AttackerView:
    forget = torch.zeros(len(problem.du_x), dtype=torch.bool)
    forget[index] = True
    unlearn, settings = METHODS["approx"]
    theta_u = unlearn(problem, forget, settings(eta=1.0))
    return AttackerView(problem.theta_original, theta_u, None, "approx", (1, 12, 12), 3, len(problem.du_x), 1)


def test_a_vits_patches_come_from_the_position_embeddings_update(vit_problem, prior):
    """APRIL: ΔW = Σ_p Δpos_p u_pᵀ gives every patch of one sample; the attack starts there and keeps it, with
    the image priors on too (they act on the other restarts, which would pull it off the start)."""
    view = _view(vit_problem, 2)
    truth = vit_problem.du_x[2:3]
    x = fr.analytic_input(view.theta_original, fr.observed_update(view), (1, 12, 12))
    assert float(metrics.psnr(x.float().clamp(0, 1)[None], truth)) > 60
    result, stats = fr.recover(view, fr.Config(iterations=20, restarts=2, tv=0.0), seed=0)
    assert stats["analytic_init"] and float(metrics.psnr(result.reconstruction, truth)) > 40
    _, off = fr.recover(view, fr.Config(iterations=20, restarts=2, tv=0.0, analytic_init=False), seed=0)
    assert not off["analytic_init"]
    cfg = fr.Config(iterations=20, restarts=2, tv=0.0, patch_prior=1.0, image_prior=0.1)
    both, stats = fr.recover(view, cfg, seed=0, prior=prior)
    assert stats["priors"] == ["patch", "image"] and float(metrics.psnr(both.reconstruction, truth)) > 40
    kept, stats = fr.recover(view, fr.Config(restarts=2, analytic_refine=False), seed=0)
    assert stats["stopped"] == ["closed_form"] and stats["steps"] == 0
    assert torch.equal(kept.reconstruction, x.float().clamp(0, 1)[None])


def test_the_bias_update_sets_how_much_of_a_noisy_patch_solve_is_kept():
    """Noise in Δ (float32 rounding under exact unlearning) is amplified by the patch solve's small singular
    values (tokens hardly wider than the patch count, as the default ViT's 64 for 49); the patch conv's bias,
    whose update is Σ_p Δpos_p, measures it, and the truncated solve is better."""
    vit_problem = _problem("vit", {**VIT, "dim": 10})
    view = _view(vit_problem, 4)
    gen = torch.Generator().manual_seed(0)
    noisy = {n: d + 3e-3 * d.norm() / d.numel() ** 0.5 * torch.randn(d.shape, generator=gen, dtype=d.dtype)
             for n, d in fr.observed_update(view).items()}
    blind = {n: d for n, d in noisy.items() if n != "body.patch_embed.bias"}
    truth = vit_problem.du_x[4:5]

    def psnr(delta):
        return float(metrics.psnr(fr.analytic_input(view.theta_original, delta, (1, 12, 12)).float().clamp(0, 1)[None],
                                  truth))

    assert psnr(noisy) > psnr(blind) + 1


def test_the_patch_side_is_the_models_own_and_jumps_mark_scrambled_patches(vit_problem, lenet_problem):
    assert model_patch(vit_problem.theta_original) == 4 and model_patch(lenet_problem.theta_original) == 0
    x = vit_problem.du_x[:1]
    tiles = x.reshape(1, 1, 3, 4, 3, 4).permute(0, 1, 2, 4, 3, 5).reshape(1, 1, 9, 4, 4)
    scrambled = tiles[:, :, torch.randperm(9, generator=torch.Generator().manual_seed(0))]
    scrambled = scrambled.reshape(1, 1, 3, 3, 4, 4).permute(0, 1, 2, 4, 3, 5).reshape(1, 1, 12, 12)
    assert float(patch_jumps(scrambled, 4)) > 2 * float(patch_jumps(x, 4))


def test_priors_are_on_where_the_model_or_params_give_a_patch(vit_problem, lenet_problem, prior):
    cfg = fr.Config(iterations=5, restarts=1, patch_prior=1.0, image_prior=0.1)
    assert fr.recover(_view(vit_problem, 0), cfg, 0, prior=prior)[1]["priors"] == ["patch", "image"]
    assert fr.recover(_view(lenet_problem, 0), cfg, 0, prior=prior)[1]["priors"] == ["image"]
    own = cfg.model_copy(update={"patch_size": 4})
    assert fr.recover(_view(lenet_problem, 0), own, 0)[1]["priors"] == ["patch"]  # no CNN given: no image prior
    assert fr.recover(_view(lenet_problem, 0), fr.Config(iterations=5, restarts=1), 0)[1]["priors"] == []
    with pytest.raises(ValueError, match="patch_prior"):
        fr.Config(patch_prior=-1)


@pytest.mark.parametrize("name", ["vit", "lenet"])
def test_stacked_steps_with_priors_equal_each_objectives_own(vit_problem, lenet_problem, prior, name):
    """The priors are per-run terms: one vmapped call over two requests' runs gives each run's loss and ∇x
    as its objective's double backward and its finite difference do."""
    problem = {"vit": vit_problem, "lenet": lenet_problem}[name]
    objectives, fds, ys = [], [], []
    for index in (0, 3):
        delta = fr.observed_update(_view(problem, index))
        args = (problem.theta_original, delta, 1e-3, True)
        objectives.append(_Objective(*args, patch=(0.5, 4), prior=(0.05, prior)))
        if name == "lenet":  # the finite difference replays ReLU stacks only
            fds.append(_Objective(*args, finite_difference=True, patch=(0.5, 4), prior=(0.05, prior)))
        ys.append(problem.du_y[index : index + 1])
    xs = torch.rand(3, 1, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    runs, factors = [1, 0, 1], [1.0, 1.0, 0.0]
    losses, grads = _Stacked(objectives, ys).step(runs, xs, torch.zeros(3), torch.tensor(factors))
    plain = _Objective(problem.theta_original, fr.observed_update(_view(problem, 3)), 1e-3, True)
    assert float(losses[0]) > float(plain.step(xs[0], ys[1])[0]) + 1e-3  # the priors add to the loss
    for r, (p, f) in enumerate(zip(runs, factors)):
        loss, g = objectives[p].step(xs[r], ys[p], 0.0, f)
        assert torch.allclose(losses[r], loss.to(losses.dtype), atol=1e-5)
        assert torch.allclose(grads[r], g, atol=1e-5, rtol=1e-3)
        if fds:
            fd_loss, fd_g = fds[p].step(xs[r], ys[p], 0.0, f)
            assert float(fd_loss) == pytest.approx(float(loss), abs=1e-5)
            assert float((fd_g - g).norm() / g.norm()) < 0.05


def test_a_batch_with_priors_recovers_each_request_as_alone(vit_problem, prior):
    cfg = fr.Config(iterations=30, restarts=2, prune_after=10, patience=15, vmap="yes", analytic_init=False,
                    patch_prior=1.0, image_prior=0.05)
    requests = [(_view(vit_problem, i), None, 7 + i) for i in (0, 2, 5)]
    together = fr.recover_many(requests, cfg, prior=prior)
    for (view, _, seed), (result, stats) in zip(requests, together):
        alone, alone_stats = fr.recover(view, cfg, seed, prior=prior)
        assert stats["batched"] and stats["priors"] == ["patch", "image"]
        assert stats["stopped"] == alone_stats["stopped"] and result.iterations == alone.iterations
        assert torch.allclose(result.reconstruction, alone.reconstruction, atol=1e-4)
        assert result.loss == pytest.approx(alone.loss, abs=1e-5)


@pytest.mark.slow
def test_priors_are_chosen_in_params_through_dvc(tmp_path):
    """`dvc exp run -S attack.feature_recovery.patch_prior=... -S ...image_prior=...` on the bundled digits with a
    ViT: the attack stage runs with them, and its numbers differ from the same run without them."""
    raw = small_params()
    raw["download"]["dataset"] = "digits"
    raw["train"].update(model="vit", pool_size=300)
    raw["attack"]["feature_recovery"].update(analytic_init=False)
    raw["attack"]["membership"].update(shadows=8, targets=8, lira_shadows=0)  # only feature recovery is compared
    raw["attack"]["epsilon"]["models"] = 0
    raw["unlearn"]["compare"] = []
    path, env = repo_copy(tmp_path, params=raw)
    psnr = {}
    for patch, image in ((0, 0), (3, 0.3)):
        run_ok(["dvc", "exp", "run", "-S", f"attack.feature_recovery.patch_prior={patch}",
                "-S", f"attack.feature_recovery.image_prior={image}",
                "-S", "attack.feature_recovery.image_prior_epochs=1", "attack"], path, env)
        attack = json.loads((Path(path) / "metrics" / "attack.json").read_text())
        psnr[patch] = attack["feature_recovery"]["psnr_mean"]
    assert psnr[0] != psnr[3]
