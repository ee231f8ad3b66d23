"""MLflow tracking: the only module that imports mlflow.

Stages write their metrics files first and log here second; any tracking
failure becomes a one-line warning, never a lost result. Each run is tagged with
the git commit, the DVC experiment name and a hash of the params the stage read.

A tracking server that is down costs a stage seconds: MLflow's HTTP retries and
timeouts are bounded (`_HTTP_SETTINGS`, a user's own setting wins), and an
http(s) server is probed once per process before any MLflow call; one that does
not answer skips tracking for the rest of the stage, with one warning.
"""

from __future__ import annotations

import os
import socket
import subprocess
import urllib.request
import warnings
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlsplit

EXPERIMENT = "uia-pipe"
_EXPS = (".dvc", "tmp", "exps")

# MLflow 3 lays an experiment out for GenAI (traces, evaluations) or for model
# training (runs, metrics). UIs with an experiment-kind selector keep the choice
# in this tag; untagged, an experiment may open as GenAI.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
# MLflow 3.17's UI ignores the tag and takes the layout from this URL parameter
# (else from the browser's last choice, GenAI at first), so `uia ui` links with it.
_UI_QUERY = "?workflowType=machine_learning"

# MLflow's own settings, bounded: its defaults (7 retries, backoff factor 2, 120 s
# timeout) cost a stage minutes per call when the server is down or hangs.
_HTTP_SETTINGS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
PROBE_TIMEOUT = 2.0  # seconds for the one connect to an http(s) tracking server
_probed: dict[str, str | None] = {}  # uri -> why its server does not answer (None: it answers)
_warned: set[str] = set()  # uris whose dead server was reported


class TrackingWarning(UserWarning):
    """A tracking failure; printed as one line, `warning: <message>` (no file, line or source)."""

    one_line = True


def _one_line_format(message, category, filename, lineno, line=None):
    if getattr(category, "one_line", False):
        return f"warning: {message}\n"
    return _one_line_format.default(message, category, filename, lineno, line)


if not hasattr(warnings.formatwarning, "default"):  # installed once, even if this module is reloaded
    _one_line_format.default = warnings.formatwarning
    warnings.formatwarning = _one_line_format


def _warn(message: str) -> None:
    warnings.warn(" ".join(message.split()), TrackingWarning, stacklevel=3)


def _settings() -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    for key, value in _HTTP_SETTINGS.items():
        os.environ.setdefault(key, value)


def _unreachable(uri: str) -> str | None:
    """Why the http(s) server at `uri` takes no connection (None: it does, or
    `uri` is not http(s), or a proxy stands between). Probed once per uri."""
    if uri in _probed:
        return _probed[uri]
    why = None
    url = urlsplit(uri)
    if url.scheme in ("http", "https") and url.hostname:
        proxied = url.scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(url.hostname)
        if not proxied:
            try:
                port = url.port or (443 if url.scheme == "https" else 80)
                socket.create_connection((url.hostname, port), timeout=PROBE_TIMEOUT).close()
            except (OSError, ValueError) as exc:
                why = (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)) or type(exc).__name__
    _probed[uri] = why
    return why


def _server_answers(uri: str, stage: str) -> bool:
    """False when the tracking server is down, with one warning per process and uri."""
    why = _unreachable(uri)
    if why is not None and uri not in _warned:
        _warned.add(uri)
        url = urlsplit(uri)
        shown = url._replace(netloc=url.netloc.rpartition("@")[2]).geturl()  # no credentials in logs
        _warn(f"MLflow tracking skipped for stage {stage}: no tracking server at {shown} ({why}); "
              "the stage's files are written")
    return why is None


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
    _settings()
    uri = tracking_uri()
    if not _server_answers(uri, stage):
        return None
    try:
        import mlflow

        mlflow.set_tracking_uri(uri)
        _create_experiment(mlflow)
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
        _warn(f"MLflow tracking failed for stage {stage}: {type(exc).__name__}: {exc}")
        return None


def log_summary(params: dict, metrics: dict, params_hash: str, artifacts: Iterable[Path | str] = ()) -> str | None:
    """The experiment's summary run (tags summary=true, dvc_exp_name): every
    param, every headline metric, the figures and the report. Re-running
    evaluate for the same experiment and params replaces its summary run, so
    the MLflow UI shows one comparable row per experiment."""
    _settings()
    uri = tracking_uri()
    if not _server_answers(uri, "summary"):
        return None
    try:
        import mlflow

        mlflow.set_tracking_uri(uri)
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
        _warn(f"MLflow: could not replace an earlier summary run: {type(exc).__name__}: {exc}")
    return log_run("summary", params, metrics, params_hash, artifacts, tags={"summary": "true"})


def _create_experiment(mlflow) -> None:
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        mlflow.create_experiment(EXPERIMENT, artifact_location=(repo_root() / "mlartifacts").as_uri(),
                                 tags=EXPERIMENT_TAGS)


def prepare_store() -> None:
    """Create the store and the experiment now, before experiments that run side by side log to it: two
    first-time migrations of one SQLite store, racing, break it. A failure is a warning."""
    _settings()
    uri = tracking_uri()
    if not _server_answers(uri, "grid"):
        return
    try:
        import mlflow

        mlflow.set_tracking_uri(uri)
        _create_experiment(mlflow)
    except Exception as exc:  # noqa: BLE001  (tracking never stops the work)
        _warn(f"MLflow: could not prepare the store at {uri}: {type(exc).__name__}: {str(exc).splitlines()[0]}")


def _no_store_yet(uri: str) -> bool:
    """A SQLite store that does not exist yet (opening it would create it)."""
    return uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file()


def ui_route() -> str:
    """The MLflow UI's route (the part after the host) to the experiment, in
    the model-training layout; to the list of experiments while the store
    holds none (a SQLite store that does not exist yet is not created)."""
    uri = tracking_uri()
    experiment = None
    _settings()
    if not _no_store_yet(uri) and _unreachable(uri) is None:
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
    _settings()
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return []
    runs = client.search_runs([experiment.experiment_id], "tags.summary = 'true'",
                              order_by=["attributes.start_time DESC"], max_results=50_000)
    return [{"params": dict(r.data.params), "metrics": dict(r.data.metrics),
             "experiment": r.data.tags.get("dvc_exp_name", ""), "start_time": r.info.start_time} for r in runs]
