"""The whole params file at once, every section typed: what `uia check` and the
tests validate. Stages validate only the sections they read (`config.load_sections`),
so that reading params imports no algorithm a stage does not run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .attacks.config import attack_params
from .config import BaseParams, EvaluateParams, TrainParams, parse_sections, read_params, schema
from .data import DownloadParams
from .defenses.config import DefendParams
from .unlearning.config import UnlearnParams


def params_schema():
    """The type of a whole params file (built anew: the attack registry may have grown)."""
    return schema(base=BaseParams, download=DownloadParams, train=TrainParams, unlearn=UnlearnParams,
                  attack=attack_params(), defend=DefendParams, evaluate=EvaluateParams)


def parse_params(raw: Any, source: str = "params.yaml"):
    """Validate a whole params mapping; UiaError with one line for the first problem."""
    return parse_sections(raw, params_schema(), source)


def load_params(path: Path):
    """Read and validate the whole params.yaml."""
    return parse_params(read_params(path), str(path))
