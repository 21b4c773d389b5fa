"""Autolog never changes what the program sees: any order of set-up, SIGTERM, a server gone.

Each case runs a real script in its own interpreter (the faults live in process-wide
state: patches, signal handlers, exit), against SQLite or, through a TCP forwarder
that the test can cut, a real ``mlflow server``. The scripts start together with the
module's first test, so that their start-ups (importing MLflow) overlap.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.mlflow_server import Forwarder, server_fixture, sqlite_db_copy

mlflow_server = server_fixture()
ROOT = Path(__file__).parents[2]
# A deadline, not a delay: a fixed program answers in about a second even on a busy machine;
# the faults this guards against took minutes (4 min to spool, 246 s to exit, 493 s on SIGTERM).
DEADLINE_S = 60.0

# -- the scripts -----------------------------------------------------------------------------

_ORDER_SCRIPT = """
import os, sys
order = sys.argv[1]
if order == "autolog-before-import":
    import mlflow_green
    mlflow_green.autolog(country="FRA", log_artifacts=False)
    import mlflow
elif order == "import-then-autolog":
    import mlflow, mlflow_green
    mlflow_green.autolog(country="FRA", log_artifacts=False)
elif order == "registry-recreated":
    import mlflow, mlflow_green
    from mlflow.tracking.context.registry import RunContextProviderRegistry
    RunContextProviderRegistry().register_entrypoints()
    mlflow_green.autolog(country="FRA", log_artifacts=False)
    RunContextProviderRegistry().register_entrypoints()
elif order == "disabled":
    import mlflow, mlflow_green
    mlflow_green.autolog(country="FRA", log_artifacts=False)
    mlflow_green.autolog(disable=True)
elif order == "disabled-then-enabled":
    import mlflow, mlflow_green
    mlflow_green.autolog(disable=True)
    mlflow_green.autolog(country="FRA", log_artifacts=False)
else:  # the environment alone
    import mlflow
client = mlflow.MlflowClient()
if order == "threads":  # many threads create the program's first runs at the same moment
    import threading
    barrier, ids = threading.Barrier(6), []
    def create():
        barrier.wait()
        run = mlflow.MlflowClient().create_run(os.environ["MLFLOW_EXPERIMENT_ID"])
        ids.append(run.info.run_id)
        mlflow.MlflowClient().set_terminated(run.info.run_id)
    threads = [threading.Thread(target=create) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(*ids, flush=True)
    sys.exit(0)
exp = os.environ["MLFLOW_EXPERIMENT_ID"]
with mlflow.start_run() as fluent_run:
    sum(i * i for i in range(200_000))
client_run = client.create_run(exp)
client.set_terminated(client_run.info.run_id)
print(fluent_run.info.run_id, client_run.info.run_id, flush=True)
"""

_GRACEFUL_SCRIPT = """
import os, signal, sys, time
mode = sys.argv[1]
stop = False
class Preempted(Exception):
    pass
if mode == "ignore":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
elif mode == "flag":
    def handler(signum, frame):
        global stop
        stop = True          # a graceful program: finish the current step, then stop
    signal.signal(signal.SIGTERM, handler)
elif mode == "caught":
    def handler(signum, frame):
        raise Preempted()    # the training loop catches it and checkpoints
    signal.signal(signal.SIGTERM, handler)
elif mode == "endexit":  # end the run itself, then leave at once
    def handler(signum, frame):
        import mlflow
        mlflow.end_run("KILLED")
        os._exit(3)
    signal.signal(signal.SIGTERM, handler)
else:  # "rekill": clean up, then die of the signal as if there were no handler
    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
    signal.signal(signal.SIGTERM, handler)
import mlflow, mlflow_green
mlflow_green.autolog(country="FRA", log_artifacts=False)
print("ignored" if signal.getsignal(signal.SIGTERM) is signal.SIG_IGN else "handled", flush=True)
run = mlflow.start_run()
print(run.info.run_id, flush=True)
if mode == "ignore":
    signal.raise_signal(signal.SIGTERM)
elif mode == "caught":
    try:
        while True:
            time.sleep(0.01)
    except Preempted:
        pass
else:
    while not stop:          # the program's own loop, polling its own flag
        time.sleep(0.01)
mlflow.log_metric("after_sigterm", 1.0)
print(mlflow.active_run().info.run_id, flush=True)
mlflow.end_run()
"""

_DOWN_SCRIPT = """
import os, sys, time
import mlflow, mlflow_green
mode = sys.argv[1]
mlflow_green.autolog(country="FRA", flush_interval_s=1)   # MLflow's default retries
client = mlflow.MlflowClient()
exp = client.create_experiment("down-" + mode + "-" + str(os.getpid()))
mlflow.set_experiment(experiment_id=exp)
t0 = time.time()
ids = [client.create_run(exp).info.run_id]
if mode == "sigterm":
    ids.append(mlflow.start_run().info.run_id)
print(" ".join(ids), flush=True)
sys.stdin.readline()        # the test has cut the server off
if mode == "end":
    end = time.time() + 3   # periodic flushes meet the dead server meanwhile
    while time.time() < end:
        sum(i * i for i in range(5000))
        time.sleep(0.02)
    print(time.time() - t0, flush=True)
    client.set_terminated(ids[0])   # MLflow itself retries this for minutes
elif mode == "sigterm":
    print("waiting", flush=True)
    while True:  # not signal.pause(): it sleeps for good on a SIGTERM that lands before it
        time.sleep(0.05)
# mode "exit": the client run is left open; the interpreter exits
"""


class _Script:
    """A script in a subprocess, with its own spool folder and MLflow environment."""

    def __init__(self, folder: Path, script: str, args: tuple[str, ...], env: dict) -> None:
        self.folder = folder
        (folder / "job.py").write_text(textwrap.dedent(script))
        base = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PYTEST_"))}
        base.update(
            MLFLOW_GREEN_SPOOL_DIR=str(folder / "spool"),
            PYTHONPATH=os.pathsep.join([str(ROOT), base.get("PYTHONPATH", "")]),
            PYTHONWARNINGS="ignore::DeprecationWarning,ignore::FutureWarning",
            PYTHONFAULTHANDLER="1",  # SIGABRT prints every thread's stack (see finish)
            **env,
        )
        self.proc = subprocess.Popen(
            [sys.executable, str(folder / "job.py"), *args],
            cwd=folder,
            env=base,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def read_line(self, timeout_s: float = 120) -> str:
        try:  # a queue filled by a reader thread: no line is ever stuck in a buffer
            line = self._lines.get(timeout=timeout_s)
        except queue.Empty:
            line = None
        if not line:
            self._dump_and_kill()
            pytest.fail(f"the script printed nothing (rc {self.proc.wait()}):\n{self._err(8000)}")
        return line.strip()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def tell(self, line: str = "go") -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def finish(self, timeout_s: float = 120) -> tuple[str, str]:
        """Wait for the end; (the lines not read yet, stderr)."""
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._dump_and_kill()
            pytest.fail(f"the script did not end within {timeout_s:.0f} s:\n{self._err(8000)}")
        self._reader.join(timeout=30)
        out = []
        while (line := self._lines.get()) is not None:
            out.append(line)
        return "".join(out), self._err()

    def _dump_and_kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGABRT)  # where each thread is stuck, on stderr
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.wait()

    def _err(self, tail: int = 3000) -> str:
        return self.proc.stderr.read()[-tail:] if self.proc.stderr else ""

    def spooled(self) -> list[dict]:
        folder = self.folder / "spool"
        files = sorted(folder.glob("*.json")) if folder.is_dir() else []
        return [json.loads(p.read_text()) for p in files if not p.name.startswith(".")]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


class _Sqlite:
    def __init__(self, folder: Path) -> None:
        self.uri = f"sqlite:///{sqlite_db_copy(folder / 'mlflow.db')}"
        self.client = MlflowClient(self.uri)
        self.experiment_id = self.client.create_experiment(
            "job", artifact_location=(folder / "art").as_uri()
        )

    def env(self, **extra: str) -> dict:
        return {
            "MLFLOW_TRACKING_URI": self.uri,
            "MLFLOW_EXPERIMENT_ID": self.experiment_id,
            **extra,
        }


ORDERS = [
    "autolog-before-import",
    "import-then-autolog",
    "registry-recreated",
    "disabled",
    "disabled-then-enabled",
    "env-only",
    "threads",
]


@pytest.fixture(scope="module")
def order_jobs(tmp_path_factory) -> Iterator[dict]:
    """Every set-up order at once, each with MLFLOW_GREEN_AUTOLOG=true, plus bad values."""
    jobs = {}
    cases = [(order, {"MLFLOW_GREEN_AUTOLOG": "true"}) for order in ORDERS]
    cases += [
        ("env-only", {"MLFLOW_GREEN_AUTOLOG": "ture"}),
        ("env-only", {"MLFLOW_GREEN_AUTOLOG": "true", "MLFLOW_GREEN_COUNTRY": "FRQ"}),
        ("autolog-before-import", {"MLFLOW_GREEN_AUTOLOG": "ture"}),
    ]
    for order, env in cases:
        key = order if env == {"MLFLOW_GREEN_AUTOLOG": "true"} else f"{order}:{sorted(env.items())}"
        folder = tmp_path_factory.mktemp("order")
        store = _Sqlite(folder)
        # As the scripts' own autolog(log_artifacts=False): the charts are tested elsewhere,
        # and on a loaded machine their bounded wait at exit ends in a (correct) warning.
        quiet = store.env(**env, MLFLOW_GREEN_LOG_ARTIFACTS="false")
        job = _Script(folder, _ORDER_SCRIPT, (order,), quiet)
        jobs[key] = (job, store)
    yield jobs
    for job, _ in jobs.values():
        job.kill()


@pytest.fixture(scope="module")
def graceful_jobs(tmp_path_factory) -> Iterator[dict]:
    jobs = {}
    for mode in ("ignore", "flag", "caught", "rekill", "endexit"):
        folder = tmp_path_factory.mktemp(f"graceful-{mode}")
        store = _Sqlite(folder)
        jobs[mode] = (_Script(folder, _GRACEFUL_SCRIPT, (mode,), store.env()), store)
    yield jobs
    for job, _ in jobs.values():
        job.kill()


@pytest.fixture(scope="module")
def down_jobs(tmp_path_factory, mlflow_server) -> Iterator[dict]:
    """Scripts whose tracking server (a forwarder to the real one) the test cuts off."""
    port = urllib.parse.urlparse(mlflow_server).port
    jobs = {}
    for key in ("end", "exit", "sigterm", "exit-hung", "sigterm-hung"):
        mode = key.split("-")[0]
        folder = tmp_path_factory.mktemp(f"down-{key}")
        proxy = Forwarder(port).start()
        env = {"MLFLOW_TRACKING_URI": proxy.url}
        jobs[key] = (_Script(folder, _DOWN_SCRIPT, (mode,), env), proxy)
    yield jobs
    for job, proxy in jobs.values():
        job.kill()
        proxy.stop()


def _green(client: MlflowClient, run_id: str) -> tuple[dict, dict]:
    run = client.get_run(run_id)
    metrics = {k: v for k, v in run.data.metrics.items() if k.startswith("green/")}
    tags = {k: v for k, v in run.data.tags.items() if k.startswith("green.")}
    return metrics, tags


# -- item 8: any order of import mlflow, autolog(), MLflow's registry, disable ---------------


@pytest.mark.parametrize("order", ORDERS)
def test_zero_code_mode_and_autolog_in_any_order(order_jobs, order):
    job, store = order_jobs[order]
    out, err = job.finish()
    assert job.proc.returncode == 0, err[-3000:]
    assert "RecursionError" not in err
    assert "mlflow-green" not in err, err[-3000:]
    for run_id in out.split():
        assert store.client.get_run(run_id).info.status == "FINISHED"
        metrics, tags = _green(store.client, run_id)
        if order == "disabled":  # the program's explicit disable wins over the variable
            assert metrics == {} and tags == {}
            continue
        assert metrics["green/energy_kwh"] > 0
        # Explicit arguments are kept (FRA); the environment alone has no location.
        env_alone = order in ("env-only", "threads")
        assert tags["green.country"] == ("unknown" if env_alone else "FRA")


def _one_warning(job: _Script) -> tuple[str, str]:
    """The script's output and its one mlflow-green warning (it ends with exit code 0)."""
    out, err = job.finish()
    assert job.proc.returncode == 0, err[-3000:]
    lines = [line for line in err.splitlines() if "mlflow-green:" in line]
    assert len(lines) == 1, err[-3000:]
    return out, lines[0]


def test_zero_code_value_that_is_not_a_boolean_warns_once(order_jobs):
    job, store = order_jobs["env-only:[('MLFLOW_GREEN_AUTOLOG', 'ture')]"]
    out, warning = _one_warning(job)
    assert "MLFLOW_GREEN_AUTOLOG='ture'" in warning and "true/false" in warning
    for run_id in out.split():
        assert _green(store.client, run_id) == ({}, {})


def test_a_program_that_calls_autolog_gets_no_warning_about_the_variable(order_jobs):
    """The program's own ``autolog()`` decides: a bad MLFLOW_GREEN_AUTOLOG is then moot."""
    job, store = order_jobs["autolog-before-import:[('MLFLOW_GREEN_AUTOLOG', 'ture')]"]
    out, err = job.finish()
    assert job.proc.returncode == 0, err[-3000:]
    assert "mlflow-green:" not in err, err[-3000:]
    for run_id in out.split():
        assert _green(store.client, run_id)[0]["green/energy_kwh"] > 0


def test_zero_code_with_a_bad_country_measures_energy_and_leaves_co2_unknown(order_jobs):
    job, store = order_jobs[
        "env-only:[('MLFLOW_GREEN_AUTOLOG', 'true'), ('MLFLOW_GREEN_COUNTRY', 'FRQ')]"
    ]
    out, warning = _one_warning(job)
    assert "MLFLOW_GREEN_COUNTRY" in warning and "FRQ" in warning
    for run_id in out.split():
        metrics, tags = _green(store.client, run_id)
        assert metrics["green/energy_kwh"] > 0
        assert "green/co2eq_kg" not in metrics
        assert "FRQ" in tags["green.carbon_intensity_source"]


# -- item 9: a program that survives SIGTERM keeps its run -----------------------------------


@pytest.mark.parametrize("mode", ["ignore", "flag", "caught"])
def test_sigterm_that_the_program_survives_leaves_its_run_alone(graceful_jobs, mode):
    job, store = graceful_jobs[mode]
    # An ignored SIGTERM stays ignored (and so in the program's children, across exec).
    assert job.read_line() == ("ignored" if mode == "ignore" else "handled")
    run_id = job.read_line()
    if mode != "ignore":
        job.proc.send_signal(signal.SIGTERM)
    out, err = job.finish()
    assert job.proc.returncode == 0, err[-3000:]
    assert "mlflow-green" not in err, err[-3000:]
    assert out.split() == [run_id]  # the metric went to the same run, not to a new one
    runs = store.client.search_runs([store.experiment_id])
    assert [r.info.run_id for r in runs] == [run_id]
    run = store.client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["after_sigterm"] == 1.0
    assert run.data.metrics["green/energy_kwh"] > 0


def test_handler_that_ends_the_process_itself_leaves_the_energy_in_the_spool(graceful_jobs):
    job, store = graceful_jobs["rekill"]
    assert job.read_line() == "handled"
    run_id = job.read_line()
    job.proc.send_signal(signal.SIGTERM)
    _, err = job.finish()
    assert job.proc.returncode == -signal.SIGTERM, err[-3000:]  # as without the plugin
    (payload,) = job.spooled()  # written before the handler ran: it never returned
    assert payload["run_id"] == run_id
    assert payload["report"]["energy_kwh"] > 0
    assert store.client.get_run(run_id).info.status == "RUNNING"  # as without the plugin


def test_handler_that_ends_its_run_then_exits_leaves_nothing_to_sync(graceful_jobs):
    job, store = graceful_jobs["endexit"]
    assert job.read_line() == "handled"
    run_id = job.read_line()
    job.proc.send_signal(signal.SIGTERM)
    _, err = job.finish()
    assert job.proc.returncode == 3, err[-3000:]
    assert job.spooled() == []  # the energy reached the run: no stale copy for sync to upload
    run = store.client.get_run(run_id)
    assert run.info.status == "KILLED" and run.data.metrics["green/energy_kwh"] > 0


# -- items 10 and 11: the tracking server is gone ---------------------------------------------


def _wait_for_spool(job: _Script, count: int) -> list[dict]:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        reports = job.spooled()
        if len(reports) >= count:
            return reports
        time.sleep(0.1)  # polling another process's files, bounded by the deadline
    pytest.fail(f"no spooled report within {DEADLINE_S:.0f} s (found {len(job.spooled())})")


def test_server_down_at_run_end_spools_within_seconds_and_counts_no_wait(down_jobs):
    job, proxy = down_jobs["end"]
    (run_id,) = job.read_line().split()
    proxy.stop()
    job.tell()
    wall_s = float(job.read_line())  # from before create_run to just before set_terminated
    (payload,) = _wait_for_spool(job, 1)
    job.kill()  # MLflow's own set_terminated is still retrying: not ours to wait for
    assert payload["run_id"] == run_id
    # The window closed when the run ended: no wait on the server is counted in it.
    assert 0 < payload["report"]["duration_s"] <= wall_s + 2.0


def _cut(proxy: Forwarder, how: str) -> None:
    if how == "hung":
        proxy.hang()  # accepts connections, never answers: a TCP connect alone says "up"
    else:
        proxy.stop()  # connection refused


@pytest.mark.parametrize("how", ["refused", "hung"])
def test_exit_with_an_open_run_and_the_server_gone_is_prompt(down_jobs, how):
    job, proxy = down_jobs["exit" if how == "refused" else "exit-hung"]
    (run_id,) = job.read_line().split()
    _cut(proxy, how)
    job.tell()
    _, err = job.finish(timeout_s=DEADLINE_S)
    assert job.proc.returncode == 0, err[-3000:]
    assert [p["run_id"] for p in job.spooled()] == [run_id]
    assert "mlflow-green sync" in err  # one warning saying where the report went


@pytest.mark.parametrize("how", ["refused", "hung"])
def test_sigterm_with_the_server_gone_is_obeyed_promptly(down_jobs, how):
    job, proxy = down_jobs["sigterm" if how == "refused" else "sigterm-hung"]
    run_ids = job.read_line().split()
    _cut(proxy, how)
    job.tell()
    assert job.read_line() == "waiting"
    job.proc.send_signal(signal.SIGTERM)
    _, err = job.finish(timeout_s=DEADLINE_S)
    assert job.proc.returncode == -signal.SIGTERM, err[-3000:]
    assert sorted(p["run_id"] for p in job.spooled()) == sorted(run_ids)
