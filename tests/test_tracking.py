
from uia_pipe.tracking import repo_root, tracking_uri


def test_queued_runs_in_temporary_copies_log_to_the_repository(tmp_path, monkeypatch):
    copy = tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "tmpabc123"
    copy.mkdir(parents=True)
    assert repo_root(copy) == tmp_path / "repo"
    assert repo_root(tmp_path) == tmp_path
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(copy)
    assert tracking_uri() == f"sqlite:///{(tmp_path / 'repo').resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere.db")
    assert tracking_uri() == "sqlite:////elsewhere.db"


def test_seeds_command_gives_intervals_over_seeds_from_summary_runs(tmp_path, monkeypatch):
    import math

    import pandas as pd
    import pytest
    from scipy import stats as sps
    from typer.testing import CliRunner

    from stages.cli import app
    from uia_pipe.tracking import log_summary

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'seeds.db'}")
    result = CliRunner().invoke(app, ["seeds"])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "no summary run" in result.stderr

    psnr = {"exact": [24.0, 26.0, 28.0], "approx": [30.0, 31.0, 35.0]}
    for method, values in psnr.items():
        for seed, value in enumerate(values):
            params = {"base": {"seed": seed, "device": "cpu"}, "unlearn": {"method": method}}
            log_summary(params, {"feature_recovery": {"psnr_mean": value}}, f"{method}{seed}")
    # a rerun of seed 0 replaces nothing (other hash) but is newer: the newest run per seed counts
    log_summary({"base": {"seed": 0, "device": "cpu"}, "unlearn": {"method": "exact"}},
                {"feature_recovery": {"psnr_mean": 22.0}}, "exact0-again")
    psnr["exact"][0] = 22.0

    out = tmp_path / "seeds.csv"
    result = CliRunner().invoke(app, ["seeds", "--metric", "feature_recovery.psnr_mean", "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out).set_index("setting")
    assert set(table.index) == {"unlearn.method=exact", "unlearn.method=approx"}
    for method, values in psnr.items():
        row = table.loc[f"unlearn.method={method}"]
        mean = sum(values) / 3
        half = sps.t.ppf(0.975, 2) * math.sqrt(sum((v - mean) ** 2 for v in values) / 2) / math.sqrt(3)
        assert row["seeds"] == 3 and row["mean"] == pytest.approx(mean)
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((mean - half, mean + half))
    assert "unlearn.method=approx | feature_recovery.psnr_mean | 3 | 32" in result.output


def test_the_experiment_opens_in_the_model_training_layout(tmp_path, monkeypatch):
    import mlflow

    from uia_pipe.tracking import EXPERIMENT, log_run, ui_route

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'fresh.db'}")
    assert ui_route() == "#/experiments?workflowType=machine_learning"  # no store yet, and none made
    assert not (tmp_path / "fresh.db").exists()

    def kind() -> str | None:
        return mlflow.MlflowClient().get_experiment_by_name(EXPERIMENT).tags.get("mlflow.experimentKind")

    assert log_run("train", {"base": {"seed": 0}}, {"acc": 0.5}, "h0") is not None
    assert kind() == "custom_model_development"
    experiment_id = mlflow.MlflowClient().get_experiment_by_name(EXPERIMENT).experiment_id
    assert ui_route() == f"#/experiments/{experiment_id}?workflowType=machine_learning"
    # An experiment made before the tag existed gets it with its next run.
    mlflow.MlflowClient().delete_experiment_tag(experiment_id, "mlflow.experimentKind")
    assert kind() is None
    log_run("train", {"base": {"seed": 0}}, {"acc": 0.5}, "h0")
    assert kind() == "custom_model_development"


# A tracking server that is down costs a stage seconds, and one warning line.

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from uia_pipe import tracking

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def closed_port_uri(monkeypatch) -> str:
    """An http tracking URI at a local port nobody listens on; the per-URI probe
    cache starts empty and MLflow's HTTP settings unset (both restored after)."""
    monkeypatch.setattr(tracking, "_probed", {})
    monkeypatch.setattr(tracking, "_warned", set())
    for key in tracking._HTTP_SETTINGS:
        monkeypatch.setenv(key, "")  # recorded, so that what tracking sets is undone
        monkeypatch.delenv(key)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def test_a_dead_tracking_server_is_probed_once_and_warned_in_one_line(closed_port_uri, monkeypatch):
    from uia_pipe.tracking import log_run, log_summary

    probes = []
    connect = socket.create_connection
    monkeypatch.setattr(tracking.socket, "create_connection", lambda *a, **k: probes.append(a) or connect(*a, **k))
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "5")  # a user's own setting wins
    with pytest.warns(tracking.TrackingWarning) as caught:
        start = time.monotonic()
        assert log_run("train", {"base": {"seed": 0}}, {"acc": 0.5}, "h0") is None
        assert time.monotonic() - start < 10
        start = time.monotonic()
        assert log_run("train", {"base": {"seed": 0}}, {"acc": 0.5}, "h0") is None
        assert log_summary({"base": {"seed": 0}}, {"acc": 0.5}, "h0") is None
        assert time.monotonic() - start < 1
    assert len(probes) == 1
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "\n" not in message and closed_port_uri in message and "stage train" in message
    line = tracking._one_line_format(caught[0].message, caught[0].category, caught[0].filename, caught[0].lineno)
    assert line == f"warning: {message}\n"
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "5"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == tracking._HTTP_SETTINGS["MLFLOW_HTTP_REQUEST_TIMEOUT"]


def test_only_http_servers_that_take_no_connection_are_skipped(closed_port_uri, tmp_path):
    assert tracking._unreachable(closed_port_uri) == "Connection refused"
    assert tracking._unreachable(f"sqlite:///{tmp_path / 'x.db'}") is None
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert tracking._unreachable(f"http://127.0.0.1:{server.getsockname()[1]}/prefix") is None


def _download(tmp_path: Path, params_file: Path, uri: str, out: str) -> tuple[float, subprocess.CompletedProcess]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS" and not k.startswith("MLFLOW_HTTP_")}
    env["MLFLOW_TRACKING_URI"] = uri
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "stages.cli", "download", "--params", str(params_file),
                           "--out", str(tmp_path / out)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    return time.monotonic() - start, done


@pytest.mark.slow
def test_a_stage_with_a_dead_tracking_server_takes_seconds_and_warns_once(closed_port_uri, tmp_path, params_file,
                                                                          mlflow_store):
    normal, done = _download(tmp_path, params_file, mlflow_store, "normal")
    assert done.returncode == 0, done.stderr
    elapsed, done = _download(tmp_path, params_file, closed_port_uri, "d")
    assert done.returncode == 0, done.stderr
    assert elapsed < normal + 30, (elapsed, normal)
    assert (tmp_path / "d" / "card.json").is_file() and (tmp_path / "d" / "tensors.safetensors").is_file()
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: MLflow tracking skipped for stage download"), lines
    assert closed_port_uri in lines[0]


# The MLflow tree: one parent run per pipeline run (the workspace or a DVC experiment), each stage's run
# nested under it with the stage's real start and end, the summary on the parent.


def _stage_run(stage: str, params_file: Path, body_s: float = 0.0, summary: bool = False) -> str | None:
    """What a stage does, in process: starts (clean_errors records the time and params file), works,
    logs its run."""
    with tracking.stage(params_file):
        time.sleep(body_s)
        if summary:
            return tracking.log_summary({"base": {"seed": 0}, "train": {"n": 8}}, {"acc": 0.9}, "whole")
        return tracking.log_run(stage, {stage: {"x": 1}}, {"acc": 0.5}, f"h-{stage}")


def test_stages_of_a_pipeline_run_nest_under_one_parent_per_experiment(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'tree.db'}")
    params_file = tmp_path / "params.yaml"
    params_file.write_text("base:\n  seed: 0\ntrain:\n  n: 8\n")
    client = mlflow.MlflowClient(tracking_uri=tracking.tracking_uri())

    monkeypatch.setenv("DVC_EXP_NAME", "exp-a")
    train = client.get_run(_stage_run("train", params_file, body_s=0.2))
    unlearn = client.get_run(_stage_run("unlearn", params_file))
    parent_id = train.data.tags["mlflow.parentRunId"]
    assert unlearn.data.tags["mlflow.parentRunId"] == parent_id
    parent = client.get_run(parent_id)
    assert parent.info.run_name == "exp-a" and parent.data.tags["dvc_exp_name"] == "exp-a"
    assert "mlflow.parentRunId" not in parent.data.tags
    assert parent.data.tags["git_commit"] == train.data.tags["git_commit"]
    assert train.data.tags["stage"] == "train" and train.data.tags["params_hash"] == "h-train"
    # the run spans the stage's body, not the ~100 ms of logging after it
    assert train.info.end_time - train.info.start_time >= 200
    assert parent.info.start_time <= train.info.start_time and parent.info.end_time >= unlearn.info.end_time
    assert parent.info.status == train.info.status == "FINISHED"

    monkeypatch.setenv("DVC_EXP_NAME", "exp-b")  # a second experiment: its own parent
    other = client.get_run(_stage_run("train", params_file))
    assert other.data.tags["mlflow.parentRunId"] != parent_id
    assert client.get_run(other.data.tags["mlflow.parentRunId"]).info.run_name == "exp-b"

    monkeypatch.delenv("DVC_EXP_NAME")  # the workspace
    workspace = client.get_run(_stage_run("train", params_file))
    assert client.get_run(workspace.data.tags["mlflow.parentRunId"]).info.run_name == "workspace"
    params_file.write_text("base:\n  seed: 1\ntrain:\n  n: 8\n")  # other params: another pipeline run
    changed = client.get_run(_stage_run("train", params_file))
    assert changed.data.tags["mlflow.parentRunId"] != workspace.data.tags["mlflow.parentRunId"]


def test_the_summary_is_the_parent_once_per_pipeline_run(tmp_path, monkeypatch):
    import mlflow

    from uia_pipe.config import read_params, section_hash

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'sum.db'}")
    monkeypatch.setenv("DVC_EXP_NAME", "exp-a")
    params_file = tmp_path / "params.yaml"
    params_file.write_text("base:\n  seed: 0\ntrain:\n  n: 8\n")
    client = mlflow.MlflowClient(tracking_uri=tracking.tracking_uri())

    train = client.get_run(_stage_run("train", params_file))
    summary = _stage_run("evaluate", params_file, body_s=0.2, summary=True)
    assert summary == train.data.tags["mlflow.parentRunId"]
    parent = client.get_run(summary)
    assert parent.data.tags["summary"] == "true"
    assert parent.data.tags["params_hash"] == section_hash(read_params(params_file))
    assert parent.data.params == {"base.seed": "0", "train.n": "8"} and parent.data.metrics == {"acc": 0.9}
    evaluate = client.search_runs([parent.info.experiment_id], "tags.stage = 'evaluate'")
    assert len(evaluate) == 1 and evaluate[0].data.tags["mlflow.parentRunId"] == summary
    assert evaluate[0].info.end_time - evaluate[0].info.start_time >= 200 and not evaluate[0].data.metrics

    assert _stage_run("evaluate", params_file, summary=True) == summary  # evaluate rerun: the same parent
    runs = tracking.summary_runs()
    assert len(runs) == 1 and runs[0]["experiment"] == "exp-a" and runs[0]["metrics"] == {"acc": 0.9}
    assert runs[0]["params"]["train.n"] == "8"

    monkeypatch.setenv("DVC_EXP_NAME", "exp-b")
    _stage_run("evaluate", params_file, summary=True)
    assert sorted(r["experiment"] for r in tracking.summary_runs()) == ["exp-a", "exp-b"]
    summaries = client.search_runs([parent.info.experiment_id], "tags.summary = 'true'")
    assert all("mlflow.parentRunId" not in r.data.tags for r in summaries)


def test_the_dataset_is_an_input_of_the_train_run_and_its_parent(tmp_path, monkeypatch):
    import json

    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'data.db'}")
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    params_file = tmp_path / "params.yaml"
    params_file.write_text("base:\n  seed: 0\n")
    client = mlflow.MlflowClient(tracking_uri=tracking.tracking_uri())
    card = {"name": "digits", "checksum": "ab" * 32, "n_train": 10, "n_test": 5, "licence": "CC BY 4.0",
            "source": "UCI repository, https://archive.ics.uci.edu/dataset/80/x (vendored)"}
    local = {**card, "name": "csv", "source": str(tmp_path / "my.csv")}
    for c in (card, card, local):  # a rerun logs the same input again
        with tracking.stage(params_file):
            run_id = tracking.log_run("train", {"train": {"n": 1}}, {"acc": 0.5}, "h", dataset=c,
                                      dataset_dir=tmp_path / "dataset")
        assert run_id is not None
    run = client.get_run(run_id)
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    [mine] = run.inputs.dataset_inputs
    assert mine.dataset.name == "csv" and mine.dataset.source_type == "local"
    assert json.loads(mine.dataset.source)["uri"] == str((tmp_path / "dataset").resolve())
    named = {(i.dataset.name, i.dataset.digest, i.dataset.source_type) for i in parent.inputs.dataset_inputs}
    assert named == {("digits", card["checksum"][:36], "http"), ("csv", card["checksum"][:36], "local")}
    http = next(i.dataset for i in parent.inputs.dataset_inputs if i.dataset.name == "digits")
    assert json.loads(http.source)["url"] == "https://archive.ics.uci.edu/dataset/80/x"
    assert json.loads(http.profile)["licence"] == "CC BY 4.0"
    assert [t.value for t in mine.tags if t.key == "mlflow.data.context"] == ["train"]
