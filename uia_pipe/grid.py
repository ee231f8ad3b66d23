"""Grids of DVC experiments and the paper-style tables built from their MLflow summary runs.

`expand` turns `key=v1,v2` settings and seeds into one override set per
experiment (validated as params before anything is queued); `table` pivots the
summary runs of a grid — one row per value of one param, one column per value
of another, each cell a metric's mean over seeds with its Student-t interval.
Queueing and running (`dvc exp run --queue`, `dvc exp run --run-all`) is the
`uia grid` command's."""

from __future__ import annotations

import itertools
import re

import pandas as pd
import yaml

from . import stats
from .errors import UiaError
from .params import parse_params
from .report import cell, interval

SEED = "base.seed"
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,40}$")


def parse_axis(text: str) -> tuple[str, list]:
    """`key=v1,v2,...` -> (key, values), each value read as YAML (numbers, true, null, lists in [])."""
    key, sep, values = text.partition("=")
    if not sep or not key or not values:
        raise UiaError(f"grid: expected key=value1,value2,... , got {text!r}")
    items = yaml.safe_load(f"[{values}]")
    if len(set(map(repr, items))) != len(items):
        raise UiaError(f"grid: {key} lists a value twice: {values}")
    return key.strip(), items


def expand(axes: list[tuple[str, list]], seeds: list[int], committed: dict, name: str) -> list[dict]:
    """One dict per experiment, key -> value (the grid's keys and base.seed), every combination in
    order; each checked as a whole params file (the committed one with its overrides) before any runs."""
    if not NAME.match(name):
        raise UiaError(f"grid: the name must be a letter then letters, digits or _ (≤ 41), got {name!r}")
    keys = [k for k, _ in axes]
    if len(set(keys)) != len(keys) or SEED in keys:
        raise UiaError(f"grid: each key once, and base.seed through --seeds: {keys}")
    combos = []
    for values in itertools.product(*[v for _, v in axes], seeds):
        combo = dict(zip([*keys, SEED], values))
        raw = yaml.safe_load(yaml.safe_dump(committed))
        for key, value in combo.items():
            node, *path = key.split(".")
            target = raw.setdefault(node, {})
            for part in path[:-1]:
                if not isinstance(target.get(part), dict):
                    raise UiaError(f"grid: {key}: no such params section")
                target = target[part]
            if path and path[-1] not in target:
                raise UiaError(f"grid: {key}: no such key in params.yaml")
            target[path[-1]] = value
        try:
            parse_params(raw, "params.yaml")
        except UiaError as exc:
            raise UiaError(f"grid: {', '.join(f'{k}={v}' for k, v in combo.items())}: {exc}") from None
        combos.append(combo)
    return combos


def names(name: str, count: int) -> list[str]:
    """The grid's experiment names: <name>-000, <name>-001, ..."""
    return [f"{name}-{i:03d}" for i in range(count)]


def overrides(combo: dict) -> list[str]:
    """dvc exp run's -S arguments for one experiment."""
    out = []
    for key, value in combo.items():
        out += ["-S", f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"]
    return out


def grid_runs(runs: list[dict], name: str) -> list[dict]:
    """The summary runs of grid `name`, newest first (one per experiment name)."""
    prefix, seen, out = f"{name}-", set(), []
    for run in runs:
        exp = run["experiment"]
        if exp.startswith(prefix) and exp[len(prefix):].isdigit() and exp not in seen:
            seen.add(exp)
            out.append(run)
    return out


def table(runs: list[dict], rows: str, columns: str | None, metric: str, level: float = 0.95) -> pd.DataFrame:
    """`metric` of the grid's runs: a row per value of param `rows`, a column per value of `columns`
    (one column "all" without), each cell "mean [low, high]" over the seeds of that cell (the
    Student-t interval at `level`; the mean alone for one seed), "–" where no run holds it."""
    cells: dict[tuple[str, str], list[float]] = {}
    row_values, column_values = set(), set()
    for run in runs:
        params = run["params"]
        if rows not in params or (columns is not None and columns not in params):
            missing = rows if rows not in params else columns
            raise UiaError(f"grid table: the runs hold no param {missing} (a key of the grid?)")
        r, c = params[rows], params[columns] if columns else "all"
        row_values.add(r)
        column_values.add(c)
        if metric in run["metrics"]:
            cells.setdefault((r, c), []).append(run["metrics"][metric])
    row_values, column_values = _sorted(row_values), _sorted(column_values)
    data = []
    for r in row_values:
        line = {rows: r}
        for c in column_values:
            values = cells.get((r, c), [])
            mean, half = stats.mean_ci(values, level)
            line[c] = ("–" if not values else cell(mean) if len(values) == 1
                       else f"{cell(mean)} {interval(mean - half, mean + half)}")
        data.append(line)
    return pd.DataFrame(data, columns=[rows, *column_values])


def _sorted(values: set[str]) -> list[str]:
    """Param values as MLflow keeps them (strings): in numeric order where all are numbers, else in
    alphabetical order."""
    try:
        return sorted(values, key=float)
    except ValueError:
        return sorted(values)
