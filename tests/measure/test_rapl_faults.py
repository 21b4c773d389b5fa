"""RAPL meter faults (issue 11, item 12), against a fake powercap tree (tests/fakes/powercap.py).

A lower reading is a wrap only where one is physically plausible; a counter that steps
back is not counted and is noted. Reading a powercap file never blocks, whatever is there.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

import mlflow_green
from mlflow_green.measure.meters import _rapl_counter
from mlflow_green.measure.meters.base import MeterUnavailable
from mlflow_green.measure.meters.rapl import open_rapl_meters
from tests.fakes.powercap import (
    BROKEN_FILE_KINDS,
    DEFAULT_MAX_ENERGY_RANGE_UJ,
    ManualClock,
    PowercapTree,
    unblock_fifo,
)


@pytest.fixture
def tree(tmp_path: Path) -> PowercapTree:
    return PowercapTree(tmp_path)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> ManualClock:
    """The RAPL meter's clock, moving only when the test says: exact time between readings."""
    manual = ManualClock()
    # raising=False: code without the plausibility check has no _clock; its tests still run.
    monkeypatch.setattr(_rapl_counter, "_clock", manual, raising=False)
    return manual


# --- wraps must be physically plausible (issue 11, item 12) ------------------------------------


def test_counter_stepping_back_is_no_wrap_and_counting_goes_on(tree: PowercapTree) -> None:
    # Real time: a 1 uJ step back would be a 262 kJ wrap, which at 1000 W takes 262 s.
    zones = tree.add_package(0, energy_uj=123_456_789_012, dram=False)
    (cpu,) = open_rapl_meters(tree.path)
    tree.advance(zones.package, 2.0)
    assert cpu.read() == {"package-0": 2.0}
    tree.step_back(zones.package, 1)
    with pytest.warns(RuntimeWarning, match="RAPL counter package-0 went back") as caught:
        assert cpu.read() == {"package-0": 2.0}  # not 262,145 J
    assert len(caught) == 1
    tree.advance(zones.package, 3.0)
    assert cpu.read() == {"package-0": 5.0}  # from the new baseline
    [note] = cpu.notes()
    assert "RAPL counter package-0 went back from 123458789012 to 123458789011 uJ" in note
    assert "no wrap explains at up to 1000 W" in note and "counted as 0 J" in note
    tree.step_back(zones.package, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one warning per zone, not one per step back
        assert cpu.read() == {"package-0": 5.0}
    assert "went back 2 times (first from 123458789012 to 123458789011 uJ)" in cpu.notes()[0]


def test_step_back_of_dram_is_no_wrap_either(tree: PowercapTree, clock: ManualClock) -> None:
    zones = tree.add_package(0, energy_uj=5_000_000)
    (_, ram) = open_rapl_meters(tree.path)
    clock.advance(30.0)  # the poll interval's upper bound: still far from 262 kJ at 1000 W
    tree.step_back(zones.dram, 1000)
    with pytest.warns(RuntimeWarning, match="RAPL counter dram-0 went back"):
        assert ram.read() == {"dram-0": 0.0}
    assert "30 s counted as 0 J" in ram.notes()[0]


def test_real_wrap_at_the_end_of_the_range_is_counted(tree: PowercapTree, clock) -> None:
    max_uj = tree.max_energy_range_uj(tree.add_package(0, dram=False).package)
    assert max_uj == DEFAULT_MAX_ENERGY_RANGE_UJ  # the range of real Intel packages
    tree.set_energy_uj("intel-rapl:0", max_uj - 20_000_000_000)  # 20 kJ below the top
    (cpu,) = open_rapl_meters(tree.path)
    clock.advance(60.0)
    tree.advance("intel-rapl:0", 50_000.0)  # 833 W for 60 s: passes the top once
    assert tree.energy_uj("intel-rapl:0") == 30_000_000_000
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a real wrap is nothing to warn about
        assert cpu.read() == {"package-0": 50_000.0}
    assert cpu.notes() == []


def test_wrap_beyond_the_plausible_power_is_not_counted(tree: PowercapTree, clock) -> None:
    zones = tree.add_package(0, energy_uj=DEFAULT_MAX_ENERGY_RANGE_UJ - 20_000_000_000, dram=False)
    (cpu,) = open_rapl_meters(tree.path)
    clock.advance(30.0)
    tree.advance(zones.package, 50_000.0)  # 1667 W: no CPU package draws that
    with pytest.warns(RuntimeWarning, match="no wrap explains at up to 1000 W"):
        assert cpu.read() == {"package-0": 0.0}
    clock.advance(1.0)
    tree.advance(zones.package, 100.0)
    assert cpu.read() == {"package-0": 100.0}


@pytest.mark.parametrize(
    ("wrap_j", "elapsed_s", "counted"),
    [(1000.0, 0.0, True), (2000.0, 0.0, False), (2000.0, 1.9, False), (2000.0, 2.0, True)],
)
def test_small_wraps_are_judged_over_at_least_one_second(
    tree: PowercapTree, clock: ManualClock, wrap_j: float, elapsed_s: float, counted: bool
) -> None:
    # Up to 1 kJ a wrap is always plausible (reads ms apart carry coarse timestamps); beyond,
    # the elapsed time decides: 2 kJ needs 2 s at 1000 W.
    max_uj = 50_000_000_000
    zones = tree.add_package(0, energy_uj=max_uj - 500_000_000, max_energy_range_uj=max_uj)
    (cpu, _) = open_rapl_meters(tree.path)
    clock.advance(elapsed_s)
    tree.advance(zones.package, wrap_j)  # across the top
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cpu.read() == {"package-0": wrap_j if counted else 0.0}
    assert len(caught) == (0 if counted else 1)


def test_notes_cover_the_step_backs_since_a_time(tree: PowercapTree, clock: ManualClock) -> None:
    zones = tree.add_package(0, energy_uj=9_000_000, dram=False)
    (cpu,) = open_rapl_meters(tree.path)
    assert cpu.notes() == []
    clock.advance(2.0)  # t = 1002
    tree.step_back(zones.package)
    with pytest.warns(RuntimeWarning):
        cpu.read()
    clock.advance(3.0)  # t = 1005
    tree.step_back(zones.package)
    cpu.read()
    assert cpu.notes(1005.0) == [
        "RAPL counter package-0 went back from 8999999 to 8999998 uJ, which no wrap explains"
        " at up to 1000 W: not counted as a wrap, 3 s counted as 0 J"
    ]
    assert "went back 2 times" in cpu.notes(1000.0)[0] and "5 s counted" in cpu.notes()[0]
    assert cpu.notes(1005.5) == []


def test_step_back_in_a_tracked_window_counts_nothing_and_warns(fake_powercap) -> None:
    zones = fake_powercap.add_package(0, energy_uj=77_000_000_000, dram=False)
    with (
        pytest.warns(RuntimeWarning, match="RAPL counter package-0 went back"),
        mlflow_green.track(sample_interval_s=60.0) as t,
    ):
        fake_powercap.advance(zones.package, 2.0)
        assert t.report.energy_j_by_domain["cpu"] == pytest.approx(2.0, abs=1e-9)  # a read
        fake_powercap.step_back(zones.package)
        assert t.report.energy_j_by_domain["cpu"] == pytest.approx(2.0, abs=1e-9)
        fake_powercap.advance(zones.package, 3.0)
    assert t.report.methods["cpu"] == "rapl"
    assert t.report.energy_j_by_device["cpu"] == pytest.approx({"package-0": 5.0}, abs=1e-9)


# --- reading a powercap file never blocks (issue 11, item 12) ----------------------------------

#: Seconds a powercap read may take before the test calls it blocked: reads take microseconds,
#: so this only ends the proof on code that blocks, however busy the machine.
BLOCKED_AFTER_S = 10.0


def finishes(call: Callable[[], Any], fifos: Iterable[Path] = ()) -> Any:
    """``call()`` in a thread; fails the test if it is still running after BLOCKED_AFTER_S.

    A reader stuck opening one of ``fifos`` is then released (it reads end of file), so
    that no thread of this test outlives it. Returns what ``call`` returned, or raises
    what it raised.
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # handed to the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="powercap-reader", daemon=True)
    thread.start()
    thread.join(BLOCKED_AFTER_S)
    blocked = thread.is_alive()
    deadline = time.monotonic() + 10.0
    while thread.is_alive() and time.monotonic() < deadline:
        for fifo in fifos:
            unblock_fifo(fifo)
        thread.join(0.05)
    assert not blocked, f"reading the powercap tree was still blocked after {BLOCKED_AFTER_S} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


_KIND_WORDS = {
    "fifo": "a FIFO (named pipe)",
    "directory": "a directory",
    "device": "a character device",
}


@pytest.mark.parametrize("kind", BROKEN_FILE_KINDS)
def test_package_counter_that_is_not_a_regular_file_is_unavailable(tree, kind: str) -> None:
    zones = tree.add_package(0, dram=False)
    broken = tree.break_file(zones.package, "energy_uj", kind)
    with pytest.raises(MeterUnavailable) as raised:
        finishes(lambda: open_rapl_meters(tree.path), [broken])
    assert str(raised.value) == (
        f"cannot read RAPL zone {tree.path / zones.package}: energy_uj is {_KIND_WORDS[kind]}, "
        "not a regular file as a powercap attribute is"
    )
    assert raised.value.warn  # the user hears why the CPU energy is an estimate


@pytest.mark.parametrize(
    ("file", "devices"),
    [
        ("name", [["package-0"]]),  # not a zone: left out
        ("max_energy_range_uj", None),  # a package that cannot be read: no RAPL meter
    ],
)
def test_other_zone_files_that_are_fifos_never_block(tree, file: str, devices) -> None:
    tree.add_package(0, dram=False)
    zones = tree.add_package(1, energy_uj=5_000_000, dram=False)
    fifo = tree.break_file(zones.package, file, "fifo")

    def open_meters() -> Any:
        try:
            return [m.devices for m in open_rapl_meters(tree.path)]
        except MeterUnavailable as exc:
            return None if "max_energy_range_uj is a FIFO" in str(exc) else str(exc)

    assert finishes(open_meters, [fifo]) == devices


def test_dram_counter_that_is_a_fifo_leaves_the_cpu_meter(tree: PowercapTree) -> None:
    zones = tree.add_package(0)
    fifo = tree.break_file(zones.dram, "energy_uj", "fifo")
    meters = finishes(lambda: open_rapl_meters(tree.path), [fifo])
    assert [m.domain for m in meters] == ["cpu"]


def test_counter_turned_fifo_after_open_fails_the_read_at_once(tree: PowercapTree) -> None:
    zones = tree.add_package(0, dram=False)
    (cpu,) = open_rapl_meters(tree.path)
    fifo = tree.break_file(zones.package, "energy_uj", "fifo")
    with pytest.raises(OSError, match="energy_uj is a FIFO"):
        finishes(cpu.read, [fifo])


def test_tracking_with_a_fifo_counter_falls_back_to_the_estimate(fake_powercap) -> None:
    zones = fake_powercap.add_package(0, dram=False)
    fifo = fake_powercap.break_file(zones.package, "energy_uj", "fifo")

    def track() -> Any:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with mlflow_green.track() as tracker:
                pass
        return tracker.report, [str(w.message) for w in caught]

    report, messages = finishes(track, [fifo])
    assert report.methods["cpu"] == "estimate-tdp"
    assert any(
        "CPU/RAM energy falls back to an estimate" in m and "energy_uj is a FIFO" in m
        for m in messages
    ), messages
