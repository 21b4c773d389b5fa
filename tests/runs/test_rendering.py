"""The ``green/`` artifacts of a run: cheap files at its end, the chart in the background,
nothing lost at exit (real MLflow, SQLite, subprocess jobs)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mlflow
from mlflow import MlflowClient

import mlflow_green
from mlflow_green.runs import rendering, spool
from tests.mlflow_server import sqlite_db_copy

ARTIFACTS = {"green/report.json", "green/timeline.csv", "green/report.html", "green/power.png"}


def _run_job(tmp_path: Path, script: str) -> tuple[str, subprocess.CompletedProcess]:
    """Run ``script`` in a fresh interpreter on a store and spool folder of its own; it must
    exit 0. Returns the store's URI and the finished process."""
    uri = f"sqlite:///{sqlite_db_copy(tmp_path / 'mlflow.db')}"
    (tmp_path / "job.py").write_text(textwrap.dedent(script))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PYTEST_"))}
    env.update(MLFLOW_TRACKING_URI=uri, MLFLOW_GREEN_SPOOL_DIR=str(tmp_path / "spool"))
    proc = subprocess.run(
        [sys.executable, "job.py"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return uri, proc


def _names(client: MlflowClient, run_id: str) -> set[str]:
    return {f.path for f in client.list_artifacts(run_id, "green")}


def test_a_run_gets_its_page_rounded_timeline_and_chart(sqlite_uri):
    mlflow_green.autolog(country="FRA", sample_interval_s=0.1)
    with mlflow.start_run(run_name="forest <30>") as run, mlflow_green.phase("train"):
        deadline = time.monotonic() + 0.6
        while time.monotonic() < deadline:  # busy: the timeline gets a few points
            sum(i * i for i in range(1000))
    mlflow_green.flush(wait_charts_s=60)  # the chart is drawn in the background
    client = MlflowClient()
    run_id = run.info.run_id
    assert _names(client, run_id) == ARTIFACTS
    tags = client.get_run(run_id).data.tags
    metered = [d for d in ("gpu", "cpu", "ram") if tags[f"green.{d}_meter"] != "none"]
    with open(client.download_artifacts(run_id, "green/timeline.csv"), encoding="utf-8") as f:
        rows = list(csv.reader(f))
    # Only metered domains (no all-zero gpu_w column here), and no 16-digit floats.
    assert rows[0] == ["t_s", *(f"{d}_w" for d in metered)]
    assert len(rows) > 2 and all(len(v) <= 8 for row in rows[1:] for v in row), rows[:3]
    page = Path(client.download_artifacts(run_id, "green/report.html")).read_text()
    assert "forest &lt;30&gt;" in page and "forest <30>" not in page  # named, and escaped
    assert "train" in page
    png = Path(client.download_artifacts(run_id, "green/power.png")).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


_MANY_RUNS = """
import mlflow, mlflow_green
from mlflow_green.runs import rendering
rendering.EXIT_WAIT_S = 0.0  # leave at once: the charts not drawn yet must wait in the spool
mlflow_green.autolog(country="FRA")
ids = []
for i in range(20):
    with mlflow.start_run(run_name=f"trial-{i}") as run:
        with mlflow_green.phase("train"):
            pass
    ids.append(run.info.run_id)
print(" ".join(ids), flush=True)
"""


def test_charts_not_drawn_by_exit_wait_in_the_spool_and_sync_draws_them(tmp_path, monkeypatch):
    uri, proc = _run_job(tmp_path, _MANY_RUNS)
    run_ids = proc.stdout.split()
    assert len(run_ids) == 20
    client = MlflowClient(uri)
    # Every run has its cheap artifacts at once; its chart is uploaded or waits in the spool.
    monkeypatch.setenv("MLFLOW_GREEN_SPOOL_DIR", str(tmp_path / "spool"))
    waiting = {r.run_id: r for r in spool.pending_reports()}
    assert waiting, "20 charts drawn within 0 s of exit: the test proves nothing"
    assert proc.stderr.count("power chart(s) were not logged before exit") == 1  # one warning
    for run_id in run_ids:
        names = _names(client, run_id)
        assert names >= ARTIFACTS - {"green/power.png"}
        # (The chart being uploaded at exit may make it and leave its entry behind.)
        assert "green/power.png" in names or run_id in waiting, run_id
    assert len(waiting) <= rendering.MAX_QUEUED + 1  # the queue is bounded
    for path in spool.pending():
        data = json.loads(path.read_text())
        assert data["chart_only"] and data["metrics"] == []
        page = data["page"]
        assert page["run_name"].startswith("trial-") and page["phases"][0][0] == "train"
    results = spool.sync()
    assert results and all(r.ok for r in results), [r.error for r in results]
    for run_id in run_ids:
        assert _names(client, run_id) == ARTIFACTS, run_id
        page = Path(client.download_artifacts(run_id, "green/report.html")).read_text()
        assert client.get_run(run_id).info.run_name in page


_FORK_CHILD = """
import os, mlflow, mlflow_green
mlflow_green.autolog(country="FRA")
pid = os.fork()
if pid == 0:  # a fork child leaves through os._exit: no atexit, no wait for the chart
    with mlflow.start_run(run_name="child") as run:
        with open("child-run", "w") as f:
            f.write(run.info.run_id)
    os._exit(0)
os.waitpid(pid, 0)
"""


def test_a_chart_of_a_fork_child_that_exits_at_once_waits_in_the_spool(tmp_path, monkeypatch):
    uri, _ = _run_job(tmp_path, _FORK_CHILD)
    run_id = (tmp_path / "child-run").read_text()
    client = MlflowClient(uri)
    monkeypatch.setenv("MLFLOW_GREEN_SPOOL_DIR", str(tmp_path / "spool"))
    if "green/power.png" not in _names(client, run_id):  # the child died before drawing it
        assert [r.run_id for r in spool.pending_reports()] == [run_id]
        assert [r.ok for r in spool.sync()] == [True]
    assert _names(client, run_id) == ARTIFACTS
    assert spool.pending() == []
