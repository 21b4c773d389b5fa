"""The spool: reports that could not reach the tracking server, and ``sync()`` uploading them.

Against a real MLflow SQLite store; the end-to-end path (a server that goes down at
the end of a run, then ``sync()``) is in test_autolog.py.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, RunTag

import mlflow_green
from mlflow_green.runs import spool
from mlflow_green.runs.names import final_metrics, tags
from tests.mlflow_server import Forwarder, boot_fixture, free_port, server_fixture, sqlite_db_copy

mlflow_server = server_fixture()
_boot_mlflow_server = boot_fixture()  # starts with the first test, ready by the last


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
    assert names == {
        "green/report.json",
        "green/timeline.csv",
        "green/report.html",
        "green/power.png",
    }
    uploaded = json.loads(Path(client.download_artifacts(run_id, "green/report.json")).read_text())
    assert uploaded["energy_kwh"] == pytest.approx(report.energy_kwh)
    assert spool.sync() == []  # nothing left: a second sync is a no-op


def test_sync_without_artifacts_uploads_no_file_even_if_the_run_wanted_them(store, report):
    uri, client, run_id = store
    spool.write(uri, run_id, report, *_payload(report), log_artifacts=True)
    assert [r.ok for r in spool.sync(log_artifacts=False)] == [True]
    assert client.get_run(run_id).data.metrics["green/energy_kwh"] == pytest.approx(
        report.energy_kwh
    )
    assert client.list_artifacts(run_id) == []


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


# -- issue 11: each report to its own store, undeliverable reports, timestamps ---------------


def _new_store(folder: Path) -> tuple[str, MlflowClient, str]:
    """Another migrated SQLite store (absolute URI) with an experiment: (uri, client, exp id)."""
    folder.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{sqlite_db_copy(folder / 'mlflow.db')}"
    client = MlflowClient(uri)
    exp = client.create_experiment("other", artifact_location=(folder / "art").as_uri())
    return uri, client, exp


def test_sync_keeps_the_measured_timestamps_and_steps(store, report):
    """Item 4: the uploaded values are those measured at the run's end, not stamped at sync."""
    uri, client, run_id = store
    end_ms = int(time.time() * 1000) - 3_600_000  # the run ended an hour before the sync
    metrics = [Metric(k, v, end_ms, 17) for k, v in final_metrics(report).items()]
    metrics.append(Metric("green/power/cpu_w", 12.5, end_ms - 4000, 13))  # a timeline point
    spool.write(uri, run_id, report, metrics, [], log_artifacts=False)
    assert [r.ok for r in spool.sync()] == [True]
    for m in metrics:
        (logged,) = client.get_metric_history(run_id, m.key)
        assert (logged.value, logged.timestamp, logged.step) == (
            pytest.approx(m.value),
            m.timestamp,
            m.step,
        ), m.key


def test_write_saves_why_and_when_and_touches_no_network(store, report):
    """Item 10: spooling is local work only; the report says why it was spooled."""
    _uri, _, run_id = store
    with socket.socket() as listener:  # a "server" whose every connection would queue here
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        server = f"http://127.0.0.1:{listener.getsockname()[1]}"
        before_ms = int(time.time() * 1000)
        path = spool.write(server, run_id, report, *_payload(report), error=TimeoutError("slow"))
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected
    (entry,) = spool.pending_reports()
    assert (entry.path, entry.run_id, entry.tracking_uri) == (path, run_id, server)
    assert entry.last_error == "TimeoutError: slow" and entry.attempts == 0
    assert entry.size_bytes == path.stat().st_size > 0
    assert before_ms <= entry.spooled_at_ms <= int(time.time() * 1000)
    assert 0 <= entry.age_s() < 3600


def test_a_relative_sqlite_uri_is_saved_absolute_and_synced_from_another_folder(
    store, report, tmp_path, monkeypatch
):
    measured_in = tmp_path / "job"
    uri, client, exp = _new_store(measured_in)
    run_id = client.create_run(exp).info.run_id
    monkeypatch.chdir(measured_in)
    # The run's client saw MLflow's default form, relative to the job's folder.
    spool.write("sqlite:///mlflow.db", run_id, report, *_payload(report), log_artifacts=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    (result,) = spool.sync()
    assert result.ok, result.error
    assert result.tracking_uri == uri
    assert client.get_run(run_id).data.metrics["green/energy_kwh"] == pytest.approx(
        report.energy_kwh
    )
    assert list(elsewhere.iterdir()) == []  # no empty store made where the sync ran


def test_a_missing_sqlite_file_is_not_created_and_the_report_waits(store, report, tmp_path):
    _, _, run_id = store
    gone = tmp_path / "moved.db"  # the database was moved away since the run
    path = spool.write(f"sqlite:///{gone}", run_id, report, *_payload(report))
    (result,) = spool.sync()
    assert not gone.exists()  # MLflow would have made an empty store, where the run is unknown
    assert not result.ok and not result.undeliverable
    assert f"no SQLite database at {gone}" in result.error
    assert path.exists()
    (entry,) = spool.pending_reports()
    assert entry.attempts == 1 and f"no SQLite database at {gone}" in entry.last_error


def test_deleted_and_missing_runs_are_undeliverable_kept_until_discarded(store, report, tmp_path):
    uri, _, live = store
    other_uri, other, exp = _new_store(tmp_path / "other")
    deleted = other.create_run(exp).info.run_id
    other.delete_run(deleted)
    in_deleted_exp_id = other.create_experiment("doomed")
    in_deleted_exp = other.create_run(in_deleted_exp_id).info.run_id
    other.delete_experiment(in_deleted_exp_id)
    never = "0" * 32  # a run id no store has
    down = f"http://127.0.0.1:{free_port()}"
    paths = {
        live: spool.write(uri, live, report, *_payload(report), log_artifacts=False),
        deleted: spool.write(other_uri, deleted, report, *_payload(report)),
        in_deleted_exp: spool.write(other_uri, in_deleted_exp, report, *_payload(report)),
        never: spool.write(other_uri, never, report, *_payload(report)),
        "f" * 32: spool.write(down, "f" * 32, report, *_payload(report)),
    }

    results = {r.run_id: r for r in spool.sync()}
    assert results[live].ok and not paths[live].exists()
    for run_id in (deleted, in_deleted_exp, never):
        r = results[run_id]
        assert (r.ok, r.undeliverable, r.discarded) == (False, True, False), r
        assert run_id in r.error and other_uri in r.error
        assert paths[run_id].exists()  # nothing is deleted without being asked
    assert (
        "is deleted" in results[deleted].error and "mlflow runs restore" in results[deleted].error
    )
    assert "does not exist" in results[never].error
    unreachable = results["f" * 32]
    assert (unreachable.ok, unreachable.undeliverable) == (False, False)
    assert "unreachable" in unreachable.error and "Connection refused" in unreachable.error
    listed = {e.run_id: e for e in spool.pending_reports()}
    assert set(listed) == {deleted, in_deleted_exp, never, "f" * 32}
    assert listed[deleted].undeliverable == results[deleted].error
    assert listed["f" * 32].undeliverable == "" and listed["f" * 32].attempts == 1

    # A restored run takes its report again: deleted is not final until discarded.
    other.restore_run(deleted)
    results = {r.run_id: r for r in spool.sync()}
    assert results[deleted].ok and not paths[deleted].exists()
    other.delete_run(deleted)

    checked = {r.run_id: r for r in spool.discard_undeliverable()}
    for run_id in (in_deleted_exp, never):
        assert (checked[run_id].ok, checked[run_id].discarded) == (True, True)
        assert not paths[run_id].exists()
    assert not checked["f" * 32].ok and not checked["f" * 32].discarded  # unknown: kept
    assert spool.pending() == [paths["f" * 32]]


def test_discard_by_run_id_removes_every_session_of_that_run_and_nothing_on_a_typo(store, report):
    uri, _, run_id = store
    first = spool.write(uri, run_id, report, *_payload(report))
    second = spool.write(uri, run_id, report, *_payload(report))  # a resumed run
    kept = spool.write(uri, "a" * 32, report, *_payload(report))
    with pytest.raises(ValueError) as info:
        spool.discard([run_id, "not-a-spooled-run"])
    assert "'not-a-spooled-run'" in str(info.value) and run_id in str(info.value)
    assert spool.pending() == sorted([first, second, kept])  # nothing removed
    removed = spool.discard([run_id])
    assert sorted(r.path for r in removed) == sorted([first, second])
    assert spool.pending() == [kept]


class _HalfDead(http.server.BaseHTTPRequestHandler):
    """A server that answers its health check and drops every API request unanswered."""

    def do_GET(self) -> None:
        if self.path.endswith("/health"):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"OK")
        else:
            self.close_connection = True  # no answer at all: the connection is cut

    def do_POST(self) -> None:
        self.close_connection = True

    def log_message(self, *args) -> None:
        pass


def test_a_server_that_fails_one_report_is_not_tried_for_the_others(store, report, monkeypatch):
    """Item 10: the server passes the probe, its requests fail: one try, not one per report."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    uri, _, live = store
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HalfDead)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    front_url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        stuck = [f"{i}" * 32 for i in range(1, 4)]
        for run_id in stuck:
            spool.write(front_url, run_id, report, *_payload(report))
        spool.write(uri, live, report, *_payload(report), log_artifacts=False)
        results = {r.run_id: r for r in spool.sync()}
    finally:
        server.shutdown()
        server.server_close()
    assert results[live].ok  # another server is not held up
    errors = [results[r].error for r in stuck]
    assert not any(results[r].ok for r in stuck)
    tried = [e for e in errors if not e.startswith("not tried")]
    assert len(tried) == 1 and "API request" in tried[0], errors
    assert all(front_url in e for e in errors)
    assert len(spool.pending()) == 3


def test_a_server_that_accepts_and_never_answers_is_unreachable_at_once(store, report):
    """The probe is an HTTP request with a deadline, not a TCP connect that any socket passes."""
    front = Forwarder(free_port()).start()
    front.hang()
    try:
        spool.write(front.url, "1" * 32, report, *_payload(report))
        (result,) = spool.sync()
    finally:
        front.stop()
    assert not result.ok and "unreachable" in result.error and "no answer" in result.error


class _NotMlflow(http.server.BaseHTTPRequestHandler):
    """A web server at the report's URI that is not MLflow (a proxy, a wrong path): 404 to all."""

    def _answer(self) -> None:
        body = b"<html>404 Not Found</html>"
        self.send_response(404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


def test_a_404_that_is_not_mlflow_speaking_is_no_evidence_the_run_is_gone(
    store, report, monkeypatch
):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    _, _, run_id = store
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotMlflow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        uri = f"http://127.0.0.1:{server.server_address[1]}"
        path = spool.write(uri, run_id, report, *_payload(report))
        (synced,) = spool.sync()
        (checked,) = spool.discard_undeliverable()
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    for result in (synced, checked):
        assert (result.ok, result.undeliverable, result.discarded) == (False, False, False)
        assert "404" in result.error
    assert path.exists()


# Last in the file: the server starts with the first test and is ready by then.
def test_over_http_deleted_and_missing_runs_are_undeliverable_and_the_rest_uploads(
    store, report, mlflow_server
):
    """The REST answers (404 RESOURCE_DOES_NOT_EXIST, a deleted run) of a real server."""
    client = MlflowClient(mlflow_server)
    exp = client.create_experiment(f"spool-{uuid.uuid4().hex[:12]}")
    live, deleted = (client.create_run(exp).info.run_id for _ in range(2))
    client.delete_run(deleted)
    never = uuid.uuid4().hex
    for run_id in (live, deleted, never):
        spool.write(mlflow_server, run_id, report, *_payload(report))
    results = {r.run_id: r for r in spool.sync()}
    assert results[live].ok, results[live].error
    assert client.get_run(live).data.metrics["green/energy_kwh"] == pytest.approx(report.energy_kwh)
    assert "green/report.json" in {f.path for f in client.list_artifacts(live, "green")}
    assert results[deleted].undeliverable and "is deleted" in results[deleted].error
    assert results[never].undeliverable and "does not exist" in results[never].error
    assert {r.discarded for r in spool.discard_undeliverable()} == {True}
    assert spool.pending() == []
