"""The defend stage's algorithm: every (defence, strength) on every released
θ_u, then every attack family of the registry on the defended models, scored
against the truth."""

from __future__ import annotations

import dataclasses
from typing import Callable

import pandas as pd
import torch
from pydantic import BaseModel
from torch import nn

from ..attacks.protocol import Attack, Context, attack_run, defended_rows, defended_summary
from ..attacks.setting import Run, Setting
from ..training import evaluate
from . import DEFENSES, REPLACES_UNLEARNING, DefenceConfig, DefenceInput


def defence_inputs(setting: Setting, thetas_u: list[nn.Module]) -> list[DefenceInput]:
    out = []
    for req, theta_u in zip(setting.requests, thetas_u):
        forget = setting.forget_mask(req)
        out.append(DefenceInput(setting.theta_original, theta_u, setting.du_x[forget], setting.du_y[forget],
                                setting.du_x[~forget], setting.du_y[~forget]))
    return out


def sweep(
    run: Run,
    defences: dict[str, DefenceConfig],
    attacks: dict[str, Attack],
    configs: dict[str, BaseModel],
    ctx: Context,
    on_step: Callable[[str, float], None] | None = None,
) -> pd.DataFrame:
    """One row per (defence, strength, request): the defended model's test and
    forget accuracy and each attack family's scores on it, with the pooled
    numbers a family keeps under a defence (`defended_pooled`, the same in
    each row of a strength). The attacks reuse what ctx holds from the attack
    stage's preparation (probes of θ); a model a family makes alike
    (membership's audit pairs) is released through the same defence."""
    setting = run.setting
    inputs = defence_inputs(setting, run.thetas_u)
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
            defended = [defend(inp, strength, cfg, ctx.seed + req["index"]) for inp, req in zip(inputs, setting.requests)]
            def release(theta, theta_u, forget_x, forget_y, retain_x, retain_y, seed, defend=defend, strength=strength,
                        cfg=cfg):
                return defend(DefenceInput(theta, theta_u, forget_x, forget_y, retain_x, retain_y), strength, cfg, seed)

            outcome = attack_run(dataclasses.replace(run, setting=attacked, thetas_u=defended), attacks, configs,
                                 dataclasses.replace(ctx, earlier={}, release=release))
            scores = defended_rows(attacks, outcome)
            for j, (inp, model) in enumerate(zip(inputs, defended)):
                rows.append({"defence": name, "strength": float(strength), "request": int(scores["request"].iloc[j]),
                             "test_accuracy": evaluate(model, run.test_x, run.test_y)["accuracy"],
                             "forget_accuracy": evaluate(model, inp.forget_x, inp.forget_y)["accuracy"],
                             **scores.drop(columns="request").iloc[j].to_dict()})
            if strength == 0 and name not in REPLACES_UNLEARNING:
                undefended = rows[first:]
            if on_step is not None:
                on_step(name, strength)
    return pd.DataFrame(rows)


def summarise(frame: pd.DataFrame, attacks: dict[str, Attack]) -> dict[str, dict[str, float]]:
    """`{"<defence>:<strength>": {test_accuracy, forget_accuracy, psnr_mean,
    ssim_mean, label_accuracy, ...}}`: one level of nesting, numbers only, as
    `dvc metrics show` wants (NaN scores, e.g. PSNR on tabular data, left out)."""
    out: dict[str, dict[str, float]] = {}
    for (name, strength), group in frame.groupby(["defence", "strength"], sort=False):
        entry = {"test_accuracy": group["test_accuracy"].mean(), "forget_accuracy": group["forget_accuracy"].mean(),
                 **defended_summary(attacks, group)}
        out[f"{name}:{strength:g}"] = {k: float(v) for k, v in entry.items() if pd.notna(v)}
    return out
