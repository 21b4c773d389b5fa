"""The spool: reports that could not reach the tracking server, and ``sync()`` uploading them.

Against a real MLflow SQLite store; the end-to-end path (a server that goes down at
the end of a run, then ``sync()``) is in test_autolog.py.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, RunTag

import mlflow_green
from mlflow_green import spool
from mlflow_green.report import final_metrics, tags
from tests.mlflow_server import free_port, sqlite_db_copy


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A live SQLite store with one run, and a spool folder of the test's own."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_GREEN_SPOOL_DIR", str(tmp_path / "spool"))
    uri = f"sqlite:///{sqlite_db_copy(tmp_path / 'mlflow.db')}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    exp = client.create_experiment("spool", artifact_location=(tmp_path / "art").as_uri())
    run = client.create_run(exp)
    try:
        yield uri, client, run.info.run_id
    finally:
        mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def report():
    with mlflow_green.track("spooled", country="FRA", sample_interval_s=0.05) as t:
        end = time.perf_counter() + 0.25
        while time.perf_counter() < end:
            sum(i * i for i in range(1000))
    assert t.report is not None and t.report.timeline
    return t.report


def _payload(report):
    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, int(report.duration_s)) for k, v in final_metrics(report).items()]
    return metrics, [RunTag(k, v) for k, v in tags(report).items()]


def test_write_names_a_file_per_session_and_leaves_no_partial_file(store, report, tmp_path):
    uri, _, run_id = store
    metrics, run_tags = _payload(report)
    first = spool.write(uri, run_id, report, metrics, run_tags)
    second = spool.write(uri, run_id, report, metrics, run_tags)  # a resumed run's 2nd session
    assert first != second and first.parent == second.parent == tmp_path / "spool"
    assert spool.pending() == sorted([first, second])
    assert all(p.name.startswith(f"{run_id}-") for p in (first, second))
    assert sorted(os.listdir(tmp_path / "spool")) == sorted([first.name, second.name])
    data = json.loads(first.read_text())
    assert data["tracking_uri"] == uri and data["run_id"] == run_id
    assert {m[0] for m in data["metrics"]} == set(final_metrics(report))
    assert data["tags"]["green.country"] == "FRA"
    assert data["report"]["energy_kwh"] == pytest.approx(report.energy_kwh)


def test_pending_ignores_half_written_files(store, report, tmp_path):
    _uri, _, run_id = store
    folder = tmp_path / "spool"
    folder.mkdir()
    (folder / f".{run_id}-abc.tmp").write_text("{")  # a write cut short
    (folder / f".{run_id}-abc.json").write_text("{")
    assert spool.pending() == []


def test_write_to_an_unwritable_folder_raises_oserror(store, report, tmp_path, monkeypatch):
    uri, _, run_id = store
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("MLFLOW_GREEN_SPOOL_DIR", str(blocker / "spool"))
    with pytest.raises(OSError):
        spool.write(uri, run_id, report, *_payload(report))
    assert spool.pending() == []


def test_report_round_trips_through_the_spool_format(report):
    assert spool._report_from_dict(json.loads(report.to_json())) == report


def test_sync_uploads_metrics_tags_and_artifacts_then_deletes_the_file(store, report):
    uri, client, run_id = store
    metrics, run_tags = _payload(report)
    path = spool.write(uri, run_id, report, metrics, run_tags)
    results = spool.sync()
    assert [(r.path, r.run_id, r.ok, r.error) for r in results] == [(path, run_id, True, "")]
    assert not path.exists() and spool.pending() == []
    run = client.get_run(run_id)
    for key, value in final_metrics(report).items():
        assert run.data.metrics[key] == pytest.approx(value)
    assert run.data.tags["green.cpu_meter"] == report.methods["cpu"]
    names = {f.path for f in client.list_artifacts(run_id, "green")}
    assert names == {"green/report.json", "green/timeline.csv", "green/power.png"}
    uploaded = json.loads(Path(client.download_artifacts(run_id, "green/report.json")).read_text())
    assert uploaded["energy_kwh"] == pytest.approx(report.energy_kwh)
    assert spool.sync() == []  # nothing left: a second sync is a no-op


def test_sync_keeps_what_fails_and_a_later_sync_with_another_uri_uploads_it(
    store, report, monkeypatch
):
    uri, client, run_id = store
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    path = spool.write(down, run_id, report, *_payload(report), log_artifacts=False)
    (failed,) = spool.sync()
    assert not failed.ok and failed.run_id == run_id and "Connection refused" in failed.error
    assert path.exists()
    (ok,) = spool.sync(tracking_uri=uri)  # the server moved: override the saved URI
    assert ok.ok and not path.exists()
    assert client.get_run(run_id).data.metrics["green/energy_kwh"] == pytest.approx(
        report.energy_kwh
    )
    assert client.list_artifacts(run_id) == []  # the run did not want artifacts


def test_sync_is_idempotent_for_a_file_uploaded_twice(store, report):
    uri, client, run_id = store
    metrics, run_tags = _payload(report)
    spool.write(uri, run_id, report, metrics, run_tags, log_artifacts=False)
    spool.write(uri, run_id, report, metrics, run_tags, log_artifacts=False)
    assert [r.ok for r in spool.sync()] == [True, True]  # same values twice: no error
    history = client.get_metric_history(run_id, "green/energy_kwh")
    assert [h.value for h in history] == [pytest.approx(report.energy_kwh)]
