"""The defend stage's algorithm: every (defence, strength) on every released
θ_u, then the same attacks as the attack stage (attacks/campaign.py) on the
defended models, scored against the truth."""

from __future__ import annotations

import dataclasses
from typing import Callable

import pandas as pd
import torch
from torch import nn

from ..attacks import campaign
from ..attacks import feature_recovery as fr
from ..attacks import label_inference as li
from ..training import evaluate
from . import DEFENSES, REPLACES_UNLEARNING, DefenceConfig, DefenceInput

# Columns of the tidy per-request table (leakage columns depend on the data kind).
COLUMNS = ["defence", "strength", "request", "test_accuracy", "forget_accuracy", "psnr", "ssim", "label_correct"]


def defence_inputs(setting: campaign.Setting, thetas_u: list[nn.Module]) -> list[DefenceInput]:
    out = []
    for req, theta_u in zip(setting.requests, thetas_u):
        forget = torch.zeros(len(setting.du_y), dtype=torch.bool)
        forget[torch.tensor(req["forget"])] = True
        out.append(DefenceInput(setting.theta_original, theta_u, setting.du_x[forget], setting.du_y[forget],
                                setting.du_x[~forget], setting.du_y[~forget]))
    return out


def sweep(
    setting: campaign.Setting,
    thetas_u: list[nn.Module],
    defences: dict[str, DefenceConfig],
    probes: li.Probes,
    li_cfg: li.Config,
    fr_cfg: fr.Config,
    seed: int,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    on_step: Callable[[str, float], None] | None = None,
) -> pd.DataFrame:
    """One row per (defence, strength, request): the defended model's test and
    forget accuracy and the attacks' scores on it (PSNR/SSIM for images, or
    decoded-feature errors for tabular rows; whether label inference was right)."""
    inputs = defence_inputs(setting, thetas_u)
    rows = []
    undefended: list[dict] | None = None  # strength 0 of a defence that keeps θ_u: the same rows for each
    for name, cfg in defences.items():
        defend, _ = DEFENSES[name]
        attacked = dataclasses.replace(setting, method="approx") if name in REPLACES_UNLEARNING else setting
        for strength in cfg.strengths:
            if strength == 0 and name not in REPLACES_UNLEARNING and undefended is not None:
                rows += [{**row, "defence": name} for row in undefended]
                if on_step is not None:
                    on_step(name, strength)
                continue
            first = len(rows)
            defended = [defend(inp, strength, cfg, seed + req["index"]) for inp, req in zip(inputs, setting.requests)]
            li_frame, _, fr_frame, _ = campaign.both(attacked, defended, probes, li_cfg, fr_cfg, seed)
            for j, (inp, model) in enumerate(zip(inputs, defended)):
                fr_row, li_row = fr_frame.iloc[j], li_frame.iloc[j]
                row = {"defence": name, "strength": float(strength), "request": int(fr_row["request"]),
                       "test_accuracy": evaluate(model, test_x, test_y)["accuracy"],
                       "forget_accuracy": evaluate(model, inp.forget_x, inp.forget_y)["accuracy"],
                       "psnr": float(fr_row["psnr"]) if "psnr" in fr_row else float("nan"),
                       "ssim": float(fr_row["ssim"]) if "ssim" in fr_row else float("nan"),
                       "label_correct": bool(li_row["correct"]),
                       "fr_label_accuracy": float(fr_row["label_accuracy"])}
                for m in ("numeric_mae_std", "categorical_accuracy"):
                    if m in fr_row:
                        row[m] = float(fr_row[m])
                rows.append(row)
            if strength == 0 and name not in REPLACES_UNLEARNING:
                undefended = rows[first:]
            if on_step is not None:
                on_step(name, strength)
    return pd.DataFrame(rows)


def summarise(frame: pd.DataFrame) -> dict[str, dict[str, float]]:
    """`{"<defence>:<strength>": {test_accuracy, forget_accuracy, psnr_mean,
    ssim_mean, label_accuracy, ...}}`: one level of nesting, numbers only, as
    `dvc metrics show` wants (NaN scores, e.g. PSNR on tabular data, left out)."""
    out: dict[str, dict[str, float]] = {}
    for (name, strength), group in frame.groupby(["defence", "strength"], sort=False):
        entry = {"test_accuracy": group["test_accuracy"].mean(), "forget_accuracy": group["forget_accuracy"].mean(),
                 "psnr_mean": group["psnr"].mean(), "ssim_mean": group["ssim"].mean(),
                 "label_accuracy": group["label_correct"].mean(),
                 "feature_label_accuracy": group["fr_label_accuracy"].mean()}
        for m in ("numeric_mae_std", "categorical_accuracy"):
            if m in group:
                entry[f"{m}_mean"] = group[m].mean()
        out[f"{name}:{strength:g}"] = {k: float(v) for k, v in entry.items() if pd.notna(v)}
    return out
