"""A real ``mlflow server`` on 127.0.0.1 for tests, and a TCP forwarder to cut it off.

Use from a test module (not conftest.py)::

    from tests.mlflow_server import server_fixture
    mlflow_server = server_fixture()   # a fixture yielding the server's URL

The server runs ``mlflow server --backend-store-uri sqlite:///<tmp>/mlflow.db
--artifacts-destination <tmp>/artifacts`` in its own process group (artifacts go
through the server's ``mlflow-artifacts:/`` proxy, over HTTP: ``--default-artifact-root
<folder>`` would make clients write to the folder directly). One server serves
every module that uses it at the same time; it is stopped when the last of them
finishes, not at the end of the session, because a live child process of pytest
skews tests that measure this process tree (``scope="process"``).
``boot_fixture()`` gives an autouse fixture that starts it with the module's first
test, so that its ~7-14 s start overlaps other tests.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

START_TIMEOUT_S = 90.0
_LOCK = threading.RLock()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (right now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def migrated_sqlite_db(path: Path) -> Path:
    """Create an MLflow SQLite database at ``path`` with every migration applied."""
    from mlflow.tracking._tracking_service.client import TrackingServiceClient

    TrackingServiceClient(f"sqlite:///{path}").store  # creates and migrates the schema  # noqa: B018
    return path


_TEMPLATE: Path | None = None


def sqlite_db_copy(path: Path) -> Path:
    """A fresh, migrated MLflow SQLite database at ``path``.

    Migrating one costs seconds; it is done once per process and copied.
    """
    global _TEMPLATE
    with _LOCK:
        if _TEMPLATE is None:
            folder = Path(tempfile.mkdtemp(prefix="mlflow-green-template-"))
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
            _TEMPLATE = migrated_sqlite_db(folder / "mlflow.db")
    shutil.copyfile(_TEMPLATE, path)
    return path


class MlflowServer:
    """One ``mlflow server`` process group."""

    def __init__(
        self,
        root: Path,
        registry_store_uri: str | None = None,
        *,
        workers: int = 1,
        gunicorn: bool = False,
    ) -> None:
        self.root = root
        # ``--registry-store-uri``; ``{db}`` stands for this server's SQLite file.
        self.registry_store_uri = registry_store_uri
        self.workers = workers
        self.gunicorn = gunicorn  # serve with gunicorn (``--gunicorn-opts``), not uvicorn
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = root / "server.log"

    def start(self) -> None:
        db = self.root / "mlflow.db"
        if not db.exists():
            sqlite_db_copy(db)  # faster start: the server finds its schema ready
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        for name in list(env):
            if name.startswith(("MLFLOW_GREEN_", "MLFLOW_TRACKING_")):
                del env[name]
        cmd = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{db}",
            "--artifacts-destination",
            str(self.root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
        ]
        if self.registry_store_uri is not None:
            cmd += ["--registry-store-uri", self.registry_store_uri.format(db=db)]
        if self.gunicorn:
            cmd.append("--gunicorn-opts=--log-level=warning")
        self.proc = start_process_group(cmd, self.root, env, self.log)

    def wait_healthy(self, timeout_s: float = START_TIMEOUT_S) -> float:
        """Wait until ``/health`` answers; returns the seconds waited."""
        assert self.proc is not None
        start = time.monotonic()
        deadline = start + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return time.monotonic() - start
            except OSError:
                pass
            time.sleep(0.2)  # polling interval of a bounded wait, not a synchronisation
        raise RuntimeError(f"mlflow server not healthy after {timeout_s} s:\n{self.tail()}")

    def tail(self) -> str:
        return log_tail(self.log, 4000)

    def stop(self) -> None:
        stop_process_group(self.proc, grace_s=10)


def start_process_group(cmd: list[str], cwd: Path, env: dict, log_path: Path) -> subprocess.Popen:
    """Start ``cmd`` in a process group of its own (stopped as a whole), output to ``log_path``."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def log_tail(log_path: Path, chars: int) -> str:
    """The last ``chars`` characters of a server's log ("" when it cannot be read)."""
    try:
        return log_path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def stop_process_group(proc: subprocess.Popen | None, grace_s: float) -> None:
    """SIGTERM the process group led by ``proc``; SIGKILL it if it is not gone in ``grace_s``."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


_SERVER: MlflowServer | None = None
_USERS = 0


def _acquire() -> MlflowServer:
    global _SERVER, _USERS
    with _LOCK:
        if _SERVER is None:
            _SERVER = MlflowServer(Path(tempfile.mkdtemp(prefix="mlflow-green-server-")))
            _SERVER.start()
        _USERS += 1
        return _SERVER


def _release() -> None:
    global _SERVER, _USERS
    with _LOCK:
        _USERS -= 1
        if _USERS == 0 and _SERVER is not None:
            server, _SERVER = _SERVER, None
            server.stop()
            shutil.rmtree(server.root, ignore_errors=True)


def server_fixture(registry_store_uri: str | None = None):
    """A module-scoped fixture yielding the URL of the live ``mlflow server``.

    With ``registry_store_uri`` (``{db}`` is replaced by the server's SQLite file,
    e.g. ``"green+sqlite:///{db}"``) the module gets a server of its own, started
    with ``--registry-store-uri`` and stopped when the module ends.
    """
    if registry_store_uri is not None:
        return _own_server_fixture(registry_store_uri)

    @pytest.fixture(scope="module")
    def mlflow_server() -> Iterator[str]:
        server = _acquire()
        try:
            server.wait_healthy()
            yield server.url
        finally:
            _release()

    return mlflow_server


def _own_server_fixture(registry_store_uri: str):
    @pytest.fixture(scope="module")
    def mlflow_server() -> Iterator[str]:
        root = Path(tempfile.mkdtemp(prefix="mlflow-green-server-"))
        server = MlflowServer(root, registry_store_uri=registry_store_uri)
        try:
            server.start()
            server.wait_healthy()
            yield server.url
        finally:
            server.stop()
            shutil.rmtree(root, ignore_errors=True)

    return mlflow_server


def boot_fixture():
    """A module-scoped autouse fixture that starts the server without waiting for it."""

    @pytest.fixture(scope="module", autouse=True)
    def _boot_mlflow_server() -> Iterator[None]:
        _acquire()
        try:
            yield
        finally:
            _release()

    return _boot_mlflow_server


class Forwarder:
    """A TCP forwarder on 127.0.0.1 to ``target_port``: a server that can go down and return.

    ``stop()`` closes the listening socket and every open connection, so clients
    get "connection refused" as from a server that died; ``start()`` listens on
    the same port again.
    """

    def __init__(self, target_port: int, port: int | None = None) -> None:
        self.target_port = target_port
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._hanging = False

    def start(self) -> Forwarder:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            if self._hanging:  # a server that accepts and never answers
                with self._lock:
                    self._conns.append(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def hang(self) -> None:
        """From now on accept connections and never answer (a hung or black-holed server);
        open connections are cut."""
        self._hanging = True
        self._cut_connections()

    def stop(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        self._cut_connections()

    def _cut_connections(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
