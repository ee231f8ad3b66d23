"""Facts about the reconstruction metrics (data range 1, per sample)."""

from __future__ import annotations

import math

import pytest
import torch

from uia_pipe import metrics


def test_psnr_of_identical_images_is_infinite_and_mse_zero():
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert torch.isinf(metrics.psnr(x, x)).all() or (metrics.psnr(x, x) > 100).all()
    assert torch.equal(metrics.mse(x, x), torch.zeros(3))
    assert torch.allclose(metrics.ssim(x, x), torch.ones(3), atol=1e-5)


def test_known_values():
    truth = torch.zeros(2, 1, 8, 8)
    recon = torch.full((2, 1, 8, 8), 0.1)  # MSE 0.01 -> 20 dB
    recon[1] = math.sqrt(0.001)  # MSE 0.001 -> 30 dB
    assert torch.allclose(metrics.mse(recon, truth), torch.tensor([0.01, 0.001]), rtol=1e-5)
    assert torch.allclose(metrics.psnr(recon, truth), torch.tensor([20.0, 30.0]), atol=1e-3)


def test_psnr_is_per_sample_not_pooled():
    truth = torch.zeros(2, 1, 4, 4)
    recon = torch.stack([torch.full((1, 4, 4), 0.1), torch.full((1, 4, 4), 0.01)])
    assert torch.allclose(metrics.psnr(recon, truth), torch.tensor([20.0, 40.0]), atol=1e-3)


def test_ssim_drops_with_noise():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(2, 1, 28, 28, generator=gen)
    noisy = (x + 0.3 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    s = metrics.ssim(noisy, x)
    assert s.shape == (2,) and (s < 0.9).all()


def test_match_undoes_a_permutation():
    gen = torch.Generator().manual_seed(2)
    truth = torch.rand(4, 1, 8, 8, generator=gen)
    order = torch.tensor([2, 0, 3, 1])
    recon = truth[order] + 0.01 * torch.randn(4, 1, 8, 8, generator=gen)
    perm = metrics.match(recon, truth)
    assert torch.equal(recon[perm].sub(truth).abs().max() < 0.1, torch.tensor(True))
    assert (metrics.image_scores(recon, truth)["psnr"] > 35).all()


def test_match_minimises_the_total_error():
    import itertools

    gen = torch.Generator().manual_seed(3)
    truth, recon = torch.rand(6, 1, 4, 4, generator=gen), torch.rand(6, 1, 4, 4, generator=gen)
    cost = metrics.mse(recon[:, None].expand(6, 6, 1, 4, 4).reshape(36, 1, 4, 4),
                       truth[None].expand(6, 6, 1, 4, 4).reshape(36, 1, 4, 4)).view(6, 6)  # [recon, truth]
    best = min(float(cost[list(p), range(6)].sum()) for p in itertools.permutations(range(6)))
    perm = metrics.match(recon, truth)
    assert float(cost[perm, range(6)].sum()) == pytest.approx(best)


def test_mean_image_baseline():
    x = torch.zeros(4, 1, 4, 4)
    x[:2] = 1.0
    base = metrics.baseline_scores(x, metrics.mean_image(x))  # guess 0.5 everywhere: MSE 0.25
    assert torch.allclose(base["mse"], torch.full((4,), 0.25))
    cm = metrics.class_mean_images(x, torch.tensor([0, 0, 1, 1]), 2)
    assert torch.isinf(metrics.psnr(cm[torch.tensor([0, 0, 1, 1])], x)).all()


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        metrics.psnr(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))


def test_tabular_metrics_against_mean_mode_baseline():
    encoding = {
        "dim": 4,
        "columns": [
            {"name": "age", "type": "numeric", "index": 0, "mean": 30.0, "std": 10.0},
            {"name": "housing", "type": "categorical", "start": 1, "categories": ["a", "b", "c"]},
        ],
    }
    train = torch.tensor([[0.0, 1, 0, 0], [1.0, 1, 0, 0], [-1.0, 0, 1, 0]])
    truth = torch.tensor([[2.0, 0, 0, 1]])  # age 50, category c
    exact = metrics.tabular_metrics(truth, truth, encoding, train)
    assert exact["numeric_mae"] == 0 and exact["categorical_accuracy"] == 1
    assert exact["baseline_numeric_mae"] == pytest.approx(20.0)  # train mean age 30
    assert exact["baseline_numeric_mae_std"] == pytest.approx(2.0)
    assert exact["baseline_categorical_accuracy"] == 0  # mode is "a"
    soft = metrics.tabular_metrics(torch.tensor([[1.5, 0.2, 0.1, 0.6]]), truth, encoding, train)
    assert soft["numeric_mae"] == pytest.approx(5.0) and soft["categorical_accuracy"] == 1
