"""Scripted hardware for the accuracy benchmarks: every tool reads the same fake GPU and CPU.

The test suite's hardware stand-ins (``tests/fakes``) play the machine:

* the fake ``pynvml`` (one GPU whose power follows a scripted profile; energy
  counter updated every 100 ms, 1 s-average power readings, optional counter
  reset) is installed as ``sys.modules["pynvml"]`` before any tool imports it,
  so mlflow-green, CodeCarbon and MLflow's system metrics all read it;
* the fake powercap tree (one RAPL package zone) is advanced by a driver thread
  every :data:`RAPL_UPDATE_S` to the exact integral of the CPU profile, wrapping
  at ``max_energy_range_uj`` as the hardware does; mlflow-green finds it through
  ``MLFLOW_GREEN_POWERCAP_ROOT``, CodeCarbon through its ``IntelRAPL(rapl_dir=...)``.

The profiles run in real time on a :class:`PausableClock`: the fake's time is
held still while the tools start and stop (CodeCarbon's first start takes over
a second), so every tool's window is exactly the scripted interval and the
ground truth is the exact integral of the profile over it.

Two things the fake ``pynvml`` lacks are added here, without touching it:
the functions CodeCarbon and MLflow call besides the meters' ones (memory,
utilisation, temperature, power limit, processes), as constants; and
CodeCarbon's ``nvidia-smi`` probe, answered yes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

from _common import FAKES, codecarbon_tracker

#: How often the driver thread moves the fake RAPL counter (real RAPL: about 1 ms).
RAPL_UPDATE_S = 0.005
J_PER_KWH = 3.6e6
GPU_UUID = "GPU-fake-0"


class PausableClock:
    """``time.monotonic`` that can be held still: the fake hardware's time axis."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._held: float | None = None

    def __call__(self) -> float:
        return self._held if self._held is not None else time.monotonic() - self._offset

    def pause(self) -> None:
        """Hold the clock at its current value."""
        if self._held is None:
            self._held = self()

    def resume(self) -> None:
        """Let the clock run again from where it was held."""
        if self._held is not None:
            self._offset = time.monotonic() - self._held
            self._held = None


def load_fake_pynvml() -> ModuleType:
    """Import ``tests/fakes/pynvml.py`` as ``pynvml`` (once), with the extra calls tools make."""
    module = sys.modules.get("pynvml")
    if module is not None and Path(getattr(module, "__file__", "")).parent == FAKES:
        return module
    spec = importlib.util.spec_from_file_location("pynvml", FAKES / "pynvml.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["pynvml"] = module  # before exec: its dataclasses look their module up
    spec.loader.exec_module(module)
    _add_calls_tools_make(module)
    return module


def _add_calls_tools_make(nvml: ModuleType) -> None:
    """Constant answers to what CodeCarbon and MLflow ask besides energy and power."""
    total = 80 * 2**30

    def memory(handle: Any) -> SimpleNamespace:
        nvml._device(handle)  # the fake's checks: initialised, valid handle, GPU not lost
        return SimpleNamespace(total=total, used=total // 4, free=total - total // 4)

    extra: dict[str, Any] = {
        "NVML_TEMPERATURE_GPU": 0,
        "c_nvmlMemory_t": lambda total, free, used: SimpleNamespace(
            total=total, free=free, used=used
        ),
        "nvmlDeviceGetMemoryInfo": memory,
        "nvmlDeviceGetEnforcedPowerLimit": lambda handle: 700_000,
        "nvmlDeviceGetTemperature": lambda handle, sensor: 50,
        "nvmlDeviceGetUtilizationRates": lambda handle: SimpleNamespace(gpu=100, memory=50),
        "nvmlDeviceGetComputeMode": lambda handle: 0,
        "nvmlDeviceGetComputeRunningProcesses": lambda handle: [],
        "nvmlDeviceGetGraphicsRunningProcesses": lambda handle: [],
    }
    for name, value in extra.items():
        if not hasattr(nvml, name):
            setattr(nvml, name, value)


@dataclass(frozen=True)
class Profile:
    """A scripted machine: GPU and CPU package power, ``[[t_s, watts], ...]`` piecewise linear."""

    name: str
    gpu: list[list[float]]
    cpu: list[list[float]]
    note: str = ""
    gpu_counter: bool = True  # False: a pre-Volta GPU, power readings only
    gpu_reset_at_s: float | None = None  # the GPU energy counter restarts from 0 here
    gpu_counter_start_mj: int = 0
    rapl_start_below_wrap_j: float | None = None  # start the RAPL counter this close to its wrap


class FakeMachine:
    """The fake GPU and RAPL package, driven by a :class:`Profile` on a pausable clock."""

    def __init__(self) -> None:
        sys.path.insert(0, str(FAKES))  # powercap.py; pynvml is loaded by path above
        from powercap import DEFAULT_MAX_ENERGY_RANGE_UJ, PowercapTree

        self.clock = PausableClock()
        self.clock.pause()
        self.nvml = load_fake_pynvml()
        self.nvml.set_clock(self.clock)
        self._root = tempfile.mkdtemp(prefix="mlflow-green-bench-powercap-")
        self.tree = PowercapTree(self._root)
        self.zone = self.tree.add_package(0, dram=False, core=False).package
        self.max_uj = DEFAULT_MAX_ENERGY_RANGE_UJ
        os.environ["MLFLOW_GREEN_POWERCAP_ROOT"] = str(self.tree.path)
        self._lock = threading.Lock()
        self._cpu = self.nvml._Profile.parse([[0.0, 0.0]])  # the fake's exact integrator
        self._cpu_start_uj = 0
        self._stop = threading.Event()
        self.load(Profile("idle", [[0.0, 0.0]], [[0.0, 0.0]]))
        threading.Thread(target=self._drive, name="fake-rapl", daemon=True).start()

    def load(self, profile: Profile) -> None:
        """Pause the clock and make ``profile`` the machine's power from now (t = 0)."""
        self.clock.pause()
        device: dict[str, Any] = {
            "uuid": GPU_UUID,
            "name": "NVIDIA A100-SXM4-40GB" if profile.gpu_counter else "Tesla P100-PCIE-16GB",
            "counter": profile.gpu_counter,
            "profile": profile.gpu,
            "counter_start_mj": profile.gpu_counter_start_mj,
        }
        if profile.gpu_reset_at_s is not None:
            device["reset_at_s"] = profile.gpu_reset_at_s
        with self._lock:
            self.nvml.configure({"devices": [device]})  # the epoch (t = 0) is now
            self._cpu = self.nvml._Profile.parse(profile.cpu)
            below = profile.rapl_start_below_wrap_j
            self._cpu_start_uj = 12_345_678 if below is None else self.max_uj - round(below * 1e6)
            self._write_rapl()

    def now_s(self) -> float:
        """Seconds since the profile started, on the fake's clock."""
        return self.nvml.now_s()

    def truth_j(self, t0: float, t1: float) -> dict[str, float]:
        """Exact GPU and CPU energy of the scripted profile from ``t0`` to ``t1``."""
        return {
            "gpu": self.nvml.integral_j(GPU_UUID, t0, t1),
            "cpu": self._cpu.integral_j(t0, t1),
        }

    def hold(self) -> None:
        """Stop the fake time, with the RAPL counter at its exact value for that instant."""
        self.clock.pause()
        with self._lock:
            self._write_rapl()

    def _write_rapl(self) -> None:
        joules = self._cpu.integral_j(0.0, self.now_s())
        self.tree.set_energy_uj(self.zone, (self._cpu_start_uj + round(joules * 1e6)) % self.max_uj)

    def _drive(self) -> None:
        while not self._stop.wait(RAPL_UPDATE_S):
            with self._lock:
                self._write_rapl()

    def close(self) -> None:
        """Stop the driver thread and remove the fake powercap tree."""
        import shutil

        self._stop.set()
        shutil.rmtree(self._root, ignore_errors=True)


def feed_codecarbon(machine: FakeMachine) -> None:
    """Point CodeCarbon at the fake GPU and RAPL tree; call before its first tracker."""
    from codecarbon.core import cpu as cc_cpu
    from codecarbon.core import gpu as cc_gpu
    from codecarbon.external import hardware as cc_hardware

    rapl_dir = str(machine.tree.path)
    real_rapl = cc_cpu.IntelRAPL
    real_available = cc_cpu.is_rapl_available
    # CodeCarbon tracks NVIDIA GPUs only where `nvidia-smi --help` runs; pynvml is the fake.
    cc_gpu.is_nvidia_system = lambda: True
    cc_cpu.is_rapl_available = lambda rapl_dir_=None: real_available(rapl_dir)

    def fake_rapl(**kwargs: Any) -> Any:
        return real_rapl(**{**kwargs, "rapl_dir": rapl_dir})

    cc_hardware.IntelRAPL = fake_rapl


# --- the tools, started and stopped around one window --------------------------------------


@dataclass
class Tool:
    """One way of measuring a window; ``stop`` returns joules by domain (``None``: not logged)."""

    name: str
    start: Callable[[], None]
    stop: Callable[[], dict[str, float | None]]
    notes: dict[str, str] = field(default_factory=dict)


def codecarbon_tool(label: str, measure_power_secs: float | None) -> Tool:
    """CodeCarbon's offline tracker: its ``gpu_energy`` and ``cpu_energy`` (kWh) at stop."""
    box: dict[str, Any] = {}

    def start() -> None:
        box["tracker"] = codecarbon_tracker(measure_power_secs)
        box["tracker"].start()

    def stop() -> dict[str, float | None]:
        tracker = box.pop("tracker")
        tracker.stop()
        data = tracker.final_emissions_data
        return {"gpu": data.gpu_energy * J_PER_KWH, "cpu": data.cpu_energy * J_PER_KWH}

    return Tool(label, start, stop)


def mlflow_green_tool() -> Tool:
    """An MLflow run with ``mlflow_green.autolog()``: the run's ``green/energy/*_kwh`` metrics."""
    import mlflow

    box: dict[str, Any] = {}

    def start() -> None:
        box["run"] = mlflow.start_run()

    def stop() -> dict[str, float | None]:
        mlflow.end_run()
        metrics = mlflow.MlflowClient().get_run(box.pop("run").info.run_id).data.metrics
        return {d: metrics.get(f"green/energy/{d}_kwh", 0.0) * J_PER_KWH for d in ("gpu", "cpu")}

    return Tool("mlflow-green", start, stop)


def system_metrics_tool(interval_s: float) -> Tool:
    """MLflow's system metrics on their own run, sampling every ``interval_s``.

    They log ``system/gpu_0_power_usage_watts`` (one reading per interval) and CPU
    utilisation, no energy: the GPU energy one can derive is the sum of the logged
    readings times the interval; CPU energy cannot be derived at all.
    """
    import mlflow
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    box: dict[str, Any] = {}
    client = mlflow.MlflowClient()

    def start() -> None:
        # What start_run(log_system_metrics=True) does, with this interval for this run only.
        experiment = mlflow.get_experiment_by_name("accuracy") or mlflow.set_experiment("accuracy")
        run_id = client.create_run(experiment.experiment_id).info.run_id
        box["run_id"] = run_id
        box["monitor"] = SystemMetricsMonitor(run_id, sampling_interval=interval_s)
        box["monitor"].start()

    def stop() -> dict[str, float | None]:
        box.pop("monitor").finish()  # as end_run: a partial last interval is not logged
        run_id = box.pop("run_id")
        client.set_terminated(run_id)
        history = client.get_metric_history(run_id, "system/gpu_0_power_usage_watts")
        gpu = sum(m.value for m in history) * interval_s
        return {"gpu": gpu, "cpu": None, "samples": float(len(history))}

    return Tool(f"MLflow system metrics ({interval_s:g} s)", start, stop)


@contextlib.contextmanager
def tracking_store() -> Iterator[str]:
    """A throw-away SQLite tracking store with mlflow-green's autolog on (no artifacts)."""
    import shutil

    import mlflow

    import mlflow_green

    folder = tempfile.mkdtemp(prefix="mlflow-green-bench-accuracy-")
    os.environ["MLFLOW_GREEN_SPOOL_DIR"] = os.path.join(folder, "spool")
    mlflow.set_tracking_uri(f"sqlite:///{folder}/mlflow.db")
    mlflow.set_experiment("accuracy")
    mlflow_green.autolog(country="FRA", log_artifacts=False, silent=True)
    try:
        yield folder
    finally:
        mlflow_green.autolog(disable=True)
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def session(
    system_intervals_s: tuple[float, ...], machine_type: type[FakeMachine] = FakeMachine
) -> Iterator[tuple[FakeMachine, list[Tool]]]:
    """The scripted machine and the tools compared on it, in a throw-away tracking store.

    Tools: CodeCarbon at 1 s and at its default interval, MLflow system metrics at
    each of ``system_intervals_s``, and mlflow-green (autolog on an MLflow run).
    ``machine_type``: a :class:`FakeMachine` subclass (``bench/accuracy.py``'s AMD one).
    """
    machine = machine_type()  # before any tool imports pynvml (or amdsmi)
    feed_codecarbon(machine)
    try:
        with tracking_store():
            yield (
                machine,
                [
                    codecarbon_tool("CodeCarbon (1 s)", 1.0),
                    codecarbon_tool("CodeCarbon (default 15 s)", None),
                    *(system_metrics_tool(s) for s in system_intervals_s),
                    mlflow_green_tool(),
                ],
            )
    finally:
        machine.close()


def print_errors(title: str, errors: dict[str, dict[str, float | None]]) -> None:
    """One line per tool: its signed error per domain."""
    print(title)
    for tool, by_domain in errors.items():
        text = "  ".join(
            f"{d} {'n/a' if e is None else f'{e:+.2f}%'}"
            for d, e in by_domain.items()
            if d in ("gpu", "cpu")
        )
        print(f"  {tool:32s} {text}")


def measure(
    machine: FakeMachine,
    profile: Profile,
    seconds: float,
    tools: list[Tool],
    phase_s: float = 0.037,
) -> dict:
    """Run ``profile`` for ``seconds`` with every tool measuring the same window.

    The window opens ``phase_s`` into the profile, off the GPU counter's 100 ms
    grid as real windows are (a counter read between two updates returns the
    older value: the ends of a window are uncertain by up to 100 ms of energy).
    Returns ``{"truth": {domain: J}, "tools": {name: {domain: J or None}}}``.
    """
    from mlflow_green.measure.monitor import reset_monitor

    reset_monitor()  # each profile is a new machine: meters are rediscovered
    machine.load(profile)
    machine.clock.resume()
    time.sleep(phase_s)
    machine.hold()
    for tool in tools:  # the clock is held: the start order and cost do not matter
        tool.start()
    t0 = machine.now_s()
    machine.clock.resume()
    time.sleep(seconds)
    machine.hold()
    t1 = machine.now_s()
    measured = {tool.name: tool.stop() for tool in reversed(tools)}
    return {"seconds": round(t1 - t0, 3), "truth": machine.truth_j(t0, t1), "tools": measured}


def error_pct(measured: float | None, truth: float) -> float | None:
    """Signed relative error in percent; ``None`` when the tool logged nothing to compare."""
    if measured is None:
        return None
    return (measured - truth) / truth * 100.0 if truth else 0.0
