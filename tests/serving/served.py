"""A real ``mlflow models serve`` process group on 127.0.0.1, and a text model to serve.

The server runs under zero-code mode with the scripted GPU (tests/fakes/pynvml.py on
its ``PYTHONPATH``, a constant-power scenario), so the energy it must log is known.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import mlflow.pyfunc

from tests.mlflow_server import free_port, log_tail, start_process_group, stop_process_group

ROOT = Path(__file__).resolve().parents[2]
FAKES = ROOT / "tests" / "fakes"
VENV_BIN = Path(sys.executable).parent
START_TIMEOUT_S = 120.0
T = TypeVar("T")


class Echo(mlflow.pyfunc.PythonModel):
    """Answers each row's ``text`` with ``"echo <text> done"``: words = input words + 2."""

    def predict(self, context, model_input, params=None):
        return [f"echo {text} done" for text in model_input["text"]]


class PidEcho(mlflow.pyfunc.PythonModel):
    """Answers each row's ``text`` with ``"<worker pid> <text>"``: says which worker answered."""

    def predict(self, context, model_input, params=None):
        return [f"{os.getpid()} {text}" for text in model_input["text"]]


def poll(condition: Callable[[], T], timeout_s: float, what: str, every_s: float = 0.2) -> T:
    """``condition()``'s first truthy value; fails after ``timeout_s`` naming ``what``."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(every_s)  # the polling interval of a bounded wait, not a synchronisation
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}; last: {last!r}")


def gpu_scenario(folder: Path, power_w: float) -> Path:
    """One scripted GPU drawing ``power_w`` all the time."""
    path = folder / "nvml.json"
    device = {"uuid": "GPU-serving-0", "name": "NVIDIA H100", "profile": [[0, power_w]]}
    path.write_text(json.dumps({"driver": True, "devices": [device]}))
    return path


class Served:
    """``mlflow models serve -m MODEL_URI --env-manager local -w WORKERS`` in its own group."""

    def __init__(self, root: Path, model_uri: str, tracking_uri: str, **env: str) -> None:
        self.root, self.model_uri, self.tracking_uri = root, model_uri, tracking_uri
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_env = env
        self.proc: subprocess.Popen | None = None
        self.log = root / f"serve-{self.port}.log"

    def start(self, workers: int = 2) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_GREEN_")}
        env.pop("CUDA_VISIBLE_DEVICES", None)
        env.update(
            MLFLOW_TRACKING_URI=self.tracking_uri,
            # uvicorn must be on PATH for --env-manager local: the venv's bin first.
            PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
            PYTHONPATH=f"{FAKES}{os.pathsep}{ROOT}",
            PYTHONUNBUFFERED="1",
            MLFLOW_GREEN_AUTOLOG="true",
        )
        env.update(self.extra_env)
        cmd = [str(VENV_BIN / "mlflow"), "models", "serve", "-m", self.model_uri]
        cmd += ["--env-manager", "local", "-w", str(workers), "-h", "127.0.0.1"]
        cmd += ["-p", str(self.port)]
        self.proc = start_process_group(cmd, self.root, env, self.log)

    def wait_ready(self) -> None:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        poll(ready, START_TIMEOUT_S, f"{self.url}/ping\n{self.tail()}")

    def invoke(self, body: bytes, content_type: str = "application/json") -> tuple[int, bytes]:
        """POST ``body`` to ``/invocations``: (status, response body)."""
        request = urllib.request.Request(
            f"{self.url}/invocations", data=body, headers={"Content-Type": content_type}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def tail(self) -> str:
        return log_tail(self.log, 6000)

    def kill_group(self) -> None:
        """SIGKILL whatever is left of the process group (workers outlive their parent)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    def stop(self) -> None:
        stop_process_group(self.proc, grace_s=30)


def texts_request(texts: list[str]) -> bytes:
    """An ``/invocations`` body of one ``text`` column."""
    return json.dumps(
        {"dataframe_split": {"columns": ["text"], "data": [[t] for t in texts]}}
    ).encode()
