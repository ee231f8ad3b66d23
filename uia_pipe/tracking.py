"""MLflow tracking: the only module that imports mlflow.

Stages write their metrics files first and log here second; any tracking
failure becomes a warning, never a lost result. Each run is tagged with the git
commit, the DVC experiment name and a hash of the params the stage read.
"""

from __future__ import annotations

import os
import subprocess
import warnings
from pathlib import Path
from typing import Any, Iterable

EXPERIMENT = "uia-pipe"
_EXPS = (".dvc", "tmp", "exps")

# MLflow 3 lays an experiment out for GenAI (traces, evaluations) or for model
# training (runs, metrics). UIs with an experiment-kind selector keep the choice
# in this tag; untagged, an experiment may open as GenAI.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
# MLflow 3.17's UI ignores the tag and takes the layout from this URL parameter
# (else from the browser's last choice, GenAI at first), so `uia ui` links with it.
_UI_QUERY = "?workflowType=machine_learning"


def repo_root(cwd: Path | None = None) -> Path:
    """The repository the run belongs to. `dvc exp run --temp/--queue` runs in a
    copy under <repo>/.dvc/tmp/exps/…; those runs must log to <repo> too."""
    cwd = (cwd or Path.cwd()).resolve()
    parts = cwd.parts
    for i in range(len(parts) - len(_EXPS) + 1):
        if parts[i : i + len(_EXPS)] == _EXPS:
            return Path(*parts[:i])
    return cwd


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def log_run(
    stage: str,
    params: dict,
    metrics: dict,
    params_hash: str,
    artifacts: Iterable[Path | str] = (),
    tags: dict[str, str] | None = None,
) -> str | None:
    """One MLflow run for a stage; returns its id, or None (with a warning) when
    tracking fails. `params` and `metrics` may be nested; non-numeric metrics
    are skipped."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    try:
        import mlflow

        mlflow.set_tracking_uri(tracking_uri())
        if mlflow.get_experiment_by_name(EXPERIMENT) is None:
            mlflow.create_experiment(EXPERIMENT, artifact_location=(repo_root() / "mlartifacts").as_uri(),
                                     tags=EXPERIMENT_TAGS)
        experiment = mlflow.set_experiment(EXPERIMENT)
        for key, value in EXPERIMENT_TAGS.items():
            if key not in experiment.tags:  # made before the tag existed; a kind chosen in the UI stays
                mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, key, value)
        exp_name = os.environ.get("DVC_EXP_NAME", "")
        run_name = f"{exp_name or 'workspace'}:{stage}"
        all_tags = {
            "stage": stage,
            "git_commit": _git_commit(),
            "dvc_exp_name": exp_name,
            "params_hash": params_hash,
            **(tags or {}),
        }
        with mlflow.start_run(run_name=run_name, tags=all_tags) as run:
            flat_params = {k: str(v) for k, v in _flatten(params).items()}
            if flat_params:
                mlflow.log_params(flat_params)
            flat_metrics = {
                k: float(v)
                for k, v in _flatten(metrics).items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)
            }
            if flat_metrics:
                mlflow.log_metrics(flat_metrics)
            for path in artifacts:
                if Path(path).exists():
                    mlflow.log_artifact(str(path))
            return run.info.run_id
    except Exception as exc:  # noqa: BLE001 — tracking must never lose a result
        warnings.warn(f"MLflow tracking failed for stage {stage}: {type(exc).__name__}: {exc}", stacklevel=2)
        return None


def log_summary(params: dict, metrics: dict, params_hash: str, artifacts: Iterable[Path | str] = ()) -> str | None:
    """The experiment's summary run (tags summary=true, dvc_exp_name): every
    param, every headline metric, the figures and the report. Re-running
    evaluate for the same experiment and params replaces its summary run, so
    the MLflow UI shows one comparable row per experiment."""
    try:
        import mlflow

        mlflow.set_tracking_uri(tracking_uri())
        experiment = mlflow.get_experiment_by_name(EXPERIMENT)
        if experiment is not None:
            exp_name = os.environ.get("DVC_EXP_NAME", "")
            client = mlflow.MlflowClient()
            for run in client.search_runs(
                [experiment.experiment_id],
                f"tags.summary = 'true' and tags.dvc_exp_name = '{exp_name}' and tags.params_hash = '{params_hash}'",
            ):
                client.delete_run(run.info.run_id)
    except Exception as exc:  # noqa: BLE001
        warnings.warn(f"MLflow: could not replace an earlier summary run: {type(exc).__name__}: {exc}", stacklevel=2)
    return log_run("summary", params, metrics, params_hash, artifacts, tags={"summary": "true"})


def _no_store_yet(uri: str) -> bool:
    """A SQLite store that does not exist yet (opening it would create it)."""
    return uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file()


def ui_route() -> str:
    """The MLflow UI's route (the part after the host) to the experiment, in
    the model-training layout; to the list of experiments while the store
    holds none (a SQLite store that does not exist yet is not created)."""
    uri = tracking_uri()
    experiment = None
    if not _no_store_yet(uri):
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        try:
            import mlflow

            experiment = mlflow.MlflowClient(tracking_uri=uri).get_experiment_by_name(EXPERIMENT)
        except Exception:  # noqa: BLE001 — an unreadable store still gets the UI, which says why
            experiment = None
    return f"#/experiments/{experiment.experiment_id}{_UI_QUERY}" if experiment else f"#/experiments{_UI_QUERY}"


def summary_runs() -> list[dict]:
    """Every summary run in the store, newest first: {"params", "metrics",
    "experiment", "start_time"} (params as MLflow keeps them: strings). A
    SQLite store that does not exist yet holds none (and is not created)."""
    uri = tracking_uri()
    if _no_store_yet(uri):
        return []
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return []
    runs = client.search_runs([experiment.experiment_id], "tags.summary = 'true'",
                              order_by=["attributes.start_time DESC"], max_results=50_000)
    return [{"params": dict(r.data.params), "metrics": dict(r.data.metrics),
             "experiment": r.data.tags.get("dvc_exp_name", ""), "start_time": r.info.start_time} for r in runs]
