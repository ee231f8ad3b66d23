"""Shared fixtures: a tiny trained setting, a shrunken params dict, and one
MLflow store per test session (a fresh store costs seconds of migrations)."""

from __future__ import annotations

import ast
import copy
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from uia_pipe.config import OptimParams
from uia_pipe.models import init_model
from uia_pipe.training import fit
from uia_pipe.unlearning.problem import Pretraining, UnlearningProblem
from uia_pipe.models import clone

ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


@pytest.fixture(scope="session", autouse=True)
def mlflow_store(tmp_path_factory) -> str:
    """Every test logs to one throw-away SQLite store, never the repo's."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    return uri


def committed_params_text() -> str:
    """params.yaml as committed (HEAD): tests read the defaults, never whatever experiment
    `dvc exp run -S ...` left in the workspace (outside a git checkout: the file itself)."""
    try:
        return subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return (ROOT / "params.yaml").read_text()


def committed_params() -> dict:
    return yaml.safe_load(committed_params_text())


def small_params() -> dict:
    """The committed params.yaml shrunk to seconds: German Credit, a small MLP."""
    raw = copy.deepcopy(committed_params())
    raw["download"]["dataset"] = "german_credit"
    raw["train"].update(model="tabular_mlp", pool_size=100, n=32)
    raw["train"]["pretrain"].update(epochs=3, max_samples=0, augment=False, lr=0.05)
    raw["unlearn"].update(requests=3, k=2)
    raw["attack"]["feature_recovery"].update(iterations=60, restarts=1, prune_after=0)
    raw["attack"]["label_inference"]["probes"].update(strategy="auxiliary", per_class=3)
    raw["attack"]["membership"].update(shadows=30, targets=20, lira_shadows=2, bootstrap=100, trees=30)
    raw["attack"]["compound"].update(candidates=20)  # the pool holds 100
    raw["defend"].update(max_requests=2, attack_iterations=30)
    raw["attack"]["access"].update(max_requests=1, iterations=20, levels=[
        "layers:1", "precision:int8_channel", "staleness:2", "knowledge:no_pretrained", "queries:2", "output:label"])
    for name, strengths in {"noise": [0.0, 1.0], "prune": [0.0, 0.5], "finetune": [0, 1],
                            "noisy_unlearning": [0.0, 1.0]}.items():
        raw["defend"][name]["strengths"] = strengths
    return raw


@pytest.fixture
def params_file(tmp_path) -> Path:
    raw = small_params()
    raw["download"]["cache_dir"] = str(tmp_path / "cache")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


TINY_SPEC = {"model": "convnet", "config": {"width": 2}, "input_shape": [1, 28, 28], "num_classes": 3,
             "mean": [0.5], "std": [0.3]}


def tiny_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic 1x28x28 images in [0,1] of 3 classes with a learnable signal."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 28, 28, generator=gen)
    y = torch.randint(0, 3, (n,), generator=gen)
    x[y == 1, :, :14] += 0.5
    x[y == 2, :, :, :14] -= 0.5
    return x.clamp(0, 1), y


@pytest.fixture(scope="session")
def tiny_problem() -> UnlearningProblem:
    """The paper's protocol at toy scale: a ConvNet (width 2, batch norm)
    pretrained on 256 synthetic images into θ₀ (96% accuracy on fresh ones), fine-tuned on D_u of 24 into θ."""
    return _protocol(TINY_SPEC, *tiny_data(280, seed=0))


def _protocol(spec: dict, x: torch.Tensor, y: torch.Tensor) -> UnlearningProblem:
    """θ₀ pretrained on the first 256 samples, θ fine-tuned from it on the other 24 (D_u), as the train stage does."""
    pretrain = OptimParams(epochs=5, lr=0.05, momentum=0.9, batch_size=64)
    model = init_model(spec, seed=0)
    fit(model, x[:256], y[:256], pretrain, seed=0)
    theta0 = clone(model)
    finetune = OptimParams(epochs=1, lr=1e-3, batch_size=8)
    theta = clone(theta0)
    fit(theta, x[256:], y[256:], finetune, seed=1, batchnorm_eval=True)
    record = Pretraining(init=lambda: init_model(spec, seed=0), x=x[:256], y=y[:256], settings=pretrain, seed=0)
    return UnlearningProblem(theta0, theta, x[256:], y[256:], finetune, 1, record)


MLP_SPEC = {"model": "mlp", "config": {"hidden": [64]}, "input_shape": [1, 28, 28], "num_classes": 3,
            "mean": [0.5], "std": [0.3], "dtype": "float64"}


@pytest.fixture(scope="session")
def mlp_problem() -> UnlearningProblem:
    """tiny_problem's protocol and data in float64 on an MLP (one hidden layer of 64, no batch norm).

    Where a test's verdict rests on what the trained toy ends up doing (which samples a method flips, how far
    it moves them), tiny_problem is the wrong toy: its float32 width-2 ConvNet trains to a visibly different
    model from one CPU to the next (last-bit rounding differs between CPUs and the narrow network amplifies
    it). This one is the same model on every CPU: float64 keeps rounding differences near 1e-16, and the toy
    is tame (a relative 1e-6 perturbation of its initial weights moves the numbers the tests read in the
    sixth digit and changes no verdict, nor does 1e-4). θ₀ pretrained on 256 images, θ fine-tuned from it on
    D_u of 24; θ is right on 23 of D_u (on its first six, the forget set the tests use) and on 97.5% of 200
    fresh images."""
    x, y = tiny_data(280, seed=0)
    return _protocol(MLP_SPEC, x.double(), y)


def feature_problem(features: torch.Tensor, labels: torch.Tensor, seed: int = 1) -> UnlearningProblem:
    """An unlearning problem whose θ₀ (and θ) is a float64 linear classifier, so its penultimate features are
    `features` themselves (the (n, d) inputs, float64): D_u = (features, labels), finetune_seed `seed`."""
    d = features.shape[1]
    spec = {"model": "linear", "config": {}, "input_shape": [d], "num_classes": int(labels.max()) + 1,
            "mean": [0.0] * d, "std": [1.0] * d, "dtype": "float64"}
    model = init_model(spec, seed=0)
    return UnlearningProblem(model, model, features.to(torch.float64), labels, OptimParams(), seed)


def _outputs_of_a_run(rel: str) -> bool:
    """What a run writes (dvc.lock, metrics/, reports/): a copy starts without them."""
    return rel == "dvc.lock" or rel.startswith(("metrics/", "reports/"))


def repo_copy(tmp_path: Path, *, keep: Callable[[str], bool] = lambda rel: not _outputs_of_a_run(rel),
              params: dict | None = None, commit: bool = True,
              mlflow_uri: str | None = None) -> tuple[Path, dict[str, str]]:
    """The repository's files as git sees them (tracked, and new ones not ignored) for which `keep(path)`
    holds, copied into a fresh git repository at tmp_path / "repo"; `params` (if given) written as its
    params.yaml; committed unless `commit` is false. Returns the copy and the environment to run git, dvc
    and the stages in there: this interpreter's bin first on PATH, a git identity, no DVC analytics and
    the MLflow store `mlflow_uri` (the session's by default)."""
    repo = tmp_path / "repo"
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    for rel in filter(None, listed.split("\0")):
        if (ROOT / rel).is_file() and keep(rel):
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, repo / rel)
    if params is not None:
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "GIT_AUTHOR_NAME": "uia", "GIT_AUTHOR_EMAIL": "uia@localhost",
        "GIT_COMMITTER_NAME": "uia", "GIT_COMMITTER_EMAIL": "uia@localhost",
        "DVC_NO_ANALYTICS": "1",
        "MLFLOW_TRACKING_URI": mlflow_uri or os.environ["MLFLOW_TRACKING_URI"],
    }
    commands = [["git", "init", "-q"]] + ([["git", "add", "-A"], ["git", "commit", "-qm", "repo copy"]] if commit else [])
    for cmd in commands:
        done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
    return repo, env


def invoke(*args: str, code: int = 0):
    """A stage through the CLI, in process; asserts its exit code (with the output and traceback if not)."""
    import traceback

    from typer.testing import CliRunner

    from stages.cli import app

    result = CliRunner().invoke(app, list(args))
    trace = "".join(traceback.format_exception(*result.exc_info)) if result.exc_info and code == 0 else ""
    assert result.exit_code == code, result.output + result.stderr + trace
    return result


def run_until_unlearned(params: Path, t: Path) -> list[str]:
    """download → train → unlearn with `params`, every file under `t`; the options the later stages share."""
    p = str(params)
    invoke("download", "--params", p, "--out", str(t / "data"))
    invoke("train", "--params", p, "--data", str(t / "data"), "--out", str(t / "train"),
           "--metrics", str(t / "train.json"), "--curve", str(t / "curve.csv"))
    invoke("unlearn", "--params", p, "--data", str(t / "data"), "--trained", str(t / "train"),
           "--out", str(t / "unlearn"), "--metrics", str(t / "unlearn.json"), "--details", str(t / "unlearn.csv"))
    return ["--params", p, "--data", str(t / "data"), "--trained", str(t / "train"), "--unlearned", str(t / "unlearn")]


def run_all_stages(params: Path, t: Path) -> None:
    """download → train → unlearn → attack → defend → access → evaluate with `params`, every file under `t`."""
    p = str(params)
    common = run_until_unlearned(params, t)
    invoke("attack", *common, "--out", str(t / "attack"), "--metrics", str(t / "attack.json"),
           "--details", str(t / "attack.csv"), "--methods", str(t / "methods.csv"), "--plots", str(t / "plots"))
    invoke("defend", *common, "--metrics", str(t / "defend.json"), "--details", str(t / "defend.csv"))
    invoke("access", *common, "--metrics", str(t / "access.json"), "--details", str(t / "access.csv"))
    invoke("evaluate", "--params", p, "--data", str(t / "data"), "--train-metrics", str(t / "train.json"),
           "--train-curve", str(t / "curve.csv"), "--unlearn-details", str(t / "unlearn.csv"),
           "--attack-metrics", str(t / "attack.json"), "--attack-details", str(t / "attack.csv"),
           "--attack-methods", str(t / "methods.csv"), "--attack-out", str(t / "attack"),
           "--defend-metrics", str(t / "defend.json"), "--defend-details", str(t / "defend.csv"), "--access-metrics", str(t / "access.json"),
           "--metrics", str(t / "evaluate.json"),
           "--reports", str(t / "reports"))


def assert_check_fails_in_one_line(tmp_path: Path, raw: dict, expected: str) -> None:
    """`uia check` on params `raw` exits 2 with one line, "error: ..." naming `expected`, and no traceback."""
    from typer.testing import CliRunner

    from stages.cli import app

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(app, ["check", "--params", str(params)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr
    assert "Traceback" not in result.output


def run_ok(cmd: list[str], cwd: Path, env: dict, timeout: int = 1200) -> str:
    """A command in a repository copy (`repo_copy`); its output, or a failure showing the output's end."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout + proc.stderr


def imported(path: Path) -> set[str]:
    """Every module name the Python file `path` (under ROOT) imports, anywhere in it (functions too), relative
    imports resolved: `from a import b` gives both a and a.b, whichever of them is a module."""
    package = ".".join(path.relative_to(ROOT).parts[:-1])  # a module's package; a package's __init__: itself
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            out |= {base} | {f"{base}.{a.name}" for a in node.names}
    return out
