"""Bad params get one line that names the key, before any work starts."""

from __future__ import annotations

import copy

import pytest
import yaml
from typer.testing import CliRunner

from stages.cli import app
from tests.conftest import assert_check_fails_in_one_line, small_params
from uia_pipe.params import load_params, params_schema, parse_params
from uia_pipe.data import DATASETS
from uia_pipe.errors import UiaError
from uia_pipe.models import MODELS
from uia_pipe.unlearning.methods import METHODS


def _with(path: list[str], value) -> dict:
    raw = copy.deepcopy(small_params())
    node = raw
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return raw


BAD = [
    (["train", "bogus"], 1, "train.bogus: unknown key"),
    (["nonsense"], {}, "nonsense: unknown key"),
    (["train", "n"], "many", "train.n:"),
    (["train", "n"], 0, "train.n:"),
    (["unlearn", "k"], 40, "unlearn.k: must be <= train.n"),
    (["train", "n"], 500, "train.n: must be <= train.pool_size"),
    (["unlearn", "fraction"], 0.0, "unlearn.fraction:"),
    (["unlearn", "fraction"], 1.5, "unlearn.fraction:"),
    (["download", "dataset"], "imagenet21k", "download.dataset: unknown dataset 'imagenet21k'"),
    (["train", "model"], "vgg", "train.model: unknown model 'vgg'"),
    (["unlearn", "method"], "magic", "unlearn.method: unknown unlearning method 'magic'"),
    (["unlearn", "compare"], ["approx", "magic"], "unlearn.compare: unknown unlearning method 'magic'"),
    (["unlearn", "compare"], ["approx", "approx"], "unlearn.compare: listed twice"),
    (["unlearn", "approx", "eta"], -1, "unlearn.approx.eta:"),
    (["train", "convnet", "depth"], 3, "train.convnet.depth: unknown key"),
    (["base", "device"], "tpu", "base.device:"),
]


@pytest.mark.parametrize("path,value,expected", BAD, ids=[".".join(b[0]) + f"={b[1]}" for b in BAD])
def test_bad_params_give_one_line_naming_the_key(path, value, expected):
    with pytest.raises(UiaError) as err:
        parse_params(_with(path, value))
    message = str(err.value)
    assert expected in message
    assert "\n" not in message


@pytest.mark.parametrize("path,value,expected", BAD[:6])
def test_uia_check_reports_bad_params_in_one_line(tmp_path, path, value, expected):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(_with(path, value)))
    result = CliRunner().invoke(app, ["check", "--params", str(params)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize("path,value,expected", [
    (["download", "dataset"], "imagenet21k", "download.dataset: unknown dataset 'imagenet21k'"),
    (["download", "bogus"], 1, "download.bogus: unknown key"),
    (["nonsense"], {}, "nonsense: unknown key"),
])
def test_a_stage_refuses_bad_params_of_its_sections_without_traceback_or_artifacts(tmp_path, path, value, expected):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(_with(path, value)))
    out = tmp_path / "dataset"
    result = CliRunner().invoke(app, ["download", "--params", str(params), "--out", str(out)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]
    assert "Traceback" not in result.output
    assert not out.exists()


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(UiaError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: [unclosed\n")
    with pytest.raises(UiaError, match="not valid YAML"):
        load_params(bad)
    bad.write_text("- a list\n")
    with pytest.raises(UiaError, match="expected a mapping"):
        load_params(bad)


def test_repository_params_are_valid_and_cover_every_registry_entry():
    from tests.conftest import committed_params

    raw = committed_params()
    params = params_schema()(**raw)
    for name in MODELS:
        assert name in raw["train"], f"params.yaml has no train.{name} section"
        getattr(params.train, name)
    for name in METHODS:
        assert name in raw["unlearn"], f"params.yaml has no unlearn.{name} section"
    assert params.download.dataset in DATASETS


def test_compared_methods_skip_the_main_one():
    raw = _with(["unlearn", "compare"], ["approx", "neggrad"])
    raw["unlearn"]["method"] = "exact"
    assert parse_params(raw).unlearn.methods == ("exact", "approx", "neggrad")
    raw["unlearn"]["method"] = "approx"  # `dvc exp run -S unlearn.method=approx` beside compare: [approx]
    assert parse_params(raw).unlearn.methods == ("approx", "neggrad")


def test_the_defaults_compare_exact_and_approx_whichever_is_the_method():
    """`dvc exp run -S unlearn.method=approx` still compares approx with exact."""
    raw = small_params()
    for method, other in (("exact", "approx"), ("approx", "exact")):
        raw["unlearn"]["method"] = method
        assert parse_params(raw).unlearn.methods == (method, other)


@pytest.mark.parametrize("section,key,value", [
    ("epsilon", "models", 2), ("epsilon", "theta", "shared"), ("epsilon", "forget_requests", 0),
    ("recovery", "prune", [0.5, 1.0]), ("recovery", "quantise", [8, 3]), ("recovery", "relearn", [-1]),
    ("recovery", "metric", "psnr"),
])
def test_a_bad_epsilon_or_recovery_setting_is_one_line_from_uia_check(tmp_path, section, key, value):
    raw = small_params()
    raw["attack"][section][key] = value
    assert_check_fails_in_one_line(tmp_path, raw, f"attack.{section}.{key}")
