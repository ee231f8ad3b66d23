
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
