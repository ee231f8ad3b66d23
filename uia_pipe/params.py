"""The whole params file at once, every section typed: what `uia check` and the
tests validate. Stages validate only the sections they read (`config.load_sections`),
so that reading params imports no algorithm a stage does not run. Every section's
types here are schema leaves: validating the whole file imports no torch, pandas,
scikit-learn, scipy or matplotlib (tests/test_light.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .attacks.config import attack_params
from .attacks.schema import FAMILY_CONFIGS
from .config import BaseParams, EvaluateParams, TrainParams, parse_sections, read_params, schema
from .data_config import DownloadParams
from .defenses.config import DefendParams
from .unlearning.config import UnlearnParams


def params_schema():
    """The type of a whole params file, its attack section the built-in families' (the stages build
    theirs from the live registry, `attacks.config.attack_params()`)."""
    return schema(base=BaseParams, download=DownloadParams, train=TrainParams, unlearn=UnlearnParams,
                  attack=attack_params(FAMILY_CONFIGS), defend=DefendParams, evaluate=EvaluateParams)


def parse_params(raw: Any, source: str = "params.yaml"):
    """Validate a whole params mapping; UiaError with one line for the first problem."""
    return parse_sections(raw, params_schema(), source)


def load_params(path: Path):
    """Read and validate the whole params.yaml."""
    return parse_params(read_params(path), str(path))
