"""Shared fixtures: a tiny trained setting, a shrunken params dict, and one
MLflow store per test session (a fresh store costs seconds of migrations)."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch
import yaml

from uia_pipe.config import OptimParams
from uia_pipe.models import build_model
from uia_pipe.training import fit
from uia_pipe.unlearning import UnlearningProblem
from uia_pipe.unlearning.problem import clone

ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


@pytest.fixture(scope="session", autouse=True)
def mlflow_store(tmp_path_factory) -> str:
    """Every test logs to one throw-away SQLite store, never the repo's."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    return uri


def small_params() -> dict:
    """The repository's params.yaml shrunk to seconds: German Credit, a small MLP."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw = copy.deepcopy(raw)
    raw["download"]["dataset"] = "german_credit"
    raw["train"].update(model="tabular_mlp", pool_size=100, n=32)
    raw["train"]["pretrain"].update(epochs=3, max_samples=0, augment=False, lr=0.05)
    raw["unlearn"].update(requests=3, k=2)
    return raw


@pytest.fixture
def params_file(tmp_path) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(small_params()))
    return path


@pytest.fixture(scope="session")
def tiny_problem() -> UnlearningProblem:
    """A trained tiny ConvNet (with batch norm) on synthetic 1x28x28 images:
    θ₀ pretrained on 256 samples, θ fine-tuned on D_u of 24 samples."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(280, 1, 28, 28, generator=gen)
    y = torch.randint(0, 3, (280,), generator=gen)
    x[y == 1, :, :14] += 0.5  # a learnable signal
    x = x.clamp(0, 1)
    model = build_model("convnet", {"width": 2}, (1, 28, 28), 3, [0.5], [0.3])
    fit(model, x[:256], y[:256], OptimParams(epochs=2, lr=0.05, momentum=0.9, batch_size=64), seed=0)
    theta0 = clone(model)
    finetune = OptimParams(epochs=1, lr=1e-2, batch_size=8)
    theta = clone(theta0)
    fit(theta, x[256:], y[256:], finetune, seed=1, batchnorm_eval=True)
    return UnlearningProblem(theta0, theta, x[256:], y[256:], finetune, 1)
