"""Cleaning up earlier sessions never ends or deletes a live one; a last publish that fails
still ends the run.

A host meter ends the serving run of an earlier session of its model and port and deletes
its folder, but only when every server of that session is gone on this host.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient

from mlflow_green.serving import settings as serving_settings
from mlflow_green.serving.host import Agent, HostMeter
from mlflow_green.serving.servingrun import SESSION_TAG
from mlflow_green.serving.shared import SessionFolder, secure_folder, this_host
from tests.mlflow_server import sqlite_db_copy


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """A serving worker's settings (session ``s1``), its folder under ``tmp_path/tmp``."""
    tmp = tmp_path / "tmp"
    tmp.mkdir(mode=0o700)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.delenv(serving_settings.DIR_ENV, raising=False)
    monkeypatch.setenv(serving_settings.MODEL_URI_ENV, "models:/m/1")
    monkeypatch.setenv(serving_settings.PORT_ENV, "5001")
    monkeypatch.setenv(serving_settings.SESSION_ENV, "s1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = serving_settings.from_env()
    assert got is not None
    return got


@pytest.fixture
def tracking(tmp_path: Path) -> Iterator[MlflowClient]:
    uri = f"sqlite:///{sqlite_db_copy(tmp_path / 'mlflow.db')}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield MlflowClient(uri)
    finally:
        mlflow.set_tracking_uri(previous)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(60)
    return proc.pid


def _session(
    client: MlflowClient, settings: Any, name: str, pid: int, host: str, experiment: str = ""
) -> tuple[Path, str]:
    """An earlier session ``name`` whose one worker ``pid`` wrote on ``host``; its run RUNNING."""
    folder = secure_folder(settings.key_folder / name)
    secure_folder(folder / "counts")
    record = {"requests": 1, "errors": 0, "predictions": 1, "tokens": 0, "token_method": "none"}
    (folder / "counts" / f"{pid}-1.json").write_text(
        json.dumps({**record, "pid": pid, "host": host, "final": False})
    )
    experiment = experiment or settings.experiment
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    run_id = client.create_run(experiment_id, tags={SESSION_TAG: name}).info.run_id
    (folder / "state.json").write_text(
        json.dumps({"run_id": run_id, "ended": False, "logged_at_ms": None, "host": host})
    )
    return folder, run_id


def test_only_sessions_gone_on_this_host_are_ended_and_deleted(
    settings: Any, tracking: MlflowClient
) -> None:
    live_worker = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        here = this_host()
        # A server sharing this key (port given by hand, another bind address): still serving.
        live, live_run = _session(tracking, settings, "live", live_worker.pid, here)
        gone, gone_run = _session(tracking, settings, "gone", _dead_pid(), here)
        # A folder shared over NFS: another host's session is never judged here.
        foreign, foreign_run = _session(tracking, settings, "foreign", _dead_pid(), "elsewhere")
        # Gone, but its state names a run that is not its serving run: kept for a later look.
        kept, kept_run = _session(tracking, settings, "kept", _dead_pid(), here, "training")
        assert SessionFolder(gone).gone() and not SessionFolder(live).gone()
        assert not SessionFolder(foreign).gone()
        meter = HostMeter(settings, SessionFolder(settings.folder))
        try:
            meter._end_older_sessions()
        finally:
            meter.window.close()
        assert tracking.get_run(gone_run).info.status == "KILLED" and not gone.exists()
        for folder, run_id in ((live, live_run), (foreign, foreign_run), (kept, kept_run)):
            assert tracking.get_run(run_id).info.status == "RUNNING", folder.name
            assert (folder / "state.json").is_file(), folder.name
    finally:
        live_worker.kill()
        live_worker.wait(60)
    # Once its server is gone, the same session is ended and deleted.
    meter = HostMeter(settings, SessionFolder(settings.folder))
    try:
        meter._end_older_sessions()
    finally:
        meter.window.close()
    assert tracking.get_run(live_run).info.status == "KILLED" and not live.exists()


def test_a_session_with_no_worker_on_file_yet_is_not_gone(settings: Any) -> None:
    starting = secure_folder(settings.key_folder / "starting")
    secure_folder(starting / "counts")
    assert not SessionFolder(starting).gone()


def test_a_failed_last_publish_still_ends_the_run(settings: Any, tracking: MlflowClient) -> None:
    agent = Agent(settings)
    agent.tick()  # takes the host lock and creates the serving run (the first flush is due)
    assert agent.meter is not None and agent.meter.run is not None
    run_id = agent.meter.run.run_id
    counts_dir = settings.folder / "counts"
    counts_dir.chmod(0o777)  # an unsafe counts folder: the last publish is refused
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            agent.shutdown()
    finally:
        counts_dir.chmod(0o700)
    messages = [str(w.message) for w in caught]
    assert any("could not publish its last counts" in m for m in messages), messages
    assert tracking.get_run(run_id).info.status == "FINISHED"
    assert not agent.lock.held
    assert os.path.isdir(settings.folder)
