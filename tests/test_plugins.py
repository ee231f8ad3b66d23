"""Your own unlearning method from params alone: a module the test writes runs through every stage;
a broken one is refused in one line before any work."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from tests.conftest import invoke, run_all_stages
from uia_pipe.unlearning.config import UnlearnParams
from uia_pipe.unlearning.methods import configured, resolve

PLUGIN = '''
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from uia_pipe.models import clone

class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    steps: int = Field(3, ge=1)
    lr: float = Field(0.05, gt=0)

def unlearn(problem, forget, cfg):
    model = clone(problem.theta_original)
    x, y = problem.du_x[forget], problem.du_y[forget]
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    for _ in range(cfg.steps):
        opt.zero_grad()
        (-F.cross_entropy(model(x), y)).backward()
        opt.step()
    return model
'''


def _write(root, package: str, source: str) -> None:
    (root / package).mkdir(parents=True, exist_ok=True)
    (root / package / "method.py").write_text(source)


@pytest.mark.slow
def test_a_plugin_written_here_runs_unlearn_attack_defend_and_evaluate(tmp_path, params_file, monkeypatch):
    _write(tmp_path / "code", "ascent_plugin", PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    name = "ascent_plugin.method:unlearn"
    raw = yaml.safe_load(params_file.read_text())
    raw["unlearn"].update(method=name, compare=["exact"], plugin={"steps": 4, "lr": 0.1})
    raw["defend"].update(defences=["noise"])
    params_file.write_text(yaml.safe_dump(raw))
    t = tmp_path
    run_all_stages(params_file, t)

    record = json.loads((t / "unlearn" / "requests.json").read_text())
    assert record["method"] == name and record["config"] == {"steps": 4, "lr": 0.1}
    rows = pd.read_csv(t / "unlearn.csv")
    mine, exact = rows[rows["method"] == name], rows[rows["method"] == "exact"]
    assert len(mine) == len(exact) == 3
    # ascent on X: the plugin moves θ away from retraining, where exact unlearning is retraining
    assert (mine["retrain_param_distance"] > 0).all() and (exact["retrain_param_distance"] == 0).all()
    attack = pd.read_csv(t / "methods.csv")
    assert name in set(attack["method"])
    assert name in (t / "reports" / "report.md").read_text()


def _unlearn_fails(tmp_path, params_file, method: str, plugin: dict | None = None) -> str:
    raw = yaml.safe_load(params_file.read_text())
    raw["unlearn"].update(method=method, compare=[], plugin=plugin or {})
    params_file.write_text(yaml.safe_dump(raw))
    (tmp_path / "empty").mkdir(exist_ok=True)  # the check comes before the stage reads its inputs
    result = invoke("unlearn", "--params", str(params_file), "--data", str(tmp_path / "empty"), "--trained",
                     str(tmp_path / "empty"), "--out", str(tmp_path / "out"), "--metrics",
                     str(tmp_path / "u.json"), "--details", str(tmp_path / "u.csv"), code=2)
    assert not (tmp_path / "out").exists() and not (tmp_path / "u.json").exists()
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message
    return message


def test_a_broken_plugin_is_one_line_before_any_work(tmp_path, params_file, monkeypatch):
    code = tmp_path / "code"
    _write(code, "raising_plugin", "raise RuntimeError('broken on import')\n")
    _write(code, "signature_plugin", "def unlearn(problem):\n    return problem\n")
    _write(code, "config_plugin", PLUGIN)
    monkeypatch.syspath_prepend(str(code))
    assert "cannot import 'raising_plugin.method' (RuntimeError: broken on import)" in _unlearn_fails(
        tmp_path, params_file, "raising_plugin.method:unlearn")
    assert "cannot import 'no_such_plugin.method' (ModuleNotFoundError" in _unlearn_fails(
        tmp_path, params_file, "no_such_plugin.method:unlearn")
    assert "signature_plugin.method:unlearn must take (problem, forget, cfg)" in _unlearn_fails(
        tmp_path, params_file, "signature_plugin.method:unlearn")
    assert "has no function 'forget'" in _unlearn_fails(tmp_path, params_file, "config_plugin.method:forget")
    assert "unlearn.plugin.steps: Input should be greater than or equal to 1" in _unlearn_fails(
        tmp_path, params_file, "config_plugin.method:unlearn", {"steps": 0})
    assert "unlearn.plugin.rate: unknown key" in _unlearn_fails(
        tmp_path, params_file, "config_plugin.method:unlearn", {"rate": 0.1})
    assert "unknown unlearning method 'not a method'" in _unlearn_fails(tmp_path, params_file, "not a method")


def test_a_plugin_returning_no_model_is_refused_in_one_line(tiny_problem, tmp_path, monkeypatch):
    from uia_pipe.errors import UiaError

    _write(tmp_path, "none_plugin", "def unlearn(problem, forget, cfg):\n    return [1, 2]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    fn, config = resolve("none_plugin.method:unlearn")
    with pytest.raises(UiaError, match=r"returned list, expected a torch.nn.Module"):
        fn(tiny_problem, tiny_problem.du_y < 0, config())


def test_the_shipped_example_is_a_working_plugin(tiny_problem):
    u = UnlearnParams(method="examples.bounded_ascent:unlearn", plugin={"steps": 5, "radius": 0.01})
    cfg = configured(u, u.method)
    fn, _ = resolve(u.method)
    forget = tiny_problem.du_y < 0
    forget[:3] = True
    theta = tiny_problem.theta_original
    theta_u = fn(tiny_problem, forget, cfg)
    moved = sum(float((a - b).detach().square().sum()) for a, b in zip(theta_u.parameters(), theta.parameters())) ** 0.5
    norm = sum(float(b.detach().square().sum()) for b in theta.parameters()) ** 0.5
    assert 0 < moved <= 0.01 * norm * (1 + 1e-4)


def test_an_installed_entry_point_names_a_plugin(tiny_problem, tmp_path, monkeypatch):
    from importlib import metadata

    _write(tmp_path, "entry_plugin", PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    installed = metadata.EntryPoints([metadata.EntryPoint("my_ascent", "entry_plugin.method:unlearn",
                                                          "uia_pipe.unlearning")])
    real = metadata.entry_points
    monkeypatch.setattr(metadata, "entry_points",
                        lambda **kw: installed.select(**kw) if kw.get("group") == "uia_pipe.unlearning" else real(**kw))
    u = UnlearnParams(method="my_ascent", plugin={"steps": 2})
    fn, config = resolve(u.method)
    assert config.__module__ == "entry_plugin.method" and configured(u, u.method).steps == 2
    forget = tiny_problem.du_y < 0
    forget[0] = True
    assert fn(tiny_problem, forget, configured(u, u.method)) is not tiny_problem.theta_original
    with pytest.raises(ValueError, match="unknown unlearning method 'not_installed'"):
        UnlearnParams(method="not_installed")


def test_the_stages_that_run_methods_depend_on_the_plugin_folders():
    """Editing a plugin reruns what it affects: unlearn, attack (membership's audit pairs call the method)
    and defend list plugins/ and examples/ as deps."""
    from tests.conftest import ROOT

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for stage in ("unlearn", "attack", "defend"):
        assert {"plugins", "examples"} <= set(stages[stage]["deps"]), stage
    assert "plugins" not in stages["train"]["deps"]
