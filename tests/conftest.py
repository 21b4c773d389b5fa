"""Shared fixtures: the hardware stand-ins and a freshly discovered monitor for every test.

* ``fake_nvml``: the scenario-driven fake ``pynvml`` (tests/fakes/pynvml.py) in
  ``sys.modules``, on a manual clock unless the test asks for real time.
* ``fake_powercap``: a fake RAPL powercap tree (tests/fakes/powercap.py) that
  :func:`mlflow_green.measure.meters.discover` finds through ``MLFLOW_GREEN_POWERCAP_ROOT``.
* ``fresh_monitor`` (autouse): ``reset_monitor()`` before and after every test, so
  each test discovers the hardware afresh and leaves no sampler thread behind.
* ``fake_apple``: the ``zeus_apple_silicon`` stand-in on a manual clock, on "macOS on arm64".
* ``sqlite_uri``: a fresh SQLite store as the tracking URI, in ``tmp_path``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from mlflow_green.measure import monitor as monitor_module
from mlflow_green.measure.meters.rapl import ROOT_ENV
from mlflow_green.runs import rendering
from tests.fakes.powercap import PowercapTree

FAKES = Path(__file__).parent / "fakes"
#: Name of the monitor's background thread.
SAMPLER_THREAD_NAME = "mlflow-green-sampler"


def sampler_threads() -> list[threading.Thread]:
    """The live sampler threads of this process."""
    return [t for t in threading.enumerate() if t.name == SAMPLER_THREAD_NAME]


def reset_and_wait(timeout_s: float = 10.0) -> None:
    """``reset_monitor()``, then wait for the reset monitor's sampler thread to end.

    Only that monitor's thread is waited for: a monitor a test built itself is its own
    business. Waiting means nothing of one test runs on into the next.
    """
    current = monitor_module._MONITOR
    thread = current._thread if current is not None else None
    monitor_module.reset_monitor()
    if thread is not None:
        thread.join(timeout_s)


@pytest.fixture(autouse=True)
def fresh_monitor() -> Iterator[None]:
    """Every test starts and ends with no process monitor: hardware is discovered afresh.
    The charts of its runs, drawn in the background, are finished before the next test."""
    reset_and_wait()
    yield
    rendering.wait(60)
    reset_and_wait()


class FakeNvml:
    """The fake ``pynvml`` module with its clock, and shortcuts to drive both.

    The clock is a :class:`ManualClock` (time moves only with :meth:`advance`) unless
    :meth:`use_real_time` is called; call that before :meth:`configure`.
    """

    def __init__(self, module: ModuleType) -> None:
        self.pynvml = module
        self.clock: Any = module.ManualClock(start=5000.0)
        module.set_clock(self.clock)

    def use_real_time(self) -> None:
        """Run the fake on ``time.monotonic``, the clock the NVML power meter integrates with."""
        self.clock = None
        self.pynvml.set_clock(time.monotonic)

    def configure(self, devices: list[dict[str, Any]], **scenario: Any) -> None:
        """Describe the GPUs (see tests/fakes/pynvml.py); restarts the fake's epoch."""
        self.pynvml.configure({"driver": True, "devices": devices, **scenario})

    def now(self) -> float:
        """Seconds since the epoch on the fake's clock (the profiles' time axis)."""
        return self.pynvml.now_s()

    def advance(self, dt_s: float) -> float:
        """Move the manual clock forward; returns the new :meth:`now`."""
        if self.clock is None:
            raise RuntimeError("the fake runs on real time: it cannot be advanced")
        self.clock.advance(dt_s)
        return self.now()

    def counter_integral_j(self, uuid: str, t0: float, t1: float) -> float:
        """What a perfect reader of the energy counter sees between ``t0`` and ``t1``."""
        return self.pynvml.counter_integral_j(uuid, t0, t1)

    def integral_j(self, uuid: str, t0: float, t1: float) -> float:
        """The exact energy of the power profile between ``t0`` and ``t1``."""
        return self.pynvml.integral_j(uuid, t0, t1)


@pytest.fixture
def fake_nvml(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeNvml]:
    """A fresh copy of the fake ``pynvml`` as ``sys.modules["pynvml"]``; no GPU until configured."""
    monkeypatch.syspath_prepend(str(FAKES))
    spec = importlib.util.spec_from_file_location("pynvml", FAKES / "pynvml.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # setitem puts back whatever ``pynvml`` was before (the real module, or nothing).
    monkeypatch.setitem(sys.modules, "pynvml", module)
    spec.loader.exec_module(module)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("FAKE_NVML_SCENARIO", raising=False)
    yield FakeNvml(module)
    # Close the meters while the fake they hold is still the one in sys.modules.
    reset_and_wait()


@pytest.fixture
def fake_powercap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PowercapTree]:
    """An empty fake powercap tree that ``discover()`` will use; add packages before measuring."""
    root = tmp_path / "powercap-root"
    root.mkdir()
    tree = PowercapTree(root)
    monkeypatch.setenv(ROOT_ENV, str(tree.path))
    yield tree
    reset_and_wait()


@pytest.fixture
def no_green_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No ``MLFLOW_GREEN_*`` setting of the outer environment leaks into the test."""
    for name in list(os.environ):
        if name.startswith("MLFLOW_GREEN_"):
            monkeypatch.delenv(name)
    yield


class FakeAmdSmi:
    """The stand-in ``amdsmi`` module (tests/fakes/amdsmi.py) on a manual clock, and shortcuts."""

    def __init__(self, module: ModuleType) -> None:
        from tests.fakes.powercap import ManualClock

        self.amdsmi = module
        self.clock = ManualClock(start_s=7000.0)
        module.set_clock(self.clock)

    def configure(self, devices: list[dict[str, Any]], **scenario: Any) -> None:
        """Describe the AMD GPUs (see tests/fakes/amdsmi.py); restarts the fake's epoch."""
        self.amdsmi.configure({"driver": True, "devices": devices, **scenario})

    def now(self) -> float:
        """Seconds since the epoch on the fake's clock (the profiles' time axis)."""
        return self.amdsmi.now_s()

    def advance(self, dt_s: float) -> float:
        """Move the manual clock forward; returns the new :meth:`now`."""
        self.clock.advance(dt_s)
        return self.now()

    def counter_integral_j(self, uuid: str, t0: float, t1: float) -> float:
        """What a perfect reader of the energy accumulator sees between ``t0`` and ``t1``."""
        return self.amdsmi.counter_integral_j(uuid, t0, t1)

    def integral_j(self, uuid: str, t0: float, t1: float) -> float:
        """The exact energy of the power profile between ``t0`` and ``t1``."""
        return self.amdsmi.integral_j(uuid, t0, t1)


@pytest.fixture
def fake_amdsmi(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAmdSmi]:
    """A fresh stand-in ``amdsmi`` as ``sys.modules["amdsmi"]``; no GPU until configured.

    No visible-devices variable of the outer environment applies; NVML finds no GPU
    (``pynvml``, real or not, is made unimportable), so discovery reaches AMD SMI.
    """
    for name in ("ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("FAKE_AMDSMI_SCENARIO", raising=False)
    monkeypatch.setitem(sys.modules, "pynvml", None)
    spec = importlib.util.spec_from_file_location("amdsmi", FAKES / "amdsmi.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "amdsmi", module)  # before exec, as an import does
    spec.loader.exec_module(module)
    yield FakeAmdSmi(module)
    # Close the meters while the fake they hold is still the one in sys.modules.
    reset_and_wait()


@pytest.fixture
def sqlite_uri(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_green_environment: None
) -> Iterator[str]:
    """A fresh SQLite store (MLflow's schema ready) as the tracking URI, ``tmp_path`` as the
    current folder with a spool of its own; autolog off and no run left open at the end."""
    import mlflow

    import mlflow_green
    from tests.mlflow_server import sqlite_db_copy

    for name in ("MLFLOW_RUN_ID", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_GREEN_SPOOL_DIR", str(tmp_path / "spool"))
    uri = f"sqlite:///{sqlite_db_copy(tmp_path / 'mlflow.db')}"
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow_green.autolog(disable=True)
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


@pytest.fixture
def experiment_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """An ``MlflowClient`` on a SQLite store of its own, ``tmp_path`` the current folder, a
    new experiment as ``MLFLOW_EXPERIMENT_ID``; autolog is off again afterwards."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.tracking import fluent

    import mlflow_green
    from tests.mlflow_server import sqlite_db_copy

    for name in list(os.environ):
        if name.startswith("MLFLOW_GREEN_") or name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_GREEN_SPOOL_DIR", str(tmp_path / "spool"))
    uri = f"sqlite:///{sqlite_db_copy(tmp_path / 'mlflow.db')}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    monkeypatch.setattr(fluent, "_active_experiment_id", None)
    while mlflow.active_run() is not None:
        mlflow.end_run()
    store = MlflowClient(uri)
    experiment = store.create_experiment(
        f"test-{uuid.uuid4().hex[:12]}", artifact_location=(tmp_path / "artifacts").as_uri()
    )
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", experiment)
    try:
        yield store
    finally:
        mlflow_green.autolog(disable=True)
        while mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.set_tracking_uri(None)


@pytest.fixture
def fake_apple(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """A fresh stand-in as ``zeus_apple_silicon`` on a manual clock, on "macOS on arm64"."""
    import platform

    spec = importlib.util.spec_from_file_location(
        "zeus_apple_silicon", FAKES / "zeus_apple_silicon.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "zeus_apple_silicon", module)
    spec.loader.exec_module(module)
    module.clock = module.ManualClock(start=2000.0)
    module.set_clock(module.clock)
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(platform, "machine", lambda: "arm64")
    yield module
