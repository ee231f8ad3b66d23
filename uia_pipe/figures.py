"""Figures as matplotlib objects; `io.save_figure` writes them."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def _show(ax, img: torch.Tensor) -> None:
    img = img.detach().cpu().clamp(0, 1)
    if img.shape[0] == 1:
        ax.imshow(img[0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(img.permute(1, 2, 0))
    ax.set_xticks([])
    ax.set_yticks([])


def reconstruction_grid(truth: torch.Tensor, recovered: torch.Tensor, captions: list[str] | None = None,
                        title: str | None = None) -> Figure:
    """Two rows per figure: the removed samples (top) and the attack's
    reconstructions (bottom), [k, C, H, W] each on [0,1]."""
    k = len(truth)
    fig, axes = plt.subplots(2, k, figsize=(1.6 * k + 0.6, 3.6), squeeze=False)
    for i in range(k):
        _show(axes[0, i], truth[i])
        _show(axes[1, i], recovered[i])
        if captions:
            axes[1, i].set_xlabel(captions[i], fontsize=8)
    axes[0, 0].set_ylabel("removed")
    axes[1, 0].set_ylabel("recovered")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def confusion_matrix(truth: list[int], predicted: list[int], num_classes: int) -> Figure:
    """Counts of (true removed label, inferred label) over requests."""
    counts = torch.zeros(num_classes, num_classes, dtype=torch.long)
    for t, p in zip(truth, predicted):
        counts[t, p] += 1
    fig, ax = plt.subplots(figsize=(0.45 * num_classes + 1.8, 0.45 * num_classes + 1.4))
    ax.imshow(counts, cmap="Blues")
    for t in range(num_classes):
        for p in range(num_classes):
            if counts[t, p]:
                ax.text(p, t, str(int(counts[t, p])), ha="center", va="center", fontsize=8)
    ax.set_xlabel("inferred label")
    ax.set_ylabel("removed label")
    ax.set_xticks(range(num_classes))
    ax.set_yticks(range(num_classes))
    ax.set_title("label inference", fontsize=9)
    fig.tight_layout()
    return fig
