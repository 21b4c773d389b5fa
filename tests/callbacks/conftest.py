"""Fixtures of the training-callback tests: a SQLite tracking store and a clean MLflow state."""

from __future__ import annotations

from collections.abc import Iterator

import mlflow
import pytest
from mlflow import MlflowClient

import mlflow_green


@pytest.fixture
def sqlite_uri(tmp_path, monkeypatch, no_green_environment) -> Iterator[str]:
    """A fresh SQLite store as the tracking URI; autolog off and no run left at the end."""
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow_green.autolog(disable=True)
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


def history(run_id: str, key: str, uri: str | None = None) -> list[tuple[int, float]]:
    """``(step, value)`` of every point of a metric, by step."""
    points = MlflowClient(uri).get_metric_history(run_id, key)
    return sorted((p.step, p.value) for p in points)
