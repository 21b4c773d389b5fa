"""The labelled estimates used where no energy counter exists (this machine: no GPU, no RAPL)."""

from __future__ import annotations

import sys
import time
import types

import psutil
import pytest

import mlflow_green
from mlflow_green.meters.estimate import (
    DEFAULT_W_PER_THREAD,
    RAM_W_PER_GB,
    CpuTdpMeter,
    RamSizeMeter,
    lookup_tdp_w,
)
from tests.workloads import busy_for


@pytest.mark.parametrize(
    ("model", "tdp_w"),
    [
        ("Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz", 150.0),
        ("AMD EPYC 7763 64-Core Processor", 280.0),
        ("Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz", 65.0),
    ],
)
def test_tdp_from_codecarbons_table(model: str, tdp_w: float) -> None:
    assert lookup_tdp_w(model) == tdp_w


def test_vague_model_matches_nothing_and_falls_back_per_thread() -> None:
    assert lookup_tdp_w("AMD EPYC") is None
    meter = CpuTdpMeter("AMD EPYC")
    assert meter.tdp_w == DEFAULT_W_PER_THREAD * psutil.cpu_count(logical=True)
    assert not meter.tdp_from_table and "default 4 W/thread" in meter.hardware()


def test_table_tdp_counts_every_socket() -> None:
    one = CpuTdpMeter("AMD EPYC 7763 64-Core Processor")
    two = CpuTdpMeter("AMD EPYC 7763 64-Core Processor", sockets=2)
    assert (one.tdp_w, two.tdp_w) == (280.0, 560.0)
    assert two.hardware().startswith("2 x AMD EPYC 7763")


def test_cpu_energy_lies_between_idle_and_full_tdp() -> None:
    meter = CpuTdpMeter("test CPU", tdp_w=100.0)
    start = time.monotonic()
    busy_for(0.3)
    energy_j = meter.read()["cpu"]
    elapsed = time.monotonic() - start
    # Idle draws 10% of TDP, full load the TDP: CodeCarbon's 0.1 + 0.9 * load**3.
    assert 10.0 * elapsed * 0.95 <= energy_j <= 100.0 * elapsed * 1.05
    assert meter.read()["cpu"] >= energy_j  # cumulative


def test_ram_power_is_proportional_to_installed_memory() -> None:
    meter = RamSizeMeter()
    assert meter.power_w == pytest.approx(RAM_W_PER_GB * psutil.virtual_memory().total / 1e9)
    first = meter.read()["ram"]
    time.sleep(0.05)  # the quantity measured is elapsed time itself
    assert meter.read()["ram"] - first >= meter.power_w * 0.05


def test_process_scope_gets_most_cpu_energy_of_a_busy_python_process() -> None:
    # The sampler runs while the main thread holds the GIL: both CPU clocks must still be
    # read over the same segment (a slow /proc scan between them used to give ~1%).
    # Other processes on the machine may be busy too: the expected share is this process's
    # part of the machine's busy CPU time over the block, measured here independently.
    def clocks() -> tuple[float, float]:
        t, m = psutil.Process().cpu_times(), psutil.cpu_times()
        return t.user + t.system, m.user + m.nice + m.system + m.irq + m.softirq

    own0, busy0 = clocks()
    with (
        mlflow_green.track(scope="process", sample_interval_s=0.25) as process,
        mlflow_green.track(scope="machine", sample_interval_s=0.25) as machine,
    ):
        busy_for(1.5)
    own1, busy1 = clocks()
    expected = (own1 - own0) / (busy1 - busy0)
    mine = process.report.energy_j_by_domain["cpu"]
    whole = machine.report.energy_j_by_domain["cpu"]
    assert expected > 0.2  # the block kept this process busy
    assert 0.6 * expected * whole <= mine <= whole * 1.001


def test_failed_start_still_gives_a_report(monkeypatch) -> None:
    # A driver that crashes in an unexpected way (not an NVMLError) at the hardware boundary.
    broken = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    def nvmlInit() -> None:
        raise RuntimeError("driver crashed")

    broken.NVMLError, broken.nvmlInit = NVMLError, nvmlInit
    monkeypatch.setitem(sys.modules, "pynvml", broken)
    with (
        pytest.warns(UserWarning, match="could not start measuring"),
        mlflow_green.track(country="FRA") as t,
    ):
        pass
    assert t.report.energy_kwh == 0.0
    assert "driver crashed" in t.report.failures["cpu"]
