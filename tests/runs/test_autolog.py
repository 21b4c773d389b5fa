"""``mlflow_green.autolog()`` against a real MLflow: a SQLite store and a real ``mlflow server``.

Every run path of issue 3: ``with mlflow.start_run()``, nested runs, ``MlflowClient``
runs, ``mlflow.sklearn.autolog()`` child runs, threads, resumed runs, runs ended at
exit or by SIGTERM, runs whose body raises, a tracking server that is down at the
end, and the configuration contract. No MLflow mock: only spies that count calls.
"""

from __future__ import annotations

import functools
import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.parse
import uuid
import warnings
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.tracking import fluent
from mlflow.tracking._tracking_service.client import TrackingServiceClient

import mlflow_green
from mlflow_green.measure.carbon import resolve_intensity
from mlflow_green.runs import autologging, spool
from tests.mlflow_server import Forwarder, boot_fixture, server_fixture, sqlite_db_copy

mlflow_server = server_fixture()
_boot_mlflow_server = boot_fixture()

FRA_G_PER_KWH = resolve_intensity(country="FRA").g_per_kwh  # CodeCarbon's figure, ~56
DEU_G_PER_KWH = resolve_intensity(country="DEU").g_per_kwh  # ~381
DOMAINS = ("gpu", "cpu", "ram")


# -- fixtures --------------------------------------------------------------------------------


def _end_fluent_runs() -> None:
    while mlflow.active_run() is not None:
        mlflow.end_run()


@pytest.fixture
def tracking(request, tmp_path, monkeypatch):
    """A tracking URI of its own (SQLite in tmp_path, or the real server) and an experiment.

    Parametrise indirectly with ``"sqlite"`` or ``"server"``; SQLite by default.
    Teardown removes every autolog hook and ends leftover fluent runs.
    """
    backend = getattr(request, "param", "sqlite")
    for name in list(os.environ):
        if name.startswith("MLFLOW_GREEN_") or name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # MLflow's defaults (./mlruns, ./mlflow.db) stay in tmp_path
    monkeypatch.setenv("MLFLOW_GREEN_SPOOL_DIR", str(tmp_path / "spool"))
    if backend == "server":
        uri = request.getfixturevalue("mlflow_server")
        artifact_location = None  # the server's mlflow-artifacts:/ proxy
    else:
        uri = f"sqlite:///{sqlite_db_copy(tmp_path / 'mlflow.db')}"
        artifact_location = (tmp_path / "artifacts").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    monkeypatch.setattr(fluent, "_active_experiment_id", None)
    _end_fluent_runs()
    exp_id = MlflowClient(uri).create_experiment(
        f"green-{uuid.uuid4().hex[:12]}", artifact_location=artifact_location
    )
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", exp_id)
    try:
        yield _Tracking(uri, exp_id, backend, tmp_path)
    finally:
        mlflow_green.autolog(disable=True)
        _end_fluent_runs()
        mlflow.set_tracking_uri(None)


class _Tracking:
    def __init__(self, uri: str, experiment_id: str, backend: str, tmp_path: Path) -> None:
        self.uri, self.experiment_id, self.backend, self.tmp_path = (
            uri,
            experiment_id,
            backend,
            tmp_path,
        )
        self.client = MlflowClient(uri)


# -- helpers ---------------------------------------------------------------------------------


def work(seconds: float) -> None:
    """The measured job: about ``seconds`` of wall time, partly computing, mostly waiting
    (as on I/O), so that a 2-core machine has room for the server and the subprocesses."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sum(i * i for i in range(5000))
        time.sleep(min(0.02, max(end - time.perf_counter(), 0)))


def green_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if "mlflow-green" in str(w.message)]


def assert_green_run(
    client: MlflowClient,
    run_id: str,
    *,
    status: str = "FINISHED",
    intensity: float = FRA_G_PER_KWH,
    country: str = "FRA",
    artifacts: bool = True,
    report_matches: bool = True,
):
    """The contract of a tracked run: metrics, tags, artifacts, all logged before the end."""
    run = client.get_run(run_id)
    assert run.info.status == status
    m, t = run.data.metrics, run.data.tags
    assert m["green/energy_kwh"] > 0
    assert m["green/co2eq_kg"] == pytest.approx(m["green/energy_kwh"] * intensity / 1000, rel=1e-9)
    assert m["green/duration_s"] > 0
    pue = float(t["green.pue"])
    # Only domains with a meter are logged (no GPU here: no gpu_kwh charted at 0).
    metered = [d for d in DOMAINS if t[f"green.{d}_meter"] != "none"]
    assert {k for k in m if k.startswith("green/energy/")} == {
        f"green/energy/{d}_kwh" for d in metered
    }
    by_domain = [m[f"green/energy/{d}_kwh"] for d in metered]
    # Every kWh figure includes the PUE: the domains add up to the total.
    assert m["green/energy_kwh"] == pytest.approx(sum(by_domain), rel=1e-9)
    assert pue >= 1.0
    assert t["green.cpu_meter"] not in ("", "none")
    assert t["green.country"] == country
    assert t["green.version"] == mlflow_green.__version__
    assert float(t["green.carbon_intensity_g_per_kwh"]) == pytest.approx(intensity)
    for tag in ("green.gpu_meter", "green.ram_meter", "green.scope", "green.hardware"):
        assert tag in t
    # Final values are logged before the run is marked terminated.
    if status != "RUNNING":
        for key in ("green/energy_kwh", "green/co2eq_kg", "green/duration_s"):
            history = client.get_metric_history(run_id, key)
            assert history and max(h.timestamp for h in history) <= run.info.end_time
    if artifacts:
        mlflow_green.flush(wait_charts_s=60)  # the chart is drawn in the background
        names = {f.path for f in client.list_artifacts(run_id, "green")}
        assert names == {
            "green/report.json",
            "green/timeline.csv",
            "green/report.html",
            "green/power.png",
        }
        report = json.loads(
            Path(client.download_artifacts(run_id, "green/report.json")).read_text()
        )
        assert report["name"] == f"run {run_id}"
        if report_matches:
            assert report["energy_kwh"] == pytest.approx(m["green/energy_kwh"], rel=1e-9)
            assert report["duration_s"] == pytest.approx(m["green/duration_s"], rel=1e-9)
        return run, report
    return run, None


# -- run paths -------------------------------------------------------------------------------


def test_with_block_run_holds_the_contract_in_batches(tracking, monkeypatch):
    calls = {"log_metric": 0, "log_batch": 0}
    for name in calls:
        original = getattr(TrackingServiceClient, name)

        def spy(self, *args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(TrackingServiceClient, name, spy)
    mlflow_green.autolog(country="FRA", sample_interval_s=0.25)
    with mlflow.start_run() as active:
        work(1.3)
    run, report = assert_green_run(tracking.client, active.info.run_id)
    if tracking.backend == "server":  # artifacts went through the server's proxy, over HTTP
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert calls["log_metric"] == 0  # never one call per value
    assert 1 <= calls["log_batch"] <= 2  # the summary, timeline and tags go in one batch
    # Timeline: step = whole seconds since the run started, one point per sample.
    history = tracking.client.get_metric_history(active.info.run_id, "green/power/cpu_w")
    expected = sorted(int(p["t_s"]) for p in report["timeline"])
    assert len(history) == len(report["timeline"]) >= 3
    assert sorted(h.step for h in history) == expected
    assert max(expected) == int(report["duration_s"]) >= 1
    assert all(h.value >= 0 for h in history)


def test_nested_child_parent_holds_at_least_the_child(tracking):
    mlflow_green.autolog(country="FRA")
    with mlflow.start_run() as parent:
        work(0.1)
        with mlflow.start_run(nested=True) as child:
            work(0.3)
        work(0.1)
    p, _ = assert_green_run(tracking.client, parent.info.run_id)
    c, _ = assert_green_run(tracking.client, child.info.run_id)
    assert c.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert p.data.metrics["green/energy_kwh"] >= c.data.metrics["green/energy_kwh"]
    assert p.data.metrics["green/duration_s"] > c.data.metrics["green/duration_s"]


def test_client_create_run_and_set_terminated(tracking):
    mlflow_green.autolog(country="FRA")
    run = tracking.client.create_run(tracking.experiment_id)
    work(0.2)
    tracking.client.set_terminated(run.info.run_id)
    assert_green_run(tracking.client, run.info.run_id)


def test_body_that_raises_is_failed_and_the_exception_is_unchanged(tracking):
    class Boom(Exception):
        pass

    error = Boom("boom 42")

    def body():
        raise error

    mlflow_green.autolog(country="FRA")
    with pytest.raises(Boom) as info, mlflow.start_run() as active:
        work(0.1)
        body()
    assert info.value is error
    assert str(info.value) == "boom 42"
    assert info.value.__cause__ is None and info.value.__context__ is None
    assert info.traceback[-1].name == "body"
    assert_green_run(tracking.client, active.info.run_id, status="FAILED")


def test_runs_in_several_threads_each_measure_their_own_run(tracking):
    mlflow_green.autolog(country="FRA")
    barrier = threading.Barrier(4, timeout=30)
    run_ids: dict[int, str] = {}
    errors: list[BaseException] = []

    def fluent_run(i: int) -> None:
        with mlflow.start_run() as active:
            run_ids[i] = active.info.run_id
            barrier.wait()  # all four runs are open at once
            work(0.2)

    def client_run(i: int) -> None:
        client = MlflowClient(tracking.uri)
        run = client.create_run(tracking.experiment_id)
        run_ids[i] = run.info.run_id
        barrier.wait()
        work(0.2)
        client.set_terminated(run.info.run_id)

    def guarded(target, i):
        try:
            target(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=guarded, args=(fluent_run if i % 2 else client_run, i))
        for i in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert len(set(run_ids.values())) == 4
    for run_id in run_ids.values():
        assert_green_run(tracking.client, run_id)


def test_resumed_fluent_run_is_measured_from_the_resume(tracking):
    mlflow_green.autolog(country="FRA")
    with mlflow.start_run() as active:
        work(0.3)
    run_id = active.info.run_id
    first = tracking.client.get_run(run_id).data.metrics
    time.sleep(0.5)  # the run is ended here: this gap is not the run's
    started = time.monotonic()
    with mlflow.start_run(run_id=run_id):
        work(0.3)
    resumed_wall = time.monotonic() - started
    run, report = assert_green_run(tracking.client, run_id, report_matches=False)
    total = run.data.metrics
    second_duration = total["green/duration_s"] - first["green/duration_s"]
    assert 0.25 < second_duration <= resumed_wall  # from the resume, not from the run's start
    assert report["duration_s"] == pytest.approx(second_duration, abs=1e-6)
    assert total["green/energy_kwh"] > first["green/energy_kwh"]
    assert total["green/energy_kwh"] == pytest.approx(
        first["green/energy_kwh"] + report["energy_kwh"], rel=1e-9
    )
    history = tracking.client.get_metric_history(run_id, "green/energy_kwh")
    latest = max(history, key=lambda h: (h.step, h.timestamp))
    assert latest.value == total["green/energy_kwh"] and len(history) >= 2


def test_resumed_client_run_via_update_run(tracking):
    mlflow_green.autolog(country="FRA")
    client = tracking.client
    run_id = client.create_run(tracking.experiment_id).info.run_id
    work(0.2)
    client.set_terminated(run_id)
    first = client.get_run(run_id).data.metrics
    client.update_run(run_id, "RUNNING")
    assert client.get_run(run_id).info.status == "RUNNING"
    work(0.2)
    client.set_terminated(run_id)
    run, report = assert_green_run(client, run_id, report_matches=False)
    assert run.data.metrics["green/energy_kwh"] == pytest.approx(
        first["green/energy_kwh"] + report["energy_kwh"], rel=1e-9
    )
    assert run.data.metrics["green/duration_s"] == pytest.approx(
        first["green/duration_s"] + report["duration_s"], rel=1e-9
    )


def test_sklearn_autolog_gridsearch_child_runs(tracking):
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV

    mlflow_green.autolog(country="FRA")
    mlflow.sklearn.autolog(
        log_models=False,
        log_datasets=False,
        log_input_examples=False,
        log_model_signatures=False,
        log_post_training_metrics=False,
        silent=True,
    )
    try:
        X, y = load_iris(return_X_y=True)
        with mlflow.start_run() as parent:
            GridSearchCV(LogisticRegression(max_iter=300), {"C": [0.1, 1.0]}, cv=2).fit(X, y)
    finally:
        mlflow.sklearn.autolog(disable=True)
    children = tracking.client.search_runs(
        [tracking.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert len(children) == 2
    p, _ = assert_green_run(tracking.client, parent.info.run_id)
    for child in children:
        c, _ = assert_green_run(tracking.client, child.info.run_id)
        assert p.data.metrics["green/energy_kwh"] >= c.data.metrics["green/energy_kwh"]


def test_logged_model_is_found_by_its_energy(tracking):
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    mlflow_green.autolog(country="FRA")
    X, y = load_iris(return_X_y=True)
    with mlflow.start_run() as active:
        model = LogisticRegression(max_iter=300).fit(X, y)
        info = mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"])
    assert_green_run(tracking.client, active.info.run_id)
    found = mlflow.search_logged_models(
        experiment_ids=[tracking.experiment_id],
        filter_string="metrics.`green/energy_kwh` < 1",
        output_format="list",
    )
    assert [m.model_id for m in found] == [info.model_id]
    keys = {metric.key for metric in found[0].metrics or []}
    assert {"green/energy_kwh", "green/co2eq_kg"} <= keys


def test_periodic_flush_writes_cumulative_energy_to_a_running_run(tracking):
    mlflow_green.autolog(country="FRA", flush_interval_s=1, sample_interval_s=0.5)
    client = tracking.client
    run_id = client.create_run(tracking.experiment_id).info.run_id
    deadline = time.monotonic() + 20
    steps: set[int] = set()
    while time.monotonic() < deadline:  # bounded poll for the flusher's writes
        work(0.1)
        history = client.get_metric_history(run_id, "green/energy_kwh")
        steps = {h.step for h in history}
        if len(steps) >= 2 and len(history) >= 4:
            break
    assert len(steps) >= 2 and len(history) >= 4, f"flushed {len(history)} times at {steps}"
    run = client.get_run(run_id)
    assert run.info.status == "RUNNING"
    assert run.data.tags["green.country"] == "FRA"  # tags come with the first flush
    ordered = sorted(history, key=lambda h: (h.step, h.timestamp))
    values = [h.value for h in ordered]
    assert values == sorted(values)  # cumulative: never decreases
    # The history starts at 0 at the run's start (a line in the UI, not a lone point).
    assert (ordered[0].step, values[0]) == (0, 0.0) and values[1] > 0
    assert ordered[0].timestamp == pytest.approx(run.info.start_time, abs=1000)
    for key in ("green/energy/cpu_kwh", "green/energy/ram_kwh", "green/duration_s"):
        assert len(client.get_metric_history(run_id, key)) >= 3, key  # every figure has one
    co2 = {
        (h.step, h.timestamp): h.value for h in client.get_metric_history(run_id, "green/co2eq_kg")
    }
    for h in ordered:
        assert co2[(h.step, h.timestamp)] == pytest.approx(h.value * FRA_G_PER_KWH / 1000)
    client.set_terminated(run_id)
    final = client.get_run(run_id).data.metrics["green/energy_kwh"]
    assert final >= values[-1]


# -- configuration ---------------------------------------------------------------------------


def test_disable_removes_every_hook(tracking):
    names = ("create_run", "set_terminated", "update_run")
    before = {n: TrackingServiceClient.__dict__[n] for n in names}
    client_before = {n: MlflowClient.__dict__[n] for n in names}
    start_run_before = (fluent.start_run, mlflow.start_run)
    sigterm_before = signal.getsignal(signal.SIGTERM)

    mlflow_green.autolog(country="FRA")
    assert autologging.is_enabled()
    assert all(TrackingServiceClient.__dict__[n] is not before[n] for n in names)
    assert mlflow.start_run is not start_run_before[1]
    assert signal.getsignal(signal.SIGTERM) is not sigterm_before

    mlflow_green.autolog(disable=True)
    assert not autologging.is_enabled()
    assert {n: TrackingServiceClient.__dict__[n] for n in names} == before
    assert {n: MlflowClient.__dict__[n] for n in names} == client_before
    assert (fluent.start_run, mlflow.start_run) == start_run_before
    assert signal.getsignal(signal.SIGTERM) is sigterm_before
    with mlflow.start_run() as active:
        pass
    run = tracking.client.get_run(active.info.run_id)
    assert not [k for k in run.data.metrics if k.startswith("green/")]
    assert not [k for k in run.data.tags if k.startswith("green.")]
    assert tracking.client.list_artifacts(active.info.run_id) == []


def test_calling_autolog_again_reconfigures(tracking):
    mlflow_green.autolog(country="FRA")
    mlflow_green.autolog(country="DEU", pue=1.5)
    with mlflow.start_run() as active:
        work(0.1)
    run, _ = assert_green_run(
        tracking.client, active.info.run_id, intensity=DEU_G_PER_KWH, country="DEU"
    )
    assert run.data.tags["green.pue"] == "1.5"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"country": "XYZ"},
        {"pue": 0.5},
        {"flush_interval_s": 0},
        {"log_artifacts": "maybe"},
        {"scope": "galaxy"},
    ],
    ids=lambda kw: next(iter(kw)),
)
def test_invalid_configuration_raises_at_autolog(tracking, kwargs):
    with pytest.raises(ValueError):
        mlflow_green.autolog(**kwargs)
    assert not autologging.is_enabled()
    # An invalid reconfiguration keeps the working one.
    mlflow_green.autolog(country="FRA")
    with pytest.raises(ValueError):
        mlflow_green.autolog(**kwargs)
    with mlflow.start_run() as active:
        pass
    assert_green_run(tracking.client, active.info.run_id, artifacts=False)


def test_invalid_environment_variable_raises_at_autolog(tracking, monkeypatch):
    monkeypatch.setenv("MLFLOW_GREEN_PUE", "0.5")
    with pytest.raises(ValueError, match="pue"):
        mlflow_green.autolog()
    assert not autologging.is_enabled()


def test_silent_run_emits_no_warnings(tracking):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mlflow_green.autolog(country="FRA", silent=True)
        with mlflow.start_run() as active:
            warnings.warn("mlflow-green: a meter complaint", RuntimeWarning, stacklevel=1)
    assert green_warnings(caught) == []
    assert_green_run(tracking.client, active.info.run_id)


def test_log_artifacts_false_logs_metrics_only(tracking):
    mlflow_green.autolog(country="FRA", log_artifacts=False)
    with mlflow.start_run() as active:
        work(0.1)
    assert_green_run(tracking.client, active.info.run_id, artifacts=False)
    assert tracking.client.list_artifacts(active.info.run_id) == []


# -- subprocesses: exit and SIGTERM ----------------------------------------------------------

_EXIT_SCRIPT = """
import mlflow, mlflow_green
mlflow_green.autolog(country="FRA")
run = mlflow.start_run()          # never ended by the script
print(run.info.run_id, flush=True)
sum(i * i for i in range(300_000))
"""

_SIGTERM_SCRIPT = """
import os, signal, sys, time
mode, marker = sys.argv[1], sys.argv[2]
if mode == "user":
    def handler(signum, frame):
        with open(marker, "w") as f:
            f.write(str(signum))
        sys.exit(3)
    signal.signal(signal.SIGTERM, handler)   # set before autolog(): must still be called
import mlflow, mlflow_green
mlflow_green.autolog(country="FRA")
fluent_run = mlflow.start_run()
client_run = mlflow.MlflowClient().create_run(os.environ["MLFLOW_EXPERIMENT_ID"])
if mode == "fork":
    # A forked worker stopped with SIGTERM (Pool.terminate(), a DataLoader shutting down):
    # the parent and its runs go on.
    child = os.fork()
    if child == 0:
        while True:
            time.sleep(0.05)
    os.kill(child, signal.SIGTERM)
    _, status = os.waitpid(child, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM, status
    time.sleep(3)  # not a wait for anything: the time in which the parent must not be stopped
    client = mlflow.MlflowClient()
    print(client.get_run(fluent_run.info.run_id).info.status, flush=True)
    mlflow.end_run()
    client.set_terminated(client_run.info.run_id)
    print(fluent_run.info.run_id, client_run.info.run_id, flush=True)
    # The program's own signal mask survives a fork, in the parent and in the child.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    child = os.fork()
    if child == 0:
        os._exit(0 if signal.SIGTERM in signal.pthread_sigmask(signal.SIG_BLOCK, []) else 1)
    _, status = os.waitpid(child, 0)
    blocked = signal.SIGTERM in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    print(blocked, os.WEXITSTATUS(status) == 0, flush=True)
    sys.exit(0)
if mode == "deferred":
    # The program's own handler, set for a while, takes the SIGTERM (to checkpoint first,
    # as Lightning's does) and puts ours back: the process goes on.
    taken = []
    ours = signal.signal(signal.SIGTERM, lambda signum, frame: taken.append(signum))
    print(fluent_run.info.run_id, client_run.info.run_id, flush=True)
    while not taken:
        time.sleep(0.01)
    time.sleep(0.5)  # its own work, then ours again: within the watcher's second of grace
    signal.signal(signal.SIGTERM, ours)
    time.sleep(3)  # not a wait for anything: the time in which the process must not be stopped
    mlflow.end_run()
    mlflow.MlflowClient().set_terminated(client_run.info.run_id)
    print("went on", flush=True)
    sys.exit(0)
if mode == "held":
    # A SIGTERM that reaches another thread while the main thread sleeps in pause(): Python
    # runs the handler at the main thread's next check, which never comes by itself.
    import platform, threading
    PAUSE = {"x86_64": "34", "aarch64": "73"}.get(platform.machine())  # pause; ppoll
    main = threading.main_thread().native_id
    def in_pause():
        with open(f"/proc/self/task/{main}/syscall") as f:
            return f.read().split()[0] == PAUSE
    try:
        assert PAUSE and not in_pause()
    except (AssertionError, OSError):
        print("unsupported", flush=True)
        sys.exit(0)
    def deliver_here():
        while not in_pause():
            threading.Event().wait(0.01)  # polls the main thread's state, shown by the kernel
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
    print(fluent_run.info.run_id, client_run.info.run_id, flush=True)
    threading.Thread(target=deliver_here, daemon=True).start()
    while True:
        signal.pause()
print(fluent_run.info.run_id, client_run.info.run_id, flush=True)
while True:  # not signal.pause(): it sleeps for good on a SIGTERM that lands before it
    time.sleep(0.05)
"""


class _Job:
    """A script run in a subprocess against a SQLite store of its own."""

    def __init__(self, folder: Path, script: str, *args: str) -> None:
        self.folder = folder
        self.uri = f"sqlite:///{sqlite_db_copy(folder / 'mlflow.db')}"
        self.client = MlflowClient(self.uri)
        exp = self.client.create_experiment("job", artifact_location=(folder / "art").as_uri())
        (folder / "job.py").write_text(textwrap.dedent(script))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PYTEST_"))}
        env.update(
            MLFLOW_TRACKING_URI=self.uri,
            MLFLOW_EXPERIMENT_ID=exp,
            MLFLOW_GREEN_SPOOL_DIR=str(folder / "spool"),
            PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[2]), env.get("PYTHONPATH", "")]),
            PYTHONWARNINGS="ignore::DeprecationWarning,ignore::FutureWarning",
        )
        self.proc = subprocess.Popen(
            [sys.executable, str(folder / "job.py"), *args],
            cwd=folder,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def read_line(self, timeout_s: float = 90) -> str:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=30)
            pytest.fail(f"job printed no run id (rc {self.proc.returncode}):\n{err[-3000:]}")
        return line

    def finish(self, timeout_s: float = 90) -> tuple[str, str]:
        return self.proc.communicate(timeout=timeout_s)


@pytest.fixture(scope="module", autouse=True)
def jobs(tmp_path_factory):
    """The subprocess jobs, started with the module's first test: their start-ups (importing
    MLflow) overlap each other and the in-process tests."""
    started = {}
    for name, script, args in [
        ("exit", _EXIT_SCRIPT, ()),
        ("sigterm-user", _SIGTERM_SCRIPT, ("user",)),
        ("sigterm-default", _SIGTERM_SCRIPT, ("default",)),
        ("sigterm-held", _SIGTERM_SCRIPT, ("held",)),
        ("sigterm-fork", _SIGTERM_SCRIPT, ("fork",)),
        ("sigterm-deferred", _SIGTERM_SCRIPT, ("deferred",)),
    ]:
        folder = tmp_path_factory.mktemp(name)
        extra = (str(folder / "handler-called"),) if args else ()
        started[name] = _Job(folder, script, *args, *extra)
    yield started
    for job in started.values():
        if job.proc.poll() is None:
            job.proc.kill()
            job.proc.communicate(timeout=30)


def test_run_left_open_is_ended_at_interpreter_exit_with_its_energy(jobs):
    job = jobs["exit"]
    out, err = job.finish()
    assert job.proc.returncode == 0, err[-3000:]
    assert "mlflow-green" not in err
    assert_green_run(job.client, out.split()[0])


@pytest.mark.parametrize("handler", ["user", "default"])
def test_sigterm_ends_runs_killed_with_energy_and_chains_the_handler(jobs, handler):
    job = jobs[f"sigterm-{handler}"]
    fluent_id, client_id = job.read_line().split()
    job.proc.send_signal(signal.SIGTERM)
    _, err = job.finish()
    marker = job.folder / "handler-called"
    if handler == "user":
        assert job.proc.returncode == 3, err[-3000:]  # the user's handler ran, and exited
        assert marker.read_text() == str(int(signal.SIGTERM))
    else:
        assert job.proc.returncode == -signal.SIGTERM, err[-3000:]  # died of the signal
        assert not marker.exists()
    assert "mlflow-green" not in err
    for run_id in (fluent_id, client_id):
        assert_green_run(job.client, run_id, status="KILLED")


def test_sigterm_held_back_from_a_main_thread_in_pause_still_ends_the_process(jobs):
    # Without a handler of ours the kernel kills such a process at once; with it, Python
    # holds the signal for a main thread that never comes back from pause().
    job = jobs["sigterm-held"]
    line = job.read_line()
    if line.strip() == "unsupported":
        pytest.skip("the main thread's syscall cannot be read here (/proc, x86_64 or aarch64)")
    fluent_id, client_id = line.split()
    _, err = job.finish(timeout_s=60)
    assert job.proc.returncode == -signal.SIGTERM, err[-3000:]
    assert "mlflow-green" not in err
    for run_id in (fluent_id, client_id):
        assert_green_run(job.client, run_id, status="KILLED")


def test_a_forked_worker_stopped_by_sigterm_leaves_the_parent_and_its_runs_be(jobs):
    job = jobs["sigterm-fork"]
    out, err = job.finish(timeout_s=60)
    assert job.proc.returncode == 0, err[-3000:]
    status_after_the_child, ids, mask = out.splitlines()
    assert status_after_the_child == "RUNNING"  # the child did not end its parent's run
    assert "mlflow-green" not in err
    for run_id in ids.split():
        assert_green_run(job.client, run_id)
    assert mask == "True True"  # SIGTERM blocked by the program stays so across a fork


def test_a_sigterm_the_programs_own_handler_took_is_not_sent_again(jobs):
    job = jobs["sigterm-deferred"]
    fluent_id, client_id = job.read_line().split()
    job.proc.send_signal(signal.SIGTERM)
    out, err = job.finish(timeout_s=60)
    assert job.proc.returncode == 0, err[-3000:]
    assert out.strip() == "went on"
    for run_id in (fluent_id, client_id):
        assert_green_run(job.client, run_id)


# -- the tracking server is down at the end ---------------------------------------------------


@pytest.mark.parametrize("case", ["warns", "silent", "unwritable-spool"])
def test_server_down_at_the_end_spools_the_report_and_sync_uploads_it(
    tracking, mlflow_server, monkeypatch, case
):
    # No retries: MLflow would otherwise retry each request for about two minutes.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    if case == "unwritable-spool":
        blocker = tracking.tmp_path / "not-a-folder"
        blocker.write_text("a file where the spool folder should be")
        monkeypatch.setenv("MLFLOW_GREEN_SPOOL_DIR", str(blocker / "spool"))
    server_port = urllib.parse.urlparse(mlflow_server).port
    proxy = Forwarder(server_port).start()  # the run's tracking server, as its client sees it
    try:
        mlflow_green.autolog(country="FRA", silent=case == "silent")
        client = MlflowClient(proxy.url)
        experiment_id = client.create_experiment(f"down-{uuid.uuid4().hex[:12]}")
        run_id = client.create_run(experiment_id).info.run_id  # created while reachable
        work(0.2)
        proxy.stop()  # the server goes away before the run ends
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(MlflowException) as info:
                client.set_terminated(run_id)
        # The error is MLflow's own, from ending the run: it never went through our code.
        ours = [e.name for e in info.traceback if "mlflow_green" in str(e.path)]
        assert ours == ["wrapper"], ours  # only the set_terminated hook calling MLflow
        assert "Connection refused" in str(info.value)
        messages = green_warnings(caught)
        if case == "silent":
            assert messages == []
            assert len(spool.pending()) == 1
            return
        assert len(messages) == 1, messages
        if case == "unwritable-spool":
            assert "spool" in messages[0] and str(blocker / "spool") in messages[0]
            return
        (path,) = spool.pending()
        assert str(path) in messages[0]
        assert json.loads(path.read_text())["run_id"] == run_id

        proxy.start()  # the server is back, at the same address
        results = spool.sync()
        assert [(r.run_id, r.ok) for r in results] == [(run_id, True)], results
        assert spool.pending() == []
        client.set_terminated(run_id)
        assert_green_run(MlflowClient(mlflow_server), run_id)
    finally:
        proxy.stop()


# -- the same core run paths against the real server, over HTTP -------------------------------
# Last in the file: the server starts with the first test and is ready by then.


def _on_server(test):
    @functools.wraps(test)
    def variant(*args, **kwargs):
        return test(*args, **kwargs)

    return pytest.mark.parametrize("tracking", ["server"], indirect=True)(variant)


test_server_with_block_run = _on_server(test_with_block_run_holds_the_contract_in_batches)
test_server_nested_child = _on_server(test_nested_child_parent_holds_at_least_the_child)
test_server_client_run = _on_server(test_client_create_run_and_set_terminated)
test_server_body_raises = _on_server(test_body_that_raises_is_failed_and_the_exception_is_unchanged)
test_server_threads = _on_server(test_runs_in_several_threads_each_measure_their_own_run)
test_server_resumed_fluent_run = _on_server(test_resumed_fluent_run_is_measured_from_the_resume)
test_server_resumed_client_run = _on_server(test_resumed_client_run_via_update_run)
test_server_logged_model = _on_server(test_logged_model_is_found_by_its_energy)


def test_backdated_run_is_tagged_partial(tracking):
    """Runs created after the fact (GridSearchCV children) say their energy is partial."""
    mlflow_green.autolog(country="FRA", log_artifacts=False)
    now_ms = int(time.time() * 1000)
    late = tracking.client.create_run(tracking.experiment_id, start_time=now_ms - 10_000)
    tracking.client.set_terminated(late.info.run_id)
    live = tracking.client.create_run(tracking.experiment_id)
    tracking.client.set_terminated(live.info.run_id)
    late_tags = tracking.client.get_run(late.info.run_id).data.tags
    assert "after its start time" in late_tags["green.partial"]
    assert "green.partial" not in tracking.client.get_run(live.info.run_id).data.tags
