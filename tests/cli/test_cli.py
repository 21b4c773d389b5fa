"""The mlflow-green command: listings, errors, and ``sync`` against real SQLite stores.

The end-to-end spool path (a server that goes down at the end of a run) is in
test_autolog.py; the spool's Python API in test_spool.py.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient
from mlflow.entities import Metric, RunTag

import mlflow_green
from mlflow_green.cli import main
from mlflow_green.runs import spool
from mlflow_green.runs.names import final_metrics, tags
from tests.mlflow_server import free_port, sqlite_db_copy


def test_countries_lists_codes_with_intensity() -> None:
    result = CliRunner().invoke(main, ["countries"])
    assert result.exit_code == 0
    fra = next(line for line in result.output.splitlines() if line.startswith("FRA"))
    assert "56.0" in fra and "France" in fra


def test_regions_of_a_country() -> None:
    result = CliRunner().invoke(main, ["countries", "usa"])
    assert result.exit_code == 0 and "california" in result.output


def test_unknown_country_is_an_error_naming_it() -> None:
    result = CliRunner().invoke(main, ["countries", "XYZ"])
    assert result.exit_code == 2 and "'XYZ'" in result.output
    assert result.output.startswith("Error: COUNTRY 'XYZ'"), result.output


def test_sync_with_nothing_spooled(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_GREEN_SPOOL_DIR", str(tmp_path / "spool"))
    result = CliRunner().invoke(main, ["sync"])
    assert result.exit_code == 0 and "Nothing to upload" in result.output


def test_version() -> None:
    from mlflow_green import __version__

    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


# -- sync ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report():
    with mlflow_green.track("cli", country="FRA", sample_interval_s=0.05) as t:
        end = time.perf_counter() + 0.2
        while time.perf_counter() < end:
            sum(i * i for i in range(1000))
    assert t.report is not None
    return t.report


@pytest.fixture
def spool_folder(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("MLFLOW_GREEN_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "spool"


def _store(folder: Path) -> tuple[str, MlflowClient, str]:
    """A migrated SQLite store with one experiment: (absolute URI, client, experiment id)."""
    folder.mkdir()
    uri = f"sqlite:///{sqlite_db_copy(folder / 'mlflow.db')}"
    client = MlflowClient(uri)
    return uri, client, client.create_experiment("cli", artifact_location=(folder / "a").as_uri())


def _spool(uri: str, run_id: str, report, end_ms: int | None = None) -> Path:
    end_ms = end_ms or int(time.time() * 1000)
    metrics = [Metric(k, v, end_ms, 9) for k, v in final_metrics(report).items()]
    run_tags = [RunTag(k, v) for k, v in tags(report).items()]
    return spool.write(uri, run_id, report, metrics, run_tags, log_artifacts=False)


def test_sync_sends_each_report_to_its_own_store_not_mlflow_tracking_uri(
    spool_folder, report, tmp_path
):
    """Item 15: MLFLOW_TRACKING_URI names another store; each report goes where it was measured."""
    uri_a, client_a, exp_a = _store(tmp_path / "a")
    uri_b, client_b, exp_b = _store(tmp_path / "b")
    run_a, run_b = client_a.create_run(exp_a).info.run_id, client_b.create_run(exp_b).info.run_id
    end_ms = int(time.time() * 1000) - 600_000  # the runs ended ten minutes before the sync
    _spool(uri_a, run_a, report, end_ms)
    _spool(uri_b, run_b, report, end_ms)
    result = CliRunner().invoke(main, ["sync"], env={"MLFLOW_TRACKING_URI": uri_b})
    assert result.exit_code == 0, result.output
    assert f"uploaded run {run_a} to {uri_a}" in result.output
    assert f"uploaded run {run_b} to {uri_b}" in result.output
    for client, run_id in ((client_a, run_a), (client_b, run_b)):
        (energy,) = client.get_metric_history(run_id, "green/energy_kwh")
        # Item 4: the values carry the time and step measured at the run's end.
        assert (energy.value, energy.timestamp, energy.step) == (
            pytest.approx(report.energy_kwh),
            end_ms,
            9,
        )
    assert spool.pending() == []


def test_sync_no_artifacts_uploads_the_values_and_no_file(spool_folder, report, tmp_path):
    """``--no-artifacts`` is obeyed even for a report spooled with artifacts wanted."""
    uri, client, exp = _store(tmp_path / "s")
    run_id = client.create_run(exp).info.run_id
    metrics = [Metric(k, v, 1, 0) for k, v in final_metrics(report).items()]
    spool.write(uri, run_id, report, metrics, [], log_artifacts=True)
    result = CliRunner().invoke(main, ["sync", "--no-artifacts"])
    assert result.exit_code == 0, result.output
    assert client.get_run(run_id).data.metrics["green/energy_kwh"] == pytest.approx(
        report.energy_kwh
    )
    assert client.list_artifacts(run_id) == []
    assert spool.pending() == []


def test_sync_tracking_uri_option_sends_every_report_there(spool_folder, report, tmp_path):
    uri, client, exp = _store(tmp_path / "moved")
    run_id = client.create_run(exp).info.run_id
    old = f"http://127.0.0.1:{free_port()}"  # where the server used to be: nothing listens
    path = _spool(old, run_id, report)
    failed = CliRunner().invoke(main, ["sync"], env={"MLFLOW_TRACKING_URI": uri})
    assert failed.exit_code == 1 and f"failed run {run_id}" in failed.output
    assert "unreachable" in failed.output and path.exists()
    result = CliRunner().invoke(main, ["sync", "--tracking-uri", uri])
    assert result.exit_code == 0, result.output
    assert f"uploaded run {run_id} to {uri}" in result.output
    assert client.get_run(run_id).data.metrics["green/energy_kwh"] == pytest.approx(
        report.energy_kwh
    )


def test_sync_help_says_where_reports_go():
    result = CliRunner().invoke(main, ["sync", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "Default: each report's own URI; MLFLOW_TRACKING_URI is not used." in text
    for option in ("--list", "--discard RUN_ID", "--discard-undeliverable"):
        assert option in text


def test_sync_list_shows_each_report_and_changes_nothing(spool_folder, report, tmp_path):
    uri, client, exp = _store(tmp_path / "s")
    deleted = client.create_run(exp).info.run_id
    client.delete_run(deleted)
    down = f"http://127.0.0.1:{free_port()}"
    paths = [
        _spool(uri, deleted, report),
        spool.write(down, "b" * 32, report, [], [], error=ConnectionError("refused")),
    ]
    first = CliRunner().invoke(main, ["sync", "--list"])
    listed = first.output
    assert first.exit_code == 0 and "b" * 32 in listed and down in listed and uri in listed
    assert "last error: ConnectionError: refused" in listed and "2 report(s)" in listed
    assert all(p.exists() for p in paths)
    assert CliRunner().invoke(main, ["sync"]).exit_code == 1  # notes why each one failed
    listed = CliRunner().invoke(main, ["sync", "--list"]).output
    row = next(line for line in listed.splitlines() if line.startswith(deleted)).split()
    # run id, age, size, URI
    assert re.fullmatch(r"\d+[smhd]", row[1]) and row[3] == "KiB" and row[4] == uri, row
    assert f"undeliverable: run {deleted} is deleted" in listed
    assert "(1 failed sync)" in listed and "unreachable" in listed
    assert sorted(spool.pending()) == sorted(paths)


def test_sync_with_a_deleted_run_exits_1_and_says_how_to_discard(spool_folder, report, tmp_path):
    uri, client, exp = _store(tmp_path / "s")
    deleted, live = (client.create_run(exp).info.run_id for _ in range(2))
    client.delete_run(deleted)
    kept = _spool(uri, deleted, report)
    _spool(uri, live, report)
    result = CliRunner().invoke(main, ["sync"])
    assert result.exit_code == 1
    assert f"uploaded run {live}" in result.output
    assert f"cannot upload run {deleted}: run {deleted} is deleted" in result.output
    assert "mlflow-green sync --discard-undeliverable" in result.output
    assert spool.pending() == [kept]

    discarded = CliRunner().invoke(main, ["sync", "--discard-undeliverable"])
    assert discarded.exit_code == 0, discarded.output
    assert f"discarded run {deleted}" in discarded.output and spool.pending() == []


def test_sync_discard_by_run_id(spool_folder, report, tmp_path):
    first = _spool(f"sqlite:///{tmp_path}/nowhere.db", "c" * 32, report)
    other = _spool(f"sqlite:///{tmp_path}/nowhere.db", "d" * 32, report)
    result = CliRunner().invoke(main, ["sync", "--discard", "c" * 32])
    assert result.exit_code == 0 and f"discarded run {'c' * 32} ({first})" in result.output
    assert spool.pending() == [other]


def test_discard_undeliverable_keeps_reports_it_cannot_check(spool_folder, report):
    down = f"http://127.0.0.1:{free_port()}"
    path = _spool(down, "e" * 32, report)
    result = CliRunner().invoke(main, ["sync", "--discard-undeliverable"])
    assert result.exit_code == 1
    assert f"could not check run {'e' * 32}" in result.output and "unreachable" in result.output
    assert spool.pending() == [path]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--list", "--discard", "x"], "--list and --discard cannot be combined"),
        (["--discard", "nope"], "no spooled report for run 'nope'"),
        (["--discard", ""], "--discard '': expected the run id of a spooled report"),
        (["--list", "--no-artifacts"], "--no-artifacts applies to uploads only"),
        (["--discard", "f", "--tracking-uri", "http://x"], "--tracking-uri applies to uploads"),
        (["--tracking-uri", ""], "--tracking-uri '': expected a tracking URI such as"),
        (
            ["--tracking-uri", "sqlite:///{tmp}/none.db"],
            "no SQLite database at {tmp}/none.db: --tracking-uri is sqlite:///{tmp}/none.db",
        ),
    ],
)
def test_sync_bad_input_exits_2_naming_the_value(spool_folder, report, tmp_path, args, message):
    path = _spool(f"sqlite:///{tmp_path}/nowhere.db", "f" * 32, report)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = CliRunner().invoke(main, ["sync", *args])
    assert result.exit_code == 2, result.output
    assert message.replace("{tmp}", str(tmp_path)) in result.output
    assert spool.pending() == [path]  # nothing touched
    assert not (tmp_path / "none.db").exists()
