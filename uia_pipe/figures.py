"""Figures as matplotlib objects, outside pyplot's registry (a run makes one per request, none held after
its last reference goes); `io.save_figure` writes them."""

from __future__ import annotations

import torch
from matplotlib.figure import Figure


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
    fig = Figure(figsize=(1.6 * k + 0.6, 3.6))
    axes = fig.subplots(2, k, squeeze=False)
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


def reconstruction_pairs(panels: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> Figure:
    """Several requests side by side, each its removed samples (top) over its reconstructions (bottom),
    titled above its first column: `panels` maps a title to (truth, recovered), [k, C, H, W] on [0,1]."""
    widths = [len(truth) for truth, _ in panels.values()]
    fig = Figure(figsize=(1.8 * sum(widths) + 0.6, 3.8))
    axes = fig.subplots(2, sum(widths), squeeze=False)
    at = 0
    for (title, (truth, recovered)), k in zip(panels.items(), widths):
        for i in range(k):
            _show(axes[0, at + i], truth[i])
            _show(axes[1, at + i], recovered[i])
        axes[0, at].set_title(title, fontsize=8, loc="left")
        at += k
    axes[0, 0].set_ylabel("removed")
    axes[1, 0].set_ylabel("recovered")
    fig.tight_layout()
    return fig


def confusion_matrix(truth: list[int], predicted: list[int], num_classes: int) -> Figure:
    """Counts of (true removed label, inferred label) over requests."""
    counts = torch.zeros(num_classes, num_classes, dtype=torch.long)
    for t, p in zip(truth, predicted):
        counts[t, p] += 1
    fig = Figure(figsize=(0.45 * num_classes + 1.8, 0.45 * num_classes + 1.4))
    ax = fig.subplots()
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


def image_panels(panels: list[tuple[str, "object"]], title: str | None = None) -> Figure:
    """Already-rendered images (H×W×C arrays, e.g. saved grids) side by side, each with a title."""
    return panel_rows({"": panels}, title)


def panel_rows(rows: dict[str, list[tuple[str, "object"]]], title: str | None = None, size: float = 3.6) -> Figure:
    """Rows of already-rendered images, each row named (left) and each image captioned (above)."""
    cols = max(len(panels) for panels in rows.values())
    fig = Figure(figsize=(size * cols, (size + 0.2) * len(rows)))
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for axs, (name, panels) in zip(axes, rows.items()):
        for ax in axs:
            ax.axis("off")
        for ax, (caption, img) in zip(axs, panels):
            ax.imshow(img)
            ax.set_title(caption, fontsize=9)
        if name:
            axs[0].text(-0.08, 0.5, name, transform=axs[0].transAxes, rotation=90, ha="right", va="center",
                        fontsize=10)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def tradeoff_curves(curves: dict[str, "object"], panels: dict[str, str]) -> Figure:
    """Utility against leakage, one curve per defence: `curves` maps a defence to its table (strength,
    test_accuracy and each column of `panels`, averaged over requests); one panel per column, its label."""
    fig = Figure(figsize=(5 * len(panels), 4))
    axes = fig.subplots(1, len(panels), squeeze=False)
    for name, table in curves.items():
        for ax, column in zip(axes[0], panels):
            ax.plot(table["test_accuracy"], table[column], marker="o", label=name)
            for si, xi, yi in zip(table["strength"], table["test_accuracy"], table[column]):
                ax.annotate(f"{si:g}", (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
    for ax, label in zip(axes[0], panels.values()):
        ax.set_ylabel(label)
        ax.set_xlabel("test accuracy of the defended model")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("defences: utility against leakage (labels: strength)", fontsize=10)
    fig.tight_layout()
    return fig


def access_curves(table, panels: dict[str, str]) -> Figure:
    """Leakage against the attacker's access: one column of panels per dimension (its levels after full
    access), one row per column of `panels` (its label), one line per method."""
    dimensions = [d for d in dict.fromkeys(table["dimension"]) if d != "full"]
    fig = Figure(figsize=(3.2 * len(dimensions), 2.6 * len(panels)))
    axes = fig.subplots(len(panels), len(dimensions), squeeze=False)
    full = table[table["dimension"] == "full"]
    for j, dimension in enumerate(dimensions):
        own = table[table["dimension"] == dimension]
        for method in dict.fromkeys(table["method"]):
            rows = [*full[full["method"] == method].to_dict("records"), *own[own["method"] == method].to_dict("records")]
            labels = [r["value"] for r in rows]
            for i, column in enumerate(panels):
                axes[i][j].plot(range(len(rows)), [r[column] for r in rows], marker="o", label=method)
                axes[i][j].set_xticks(range(len(rows)), labels, rotation=45, ha="right", fontsize=7)
        axes[0][j].set_title(dimension, fontsize=9)
    for i, label in enumerate(panels.values()):
        axes[i][0].set_ylabel(label, fontsize=8)
        for ax in axes[i]:
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def training_curves(rows: list[dict]) -> Figure:
    """Per-epoch loss and accuracy, one curve per phase (rows: phase, epoch, loss, accuracy)."""
    fig = Figure(figsize=(9, 3.5))
    axes = fig.subplots(1, 2)
    for phase in dict.fromkeys(r["phase"] for r in rows):
        sub = [r for r in rows if r["phase"] == phase]
        for ax, key in zip(axes, ("loss", "accuracy")):
            ax.plot([r["epoch"] for r in sub], [r[key] for r in sub], marker="o", label=phase)
    for ax, key in zip(axes, ("training loss", "training accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def per_request_scores(requests: list[int], scores: list[float], baseline: list[float], ylabel: str) -> Figure:
    """The attack's score per request beside the baseline guess's (tabular
    rows, where there is no image to show)."""
    fig = Figure(figsize=(max(4.0, 0.5 * len(requests) + 2), 3.4))
    ax = fig.subplots()
    pos = list(range(len(requests)))
    ax.bar([p - 0.2 for p in pos], scores, width=0.4, label="attack")
    ax.bar([p + 0.2 for p in pos], baseline, width=0.4, label="baseline guess")
    ax.set_xticks(pos, [str(r) for r in requests])
    ax.set_xlabel("request")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def report_figures(defences, access, panels: dict[str, dict[str, str]], train_curve: list[dict],
                   method_grids: dict | None = None) -> dict[str, tuple[Figure, str]]:
    """The report's own figures, name -> (figure, caption): the defences' trade-off and leakage against the
    attacker's access (`access`: summary.access_table's), one panel per column of `panels["defence"]` and
    `panels["access"]` (column -> label); every request of every method (`method_grids` method -> request ->
    its rendered image); the training curves. The families' own figures come from their artifacts."""
    out = {}
    if method_grids:
        rows = {m: [(f"request {i}", img) for i, img in sorted(g.items())] for m, g in method_grids.items() if g}
        if rows:
            out["reconstructions_all.png"] = (panel_rows(rows, size=2.4), "Every request of every method, as each "
                                              "family rendered it: removed sample (top), what it recovered (bottom)")
    shown = {c: label for c, label in panels.get("defence", {}).items() if c in defences}
    if shown:
        out["defences.png"] = (tradeoff_curves(dict(tuple(defences.groupby("defence", sort=False))), shown),
                               "Defences: test accuracy against " + ", ".join(shown.values()))
    shown = {} if access is None else {c: label for c, label in panels.get("access", {}).items() if c in access}
    if shown:
        out["access.png"] = (access_curves(access, shown), "What a weaker attacker gets: "
                             + ", ".join(shown.values()) + " against each access dimension's levels")
    out["training_curves.png"] = (training_curves(train_curve), "Training: pretraining (θ₀) and fine-tuning on D_u (θ)")
    return out
