"""Adding an attack is one module, one registry entry and one params block: an
attack family defined here, registered at run time, reaches attack.json,
defend.json, access.json, evaluate.json and every table and figure caption of the
report that it declares a number for, with no edit anywhere else."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field

from tests.conftest import run_all_stages
from uia_pipe.attacks import ATTACKS
from uia_pipe.attacks.protocol import TABLES, Attack, Number

pytestmark = pytest.mark.slow


class BiasConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sign: float = Field(1.0, description="+1: the removed class's output bias rose (an ascent step)")


def _bias(model: torch.nn.Module) -> torch.Tensor:
    """The output layer's bias."""
    return [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1].bias.detach()


def run(grant, cfg: BiasConfig, ctx) -> list[int]:
    """The head's bias update names the removed class (the released models alone, no samples)."""
    return [int((cfg.sign * (_bias(theta_u) - _bias(grant.theta_original))).argmax()) for theta_u in grant.thetas_u]


def score(setting, guesses: list[int]) -> pd.DataFrame:
    rows = []
    for req, guess in zip(setting.requests, guesses):
        _, labels = setting.truth(req)
        rows.append({"request": req["index"], "hit": float(guess in set(labels.tolist()))})
    return pd.DataFrame(rows)


def summarise(frame: pd.DataFrame, guesses: list[int], cfg: BiasConfig, stats: dict) -> dict:
    return {"hit_rate": float(frame["hit"].mean()), "requests": len(frame)}


HEAD_BIAS = Attack(config=BiasConfig, run=run, score=score, summarise=summarise,
                   numbers=(Number("hit_rate", "bias names the class", "hit", TABLES + ("figure",), "wilson"),))


def test_a_registered_attack_reaches_every_table_it_declares(tmp_path, params_file, monkeypatch):
    monkeypatch.setitem(ATTACKS, "head_bias", HEAD_BIAS)
    raw = yaml.safe_load(params_file.read_text())
    raw["unlearn"].update(method="approx", compare=["exact"])
    raw["attack"]["head_bias"] = {"sign": 1.0}
    raw["defend"].update(defences=["noise", "prune"])
    raw["attack"]["access"].update(levels=["layers:1"], methods=["approx"])
    params_file.write_text(yaml.safe_dump(raw))
    t = tmp_path
    run_all_stages(params_file, t)

    attack = json.loads((t / "attack.json").read_text())
    rate = attack["head_bias"]["hit_rate"]
    # approximate unlearning raises the removed samples' output bias: the head names them
    assert rate >= 2 / 3 and attack["head_bias"]["requests"] == 3 and "head_bias" in attack["compare"]["exact"]
    assert "head_bias.hit" in pd.read_csv(t / "attack.csv").columns
    defend = json.loads((t / "defend.json").read_text())
    assert defend["noise:0"]["head_bias.hit_rate"] == pytest.approx(rate)
    assert {"prune:0.5", "noise:1"} <= set(defend) and "head_bias.hit_rate" in defend["prune:0.5"]
    assert "head_bias.hit" in pd.read_csv(t / "defend.csv").columns
    access = json.loads((t / "access.json").read_text())
    assert "head_bias.hit_rate" in access["full"]["approx"] and "head_bias.hit_rate" in access["layers:1"]["approx"]
    evaluated = json.loads((t / "evaluate.json").read_text())
    assert evaluated["head_bias"]["hit_rate"] == pytest.approx(rate)
    assert evaluated["head_bias"]["hit_rate_ci95_low"] < rate  # Wilson over the requests, as declared
    assert "head_bias.hit_rate" in evaluated["method_exact"] and "head_bias.hit_rate" in evaluated["access"]["full"]["approx"]
    report = (t / "reports" / "report.md").read_text()
    name = "head bias: bias names the class"
    sections = {h: report.split(h)[1].split("\n## ")[0] for h in
                ("## Headline results", "## Unlearning methods side by side", "## Defences",
                 "## What a weaker attacker gets", "## Figures")}
    assert all(name in text for text in sections.values()), [h for h, text in sections.items() if name not in text]
    assert f"| head bias | hit_rate | {rate:.3g} |" in report
