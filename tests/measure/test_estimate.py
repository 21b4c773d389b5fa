"""The labelled estimates used where no energy counter exists (this machine: no GPU, no RAPL)."""

from __future__ import annotations

import sys
import time
import types

import psutil
import pytest

import mlflow_green
from mlflow_green.measure.meters._cpuinfo import cpu_model_name, cpu_socket_count
from mlflow_green.measure.meters.estimate import (
    DEFAULT_W_PER_THREAD,
    RAM_W_PER_GB,
    CpuTdpMeter,
    RamSizeMeter,
    lookup_tdp_w,
)
from tests.workloads import busy_for, busy_for_cpu


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
    before_open = time.monotonic()
    meter = CpuTdpMeter("test CPU", tdp_w=100.0)
    after_open = time.monotonic()
    busy_for(0.3)
    before_read = time.monotonic()
    energy_j = meter.read()["cpu"]
    after_read = time.monotonic()
    # Idle draws 10% of TDP, full load the TDP: CodeCarbon's 0.1 + 0.9 * load**3, over the
    # time between the meter's two clock readings, which these four bracket whatever the load.
    assert 10.0 * (before_read - after_open) <= energy_j <= 100.0 * (after_read - before_open)
    assert meter.read()["cpu"] >= energy_j  # cumulative


def test_ram_power_is_proportional_to_installed_memory() -> None:
    meter = RamSizeMeter()
    assert meter.power_w == pytest.approx(RAM_W_PER_GB * psutil.virtual_memory().total / 1e9)
    first = meter.read()["ram"]
    after_first = time.monotonic()
    time.sleep(0.05)  # the quantity measured is elapsed time itself
    before_second = time.monotonic()
    assert meter.read()["ram"] - first >= meter.power_w * (before_second - after_first)


#: The load model's share per CPU second: a segment of machine load L (0 to 1) on N CPUs
#: uses TDP * (0.1 + 0.9 L**3) * dt joules, and a process that used ``own`` CPU seconds of
#: the machine's L * N * dt gets that times own / (L N dt): (TDP / N) * own * f(L) with
#: f(L) = 0.1 / L + 0.9 L**2. Its minimum, at L = (0.1 / 1.8) ** (1/3), is:
_L_AT_MIN = (0.1 / 1.8) ** (1 / 3)
F_MIN = 0.1 / _L_AT_MIN + 0.9 * _L_AT_MIN**2  # 0.393


def test_process_scope_gets_its_cpu_time_share_of_the_estimated_energy() -> None:
    # The sampler runs while the main thread holds the GIL: both CPU clocks must still be
    # read over the same segment (a slow /proc scan between them once gave ~1% of the
    # energy to a process that did all the work). What other processes do must not
    # matter: the energy the process gets is bounded below by its own CPU seconds, measured
    # here, times F_MIN * TDP / N, whatever the machine's load in each segment; and
    # above by the machine's energy (a share is at most 1).
    reference = CpuTdpMeter(cpu_model_name(), sockets=cpu_socket_count() or 1)

    def clocks() -> tuple[float, float, float]:
        own, m = psutil.Process().cpu_times(), psutil.cpu_times()
        # Every state once (guest time is already inside user time), as the estimate counts.
        states = m.user + m.nice + m.system + m.idle + m.iowait + m.irq + m.softirq + m.steal
        return own.user + own.system, states, time.monotonic()

    with (
        mlflow_green.track(scope="process", sample_interval_s=0.1) as process,
        mlflow_green.track(scope="machine", sample_interval_s=0.1) as machine,
    ):
        # Inside both windows: the CPU time counted here is all within what they measured.
        own0, all0, t0 = clocks()
        busy_for_cpu(0.3)  # real time grows with the load: the sampler reads several times
        own1, all1, t1 = clocks()
    assert process.report.methods["cpu"] == "estimate-tdp"
    assert process.report.hardware["cpu"] == reference.hardware()
    cpus = (all1 - all0) / (t1 - t0)  # CPU seconds per second in /proc/stat: the CPUs
    own_s = own1 - own0
    mine = process.report.energy_j_by_domain["cpu"]
    whole = machine.report.energy_j_by_domain["cpu"]
    assert own_s >= 0.25  # 0.3 s of CPU work, as /proc counts it (10 ms ticks)
    # 0.8: /proc counts in 10 ms ticks, so a segment's share may come out above 1 and be
    # capped, and the share's and the estimate's clocks are read microseconds apart. The
    # fault this guards against gave 1% of the truth; the truth is at least F_MIN's bound.
    assert 0.8 * F_MIN * reference.tdp_w / cpus * own_s <= mine <= whole * 1.001


def test_a_gpu_driver_that_crashes_costs_the_gpu_only(monkeypatch) -> None:
    # A driver that crashes in an unexpected way (not an NVMLError) at the hardware boundary:
    # one warning naming it, and the CPU and RAM are measured all the same.
    broken = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    def nvmlInit() -> None:
        raise RuntimeError("driver crashed")

    broken.NVMLError, broken.nvmlInit = NVMLError, nvmlInit
    monkeypatch.setitem(sys.modules, "pynvml", broken)
    with (
        pytest.warns(UserWarning, match="GPU energy not measured: RuntimeError: driver crashed"),
        mlflow_green.track(country="FRA") as t,
    ):
        pass
    assert t.report.methods["gpu"] == "none"
    assert t.report.methods["cpu"] == "estimate-tdp" and t.report.methods["ram"] != "none"
    assert not t.report.failures
