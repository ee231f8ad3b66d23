"""Tabular rows as the download stage encodes them (numeric columns standardised, categorical ones
one-hot; a dataset card's `encoding`), decoded back: what the scoring of a recovered row reads. A leaf
module, so that scoring never imports the data loaders."""

from __future__ import annotations

import torch


def decode_tabular(x: torch.Tensor, encoding: dict) -> dict[str, torch.Tensor]:
    """Invert a card's `encoding` for a [B, D] batch (or one [D] row).

    Returns {"numeric": float [B, n_num] on the original scale, in column order,
    "categorical": long [B, n_cat] index into each column's `categories` (argmax
    of its one-hot block, so soft or reconstructed vectors decode too)}."""
    if x.dim() == 1:
        x = x.unsqueeze(0)
    if x.dim() != 2 or x.shape[1] != encoding["dim"]:
        raise ValueError(f"decode_tabular expects [B, {encoding['dim']}], got {list(x.shape)}")
    x = x if x.is_floating_point() else x.to(torch.float32)
    numeric: list[torch.Tensor] = []
    categorical: list[torch.Tensor] = []
    for col in encoding["columns"]:
        if col["type"] == "numeric":
            numeric.append(x[:, col["index"]] * col["std"] + col["mean"])
        else:
            start = col["start"]
            categorical.append(x[:, start : start + len(col["categories"])].argmax(dim=1))
    b = x.shape[0]
    return {
        "numeric": torch.stack(numeric, dim=1) if numeric else x.new_zeros(b, 0),
        "categorical": torch.stack(categorical, dim=1)
        if categorical
        else torch.zeros(b, 0, dtype=torch.int64, device=x.device),
    }
