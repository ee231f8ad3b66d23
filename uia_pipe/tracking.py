"""MLflow tracking: the only module that imports mlflow.

Stages write their metrics files first and log here second; any tracking
failure becomes a one-line warning, never a lost result. Each run is tagged with
the git commit, the DVC experiment name and a hash of the params the stage read.

The tree: one parent run per pipeline run, named after the DVC experiment (or
"workspace"), tagged pipeline=true, dvc_exp_name, git_commit and params_hash (of
the whole params file); each stage's run nested under it (mlflow.parentRunId),
named "<experiment>:<stage>", from the stage's start (recorded by `stage`) to its
end. Stages run as separate processes: each finds the parent by those tags, the
first makes it. Evaluate's summary (every param, the headline metrics, the
report) is the parent's content, tagged summary=true.

A tracking server that is down costs a stage seconds: MLflow's HTTP retries and
timeouts are bounded (`_HTTP_SETTINGS`, a user's own setting wins), and an
http(s) server is probed once per process before any MLflow call; one that does
not answer skips tracking for the rest of the stage, with one warning.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import time
import urllib.request
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator
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


# What the stage now running began with: set by `stage` (stages/common.py's `clean_errors` wraps each
# command in it), read when its run is logged; cleared when the command ends.
_stage: dict[str, Any] = {"started": None, "params_file": None}


@contextlib.contextmanager
def stage(params_file: Path | str | None = None, started: float | None = None) -> Iterator[None]:
    """Within: a stage that started now (its run's start time) and reads `params_file` (whose whole
    hash, with the experiment name and the git commit, keys its pipeline run's parent run)."""
    before = dict(_stage)
    _stage["started"] = time.time() if started is None else started
    _stage["params_file"] = Path(params_file) if params_file is not None else None
    try:
        yield
    finally:
        _stage.update(before)


def _pipeline_hash(fallback: str) -> str:
    """The hash of the whole params file the stage reads (what evaluate's summary hashes too);
    `fallback` where no stage recorded one (a call from outside a stage)."""
    path = _stage["params_file"]
    if path is not None and Path(path).is_file():
        from uia_pipe.config import read_params, section_hash

        return section_hash(read_params(path))
    return fallback


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


def _numeric(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in _flatten(metrics).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _log_content(client, run_id: str, params: dict, metrics: dict, artifacts: Iterable[Path | str]) -> None:
    from mlflow.entities import Metric, Param

    now = _ms(time.time())
    flat_params = [Param(k, str(v)[:6000]) for k, v in _flatten(params).items()]
    flat_metrics = [Metric(k, v, now, 0) for k, v in _numeric(metrics).items()]
    for i in range(0, max(len(flat_params), len(flat_metrics)), 100):  # MLflow's batch limit: 100 params
        client.log_batch(run_id, metrics=flat_metrics[i : i + 100], params=flat_params[i : i + 100])
    for path in artifacts:
        if Path(path).exists():
            client.log_artifact(run_id, str(path))


def _experiment(mlflow):
    _create_experiment(mlflow)
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    for key, value in EXPERIMENT_TAGS.items():
        if key not in experiment.tags:  # made before the tag existed; a kind chosen in the UI stays
            mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, key, value)
    return experiment


def _parent(client, experiment_id: str, exp_name: str, commit: str, pipeline_hash: str, started_ms: int) -> str:
    """The pipeline run's parent run: found by (experiment name, git commit, hash of the whole params)
    in its tags, which every stage of one pipeline run computes alike; made by the first stage."""
    found = client.search_runs(
        [experiment_id],
        f"tags.pipeline = 'true' and tags.dvc_exp_name = '{exp_name}' and tags.git_commit = '{commit}' "
        f"and tags.params_hash = '{pipeline_hash}'",
        order_by=["attributes.start_time DESC"], max_results=1,
    )
    if found:
        return found[0].info.run_id
    tags = {"pipeline": "true", "dvc_exp_name": exp_name, "git_commit": commit, "params_hash": pipeline_hash}
    return client.create_run(experiment_id, start_time=started_ms, tags=tags,
                             run_name=exp_name or "workspace").info.run_id


def log_run(
    stage: str,
    params: dict,
    metrics: dict,
    params_hash: str,
    artifacts: Iterable[Path | str] = (),
    tags: dict[str, str] | None = None,
    started: float | None = None,
    summary: bool = False,
    dataset: dict | None = None,
    dataset_dir: Path | str | None = None,
) -> str | None:
    """One MLflow run for a stage, nested under its pipeline run's parent (named after the DVC
    experiment, or "workspace"), from the stage's start (`started`, else what `stage_started`
    recorded, else now) to now; returns its id, or None (with a warning) when tracking fails.
    `params` and `metrics` may be nested; non-numeric metrics are skipped. With `summary`, the
    params, metrics and artifacts go on the parent, tagged summary=true, and the stage's run
    holds its timing only. `dataset` (a dataset card: name, checksum, source), read from `dataset_dir`,
    is logged as a dataset input of the run and of the parent."""
    _settings()
    uri = tracking_uri()
    if not _server_answers(uri, stage):
        return None
    ended = time.time()
    started = started if started is not None else _stage["started"] if _stage["started"] is not None else ended
    try:
        import mlflow

        mlflow.set_tracking_uri(uri)
        client = mlflow.MlflowClient()
        experiment_id = _experiment(mlflow).experiment_id
        exp_name = os.environ.get("DVC_EXP_NAME", "")
        commit = _git_commit()
        pipeline_hash = _pipeline_hash(params_hash)
        parent = _parent(client, experiment_id, exp_name, commit, pipeline_hash, _ms(started))
        all_tags = {
            "stage": stage,
            "git_commit": commit,
            "dvc_exp_name": exp_name,
            "params_hash": params_hash,
            "mlflow.parentRunId": parent,
            **(tags or {}),
        }
        run_id = client.create_run(experiment_id, start_time=_ms(started), tags=all_tags,
                                   run_name=f"{exp_name or 'workspace'}:{stage}").info.run_id
        if summary:
            _log_content(client, parent, params, metrics, artifacts)
            _mark_summary(client, experiment_id, parent, exp_name, pipeline_hash)
        else:
            _log_content(client, run_id, params, metrics, artifacts)
        if dataset is not None:
            _log_dataset(client, [run_id, parent], dataset, dataset_dir, stage)
        client.set_terminated(run_id, "FINISHED", end_time=_ms(ended))
        parent_end = client.get_run(parent).info.end_time or 0
        client.set_terminated(parent, "FINISHED", end_time=max(_ms(ended), parent_end))  # ends with its last stage
        return run_id
    except Exception as exc:  # noqa: BLE001 — tracking must never lose a result
        _warn(f"MLflow tracking failed for stage {stage}: {type(exc).__name__}: {exc}")
        return None


_URL = re.compile(r"https?://[^\s,;()]+")


def _log_dataset(client, run_ids: list[str], card: dict, folder: Path | str | None, context: str) -> None:
    """The dataset card as an MLflow dataset input (metadata only: no data is uploaded): its name, its
    checksum as the digest, its source (the first http(s) URL of the card's source, else the local
    folder it was read from) and, as the profile, the card's source text, licence and sizes."""
    import json

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.http_dataset_source import HTTPDatasetSource
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag

    class CardDataset(MetaDataset):
        def __init__(self, source, name, digest, profile):
            self._profile = profile
            super().__init__(source=source, name=name, digest=digest)

        @property
        def profile(self):
            return self._profile

        def to_dict(self):
            return {**super().to_dict(), "profile": json.dumps(self._profile)}

    text = str(card.get("source", ""))
    url = _URL.search(text)
    if url:
        source = HTTPDatasetSource(url.group(0).rstrip("."))
    else:
        with warnings.catch_warnings():  # "can be interpreted in multiple ways": both are the local source
            warnings.simplefilter("ignore")
            source = resolve_dataset_source(str(Path(folder or ".").resolve()))
    profile = {k: card[k] for k in ("source", "licence", "kind", "n_train", "n_test", "num_classes") if k in card}
    entity = CardDataset(source, str(card.get("name", "dataset")), str(card.get("checksum", ""))[:36] or None,
                         profile)._to_mlflow_entity()
    inputs = [DatasetInput(entity, tags=[InputTag("mlflow.data.context", context)])]
    for run_id in run_ids:
        client.log_inputs(run_id, datasets=inputs)


def _mark_summary(client, experiment_id: str, parent: str, exp_name: str, pipeline_hash: str) -> None:
    """Tag `parent` summary=true, the one summary run of its experiment and params: an earlier one
    (another commit's parent, or a summary run of the flat layout before parents) stops being one."""
    for run in client.search_runs(
        [experiment_id],
        f"tags.summary = 'true' and tags.dvc_exp_name = '{exp_name}' and tags.params_hash = '{pipeline_hash}'",
    ):
        if run.info.run_id == parent:
            continue
        if run.data.tags.get("stage") == "summary":
            client.delete_run(run.info.run_id)
        else:
            client.delete_tag(run.info.run_id, "summary")
    client.set_tag(parent, "summary", "true")


def log_summary(params: dict, metrics: dict, params_hash: str, artifacts: Iterable[Path | str] = ()) -> str | None:
    """The experiment's summary (evaluate's): every param, every headline metric, the figures and the
    report, on the pipeline run's parent run (tagged summary=true), so that selecting parents in the
    MLflow UI compares experiments; evaluate's own nested run holds its timing. Returns the parent's id.
    Re-running evaluate for the same experiment and params leaves one summary run: the newest."""
    run_id = log_run("evaluate", params, metrics, params_hash, artifacts, summary=True)
    if run_id is None:
        return None
    try:
        import mlflow

        return mlflow.MlflowClient(tracking_uri=tracking_uri()).get_run(run_id).data.tags["mlflow.parentRunId"]
    except Exception as exc:  # noqa: BLE001
        _warn(f"MLflow: could not read the summary's parent run: {type(exc).__name__}: {exc}")
        return None


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
