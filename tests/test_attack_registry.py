"""Adding an attack is one module, one registry entry and one params block: an
attack family defined here, registered at run time, reaches attack.json,
defend.json and the report with no edit under stages/."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field

from tests.conftest import run_all_stages
from uia_pipe.attacks import ATTACKS
from uia_pipe.attacks.protocol import Attack
from uia_pipe.attacks.view import AttackerView

pytestmark = pytest.mark.slow


class BiasConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sign: float = Field(1.0, description="+1: the removed class's output bias rose (an ascent step)")


def _bias(model: torch.nn.Module) -> torch.Tensor:
    """The output layer's bias."""
    return [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1].bias.detach()


def run(setting, thetas_u, cfg: BiasConfig, ctx) -> list[int]:
    """The head's bias update names the removed class (white-box view, no samples)."""
    out = []
    for theta_u in thetas_u:
        view = AttackerView(setting.theta_original, theta_u, None, "approx", tuple(setting.card["input_shape"]),
                            setting.card["num_classes"], len(setting.du_y), 1)
        out.append(int((cfg.sign * (_bias(view.theta_unlearned) - _bias(view.theta_original))).argmax()))
    return out


def score(setting, guesses: list[int]) -> pd.DataFrame:
    rows = []
    for req, guess in zip(setting.requests, guesses):
        _, labels = setting.truth(req)
        rows.append({"request": req["index"], "hit": float(guess in set(labels.tolist()))})
    return pd.DataFrame(rows)


def summarise(frame: pd.DataFrame, stats: dict) -> dict:
    return {"hit_rate": float(frame["hit"].mean()), "requests": len(frame)}


def test_a_registered_attack_reaches_attack_defend_and_the_report(tmp_path, params_file, monkeypatch):
    monkeypatch.setitem(ATTACKS, "head_bias", Attack(config=BiasConfig, run=run, score=score, summarise=summarise))
    raw = yaml.safe_load(params_file.read_text())
    raw["unlearn"].update(method="approx", compare=[])
    raw["attack"]["head_bias"] = {"sign": 1.0}
    raw["defend"].update(defences=["noise", "prune"])
    params_file.write_text(yaml.safe_dump(raw))
    t = tmp_path
    run_all_stages(params_file, t)

    attack = json.loads((t / "attack.json").read_text())
    rate = attack["head_bias"]["hit_rate"]
    # approximate unlearning raises the removed samples' output bias: the head names them
    assert rate >= 2 / 3 and attack["head_bias"]["requests"] == 3
    assert "head_bias_hit" in pd.read_csv(t / "attack.csv").columns
    defend = json.loads((t / "defend.json").read_text())
    assert defend["noise:0"]["head_bias.hit_mean"] == pytest.approx(rate)
    assert {"prune:0.5", "noise:1"} <= set(defend) and "head_bias.hit_mean" in defend["prune:0.5"]
    assert "head_bias.hit" in pd.read_csv(t / "defend.csv").columns
    assert json.loads((t / "evaluate.json").read_text())["head_bias"]["hit_rate"] == pytest.approx(rate)
    report = (t / "reports" / "report.md").read_text()
    assert f"| head_bias | hit_rate | {rate:.3g} |" in report
