"""Tests of the Apple silicon meters against the stand-in ``zeus_apple_silicon`` (tests/fakes).

They run on Linux: ``sys.platform`` is set to ``"darwin"`` and ``platform.machine()``
to ``"arm64"``, and the stand-in is ``sys.modules["zeus_apple_silicon"]``. Time is a
manual clock of the stand-in's: no sleeps, exact ground truth (``integral_j``).
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import pytest

from mlflow_green.measure.meters.apple import METHOD, AppleSiliconMeter, open_apple_meters
from mlflow_green.measure.meters.base import MeterUnavailable

FAKES = Path(__file__).parents[1] / "fakes"
#: One rounding of a cumulative channel reading: whole millijoules.
MJ = 1e-3

#: An M1 Max's kind of channels: per-core, per-cluster and manager channels (parts of
#: "CPU Energy"), the GPU in nanojoules, its SRAM, the Neural Engine and DRAM.
M1_MAX = {
    "EACC_CPU0": {"profile": [[0, 0.2]]},
    "EACC_CPU1": {"profile": [[0, 0.2]]},
    "EACC_CPU": {"profile": [[0, 0.5]]},
    "PACC0_CPU0": {"profile": [[0, 1.5]]},
    "PACC0_CPU": {"profile": [[0, 3.0]]},
    "PACC0_CPM": {"profile": [[0, 0.1]]},
    "CPU Energy": {"profile": [[0, 4.0], [10, 8.0], [20, 8.0]], "start": 987_654_321},
    "GPU Energy": {"unit": "nJ", "profile": [[0, 2.5], [5, 15.0]], "start": 55_000_000_123},
    "GPU SRAM0": {"profile": [[0, 0.7]]},
    "ANE0": {"profile": [[0, 0.0], [4, 0.0], [4, 1.25]]},
    "DRAM0": {"profile": [[0, 0.9]], "start": 4_000_000},
}


def by_domain(meters: list) -> dict[str, AppleSiliconMeter]:
    assert all(m.method == METHOD == "apple-ioreport" for m in meters)
    return {m.domain: m for m in meters}


@pytest.mark.parametrize("system", ["linux", "win32"])
def test_not_macos_is_unavailable_without_a_warning(fake_apple, monkeypatch, system) -> None:
    monkeypatch.setattr(sys, "platform", system)
    with pytest.raises(MeterUnavailable, match="not macOS") as caught:
        open_apple_meters()
    assert caught.value.warn is False


def test_an_intel_mac_is_not_apple_silicon(fake_apple, monkeypatch) -> None:
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    with pytest.raises(MeterUnavailable, match="not Apple silicon") as caught:
        open_apple_meters()
    assert caught.value.warn is False


def test_missing_package_says_how_to_install_it(fake_apple, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "zeus_apple_silicon", None)  # import raises ImportError
    with pytest.raises(MeterUnavailable, match="pip install zeus-apple-silicon") as caught:
        open_apple_meters()
    assert caught.value.warn is True


def test_failed_ioreport_subscription_is_unavailable_with_a_warning(fake_apple) -> None:
    fake_apple.configure(M1_MAX, init_error=True)
    with pytest.raises(MeterUnavailable, match="Failed to create IOReport subscription") as caught:
        open_apple_meters()
    assert caught.value.warn is True


def test_a_chip_without_energy_channels_is_unavailable(fake_apple) -> None:
    fake_apple.configure({"SOC Other": {"profile": [[0, 3.0]]}})
    with pytest.raises(MeterUnavailable, match="no CPU, GPU or DRAM energy") as caught:
        open_apple_meters()
    assert caught.value.warn is True


def test_domains_devices_and_exact_energy(fake_apple) -> None:
    fake_apple.configure(M1_MAX)
    t0 = fake_apple.now_s()
    meters = by_domain(open_apple_meters())
    assert list(meters) == ["gpu", "cpu", "ram"]
    assert meters["gpu"].devices == ["apple-gpu", "apple-ane"]
    assert meters["cpu"].devices == ["apple-cpu"]
    assert meters["ram"].devices == ["apple-dram"]
    assert all(m.poll_interval_s is None for m in meters.values())
    assert "GPU, Neural Engine" in meters["gpu"].hardware()
    truth = {
        "apple-gpu": "GPU Energy",
        "apple-ane": "ANE0",
        "apple-cpu": "CPU Energy",
        "apple-dram": "DRAM0",
    }
    for step_s in (0.3, 2.0, 7.7, 11.0, 0.001):
        t1 = fake_apple.clock.advance(step_s) - 2000.0
        for meter in meters.values():
            for device, joules in meter.read().items():
                exact = fake_apple.integral_j(truth[device], t0, t1)
                # Each end of the interval is rounded down to a whole mJ by the library.
                assert abs(joules - exact) < MJ + 1e-9, (device, joules, exact)
    # The GPU's SRAM channel and the CPU's per-core channels are not added.
    gpu = meters["gpu"].read()["apple-gpu"]
    assert gpu == pytest.approx(fake_apple.integral_j("GPU Energy", t0, t1), abs=MJ)


def test_readings_never_decrease(fake_apple) -> None:
    fake_apple.configure(M1_MAX)
    meters = open_apple_meters()
    last: dict[str, float] = {}
    for _ in range(50):
        fake_apple.clock.advance(0.0137)
        for meter in meters:
            for device, joules in meter.read().items():
                assert joules >= last.get(device, 0.0)
                last[device] = joules


def test_chip_without_dram_leaves_ram_to_the_fallback(fake_apple) -> None:
    older = {k: v for k, v in M1_MAX.items() if not k.startswith("DRAM")}
    fake_apple.configure(older)
    assert [m.domain for m in open_apple_meters()] == ["gpu", "cpu"]


def test_chip_without_neural_engine_channel(fake_apple) -> None:
    fake_apple.configure({k: v for k, v in M1_MAX.items() if k != "ANE0"})
    meters = by_domain(open_apple_meters())
    assert meters["gpu"].devices == ["apple-gpu"]


def test_ultra_chip_dies_are_summed(fake_apple) -> None:
    fake_apple.configure(
        {
            "DIE_0_CPU Energy": {"profile": [[0, 10.0]]},
            "DIE_1_CPU Energy": {"profile": [[0, 6.0]]},
            "DIE_0_GPU Energy": {"unit": "nJ", "profile": [[0, 20.0]]},
            "DIE_1_GPU Energy": {"unit": "nJ", "profile": [[0, 20.0]]},
        }
    )
    meters = by_domain(open_apple_meters())
    fake_apple.clock.advance(10.0)
    assert meters["cpu"].read()["apple-cpu"] == pytest.approx(160.0, abs=2 * MJ)
    assert meters["gpu"].read()["apple-gpu"] == pytest.approx(400.0, abs=2 * MJ)


def test_counter_restart_counts_nothing_for_that_interval_and_is_noted(fake_apple) -> None:
    channels = dict(M1_MAX)
    channels["CPU Energy"] = {"profile": [[0, 5.0]], "start": 10_000_000, "reset_at_s": 3.0}
    fake_apple.configure(channels)
    cpu = by_domain(open_apple_meters())["cpu"]
    fake_apple.clock.advance(2.0)
    assert cpu.read()["apple-cpu"] == pytest.approx(10.0, abs=MJ)
    assert cpu.notes() == []
    fake_apple.clock.advance(2.0)  # the counter restarted at 3 s: 5 J since, 10 s worth lost
    assert cpu.read()["apple-cpu"] == pytest.approx(10.0, abs=MJ)
    fake_apple.clock.advance(2.0)
    assert cpu.read()["apple-cpu"] == pytest.approx(20.0, abs=2 * MJ)
    (note,) = cpu.notes()
    assert "apple-cpu" in note and "stepped back" in note
    assert cpu.notes(since_s=float("inf")) == []


def test_a_channel_that_disappears_is_a_read_error(fake_apple) -> None:
    fake_apple.configure(M1_MAX)
    ram = by_domain(open_apple_meters())["ram"]
    fake_apple.configure({k: v for k, v in M1_MAX.items() if not k.startswith("DRAM")})
    with pytest.raises(RuntimeError, match="no longer reports dram_mj"):
        ram.read()


# --- the stand-in itself, against the library's documented behaviour ---------------------


def test_stand_in_windows_and_errors_follow_the_library(fake_apple) -> None:
    fake_apple.configure(
        {"CPU Energy": {"profile": [[0, 8.0]]}, "GPU Energy": {"unit": "nJ", "profile": [[0, 1.0]]}}
    )
    monitor = fake_apple.AppleEnergyMonitor()
    monitor.begin_window("w")
    with pytest.raises(RuntimeError, match="already exists"):
        monitor.begin_window("w")
    monitor.begin_window("w", restart=True)
    fake_apple.clock.advance(0.5)
    result = monitor.end_window("w")
    assert isinstance(result, fake_apple.AppleEnergyMetrics)
    assert (result.cpu_total_mj, result.gpu_mj) == (4000, 500)
    assert result.dram_mj is None and result.efficiency_cores_mj is None
    with pytest.raises(RuntimeError, match="No measurement with provided key"):
        monitor.end_window("w")


def test_stand_in_classifies_channels_as_the_library(fake_apple) -> None:
    # apple_energy.hpp's rules: parts of the CPU into their own fields, SRAM/DTL channels and
    # unknown names nowhere, fields without a channel None.
    names = ("CPU Energy", "ECPU0", "ECPU1", "PCPU0", "ECPU", "PCPU", "ECPM", "PCPM", "EC0")
    names += ("MCPU0_0_SRAM", "PCPUDTL00", "GPU Dummy", "GPU SRAM")
    fake_apple.configure({name: {"profile": [[0, 1.0]]} for name in names})
    fake_apple.clock.advance(1.0)
    res = fake_apple.AppleEnergyMonitor().get_cumulative_energy()
    assert res.cpu_total_mj == 1000 and res.gpu_mj is None
    assert res.efficiency_cores_mj == [1000, 1000] and res.performance_cores_mj == [1000]
    assert res.efficiency_cluster_mj == [1000] and res.performance_cluster_mj == [1000]
    assert res.efficiency_core_manager_mj == 1000 and res.performance_core_manager_mj == 1000
    assert res.gpu_sram_mj == 1000 and res.dram_mj is None and res.ane_mj is None
