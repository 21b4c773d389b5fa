"""The shared serving folder resists other local users: symlinks, foreign folders, planted state.

The folder sits in a world-writable temporary directory by default; another user
who could guess its name could otherwise plant symlinks there to make the meter
truncate, delete or overwrite the victim's files, inject counts, or end runs.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient

from mlflow_green.serving import settings as serving_settings
from mlflow_green.serving.counting import Counts
from mlflow_green.serving.servingrun import ServingRun, end_stale
from mlflow_green.serving.shared import HostLock, SessionFolder, older_sessions
from tests.mlflow_server import sqlite_db_copy


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Serving worker environment with the temporary folder at ``tmp_path/tmp``."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    tmp.chmod(0o1777)  # like /tmp: world-writable, sticky
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.delenv(serving_settings.DIR_ENV, raising=False)
    monkeypatch.setenv(serving_settings.MODEL_URI_ENV, "models:/m/1")
    monkeypatch.setenv(serving_settings.PORT_ENV, "5001")
    monkeypatch.setenv(serving_settings.SESSION_ENV, "s1")
    return tmp


def _from_env() -> tuple[Any, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = serving_settings.from_env()
    return got, [str(w.message) for w in caught]


def test_the_default_folder_is_per_user_and_private(env: Path) -> None:
    got, said = _from_env()
    assert got is not None and said == []
    root = got.key_folder.parent
    assert root == env / f"mlflow-green-serving-{os.geteuid()}"
    for folder in (root, got.key_folder, got.folder):
        assert folder.stat().st_mode & 0o777 == 0o700, folder


def test_a_symlink_planted_as_the_root_is_refused_with_one_warning(
    env: Path, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (env / f"mlflow-green-serving-{os.geteuid()}").symlink_to(victim)
    got, said = _from_env()
    assert got is None
    [message] = said
    assert f"mlflow-green-serving-{os.geteuid()}" in message and "not metered" in message
    assert list(victim.iterdir()) == []  # nothing made inside the target


def test_a_root_others_may_write_to_is_refused(env: Path) -> None:
    root = env / f"mlflow-green-serving-{os.geteuid()}"
    root.mkdir()
    root.chmod(0o777)
    got, said = _from_env()
    assert got is None and "writable by other users" in said[0]


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root")
def test_a_root_owned_by_another_user_is_refused(env: Path) -> None:
    root = env / f"mlflow-green-serving-{os.geteuid()}"
    root.mkdir(mode=0o700)
    os.chown(root, 4242, -1)
    got, said = _from_env()
    assert got is None and "uid 4242" in said[0]


def test_a_given_folder_gets_the_same_checks(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    given = tmp_path / "given"
    given.mkdir()
    given.chmod(0o777)  # others could swap our folder inside it
    monkeypatch.setenv(serving_settings.DIR_ENV, str(given))
    got, said = _from_env()
    assert got is None and "MLFLOW_GREEN_SERVING_DIR" in said[0] and str(given) in said[0]


def test_the_lock_never_truncates_the_target_of_a_symlink(tmp_path: Path) -> None:
    folder = tmp_path / "key"
    folder.mkdir(mode=0o700)
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    (folder / "host.lock").symlink_to(victim)
    with pytest.raises(OSError):
        HostLock(folder / "host.lock").try_acquire()
    assert victim.read_text() == "keep me"


def test_symlinked_counts_and_sessions_are_never_read_nor_deleted(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.mkdir(mode=0o700)
    current, old = key / "now", key / "old"
    current.mkdir(mode=0o700)
    old.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.mkdir()
    (key / "planted").symlink_to(victim)
    assert older_sessions(key, current) == [old]  # the symlink is not a session to delete
    injected = tmp_path / "injected.json"
    injected.write_text(json.dumps({"requests": 1000, "predictions": 1000}))
    folder = SessionFolder(current)
    folder.publish(Counts(requests=1), "none")
    (current / "counts" / "evil.json").symlink_to(injected)
    assert folder.total()[0].requests == 1


@pytest.fixture
def tracking(tmp_path: Path) -> Any:
    uri = f"sqlite:///{sqlite_db_copy(tmp_path / 'mlflow.db')}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield MlflowClient(uri)
    finally:
        mlflow.set_tracking_uri(previous)


def test_a_state_file_cannot_end_or_reopen_a_run_of_someone_else(
    tracking: MlflowClient, env: Path
) -> None:
    other = tracking.create_run(tracking.create_experiment("training")).info.run_id
    finished = tracking.create_run(tracking.create_experiment("more")).info.run_id
    tracking.set_terminated(finished, "FINISHED")
    assert not end_stale(other, None, "mlflow-green-serving", "s0")
    assert tracking.get_run(other).info.status == "RUNNING"
    settings, _ = _from_env()
    with pytest.raises(ValueError, match="not this session's serving run"):
        ServingRun.continue_or_create(settings, {"run_id": finished, "ended": True}, {})
    assert tracking.get_run(finished).info.status == "FINISHED"
    # The session's own run is reopened and ended as before.
    run = ServingRun.continue_or_create(settings, None, {})
    run.end("FINISHED")
    again = ServingRun.continue_or_create(settings, {"run_id": run.run_id, "ended": True}, {})
    assert tracking.get_run(again.run_id).info.status == "RUNNING"
    assert end_stale(run.run_id, None, settings.experiment, settings.folder.name)
    assert tracking.get_run(run.run_id).info.status == "KILLED"
