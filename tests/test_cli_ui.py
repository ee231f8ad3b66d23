"""`uia ui` starts MLflow through the interpreter that runs uia, so the command
works from .venv/bin/uia without the environment on PATH."""

from __future__ import annotations

import os
import sys

from typer.testing import CliRunner

from stages.cli import app


def test_ui_runs_this_interpreters_mlflow(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'ui.db'}")
    monkeypatch.setenv("PATH", str(tmp_path))  # no mlflow, no python on PATH
    calls = []
    monkeypatch.setattr(os, "execv", lambda path, argv: calls.append((path, argv)))
    result = CliRunner().invoke(app, ["ui", "--port", "5123"])
    assert result.exit_code == 0, result.output
    ((path, argv),) = calls
    assert path == sys.executable and argv[:3] == [sys.executable, "-m", "mlflow"]
    assert argv[3:] == ["ui", "--backend-store-uri", f"sqlite:///{tmp_path / 'ui.db'}",
                        "--host", "127.0.0.1", "--port", "5123"]
    assert "http://127.0.0.1:5123/#/experiments?workflowType=machine_learning" in result.output
