"""Training loops: pure functions of a model, tensors, a config and a seed."""

from __future__ import annotations

from typing import Callable, Protocol

import torch
import torch.nn.functional as F
from torch import nn


class OptimSettings(Protocol):
    epochs: int
    lr: float
    momentum: float
    weight_decay: float
    batch_size: int


EpochCallback = Callable[[dict], None]


def augment_batch(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop with zero padding plus horizontal flip, drawn per sample
    from `generator` (the reference's CIFAR augmentation)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).tolist()
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).tolist()
    flip = torch.rand(n, generator=generator) < 0.5
    out = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
    out[flip] = out[flip].flip(-1)
    return out


def fit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: OptimSettings,
    seed: int,
    *,
    augment: bool = False,
    batchnorm_eval: bool = False,
    keep: torch.Tensor | None = None,
    on_epoch: EpochCallback | None = None,
    on_batch: Callable[[], None] | None = None,
) -> list[dict]:
    """Minibatch SGD on (x, y) in place; returns per-epoch {epoch, loss, accuracy}
    on the batches seen.

    The batch order is a function of `seed` and len(x) only. `keep` (a bool
    mask over x) drops samples from that same order: this is how exact
    unlearning redoes a run without the forget set, and with `keep` all true it
    reproduces the run bit for bit. `batchnorm_eval` keeps batch-norm layers on
    their running statistics (the paper's fine-tuning).
    """
    opt = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    history = []
    for epoch in range(cfg.epochs):
        model.train(not batchnorm_eval)
        order = torch.randperm(len(x), generator=gen)
        if keep is not None:
            order = order[keep[order]]
        total_loss, correct, seen = 0.0, 0, 0
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            xb, yb = x[idx], y[idx]
            if augment:
                xb = augment_batch(xb, gen)
            xb, yb = xb.to(device), yb.to(device)
            opt.zero_grad(set_to_none=True)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            loss.backward()
            opt.step()
            total_loss += loss.item() * len(idx)
            correct += (logits.argmax(1) == yb).sum().item()
            seen += len(idx)
            if on_batch is not None:
                on_batch()
        row = {"epoch": epoch + 1, "loss": total_loss / max(seen, 1), "accuracy": correct / max(seen, 1)}
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
    model.eval()
    return history


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> dict:
    """Mean cross-entropy and accuracy of `model` (in eval mode) on (x, y)."""
    if len(x) == 0:
        return {"loss": float("nan"), "accuracy": float("nan")}
    model.eval()
    device = next(model.parameters()).device
    total_loss, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].to(device)
        yb = y[start : start + batch_size].to(device)
        logits = model(xb)
        total_loss += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    return {"loss": total_loss / len(x), "accuracy": correct / len(x)}
