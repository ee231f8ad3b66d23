"""One engine for the sweeps that attack a run again under variants of its release — each defence at each
strength (the defend stage), each access level (the access stage): every family of the registry on the
variant, one row per request with the numbers each family declares for the sweep's table
(`protocol.Number`), and the means per variant."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable

import pandas as pd
from pydantic import BaseModel

from ..attacks.protocol import Attack, Context
from ..defenses import DEFENSES, REPLACES_UNLEARNING, DefenceConfig, DefenceInput
from ..training import evaluate
from .campaign import Outcome, attack_run, run_together
from .setting import Run


class Unservable(Exception):
    """The server cannot release at a variant (its weights diverged, or its method cannot serve later
    requests there): recorded with the reason, not attacked."""


@dataclasses.dataclass(frozen=True)
class Variant:
    """One release the sweep attacks: its key columns, the run (θ_u as released), the families' configs and
    context, the columns it adds per request (`extra(run, outcome)`, one dict a request), or why it cannot be
    served; `same_as`: the key of an earlier variant whose rows it repeats under its own key; `reuse`: the key
    of an earlier variant whose families other than `rerun` saw the same inputs, their results taken from it
    (`campaign.attack_run`), not run again."""

    key: dict[str, Any]
    run: Run | None = None
    configs: dict[str, BaseModel] | None = None
    ctx: Context | None = None
    extra: Callable[[Run, Outcome], list[dict]] | None = None
    unservable: str = ""
    same_as: tuple | None = None
    reuse: tuple | None = None
    rerun: frozenset[str] = frozenset()


def sweep(variants: Iterable[Variant], attacks: dict[str, Attack], table: str,
          on_step: Callable[[dict], None] | None = None) -> pd.DataFrame:
    """One row per (variant, request): the variant's key, its extra columns and each family's numbers
    declared for `table` (`numbers`); a variant the server cannot release is one row, request −1, with the
    reason in `unservable`."""
    variants = list(variants)
    # Families that attack many runs at once (feature recovery's batches) run first over every variant.
    given = run_together([None if v.same_as is not None or v.unservable else
                          (v.run, v.configs, v.ctx, v.rerun if v.reuse is not None else frozenset(attacks))
                          for v in variants], attacks)
    rows, done, outcomes = [], {}, {}
    for v, made in zip(variants, given):
        if v.same_as is not None:
            own = [{**row, **v.key} for row in done[v.same_as]]
        else:
            try:
                if v.unservable:
                    raise Unservable(v.unservable)
                outcome = attack_run(v.run, attacks, v.configs, dataclasses.replace(v.ctx, earlier={}),
                                     reuse=outcomes.get(v.reuse), rerun=v.rerun, given=made)
                outcomes[tuple(v.key.values())] = outcome
            except Unservable as why:  # a release the sweep makes (an audit pair's) diverged: the variant as a whole
                own = [{**v.key, "request": -1, "unservable": str(why)}]
            else:
                scores = numbers(attacks, outcome, table)
                extra = v.extra(v.run, outcome) if v.extra is not None else [{}] * len(scores)
                own = [{**v.key, "request": int(index), **more, **scores.iloc[j].to_dict()}
                       for j, (index, more) in enumerate(zip(outcome.frame["request"], extra))]
        done[tuple(v.key.values())] = own
        rows += own
        if on_step is not None:
            on_step(v.key)
    return pd.DataFrame(rows)


def numbers(attacks: dict[str, Attack], outcome: Outcome, table: str) -> pd.DataFrame:
    """Per request, each family's numbers declared for `table`: its per-request column ("<family>.<column>"),
    or a pooled number's value ("<family>.<key>", the same in every row); those a run does not give left out."""
    out = pd.DataFrame(index=range(len(outcome.frame)))
    for name, summary in outcome.summaries.items():
        scored = outcome.scored[name].reset_index(drop=True)
        for n in attacks[name].numbers:
            if table not in n.tables:
                continue
            if n.column is not None and n.column in scored:
                out[f"{name}.{n.column}"] = scored[n.column].astype(float)
            elif n.column is None and n.key in summary:
                out[f"{name}.{n.key}"] = float(summary[n.key])
    return out


def means(attacks: dict[str, Attack], table: str, group: pd.DataFrame) -> dict[str, float]:
    """One variant's rows of a sweep's table → each family's declared numbers under their one name
    ("<family>.<key>": the mean of its per-request column over the variant's requests, or the pooled value)."""
    out: dict[str, float] = {}
    for name, attack in attacks.items():
        for n in attack.numbers:
            column = f"{name}.{n.column or n.key}"
            if table in n.tables and column in group:
                out[f"{name}.{n.key}"] = group[column].mean() if n.column else group[column].iloc[0]
    return out


# --- defences ----------------------------------------------------------------------------------------------

def defence_inputs(run: Run) -> list[DefenceInput]:
    setting, out = run.setting, []
    for req, theta_u in zip(setting.requests, run.thetas_u):
        forget = setting.forget_mask(req)
        out.append(DefenceInput(setting.theta_original, theta_u, setting.du_x[forget], setting.du_y[forget],
                                setting.du_x[~forget], setting.du_y[~forget]))
    return out


def defence_variants(run: Run, defences: dict[str, DefenceConfig], configs: dict[str, BaseModel],
                     ctx: Context) -> Iterable[Variant]:
    """Each (defence, strength): every released θ_u defended, and every model the evaluator makes alike
    (membership's audit pairs) released through the same defence; strength 0 of a defence that keeps θ_u is
    one variant, repeated for the others."""
    setting, inputs, undefended = run.setting, defence_inputs(run), None
    for name, cfg in defences.items():
        defend, _ = DEFENSES[name]
        attacked = dataclasses.replace(setting, method="approx") if name in REPLACES_UNLEARNING else setting
        for strength in cfg.strengths:
            key = {"defence": name, "strength": float(strength)}
            keeps = strength == 0 and name not in REPLACES_UNLEARNING
            if keeps and undefended is not None:
                yield Variant(key, same_as=undefended)
                continue
            undefended = tuple(key.values()) if keeps else undefended
            defended = [defend(inp, strength, cfg, ctx.seed + req["index"]) for inp, req in zip(inputs, setting.requests)]

            def release(theta, theta_u, forget_x, forget_y, retain_x, retain_y, seed, defend=defend,
                        strength=strength, cfg=cfg):
                return defend(DefenceInput(theta, theta_u, forget_x, forget_y, retain_x, retain_y), strength, cfg, seed)

            def utility(run_: Run, outcome: Outcome, defended=defended) -> list[dict]:
                return [{"test_accuracy": evaluate(model, run_.test_x, run_.test_y)["accuracy"],
                         "forget_accuracy": evaluate(model, inp.forget_x, inp.forget_y)["accuracy"]}
                        for inp, model in zip(inputs, defended)]

            yield Variant(key, dataclasses.replace(run, setting=attacked, thetas_u=defended, release=release),
                          configs, ctx, utility)


def summarise_defences(frame: pd.DataFrame, attacks: dict[str, Attack]) -> dict[str, dict[str, float]]:
    """`{"<defence>:<strength>": {test_accuracy, forget_accuracy, <family>.<key>, ...}}`: one level of
    nesting, numbers only, as `dvc metrics show` wants (NaN scores, e.g. PSNR on tabular data, left out)."""
    out: dict[str, dict[str, float]] = {}
    for (name, strength), group in frame.groupby(["defence", "strength"], sort=False):
        entry = {"test_accuracy": group["test_accuracy"].mean(), "forget_accuracy": group["forget_accuracy"].mean(),
                 **means(attacks, "defence", group)}
        out[f"{name}:{strength:g}"] = {k: float(v) for k, v in entry.items() if pd.notna(v)}
    return out
