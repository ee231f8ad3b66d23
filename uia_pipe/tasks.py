"""Learning tasks (`train.task`): what a model's output means and the loss every stage trains,
unlearns and attacks it with. The task travels with the model (`task_of`), so code holding a
model needs no setting to pick its loss.

- classification: logits; labels int64; cross-entropy.
- regression: one output, the standardised target; targets float32; squared error.
- autoencoder: the model outputs its reconstruction's residual f(x) − x (`models.Reconstructor`);
  the target is zero, so the loss is the reconstruction's mean squared error and needs no label.
- language_model: a character-level model (`models.LanguageModel`) reads a record's characters [B, L] and
  outputs next-character logits [B, V, L]; targets are the next characters, int64 [B, L]; a record's loss is
  its mean cross-entropy over positions (`uia_pipe.text`).

A float target selects squared error and an integer one cross-entropy, so `loss(out, y)` serves
all three tasks once `targets` has made y.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .model_config import TASKS  # noqa: F401  (train.task's values, in the schema leaf params validation reads)

# train.task -> the name of the quality the train stage reports (higher is better)
QUALITY = {"classification": "accuracy", "regression": "r2", "autoencoder": "psnr",
           "language_model": "char_accuracy"}


def task_of(model: nn.Module) -> str:
    """The task a model was built for (its wrapper's `task`; an ensemble's members' task)."""
    task = getattr(model, "task", None)
    if task is None and hasattr(model, "members"):
        task = getattr(model.members[0], "task", None)
    return task or "classification"


def targets(task: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """What the loss compares the output with: the labels or values, or zeros for an autoencoder
    (its output is the residual)."""
    return torch.zeros(len(x), dtype=torch.float32) if task == "autoencoder" else y


def per_sample(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each sample's loss: cross-entropy for integer y, else the mean squared error over the
    sample's outputs against y (a value per sample, broadcast)."""
    if not y.is_floating_point():
        each = F.cross_entropy(out, y, reduction="none")
        return each if y.dim() == 1 else each.reshape(len(out), -1).mean(1)
    flat = out.reshape(len(out), -1)
    return (flat - y.to(flat.dtype).reshape(-1, 1)).square().mean(1)


def loss(out: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """The training loss of a batch (mean or sum over samples)."""
    if not y.is_floating_point() and y.dim() == 1:
        return F.cross_entropy(out, y, reduction=reduction)
    each = per_sample(out, y)
    return each.sum() if reduction == "sum" else each.mean()


def attack_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The loss whose parameter gradient feature recovery matches to the update: cross-entropy with
    the recovered labels; for regression y holds each sample's residual r = f(x) − y (read from
    the head's bias update), and Σ r·f(x) has the squared error's gradient direction at the
    truth without needing the value; for an autoencoder (y zeros) the reconstruction error."""
    if not y.is_floating_point():
        return F.cross_entropy(out, y)
    if out.dim() == 2 and out.shape[1] == 1:
        return (out[:, 0] * y.to(out.dtype)).sum() / len(out)
    return loss(out, y)


@torch.no_grad()
def quality(task: str, out: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy (classification), R² against the targets' own mean (regression), or the
    reconstructions' PSNR in dB on [0, 1] images (autoencoder: out is the residual)."""
    if task in ("classification", "language_model"):
        return float((out.argmax(1) == y).double().mean())
    if task == "regression":
        pred, truth = out.reshape(-1).double(), y.double()
        total = (truth - truth.mean()).square().sum()
        return float(1 - (pred - truth).square().sum() / total) if total > 0 else float("nan")
    mse = out.double().reshape(len(out), -1).square().mean(1).clamp_min(1e-12)
    return float((-10 * torch.log10(mse)).mean())


def num_outputs(task: str, card: dict) -> int:
    """The model's output size: the classes, one value, or every input entry."""
    if task in ("classification", "language_model"):
        return card["num_classes"]
    if task == "regression":
        return 1
    size = 1
    for s in card["input_shape"]:
        size *= s
    return size


def dataset_error(task: str, card: dict) -> str | None:
    """Why `card`'s data cannot be learnt as `task` (a one-line reason), or None."""
    kind = card.get("task", "classification")
    if (task == "language_model") != (card["kind"] == "text"):
        return (f"the language model reads text; {card['name']} is {card['kind']}" if task == "language_model"
                else f"{card['name']} is text: train.task language_model reads it")
    if task == "autoencoder":
        return None if card["kind"] == "image" else f"the autoencoder reconstructs images; {card['name']} is {card['kind']}"
    if task != kind:
        return f"{card['name']} is a {kind} dataset"
    return None
