"""Tests of the AMD SMI GPU meter against the scenario-driven stand-in ``amdsmi`` (tests/fakes).

Time is the stand-in's manual clock (``fake_amdsmi`` in tests/conftest.py), which the
meter reads too: no sleeps, exact ground truth (``integral_j``, ``counter_integral_j``).
The scripted profiles are those of ``bench/accuracy.py``'s AMD rows.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient

import mlflow_green
from mlflow_green.measure.meters import DOCTOR_HINT, discover
from mlflow_green.measure.meters.amdsmi import (
    MAX_PLAUSIBLE_POWER_W,
    METHOD,
    AmdSmiEnergyMeter,
    open_amdsmi_meters,
)
from mlflow_green.measure.meters.base import MeterUnavailable
from tests.measure.test_nvml import ramp, read_pattern, spiky, steady

REPO = Path(__file__).parents[2]
FAKES = REPO / "tests" / "fakes"
J_PER_KWH = 3.6e6
MI300X = "AMD Instinct MI300X"
MI250X = "AMD Instinct MI250X"
UUIDS = [f"74a1ff0{i}-0000-1000-8000-0000c0ffee0{i}" for i in range(4)]
#: KFD unique ids, so ROCr/HIP UUIDs "GPU-<16 hex>": two share the prefix "GPU-cccc".
UNIQUE = [0xAAAA111100000000, 0xBBBB222200000000, 0xCCCC333300000000, 0xCCCC444400000000]


def _bench_accuracy() -> ModuleType:
    """``bench/accuracy.py``, for its scripted AMD profiles."""
    sys.path.insert(0, str(REPO / "bench"))
    try:
        spec = importlib.util.spec_from_file_location("_bench_accuracy", REPO / "bench/accuracy.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # before exec: its dataclasses look their module up
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(REPO / "bench"))


ACCURACY = _bench_accuracy()
AMD_PROFILES = {p.name: p for p in ACCURACY.amd_profiles(8.0)}


def gpu(index: int = 0, *, name: str = MI300X, **extra: Any) -> dict[str, Any]:
    return {
        "uuid": UUIDS[index],
        "unique_id": UNIQUE[index],
        "bdf": f"0000:{0x05 + 0x10 * index:02x}:00.0",
        "name": name,
        "profile": [[0.0, 100.0]],
        **extra,
    }


def open_meter(fake: Any) -> AmdSmiEnergyMeter:
    [meter] = open_amdsmi_meters(clock=fake.clock)
    assert isinstance(meter, AmdSmiEnergyMeter)
    return meter


# --- Exact energy: the scripted profiles, wraparound, restarts, stale readings -------------


@pytest.mark.parametrize("name", [n for n, p in AMD_PROFILES.items() if p.gpu_reset_at_s is None])
def test_exact_energy_on_the_bench_profiles(fake_amdsmi, name: str) -> None:
    profile = AMD_PROFILES[name]
    fake_amdsmi.configure([profile.device()])
    fake_amdsmi.advance(0.037)  # off the accumulator's 1 ms grid, as real windows are
    meter = open_meter(fake_amdsmi)
    assert meter.read() == {ACCURACY.AMD_UUID: 0.0}
    t_open, previous = fake_amdsmi.now(), 0.0
    for t, energy_j in read_pattern(fake_amdsmi, meter, ACCURACY.AMD_UUID, t_open + 8.0):
        expected = fake_amdsmi.counter_integral_j(ACCURACY.AMD_UUID, t_open, t)
        assert energy_j == pytest.approx(expected, rel=1e-12, abs=1e-9)
        assert energy_j >= previous
        previous = energy_j
    # Against the truth only the ends are uncertain: one 1 ms update at peak power each,
    # and a count (15.3 µJ) of rounding.
    exact = fake_amdsmi.integral_j(ACCURACY.AMD_UUID, t_open, t)
    peak_w = max(w for _, w in profile.gpu)
    assert abs(energy_j - exact) <= 2 * 0.001 * peak_w + 2 * 15.3e-6


@pytest.mark.parametrize("profile", [steady, spiky, ramp])
@pytest.mark.parametrize("api", ["6.2", "6.3", "6.4"])
def test_every_api_version_reads_the_same_energy(fake_amdsmi, profile, api: str) -> None:
    fake_amdsmi.configure([gpu(0, profile=profile(), counter_start=123_456_789)], api=api)
    fake_amdsmi.advance(3.37)
    meter = open_meter(fake_amdsmi)
    t_open = fake_amdsmi.now()
    for t, energy_j in read_pattern(fake_amdsmi, meter, UUIDS[0], t_open + 40.0):
        assert energy_j == pytest.approx(
            fake_amdsmi.counter_integral_j(UUIDS[0], t_open, t), rel=1e-12, abs=1e-9
        )


def test_a_32_bit_accumulator_wraps_many_times_read_at_the_poll_interval(fake_amdsmi) -> None:
    # 1.5 kW on a 32-bit counter: a wrap every 43.8 s; the meter asks to be read every 16.4 s.
    fake_amdsmi.configure([gpu(0, profile=[[0.0, 1500.0]], bits=32, counter_start=2**32 - 999)])
    meter = open_meter(fake_amdsmi)
    wrap_j = 2**32 * fake_amdsmi.amdsmi.COUNTER_RESOLUTION_UJ / 1e6
    assert meter.poll_interval_s == pytest.approx(wrap_j / MAX_PLAUSIBLE_POWER_W / 2)
    t_open = previous = fake_amdsmi.now()
    expected_j = 0.0
    while fake_amdsmi.now() < t_open + 400.0:  # 13 wraps
        t = fake_amdsmi.advance(meter.poll_interval_s)
        expected_j += fake_amdsmi.counter_integral_j(UUIDS[0], previous, t)  # one wrap at most
        assert meter.read()[UUIDS[0]] == pytest.approx(expected_j, rel=1e-12)
        previous = t
    assert meter.read()[UUIDS[0]] == pytest.approx(1500.0 * (t - t_open), rel=1e-6)
    assert meter.notes() == []


def test_a_64_bit_accumulator_needs_no_poll_interval(fake_amdsmi) -> None:
    fake_amdsmi.configure([gpu(0, counter_start=5 * 2**32)])
    assert open_meter(fake_amdsmi).poll_interval_s is None


def test_a_restart_counts_the_interval_from_power(fake_amdsmi) -> None:
    profile = AMD_PROFILES["AMD counter reset (GPU)"]  # 300 W, restarts at 4.4 s
    reset_s = profile.gpu_reset_at_s
    fake_amdsmi.configure([profile.device()])
    fake_amdsmi.advance(0.037)
    meter = open_meter(fake_amdsmi)
    t_open = fake_amdsmi.now()
    history = [(t_open, 0.0)]
    while fake_amdsmi.now() < 8.0:
        t = fake_amdsmi.advance(0.5)
        history.append((t, meter.read()[ACCURACY.AMD_UUID]))
    energies = [e for _, e in history]
    assert energies == sorted(energies), "energy went down across the restart"
    before = max(t for t, _ in history if t < reset_s)
    after = min(t for t, _ in history if t >= reset_s)
    uuid_ = ACCURACY.AMD_UUID
    assert dict(history)[before] == pytest.approx(
        fake_amdsmi.counter_integral_j(uuid_, t_open, before), rel=1e-12
    )
    tail = energies[-1] - dict(history)[after]
    assert tail == pytest.approx(fake_amdsmi.counter_integral_j(uuid_, after, t), rel=1e-12)
    # Across it, the 1 s average power x the time between the readings' timestamps.
    step = dict(history)[after] - dict(history)[before]
    assert step == pytest.approx(300.0 * (after - before), rel=1e-3)
    assert energies[-1] == pytest.approx(fake_amdsmi.integral_j(uuid_, t_open, t), rel=1e-3)
    [note] = meter.notes()
    assert "restarted from 0" in note and "once" in note and "power x time" in note
    assert meter.notes(since_s=fake_amdsmi.clock()) == []


def test_stale_readings_are_neither_lost_nor_counted_twice(fake_amdsmi) -> None:
    stale = {"from_s": 5.0, "reads": 3, "lag_s": 2.0}  # ROCm/amdsmi issue 115
    fake_amdsmi.configure([gpu(0, profile=ramp(), counter_start=5 * 2**32, stale=stale)])
    meter = open_meter(fake_amdsmi)
    t_open, readings = fake_amdsmi.now(), []
    while fake_amdsmi.now() < 12.0:
        t = fake_amdsmi.advance(0.5)
        readings.append((t, meter.read()[UUIDS[0]]))
    energies = [e for _, e in readings]
    assert energies == sorted(energies)
    held = [b for a, b in itertools.pairwise(energies) if b == a]
    assert len(held) == 3  # the three stale readings counted nothing
    assert energies[-1] == pytest.approx(
        fake_amdsmi.counter_integral_j(UUIDS[0], t_open, t), rel=1e-12
    )
    [note] = meter.notes()
    assert "stale reading" in note and "3 times" in note


def test_a_stale_reading_of_a_young_counter_is_not_taken_for_a_restart(fake_amdsmi) -> None:
    # Just after a reset the counter is small: a stale value is below the restart limit, but
    # its timestamp is older than the baseline's, so it is held over, not counted again.
    stale = {"from_s": 5.0, "reads": 1, "lag_s": 2.0}
    fake_amdsmi.configure([gpu(0, profile=[[0.0, 100.0]], counter_start=0, stale=stale)])
    meter = open_meter(fake_amdsmi)
    t_open = fake_amdsmi.now()
    for _ in range(8):
        t = fake_amdsmi.advance(1.0)
        energy = meter.read()[UUIDS[0]]
    assert energy == pytest.approx(fake_amdsmi.counter_integral_j(UUIDS[0], t_open, t), rel=1e-9)
    [note] = meter.notes()
    assert "stale reading" in note and "restart" not in note


# --- Which GPUs: visible devices, KFD order, left-out dies and counters --------------------


def four_gpus(fake: Any, **scenario: Any) -> None:
    # KFD (ROCr's) order differs from the bus order: kfd nodes 3, 1, 4, 2.
    fake.configure([gpu(i, kfd_node=node) for i, node in enumerate([3, 1, 4, 2])], **scenario)


def visible(fake: Any) -> list[str]:
    return [d for m in open_amdsmi_meters(clock=fake.clock) for d in m.devices]


def in_rocr_order(*indices: int) -> list[str]:
    """UUIDs of ROCr's GPUs ``indices`` (its order is by KFD node: GPUs 1, 3, 0, 2)."""
    return [UUIDS[[1, 3, 0, 2][i]] for i in indices]


def test_all_gpus_when_nothing_is_set(fake_amdsmi) -> None:
    four_gpus(fake_amdsmi)
    assert sorted(visible(fake_amdsmi)) == sorted(UUIDS)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("2,0", [2, 0]),
        (" 3 , 1", [3, 1]),
        ("0x1,010", [1]),  # strtol base 0: hex and octal (8 is out of range, ends the list)
        ("1,7,0", [1]),  # an index out of range ends the list
        ("1,abc,2", [1]),
        ("0,0,1", [0]),  # so does a repeat
        ("-1", []),
        ("", []),  # set but empty: no GPU
        ("gpu-bbbb", [0]),  # a UUID prefix, case-insensitive: the bus's GPU 1 is ROCr's 0
        ("GPU-CCCC,0", []),  # ambiguous prefix
        ("GPU-ffff,0", []),  # no such GPU
        ("GPU-XX", []),
        ("GPU-", []),  # too short to be a UUID
    ],
)
def test_rocr_visible_devices(fake_amdsmi, monkeypatch, spec: str, expected: list[int]) -> None:
    four_gpus(fake_amdsmi)
    monkeypatch.setenv("ROCR_VISIBLE_DEVICES", spec)
    assert visible(fake_amdsmi) == in_rocr_order(*expected)


@pytest.mark.parametrize("variable", ["HIP_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"])
@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("2,0", [2, 0]),
        ("1,1,3", [1, 3]),  # repeats are skipped, not the end of the list
        ("1,7,0", [1]),
        ("1, 2", [1]),  # HIP does not trim: " 2" ends the list
        ("01", []),
        ("GPU-aaaa1111", [2]),  # part of a UUID (GPU 0 of the bus is ROCr's 2)
        ("GPU-cccc", [1]),  # the first GPU (in ROCr's order) whose UUID contains it
        ("GPU-AAAA1111", []),  # HIP compares case-sensitively
    ],
)
def test_hip_visible_devices(fake_amdsmi, monkeypatch, variable, spec, expected) -> None:
    four_gpus(fake_amdsmi)
    monkeypatch.setenv(variable, spec)
    assert visible(fake_amdsmi) == in_rocr_order(*expected)


def test_hip_applies_to_what_rocr_left_and_wins_over_cuda(fake_amdsmi, monkeypatch) -> None:
    four_gpus(fake_amdsmi)
    monkeypatch.setenv("ROCR_VISIBLE_DEVICES", "3,1,2")
    monkeypatch.setenv("HIP_VISIBLE_DEVICES", "2,0")  # ROCr's 2 then 3
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert visible(fake_amdsmi) == in_rocr_order(2, 3)
    monkeypatch.setenv("HIP_VISIBLE_DEVICES", "")  # empty: as unset, CUDA_VISIBLE_DEVICES applies
    assert visible(fake_amdsmi) == in_rocr_order(1)


@pytest.mark.parametrize("api", ["6.2", "6.3", "6.4"])
def test_rocr_order_follows_kfd_where_the_binding_says_it(fake_amdsmi, monkeypatch, api) -> None:
    four_gpus(fake_amdsmi, api=api)
    monkeypatch.setenv("ROCR_VISIBLE_DEVICES", "0")
    # 6.2 has neither kfd nor enumeration info: AMD SMI's bus order is all there is.
    assert visible(fake_amdsmi) == ([UUIDS[0]] if api == "6.2" else in_rocr_order(0))


def test_no_visible_gpu_gives_no_meter_and_shuts_amdsmi_down(fake_amdsmi, monkeypatch) -> None:
    four_gpus(fake_amdsmi)
    monkeypatch.setenv("ROCR_VISIBLE_DEVICES", "")
    assert open_amdsmi_meters() == []
    assert not fake_amdsmi.amdsmi.initialised()


def test_second_die_of_an_mi250x_is_left_out_with_one_warning(fake_amdsmi, monkeypatch) -> None:
    fake_amdsmi.configure(
        [gpu(0, name=MI250X, profile=[[0, 400.0]]), gpu(1, name=MI250X, energy="secondary_die")]
    )
    fake_amdsmi.advance(2.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        meter = open_meter(fake_amdsmi)
    assert meter.devices == [UUIDS[0]]  # its counter covers both dies
    assert meter.hardware() == f"{MI250X} x1"
    [warning] = caught
    assert "a secondary die or partition, as an MI250X's second die" in str(warning.message)
    monkeypatch.setenv("ROCR_VISIBLE_DEVICES", "1")  # the second die alone: nothing to measure
    with pytest.raises(MeterUnavailable, match="make that one visible") as raised:
        open_amdsmi_meters()
    assert raised.value.warn is True


@pytest.mark.parametrize(
    ("energy", "reason"),
    [("not_supported", "no energy counter"), ("invalid", "not available")],
)
def test_a_gpu_without_a_usable_counter_is_unavailable(fake_amdsmi, energy, reason) -> None:
    fake_amdsmi.configure([gpu(0, energy=energy)])
    with pytest.raises(MeterUnavailable, match=reason) as raised:
        open_amdsmi_meters()
    assert raised.value.warn is True
    assert not fake_amdsmi.amdsmi.initialised()


# --- Errors, lifecycle --------------------------------------------------------------------


def test_no_driver_is_absent_hardware_without_a_warning(fake_amdsmi) -> None:
    fake_amdsmi.configure([gpu(0)], driver=False)
    with pytest.raises(MeterUnavailable, match="amdgpu not loaded") as raised:
        open_amdsmi_meters()
    assert raised.value.warn is False


@pytest.mark.parametrize(
    ("driver", "reason"),
    [("no_perm", "Permission Denied: the user needs /dev/kfd"), ("init_error", "Initialization")],
)
def test_unusable_library_is_unavailable_with_the_reason(fake_amdsmi, driver, reason) -> None:
    fake_amdsmi.configure([gpu(0)], driver=driver)
    with pytest.raises(MeterUnavailable, match=reason) as raised:
        open_amdsmi_meters()
    assert raised.value.warn is True


def test_missing_package_is_absent_hardware(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "amdsmi", None)  # makes ``import amdsmi`` fail
    with pytest.raises(MeterUnavailable, match="amdsmi package is not installed") as raised:
        open_amdsmi_meters()
    assert raised.value.warn is False


def test_gpu_lost_propagates_from_read(fake_amdsmi) -> None:
    fake_amdsmi.configure([gpu(0), gpu(1, lost_at_s=5.0)])
    meter = open_meter(fake_amdsmi)
    fake_amdsmi.advance(4.0)
    assert meter.read()[UUIDS[1]] == pytest.approx(400.0, rel=1e-6)
    fake_amdsmi.advance(1.5)
    with pytest.raises(fake_amdsmi.amdsmi.AmdSmiLibraryException) as raised:
        meter.read()
    assert raised.value.get_error_code() == fake_amdsmi.amdsmi.AMDSMI_STATUS_UNEXPECTED_SIZE


def test_close_shuts_down_only_an_init_of_ours(fake_amdsmi) -> None:
    fake_amdsmi.configure([gpu(0)])
    ours = open_meter(fake_amdsmi)
    ours.close()
    ours.close()
    assert not fake_amdsmi.amdsmi.initialised()
    fake_amdsmi.amdsmi.amdsmi_init()  # someone else's (CodeCarbon, the user's code)
    theirs = open_meter(fake_amdsmi)
    theirs.close()
    assert fake_amdsmi.amdsmi.initialised()  # left as it was found


# --- Discovery, and a run ------------------------------------------------------------------


def test_discover_takes_the_amd_gpu_when_nvml_has_none(fake_amdsmi, fake_powercap) -> None:
    fake_powercap.add_package(0, energy_uj=1_000_000)
    fake_amdsmi.configure([gpu(0), gpu(1)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        meters = discover()
    gpu_meters = [m for m in meters if m.domain == "gpu"]
    assert [m.method for m in gpu_meters] == [METHOD]
    assert sorted(gpu_meters[0].devices) == sorted(UUIDS[:2])


def test_discover_prefers_nvml(fake_amdsmi, fake_nvml, fake_powercap) -> None:
    fake_powercap.add_package(0, energy_uj=1_000_000)  # RAPL present: no CPU fallback warning
    fake_amdsmi.configure([gpu(0)])
    fake_nvml.configure([{"uuid": "GPU-nvidia-0", "profile": [[0.0, 100.0]]}])
    assert [m.method for m in discover() if m.domain == "gpu"] == ["nvml-energy-counter"]
    assert not fake_amdsmi.amdsmi.initialised()


def test_discover_warns_with_the_doctor_hint_only_when_amd_is_unusable(
    fake_amdsmi, fake_powercap
) -> None:
    fake_powercap.add_package(0, energy_uj=1_000_000)
    fake_amdsmi.configure([gpu(0)], driver=False)  # no AMD driver: nothing to say
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [m.method for m in discover() if m.domain == "gpu"] == ["none"]
    fake_amdsmi.configure([gpu(0)], driver="no_perm")
    with pytest.warns(UserWarning) as caught:
        assert [m.method for m in discover() if m.domain == "gpu"] == ["none"]
    [message] = [str(w.message) for w in caught]
    assert message.startswith("mlflow-green: AMD GPU energy not measured: AMD SMI init")
    assert message.endswith(DOCTOR_HINT)
    assert DOCTOR_HINT == "; `mlflow-green doctor` says why and how to fix it"


def test_discover_on_macos_lets_apple_meters_take_their_domains(
    fake_amdsmi, fake_powercap, monkeypatch
) -> None:
    import platform

    fake_powercap.add_package(0, energy_uj=1_000_000)  # RAPL's CPU is dropped, its DRAM kept
    spec = importlib.util.spec_from_file_location(
        "zeus_apple_silicon", FAKES / "zeus_apple_silicon.py"
    )
    assert spec is not None and spec.loader is not None
    apple = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "zeus_apple_silicon", apple)
    spec.loader.exec_module(apple)
    apple.configure({"CPU Energy": {"profile": [[0, 4.0]]}, "GPU Energy": {"profile": [[0, 9.0]]}})
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(platform, "machine", lambda: "arm64")
    fake_amdsmi.configure([gpu(0)])  # not tried: the Apple GPU meter covers the domain
    methods = {m.domain: m.method for m in discover()}
    assert methods == {"gpu": "apple-ioreport", "cpu": "apple-ioreport", "ram": "rapl"}
    assert not fake_amdsmi.amdsmi.initialised()
    # Without the Apple module (not installed with this version): on to the next methods.
    monkeypatch.setitem(sys.modules, "mlflow_green.measure.meters.apple", None)
    assert {m.domain: m.method for m in discover()}["gpu"] == METHOD


@pytest.fixture
def tracking(experiment_client: MlflowClient) -> MlflowClient:
    return experiment_client


def test_autolog_run_on_an_amd_gpu(tracking, fake_amdsmi, fake_powercap) -> None:
    fake_powercap.add_package(0, energy_uj=1_000_000)
    fake_amdsmi.configure([gpu(0, profile=ramp(), counter_start=987_654_321_000)])
    fake_amdsmi.advance(1.234)
    mlflow_green.autolog(country="FRA", log_artifacts=False)
    with mlflow.start_run() as run:
        t0 = fake_amdsmi.now()
        t1 = fake_amdsmi.advance(12.5)
    got = tracking.get_run(run.info.run_id).data
    assert got.tags["green.gpu_meter"] == METHOD
    assert MI300X in got.tags["green.hardware"]
    expected_kwh = fake_amdsmi.counter_integral_j(UUIDS[0], t0, t1) / J_PER_KWH
    assert got.metrics["green/energy/gpu_kwh"] == pytest.approx(expected_kwh, rel=1e-9)
    assert expected_kwh == pytest.approx(
        fake_amdsmi.integral_j(UUIDS[0], t0, t1) / J_PER_KWH, rel=1e-3
    )


# --- Process boundary and faithfulness of the stand-in --------------------------------------


def _run_python(script: str, scenario: dict[str, Any], tmp_path: Path) -> Any:
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(scenario), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.endswith("VISIBLE_DEVICES")}
    env.update(PYTHONPATH=os.pathsep.join([str(FAKES), str(REPO)]), FAKE_AMDSMI_SCENARIO=str(path))
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_import_is_lazy_and_a_scenario_file_works_in_a_subprocess(tmp_path: Path) -> None:
    script = (
        "import json, sys\n"
        "import mlflow_green.measure.meters.amdsmi as amd\n"
        "assert 'amdsmi' not in sys.modules, 'amdsmi imported eagerly'\n"
        "meters = amd.open_amdsmi_meters()\n"
        "out = [[m.method, m.devices, m.hardware(), sorted(m.read())] for m in meters]\n"
        "for m in meters: m.close()\n"
        "print(json.dumps(out))\n"
    )
    out = _run_python(script, {"driver": True, "devices": [gpu(0), gpu(1)]}, tmp_path)
    assert out == [[METHOD, UUIDS[:2], f"{MI300X} x2", sorted(UUIDS[:2])]]


def test_missing_shared_library_is_unavailable_with_a_warning(tmp_path: Path) -> None:
    script = (
        "import json\n"
        "from mlflow_green.measure.meters.amdsmi import open_amdsmi_meters\n"
        "from mlflow_green.measure.meters.base import MeterUnavailable\n"
        "try:\n"
        "    open_amdsmi_meters()\n"
        "except MeterUnavailable as exc:\n"
        "    print(json.dumps([str(exc), exc.warn]))\n"
    )
    reason, warn = _run_python(script, {"library": False}, tmp_path)
    assert warn is True
    assert "libamd_smi.so: cannot open shared object file" in reason  # what the binding printed
    assert re.search(r"install ROCm's amd-smi-lib, or the amdsmi package", reason)


def test_stand_in_mirrors_the_binding(fake_amdsmi) -> None:
    amd = fake_amdsmi.amdsmi
    err = amd.AmdSmiLibraryException(-34)  # the binding takes abs() of negative codes
    assert (err.get_error_code(), err.err_code) == (34, 34)
    assert err.get_error_info() == "AMDSMI_STATUS_DRIVER_NOT_LOADED - Driver not loaded"
    assert str(err) == "Error code:\n\t34 | AMDSMI_STATUS_DRIVER_NOT_LOADED - Driver not loaded"
    assert amd.amdsmi_exception.AmdSmiLibraryException is amd.AmdSmiLibraryException
    assert amd.amdsmi_wrapper.AMDSMI_STATUS_NOT_INIT == 32
    assert amd.amdsmi_wrapper.AMDSMI_INIT_AMD_GPUS == amd.AmdSmiInitFlags.INIT_AMD_GPUS == 2
    with pytest.raises(amd.AmdSmiLibraryException) as raised:
        amd.amdsmi_get_processor_handles()  # before init
    assert raised.value.err_code == 32
    fake_amdsmi.configure([gpu(0)], api="6.3")
    amd.amdsmi_init()
    [handle] = amd.amdsmi_get_processor_handles()
    with pytest.raises(amd.AmdSmiParameterException):
        amd.amdsmi_get_energy_count(0)  # not a handle
    count = amd.amdsmi_get_energy_count(handle)
    assert set(count) == {"power", "energy_accumulator", "counter_resolution", "timestamp"}
    assert count["counter_resolution"] == 15.300000190734863  # a C float, as the library's
    assert amd.amdsmi_get_gpu_asic_info(handle)["asic_serial"] == "0xAAAA111100000000"
    assert not hasattr(amd, "amdsmi_get_gpu_enumeration_info")  # from ROCm 6.4 on


def test_stand_in_has_the_functions_of_the_real_binding(fake_amdsmi) -> None:
    amd = fake_amdsmi.amdsmi
    real = _real_amdsmi()
    if real is None:
        pytest.skip("the amdsmi package (with ROCm's library) is not installed")
    used = [
        "amdsmi_init",
        "amdsmi_shut_down",
        "amdsmi_get_processor_handles",
        "amdsmi_get_gpu_device_uuid",
        "amdsmi_get_gpu_device_bdf",
        "amdsmi_get_gpu_asic_info",
        "amdsmi_get_energy_count",
        "amdsmi_get_power_info",
    ]
    for name in used:
        assert callable(getattr(real, name)) and callable(getattr(amd, name)), name


def _real_amdsmi() -> ModuleType | None:
    for entry in sys.path:
        folder = Path(entry or ".") / "amdsmi"
        if (folder / "__init__.py").is_file():
            try:
                spec = importlib.util.spec_from_file_location(
                    "_real_amdsmi", folder / "__init__.py", submodule_search_locations=[str(folder)]
                )
                assert spec is not None and spec.loader is not None
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                return module
            except Exception:
                return None
    return None


def test_a_vendor_library_that_fails_oddly_costs_one_warning_not_the_other_meters(
    fake_amdsmi, fake_powercap, monkeypatch
) -> None:
    fake_powercap.add_package(0, energy_uj=1_000_000)
    fake_amdsmi.configure([gpu(0)])

    def broken(*args: Any) -> Any:  # a binding fault that is no AmdSmiException
        raise SystemError("NULL result without error in PyObject_Call")

    monkeypatch.setattr(fake_amdsmi.amdsmi, "amdsmi_get_processor_handles", broken)
    with pytest.warns(UserWarning) as caught:
        meters = discover()
    assert {m.domain: m.method for m in meters} == {"gpu": "none", "cpu": "rapl", "ram": "rapl"}
    [message] = [str(w.message) for w in caught if "mlflow-green" in str(w.message)]
    assert "AMD GPU energy not measured" in message and "SystemError" in message
