"""Reconstruction metrics. Images are [B, C, H, W] in [0,1] and every score
uses data range 1 (never normalised tensors); scores are per sample.

Pure functions: tensors in, tensors or dicts out.
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from .encoding import decode_tabular


def _pair(recon: torch.Tensor, truth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    recon = recon.detach().float().cpu()
    truth = truth.detach().float().cpu()
    if recon.shape != truth.shape:
        raise ValueError(f"shapes differ: reconstruction {list(recon.shape)} vs truth {list(truth.shape)}")
    if recon.dim() < 2:
        raise ValueError("expected a batch [B, ...]")
    return recon, truth


def mse(recon: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Mean squared error per sample, [B]."""
    recon, truth = _pair(recon, truth)
    return ((recon - truth) ** 2).flatten(1).mean(1)


def psnr(recon: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """PSNR per sample in dB, data range 1: 10·log10(1/MSE); inf for identical inputs."""
    recon, truth = _pair(recon, truth)
    dims = tuple(range(1, recon.dim()))
    return peak_signal_noise_ratio(recon, truth, data_range=1.0, reduction="none", dim=dims)


def ssim(recon: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """SSIM per image (Gaussian window 11, σ 1.5, data range 1; the window
    shrinks to the largest odd size that fits images under 11 pixels), [B]."""
    recon, truth = _pair(recon, truth)
    if recon.dim() != 4:
        raise ValueError("ssim needs images [B, C, H, W]")
    side = min(11, *recon.shape[-2:])
    side -= 1 - side % 2
    return structural_similarity_index_measure(
        recon, truth, data_range=1.0, reduction="none", kernel_size=side, sigma=1.5 * side / 11
    )


def match(recon: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """The permutation `perm` such that recon[perm[i]] is paired with truth[i],
    minimising the total MSE (the k jointly recovered samples come in no
    particular order), by Hungarian assignment."""
    recon, truth = _pair(recon, truth)
    k = len(truth)
    cost = ((truth.flatten(1)[:, None, :] - recon.flatten(1)[None, :, :]) ** 2).mean(-1)  # [truth, recon]
    rows, cols = linear_sum_assignment(cost.double().numpy())
    perm = torch.empty(k, dtype=torch.long)
    perm[torch.as_tensor(rows)] = torch.as_tensor(cols, dtype=torch.long)
    return perm


def image_scores(recon: torch.Tensor, truth: torch.Tensor, matched: bool = True) -> dict[str, torch.Tensor]:
    """{"mse", "psnr", "ssim"} per truth sample, after `match` when `matched`."""
    if matched and len(recon) > 1:
        recon = recon[match(recon, truth)]
    return {"mse": mse(recon, truth), "psnr": psnr(recon, truth), "ssim": ssim(recon, truth)}


def mean_image(x: torch.Tensor) -> torch.Tensor:
    """The dataset-mean image [C, H, W] (the trivial baseline's guess)."""
    return x.detach().float().mean(0)


def class_mean_images(x: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-class mean images [num_classes, C, H, W] (the baseline that knows the label)."""
    x = x.detach().float()
    out = torch.zeros((num_classes, *x.shape[1:]))
    for c in range(num_classes):
        sel = x[y == c]
        out[c] = sel.mean(0) if len(sel) else x.mean(0)
    return out


def baseline_scores(truth: torch.Tensor, guess: torch.Tensor) -> dict[str, torch.Tensor]:
    """Scores of a fixed guess ([C, H, W], e.g. `mean_image`, or one per sample
    [B, C, H, W], e.g. class means indexed by label) against each truth."""
    guess = guess.detach().float()
    if guess.dim() == truth.dim() - 1:
        guess = guess.unsqueeze(0).expand_as(truth)
    return image_scores(guess, truth, matched=False)


def tabular_metrics(
    recon: torch.Tensor, truth: torch.Tensor, encoding: dict, train_x: torch.Tensor
) -> dict[str, float]:
    """Decode-level scores of reconstructed encoded rows [B, D] (after `match`
    when B > 1) against the truth, beside the baseline that guesses the
    training mean (numeric columns) and mode (categorical columns).

    numeric_mae: mean absolute error on the original scale, averaged over
    columns; numeric_mae_std: the same in training standard deviations
    (comparable across columns); categorical_accuracy: fraction of categorical
    fields decoded right (argmax of each one-hot block)."""
    recon, truth = _pair(recon, truth)
    if len(recon) > 1:
        recon = recon[match(recon, truth)]
    dec_r, dec_t = decode_tabular(recon, encoding), decode_tabular(truth, encoding)
    train = decode_tabular(train_x.detach().float().cpu(), encoding)
    stds = torch.tensor([c["std"] for c in encoding["columns"] if c["type"] == "numeric"], dtype=torch.float32)
    mean_guess = train["numeric"].mean(0, keepdim=True).expand_as(dec_t["numeric"])
    mode_guess = train["categorical"].mode(0).values.unsqueeze(0).expand_as(dec_t["categorical"])

    def numeric(guess: torch.Tensor) -> tuple[float, float]:
        err = (guess - dec_t["numeric"]).abs()
        return float(err.mean()), float((err / stds).mean())

    def categorical(guess: torch.Tensor) -> float:
        return float((guess == dec_t["categorical"]).float().mean())

    mae, mae_std = numeric(dec_r["numeric"])
    base_mae, base_mae_std = numeric(mean_guess)
    return {
        "numeric_mae": mae,
        "numeric_mae_std": mae_std,
        "categorical_accuracy": categorical(dec_r["categorical"]),
        "baseline_numeric_mae": base_mae,
        "baseline_numeric_mae_std": base_mae_std,
        "baseline_categorical_accuracy": categorical(mode_guess),
    }
