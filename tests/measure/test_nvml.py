"""Tests of the NVML GPU meters against the scenario-driven fake ``pynvml`` (tests/fakes).

Time is a manual clock shared by the fake and the meters: no sleeps, exact
ground truth (``integral_j``, ``counter_integral_j``).
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from mlflow_green.measure.meters.base import MeterUnavailable
from mlflow_green.measure.meters.nvml import (
    POWER_POLL_INTERVAL_S,
    NvmlEnergyCounterMeter,
    NvmlPowerMeter,
    open_nvml_meters,
)

FAKES = Path(__file__).parents[1] / "fakes"
REPO = Path(__file__).parents[2]

A100 = "NVIDIA A100-SXM4-40GB"
H100 = "NVIDIA H100 80GB HBM3"
V100 = "Tesla V100-SXM2-16GB"
UUIDS = [
    "GPU-aaaa1111-0000-0000-0000-000000000000",
    "GPU-bbbb2222-0000-0000-0000-000000000000",
    "GPU-cccc3333-0000-0000-0000-000000000000",
    "GPU-cccc4444-0000-0000-0000-000000000000",
]


class FakeNvml:
    """The fake ``pynvml`` module, its manual clock, and shortcuts to configure both."""

    def __init__(self, module: ModuleType) -> None:
        self.pynvml = module
        self.clock = module.ManualClock(start=5000.0)
        module.set_clock(self.clock)

    def configure(self, devices: list[dict[str, Any]], **scenario: Any) -> None:
        self.pynvml.configure({"driver": True, "devices": devices, **scenario})

    def open(self) -> list[Any]:
        return open_nvml_meters(clock=self.clock)

    def now(self) -> float:
        return self.pynvml.now_s()

    def advance(self, dt_s: float) -> float:
        self.clock.advance(dt_s)
        return self.now()

    def initialised(self) -> bool:
        """Whether NVML answers calls, asked the way the meter's caller would."""
        try:
            self.pynvml.nvmlDeviceGetCount()
        except self.pynvml.NVMLError_Uninitialized:
            return False
        return True


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeNvml:
    monkeypatch.syspath_prepend(str(FAKES))
    # A fresh copy per test, so no NVML state leaks between tests; setitem puts back
    # whatever ``pynvml`` was before (the real module, or nothing).
    spec = importlib.util.spec_from_file_location("pynvml", FAKES / "pynvml.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "pynvml", module)  # before exec, as an import does
    spec.loader.exec_module(module)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("FAKE_NVML_SCENARIO", raising=False)
    return FakeNvml(module)


def gpu(
    index: int = 0,
    *,
    name: str = A100,
    counter: bool = True,
    profile: list[list[float]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "uuid": UUIDS[index],
        "name": name,
        "counter": counter,
        "profile": profile if profile is not None else [[0.0, 100.0]],
        **extra,
    }


def steady() -> list[list[float]]:
    return [[0.0, 250.0]]


def spiky() -> list[list[float]]:
    """100 W with a 100 ms spike to 400 W every second, off the counter's 100 ms grid."""
    points = [[0.0, 100.0]]
    for k in range(60):
        start = 0.55 + k
        points += [[start, 100.0], [start, 400.0], [start + 0.1, 400.0], [start + 0.1, 100.0]]
    return points


def ramp() -> list[list[float]]:
    return [[0.0, 50.0], [30.0, 300.0], [45.0, 120.0]]


def read_pattern(fake: FakeNvml, meter: Any, uuid: str, until_s: float):
    """Read at irregular intervals, as a busy monitor might; yields (t_s, joules)."""
    for dt in itertools.cycle([0.1, 0.37, 1.0, 0.05, 2.3, 0.1]):
        if fake.now() >= until_s:
            return
        t = fake.advance(dt)
        yield t, meter.read()[uuid]


# --- Energy counter ------------------------------------------------------------------------


@pytest.mark.parametrize("profile", [steady, spiky, ramp])
def test_counter_meter_equals_counter_integral(fake: FakeNvml, profile) -> None:
    points = profile()
    fake.configure([gpu(0, profile=points, counter_start_mj=987_654_321)])
    fake.advance(3.37)  # the counter has been counting since long before the meter opens
    [meter] = fake.open()
    assert isinstance(meter, NvmlEnergyCounterMeter)
    assert meter.read() == {UUIDS[0]: 0.0}
    t_open = fake.now()
    previous = 0.0
    for t, energy_j in read_pattern(fake, meter, UUIDS[0], until_s=t_open + 40.0):
        expected = fake.pynvml.counter_integral_j(UUIDS[0], t_open, t)
        assert energy_j == pytest.approx(expected, rel=1e-12, abs=1e-9)
        assert energy_j >= previous
        previous = energy_j
    # Against the true energy, only the two ends are uncertain: each by at most one
    # 100 ms counter update at peak power.
    exact = fake.pynvml.integral_j(UUIDS[0], t_open, t)
    peak_w = max(w for _, w in points)
    assert abs(energy_j - exact) <= 2 * 0.1 * peak_w + 0.002
    assert energy_j > 0.9 * exact


def test_counter_meter_reset_counts_the_interval_from_power(fake: FakeNvml) -> None:
    fake.configure([gpu(0, profile=ramp(), counter_start_mj=5_000_000_000, reset_at_s=10.05)])
    fake.advance(2.0)
    [meter] = fake.open()
    t_open = fake.now()
    history = [(t_open, 0.0)]
    while fake.now() < 20.0:
        t = fake.advance(0.5)
        history.append((t, meter.read()[UUIDS[0]]))
    energies = [e for _, e in history]
    assert energies == sorted(energies), "energy went down across the reset"
    before = max(t for t, _ in history if t < 10.05)
    after = min(t for t, _ in history if t >= 10.05)
    # Either side of the reset the counter is exact.
    assert dict(history)[before] == pytest.approx(
        fake.pynvml.counter_integral_j(UUIDS[0], t_open, before), rel=1e-12
    )
    tail = energies[-1] - dict(history)[after]
    assert tail == pytest.approx(
        fake.pynvml.counter_integral_j(UUIDS[0], after, history[-1][0]), rel=1e-12
    )
    # Across it, the 1 s average power x 0.5 s: at least what the restarted counter holds,
    # and close to the truth on this ramp (not the 0 J that dropping the interval gives).
    step = dict(history)[after] - dict(history)[before]
    assert step >= fake.pynvml.counter_integral_j(UUIDS[0], 10.05, after)
    assert step == pytest.approx(fake.pynvml.integral_j(UUIDS[0], before, after), rel=0.02)
    exact = fake.pynvml.integral_j(UUIDS[0], t_open, history[-1][0])
    assert energies[-1] == pytest.approx(exact, rel=0.005)


# --- Power integration ---------------------------------------------------------------------


def slow_random_profile() -> list[list[float]]:
    """A new level each second, linear in between: changes no faster than 1 Hz."""
    levels = [60, 250, 180, 300, 90, 120, 280, 200, 75, 160]
    return [[float(t), float(levels[(t * 7) % len(levels)])] for t in range(70)]


def slow_sine_profile() -> list[list[float]]:
    """150 W +/- 100 W at 0.5 Hz, sampled finely."""
    return [[t / 20, 150.0 + 100.0 * math.sin(2 * math.pi * 0.5 * t / 20)] for t in range(70 * 20)]


@pytest.mark.parametrize("profile", [steady, ramp, slow_random_profile, slow_sine_profile])
def test_power_meter_within_one_percent_at_10_hz(fake: FakeNvml, profile) -> None:
    fake.configure([gpu(0, name=V100, counter=False, profile=profile())])
    fake.advance(0.037)  # samples off the profile's breakpoints
    [meter] = fake.open()
    assert isinstance(meter, NvmlPowerMeter)
    assert meter.poll_interval_s == POWER_POLL_INTERVAL_S == 0.1
    t_open = fake.now()
    while fake.now() < t_open + 60.0:
        fake.advance(meter.poll_interval_s)
        energy_j = meter.read()[UUIDS[0]]
    exact = fake.pynvml.integral_j(UUIDS[0], t_open, fake.now())
    assert energy_j == pytest.approx(exact, rel=0.01)


def test_power_meter_integrates_with_trapezoids_from_open(fake: FakeNvml) -> None:
    # 0 -> 200 W over 10 s: 1000 J. Only the trapezoid rule gets it from two samples
    # (left sums give 0 J, right sums 2000 J), and only if the first is taken at open.
    fake.configure([gpu(0, counter=False, profile=[[0.0, 0.0], [10.0, 200.0]])])
    [meter] = fake.open()
    assert meter.read() == {UUIDS[0]: 0.0}
    fake.advance(10.0)
    assert meter.read()[UUIDS[0]] == pytest.approx(1000.0, rel=1e-9)
    fake.advance(1.0)
    assert meter.read()[UUIDS[0]] == pytest.approx(1200.0, rel=1e-9)


# --- Device selection ----------------------------------------------------------------------


def four_gpus(fake: FakeNvml, **scenario: Any) -> None:
    fake.configure([gpu(i) for i in range(4)], **scenario)


def visible(fake: FakeNvml) -> list[str]:
    return [uuid for meter in fake.open() for uuid in meter.devices]


def test_all_devices_visible_when_unset(fake: FakeNvml) -> None:
    four_gpus(fake)
    assert visible(fake) == UUIDS


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("2,0", [2, 0]),
        (" 3 , 1", [3, 1]),
        ("1,7,0", [1]),  # index out of range ends the list
        ("1,abc,2", [1]),  # so does anything unparsable
        ("0,0,1", [0]),  # and a repeat
        ("-1", []),
        ("", []),
        ("GPU-bbbb", [1]),  # UUID prefix
        (f"{UUIDS[3]},0", [3, 0]),
        ("GPU-cccc,0", []),  # ambiguous prefix
        ("GPU-ffff,0", []),  # no such GPU
    ],
)
def test_cuda_visible_devices(
    fake: FakeNvml, monkeypatch: pytest.MonkeyPatch, spec: str, expected: list[int]
) -> None:
    four_gpus(fake)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", spec)
    assert visible(fake) == [UUIDS[i] for i in expected]


def test_uuid_selection_with_bytes_from_old_bindings(
    fake: FakeNvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    four_gpus(fake, strings="bytes")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-cccc3")
    [meter] = fake.open()
    handle = fake.pynvml.nvmlDeviceGetHandleByIndex(2)
    assert isinstance(fake.pynvml.nvmlDeviceGetUUID(handle), bytes)  # the case under test
    assert meter.devices == [UUIDS[2]]
    assert meter.hardware() == f"{A100} x1"
    assert list(meter.read()) == [UUIDS[2]]


def test_no_visible_device_gives_no_meter_and_shuts_nvml_down(
    fake: FakeNvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    four_gpus(fake)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert fake.open() == []
    assert not fake.initialised()


def test_machine_without_gpus_gives_no_meter(fake: FakeNvml) -> None:
    fake.configure([])
    assert fake.open() == []
    assert not fake.initialised()


def test_mig_entries_are_skipped_with_one_warning(
    fake: FakeNvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    four_gpus(fake)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-1b2c3d4e-aaaa,MIG-GPU-aaaa1111/1/0,1")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        meters = fake.open()
    assert [uuid for m in meters for uuid in m.devices] == [UUIDS[1]]
    assert len(caught) == 1
    assert "MIG" in str(caught[0].message)
    assert "not measured" in str(caught[0].message)


# --- Methods, hardware, errors, lifecycle --------------------------------------------------


def test_mixed_devices_give_one_meter_per_method(fake: FakeNvml) -> None:
    fake.configure(
        [gpu(0, name=H100), gpu(1, name=V100, counter=False), gpu(2, name=A100), gpu(3, name=H100)]
    )
    counter, power = fake.open()
    assert (counter.method, power.method) == ("nvml-energy-counter", "nvml-power")
    assert counter.domain == power.domain == "gpu"
    assert (counter.poll_interval_s, power.poll_interval_s) == (None, 0.1)
    assert counter.devices == [UUIDS[0], UUIDS[2], UUIDS[3]]
    assert power.devices == [UUIDS[1]]
    assert counter.hardware() == f"{H100} x2, {A100} x1"
    assert power.hardware() == f"{V100} x1"
    fake.advance(2.0)
    assert set(counter.read()) == {UUIDS[0], UUIDS[2], UUIDS[3]}
    assert power.read() == {UUIDS[1]: pytest.approx(200.0)}


@pytest.mark.parametrize(
    ("driver", "reason", "should_warn"),
    [
        (False, "no NVIDIA driver (NVML library not found)", False),  # absence: silent
        ("not_loaded", "driver not loaded", True),  # an installed driver failing: a fault
    ],
)
def test_no_driver_is_meter_unavailable(
    fake: FakeNvml, driver: Any, reason: str, should_warn: bool
) -> None:
    fake.configure([gpu(0)], driver=driver)
    with pytest.raises(MeterUnavailable, match=re.escape(reason)) as raised:
        fake.open()
    assert raised.value.warn is should_warn
    assert fake.pynvml.init_count() == 0


def test_missing_pynvml_is_meter_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes ``import pynvml`` fail
    with pytest.raises(MeterUnavailable, match="nvidia-ml-py"):
        open_nvml_meters()


@pytest.mark.parametrize("counter", [True, False])
def test_gpu_lost_propagates_from_read(fake: FakeNvml, counter: bool) -> None:
    fake.configure([gpu(0), gpu(1, counter=counter, lost_at_s=5.0)])
    fake.advance(1.0)
    meters = fake.open()
    meter = meters[-1]
    fake.advance(3.0)
    assert meter.read()[UUIDS[1]] > 0
    fake.advance(1.5)
    with pytest.raises(fake.pynvml.NVMLError_GpuIsLost):
        meter.read()
    for m in meters:
        m.close()
    assert not fake.initialised()


def test_gpu_lost_while_opening_is_meter_unavailable(fake: FakeNvml) -> None:
    fake.configure([gpu(0), gpu(1, lost_at_s=0.0)])
    with pytest.raises(MeterUnavailable, match="GPU is lost") as raised:
        fake.open()
    assert raised.value.warn  # the user hears of it (discover warns, with the doctor hint)
    assert not fake.initialised()


@pytest.mark.parametrize("scenario", [{"driver": "not_loaded"}, {"lost_at_s": 0.0}])
def test_discover_warns_when_an_installed_driver_fails(
    fake: FakeNvml, monkeypatch: pytest.MonkeyPatch, scenario: dict[str, Any]
) -> None:
    from mlflow_green.measure.meters import DOCTOR_HINT, discover

    monkeypatch.setitem(sys.modules, "amdsmi", None)  # no AMD library either
    driver = scenario.get("driver", True)
    fake.configure([gpu(0, **{k: v for k, v in scenario.items() if k != "driver"})], driver=driver)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        meters = discover()
    try:
        assert [m.method for m in meters if m.domain == "gpu"] == ["none"]
    finally:
        for m in meters:
            m.close()
    said = [str(w.message) for w in caught if "GPU energy not measured" in str(w.message)]
    assert len(said) == 1 and DOCTOR_HINT in said[0], said


def test_close_shuts_nvml_down_after_the_last_meter(fake: FakeNvml) -> None:
    fake.configure([gpu(0), gpu(1, counter=False)])
    first = fake.open()
    second = fake.open()  # a second init, with its own shutdown
    assert fake.pynvml.init_count() == 2
    for meter in first:
        meter.close()
        meter.close()  # closing again must not shut down someone else's init
    assert fake.pynvml.init_count() == 1
    second[0].close()
    assert fake.initialised()
    assert second[1].read()  # the meter still open still works
    second[1].close()
    assert not fake.initialised()
    with pytest.raises(fake.pynvml.NVMLError_Uninitialized):
        fake.pynvml.nvmlDeviceGetTotalEnergyConsumption(
            fake.pynvml.c_nvmlDevice_t(0)  # a handle from before the shutdown is no use
        )


# --- Process boundary and faithfulness of the fake -----------------------------------------


def test_import_is_lazy_and_scenario_file_works_in_subprocess(tmp_path: Path) -> None:
    scenario = {"driver": True, "devices": [gpu(0), gpu(1, name=V100, counter=False)]}
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(scenario), encoding="utf-8")
    script = (
        "import json, sys\n"
        "import mlflow_green.measure.meters.nvml as nvml\n"
        "assert 'pynvml' not in sys.modules, 'pynvml imported eagerly'\n"
        "meters = nvml.open_nvml_meters()\n"
        "out = [[m.method, m.devices, m.hardware(), sorted(m.read())] for m in meters]\n"
        "for m in meters: m.close()\n"
        "print(json.dumps(out))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env.update(PYTHONPATH=os.pathsep.join([str(FAKES), str(REPO)]), FAKE_NVML_SCENARIO=str(path))
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        ["nvml-energy-counter", [UUIDS[0]], f"{A100} x1", [UUIDS[0]]],
        ["nvml-power", [UUIDS[1]], f"{V100} x1", [UUIDS[1]]],
    ]


def test_fake_mirrors_the_real_error_codes_and_classes(fake: FakeNvml) -> None:
    # The real binding, found past tests/fakes on sys.path, loaded under another name.
    spec = None
    for entry in sys.path:
        candidate = Path(entry or ".") / "pynvml.py"
        if candidate.is_file() and candidate.parent.resolve() != FAKES.resolve():
            spec = importlib.util.spec_from_file_location("_real_pynvml", candidate)
            break
    if spec is None or spec.loader is None:
        pytest.skip("nvidia-ml-py is not installed")
    real = importlib.util.module_from_spec(spec)
    sys.modules["_real_pynvml"] = real  # its error classes are generated through sys.modules
    try:
        spec.loader.exec_module(real)
    finally:
        del sys.modules["_real_pynvml"]

    def names(module: ModuleType, prefix: str) -> set[str]:
        return {n for n in dir(module) if n.startswith(prefix)}

    assert names(fake.pynvml, "NVML_ERROR_") == names(real, "NVML_ERROR_")
    for name in names(real, "NVML_ERROR_"):
        assert getattr(fake.pynvml, name) == getattr(real, name), name
    assert names(fake.pynvml, "NVMLError_") == names(real, "NVMLError_")
    assert fake.pynvml.NVML_ERROR_NOT_SUPPORTED == 3
    assert type(fake.pynvml.NVMLError(3)) is fake.pynvml.NVMLError_NotSupported
    assert fake.pynvml.NVMLError_GpuIsLost().value == real.NVML_ERROR_GPU_IS_LOST
    used = [
        "nvmlInit",
        "nvmlShutdown",
        "nvmlDeviceGetCount",
        "nvmlDeviceGetHandleByIndex",
        "nvmlDeviceGetUUID",
        "nvmlDeviceGetName",
        "nvmlDeviceGetTotalEnergyConsumption",
        "nvmlDeviceGetPowerUsage",
    ]
    for name in used:
        assert callable(getattr(real, name)) and callable(getattr(fake.pynvml, name)), name
