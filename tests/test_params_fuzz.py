"""Any one bad value in params.yaml gives one line that names its key, never a
traceback, and no value that would size work beyond the bounds gets through.

The property test takes the committed params, replaces one leaf (or adds an
unknown key) with an odd value, and validates the whole file as `uia check` does."""

from __future__ import annotations

import copy
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import committed_params
from uia_pipe.errors import UiaError
from uia_pipe.params import load_params, parse_params

COMMITTED = committed_params()


def _leaves(node: dict, path: tuple = ()) -> list[tuple]:
    out = []
    for key, value in node.items():
        if isinstance(value, dict) and value:
            out += _leaves(value, path + (key,))
        else:
            out.append(path + (key,))
    return out


def _sections(node: dict, path: tuple = ()) -> list[tuple]:
    out = []
    for key, value in node.items():
        if isinstance(value, dict):
            out += [path + (key,), *_sections(value, path + (key,))]
    return out


def _at(path: tuple):
    node = COMMITTED
    for key in path:
        node = node[key]
    return node


LEAVES = _leaves(COMMITTED)
# Sections that take any key: a plugin's settings, which its own Config checks when the unlearn stage loads it
# (tests/test_plugins.py).
FREE_FORM = {("unlearn", "plugin")}
UNKNOWN = [section + ("no_such_key",) for section in _sections(COMMITTED) if section not in FREE_FORM] + [
    ("no_such_section",)]
INT_LEAVES = [p for p in LEAVES if type(_at(p)) is int]
FLOAT_LEAVES = [p for p in LEAVES if type(_at(p)) is float]
# Int-typed leaves whose committed value is null or a list of ints.
MORE_INT_LEAVES = [("attack", "label_inference", "probes", "budget")]
INT_LISTS = [("train", "mlp", "hidden"), ("train", "tabular_mlp", "hidden"), ("defend", "finetune", "strengths")]

HUGE = [10**12, 10**30, 2**63, 10**400, 10**5000]  # 10^5000: too long for repr (Python's 4,300 digits)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from([0, 1, -1, 2, 7, *HUGE, -(10**12), -(2**63)]),
    st.integers(min_value=-(10**15), max_value=10**15),
    st.sampled_from([math.inf, -math.inf, math.nan, 0.0, -0.0, 0.5, 1.5, -1.0, 1e12, 1e300, 5e-324]),
    st.floats(),
    st.sampled_from(["", "bogus", "float64", "auto", "yes", "sisa", "zoo", "relu", "1e12", "\n", "a\u2028b"]),
    st.text(max_size=12),
)
ODD = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=6),
    st.lists(st.integers(min_value=0, max_value=3), min_size=60, max_size=300),
    st.dictionaries(st.one_of(st.text(max_size=6), st.integers()), SCALARS, max_size=3),
)


def _with(path: tuple, value) -> dict:
    raw = copy.deepcopy(COMMITTED)
    node = raw
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return raw


def _refused_naming(path: tuple, value) -> str:
    """The one-line message parse_params refuses `value` at `path` with."""
    with pytest.raises(UiaError) as err:
        parse_params(_with(path, value))
    message = str(err.value)
    assert len(message.splitlines()) == 1 and "\n" not in message, message
    assert ".".join(path) in message, message
    return message


@settings(max_examples=300, deadline=None, database=None)
@given(path=st.sampled_from(LEAVES + UNKNOWN), value=ODD)
def test_one_odd_value_validates_or_gives_one_line_naming_its_key(path, value):
    key = ".".join(path)
    try:
        parse_params(_with(path, value))
    except UiaError as err:
        message = str(err)
        assert len(message.splitlines()) == 1 and "\n" not in message, message
        assert key in message, f"{key}={value!r}: {message}"
    else:
        assert path not in UNKNOWN, f"{key}: an unknown key was accepted"
        if type(_at(path)) is int and type(value) is int:
            assert abs(value) < 10**12, f"{key}={value} was accepted"
        if type(value) is float:
            assert math.isfinite(value), f"{key}={value} was accepted"


@pytest.mark.parametrize("path", INT_LEAVES + MORE_INT_LEAVES, ids=".".join)
def test_every_count_refuses_ten_to_the_twelve(path):
    for value in (10**12, 10**30):
        _refused_naming(path, value)


@pytest.mark.parametrize("path", INT_LISTS, ids=".".join)
def test_every_list_of_counts_refuses_a_huge_entry_and_a_huge_length(path):
    _refused_naming(path, [10**12])
    _refused_naming(path, [1] * 10_000)


@pytest.mark.parametrize("path", FLOAT_LEAVES, ids=".".join)
def test_every_real_refuses_inf_and_nan(path):
    for value in (math.inf, -math.inf, math.nan):
        _refused_naming(path, value)


@pytest.mark.parametrize("path,value,expected", [
    (("attack", "threads"), 10**12, "less than or equal to 1024"),
    (("attack", "label_inference", "probes", "zoo", "resolution"), 10**12, "less than or equal to 256"),
    (("defend", "finetune", "strengths"), [math.inf], "finite"),
    (("attack", "feature_recovery", "milestones"), [1.5], "fractions of `iterations`"),
    (("attack", "feature_recovery", "optimizer"), "sgd", "unknown optimizer 'sgd'"),
    (("attack", "label_inference", "probes", "strategy"), "magic", "unknown probe strategy 'magic'"),
    (("train", "mlp", "hidden"), [-1], "greater than or equal to 1"),
    (("defend", "noise", "strengths"), [0.1] * 65, "at most 64 strengths"),
], ids=lambda v: ".".join(v) if isinstance(v, tuple) else None)
def test_former_tracebacks_and_vague_refusals_are_one_line_naming_the_key(path, value, expected):
    """attack.threads and zoo.resolution at 10^12 once ended in tracebacks; the others named only the section,
    or (inf fine-tune epochs) no key at all."""
    assert expected in _refused_naming(path, value)


def test_a_number_too_long_for_python_is_one_line(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(f"base:\n  seed: {'9' * 5000}\n")
    with pytest.raises(UiaError, match="not valid YAML") as err:
        load_params(params)
    assert "\n" not in str(err.value)
    assert "an integer of" in _refused_naming(("base", "seed"), 10**5000)


def test_the_bounds_leave_the_paper_scale_valid():
    """The reference's full scale on a GPU, and more, still validates."""
    raw = copy.deepcopy(COMMITTED)
    raw["train"].update(model="resnet18", pool_size=10_000, n=512)
    raw["train"]["pretrain"].update(epochs=200, batch_size=128)
    raw["train"]["convnet"]["width"] = 64
    raw["attack"]["feature_recovery"].update(iterations=10_000, restarts=5)
    raw["attack"]["label_inference"]["probes"].update(per_class=10, budget=409_600 * 100)
    raw["attack"]["label_inference"]["probes"]["zoo"].update(coordinates=1024, resolution=None)
    parse_params(raw)
