"""When the server stops, the serving run's final values hold every request (issue 13, item 2).

Each worker publishes its counts every half second, so at a stop the last
requests of a worker other than the host meter's may exist only in that worker's
memory. The race is made certain here, not left to chance: the other worker
(``B``) is frozen (SIGSTOP) right after it answered requests it has not yet
published, then the whole group gets SIGTERM. The host meter's worker (``A``)
then shuts down first; only once ``B`` is let go can its last counts arrive. A
meter that logs and ends the run without waiting for ``B`` ends it short.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient

from tests.mlflow_server import sqlite_db_copy
from tests.serving.served import PidEcho, Served, gpu_scenario, poll, texts_request

EXPERIMENT = "serving-final"
#: How long B stays frozen after the SIGTERM: shorter than the meter's wait for
#: late workers (host.FINAL_WAIT_S, counted from when the meter starts closing).
FROZEN_S = 2.0
BATCH = 8


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _published_requests(shared: Path, pid: int) -> int:
    files = list(shared.rglob(f"counts/{pid}-*.json"))
    return sum(json.loads(f.read_text()).get("requests", 0) for f in files)


@pytest.fixture
def served(tmp_path: Path) -> Any:
    uri = f"sqlite:///{sqlite_db_copy(tmp_path / 'mlflow.db')}"
    client = MlflowClient(uri)
    models = client.create_experiment("models", artifact_location=(tmp_path / "a").as_uri())
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run(experiment_id=models):
            mlflow.pyfunc.log_model(
                name="model", python_model=PidEcho(), registered_model_name="pid"
            )
    finally:
        mlflow.set_tracking_uri(previous)
    served = Served(
        tmp_path,
        "models:/pid/1",
        uri,
        FAKE_NVML_SCENARIO=str(gpu_scenario(tmp_path, 100.0)),
        MLFLOW_GREEN_SERVING_EXPERIMENT=EXPERIMENT,
        MLFLOW_GREEN_SERVING_DIR=str(tmp_path / "shared"),
    )  # the default flush interval (30 s): the final flush is the one that counts
    served.start(workers=2)
    try:
        served.wait_ready()
        yield served, client
    finally:
        served.stop()
        served.kill_group()


def test_the_final_flush_waits_for_every_workers_last_counts(served: Any) -> None:
    served, client = served
    experiment = poll(lambda: client.get_experiment_by_name(EXPERIMENT), 60, "the experiment")
    shared = served.root / "shared"
    lock = poll(lambda: next(shared.rglob("host.lock"), None), 60, "the host lock")
    meter = poll(lambda: int((lock.read_text().split() or ["0"])[0]), 60, "the meter's pid")
    workers = poll(
        lambda: (lambda p: p if len(p) == 2 else None)(
            {int(f.name.split("-")[0]) for f in shared.rglob("counts/*.json")}
        ),
        60,
        "both workers' counts files",
    )
    other = next(pid for pid in workers if pid != meter)
    answered: dict[int, int] = {}
    with ThreadPoolExecutor(4) as pool:
        for _attempt in range(40):
            answers = list(pool.map(lambda i: served.invoke(texts_request(["x"])), range(BATCH)))
            assert all(status == 200 for status, _ in answers), served.tail()
            for _, body in answers:
                pid = int(json.loads(body)["predictions"][0].split()[0])
                answered[pid] = answered.get(pid, 0) + 1
            os.kill(other, signal.SIGSTOP)
            if _published_requests(shared, other) < answered.get(other, 0):
                break  # B holds counts nobody else knows of, and cannot publish them now
            os.kill(other, signal.SIGCONT)
        else:
            pytest.fail(f"worker {other} published every count before it could be frozen")
    total = sum(answered.values())
    seen: list[float] = []

    def finished() -> Any:
        runs = client.search_runs([experiment.experiment_id])
        if runs and runs[0].info.status == "FINISHED":
            seen.append(runs[0].data.metrics["green/serving/requests"])
            return runs[0]
        return None

    try:
        os.killpg(served.proc.pid, signal.SIGTERM)
        # While B is frozen the run must not end; if it does, it must already hold B's counts.
        with contextlib.suppress(AssertionError):
            poll(finished, FROZEN_S, "(not expected) the run's end while a worker is frozen")
    finally:
        os.kill(other, signal.SIGCONT)
    poll(lambda: not _alive(meter) and not _alive(other), 60, "both workers to exit")
    run = poll(finished, 30, f"the serving run's end; server log:\n{served.tail()}")
    assert seen[0] == total, f"the run ended with {seen[0]} of {total} requests"
    assert run.data.metrics["green/serving/requests"] == total
    assert len(client.search_runs([experiment.experiment_id])) == 1
