"""Training-callback test helpers (the SQLite store: tests/conftest.py's ``sqlite_uri``)."""

from __future__ import annotations

from mlflow import MlflowClient


def history(run_id: str, key: str, uri: str | None = None) -> list[tuple[int, float]]:
    """``(step, value)`` of every point of a metric, by step."""
    points = MlflowClient(uri).get_metric_history(run_id, key)
    return sorted((p.step, p.value) for p in points)
