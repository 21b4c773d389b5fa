"""The monitor end to end: ``discover()`` -> ``get_monitor()`` -> windows, through ``track()``.

Hardware is the fake NVML and the fake powercap tree (tests/conftest.py). On the
fake's manual clock, time moves only when a test advances it, so every GPU figure
has an exact expected value (``counter_integral_j``); CPU and RAM energy are what
the test adds to the powercap counters. Where meters need real time (power
integration, the timeline, process shares) the tests let ~1-2 s pass.

A live ``t.report`` reads the meters: tests call it after moving the clock where a
read must happen at that instant (across a counter reset, before a GPU is lost).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import warnings

import psutil
import pytest

import mlflow_green
from mlflow_green.measure.monitor import get_monitor, reset_monitor
from tests.conftest import SAMPLER_THREAD_NAME, sampler_threads
from tests.workloads import busy_for

UUIDS = [
    "GPU-aaaa1111-0000-0000-0000-000000000000",
    "GPU-bbbb2222-0000-0000-0000-000000000000",
]
A100 = "NVIDIA A100-SXM4-40GB"
V100 = "Tesla V100-SXM2-16GB"
#: Long enough that the sampler thread never wakes on its own during a manual-clock test.
QUIET_S = 30.0


def counter_gpu(index: int, profile: list[list[float]], **extra) -> dict:
    return {"uuid": UUIDS[index], "name": A100, "counter": True, "profile": profile, **extra}


def ramp() -> list[list[float]]:
    return [[0.0, 50.0], [30.0, 300.0], [45.0, 120.0]]


def spiky() -> list[list[float]]:
    points = [[0.0, 100.0]]
    for k in range(40):
        start = 0.55 + k
        points += [[start, 100.0], [start, 400.0], [start + 0.1, 400.0], [start + 0.1, 100.0]]
    return points


def two_gpus_and_two_packages(fake_nvml, fake_powercap):
    fake_nvml.configure([counter_gpu(0, ramp(), counter_start_mj=10**9), counter_gpu(1, spiky())])
    # Distinct counter values: no multi-die mirror probe.
    p0 = fake_powercap.add_package(0, energy_uj=5_000_000)
    p1 = fake_powercap.add_package(1, energy_uj=900_000_000)
    return p0, p1


# --- 3. Exact deltas with counters ------------------------------------------------------------


def test_window_energy_is_the_exact_counter_delta_per_device(fake_nvml, fake_powercap) -> None:
    p0, p1 = two_gpus_and_two_packages(fake_nvml, fake_powercap)
    fake_nvml.advance(1.25)
    get_monitor()  # the meters open well before the window does
    fake_nvml.advance(2.12)
    fake_powercap.advance(p0.package, 1000.0)  # before the window: not counted
    with mlflow_green.track("exact", country="FRA", sample_interval_s=QUIET_S) as t:
        t0 = fake_nvml.now()
        fake_nvml.advance(4.37)
        fake_powercap.advance(p0.package, 12.5)
        fake_powercap.advance(p1.package, 0.25)
        fake_nvml.advance(3.1)
        fake_powercap.advance(p0.dram, 3.0)
        fake_powercap.advance(p1.dram, 7.125)
        fake_powercap.advance(p0.package, 1.5)
        t1 = fake_nvml.now()
    fake_powercap.advance(p1.package, 1000.0)  # after the window: not counted
    report = t.report
    assert report.methods == {"gpu": "nvml-energy-counter", "cpu": "rapl", "ram": "rapl"}
    gpu = report.energy_j_by_device["gpu"]
    assert set(gpu) == set(UUIDS)
    for uuid in UUIDS:
        expected = fake_nvml.counter_integral_j(uuid, t0, t1)
        assert expected > 100
        assert gpu[uuid] == pytest.approx(expected, rel=1e-12, abs=1e-9)
    assert report.energy_j_by_device["cpu"] == pytest.approx(
        {"package-0": 14.0, "package-1": 0.25}, abs=1e-9
    )
    assert report.energy_j_by_device["ram"] == pytest.approx(
        {"dram-0": 3.0, "dram-1": 7.125}, abs=1e-9
    )
    assert report.energy_j_by_domain["gpu"] == pytest.approx(sum(gpu.values()), rel=1e-12)
    assert f"{A100} x2" in report.hardware["gpu"]


# --- 4. Overlapping and nested windows ------------------------------------------------------


def test_overlapping_named_windows_get_their_own_exact_deltas(fake_nvml, fake_powercap) -> None:
    p0, _ = two_gpus_and_two_packages(fake_nvml, fake_powercap)
    fake_nvml.advance(0.5)
    a = mlflow_green.track("A", sample_interval_s=QUIET_S).start()
    ta0 = fake_nvml.now()
    fake_nvml.advance(2.3)
    fake_powercap.advance(p0.package, 10.0)
    b = mlflow_green.track("B", sample_interval_s=QUIET_S).start()
    tb0 = fake_nvml.now()
    fake_nvml.advance(1.7)
    fake_powercap.advance(p0.package, 20.0)
    fake_powercap.advance(p0.dram, 2.0)
    report_a = a.stop()
    ta1 = fake_nvml.now()
    fake_nvml.advance(3.05)
    fake_powercap.advance(p0.package, 40.0)
    report_b = b.stop()
    tb1 = fake_nvml.now()

    assert (report_a.name, report_b.name) == ("A", "B")
    assert report_a.energy_j_by_device["cpu"]["package-0"] == pytest.approx(30.0, abs=1e-9)
    assert report_b.energy_j_by_device["cpu"]["package-0"] == pytest.approx(60.0, abs=1e-9)
    assert report_a.energy_j_by_device["ram"]["dram-0"] == pytest.approx(2.0, abs=1e-9)
    assert report_b.energy_j_by_device["ram"]["dram-0"] == pytest.approx(2.0, abs=1e-9)
    for uuid in UUIDS:
        assert report_a.energy_j_by_device["gpu"][uuid] == pytest.approx(
            fake_nvml.counter_integral_j(uuid, ta0, ta1), rel=1e-12, abs=1e-9
        )
        assert report_b.energy_j_by_device["gpu"][uuid] == pytest.approx(
            fake_nvml.counter_integral_j(uuid, tb0, tb1), rel=1e-12, abs=1e-9
        )
    # Closing A changed nothing for B, and a closed window's report stays put.
    assert a.report is report_a and a.stop() is report_a


def test_nested_window_energy_never_exceeds_the_outer_one(fake_nvml, fake_powercap) -> None:
    p0, p1 = two_gpus_and_two_packages(fake_nvml, fake_powercap)
    with mlflow_green.track("outer", sample_interval_s=QUIET_S) as outer:
        fake_nvml.advance(1.0)
        fake_powercap.advance(p0.package, 5.0)
        with mlflow_green.track("inner", sample_interval_s=QUIET_S) as inner:
            fake_nvml.advance(2.0)
            fake_powercap.advance(p1.package, 6.0)
            fake_powercap.advance(p1.dram, 1.0)
        fake_nvml.advance(0.5)
        fake_powercap.advance(p0.dram, 2.0)
    for domain in ("gpu", "cpu", "ram"):
        assert inner.report.energy_j_by_domain[domain] > 0
        assert inner.report.energy_j_by_domain[domain] <= outer.report.energy_j_by_domain[domain]
    assert inner.report.duration_s <= outer.report.duration_s


# --- 5. Counter reset and wraparound --------------------------------------------------------


def test_counter_reset_mid_window_counts_both_segments(fake_nvml, fake_powercap) -> None:
    fake_nvml.configure([counter_gpu(0, ramp(), counter_start_mj=5 * 10**9, reset_at_s=10.05)])
    fake_powercap.add_package(0, energy_uj=1, dram=False)
    fake_nvml.advance(2.0)
    with mlflow_green.track(sample_interval_s=QUIET_S) as t:
        t0 = fake_nvml.now()
        before = fake_nvml.advance(7.9)  # 9.9 s: the last read before the reset
        assert t.report.energy_j_by_domain["gpu"] > 0
        after = fake_nvml.advance(0.4)  # 10.3 s: the first read after it
        across = t.report.energy_j_by_domain["gpu"]
        t1 = fake_nvml.advance(6.2)
    energy = t.report.energy_j_by_device["gpu"][UUIDS[0]]
    first = fake_nvml.counter_integral_j(UUIDS[0], t0, before)
    second = fake_nvml.counter_integral_j(UUIDS[0], after, t1)
    assert first > 0 and second > 0
    # Across the reset: the counter's energy since it restarted at least (power x the
    # meter's own, real-time, interval is the other bound), never negative, never more
    # than the interval's true energy here.
    since_reset = fake_nvml.counter_integral_j(UUIDS[0], 10.05, after)
    assert first + since_reset - 1e-9 <= across
    assert across <= first + fake_nvml.integral_j(UUIDS[0], before, after) + 1e-9
    assert energy == pytest.approx(across + second, rel=1e-12, abs=1e-9)


def test_counter_reset_without_a_read_before_it_is_never_negative(fake_nvml) -> None:
    fake_nvml.configure(
        [counter_gpu(0, [[0.0, 300.0]], counter_start_mj=7 * 10**9, reset_at_s=3.0)]
    )
    fake_nvml.advance(1.0)
    with mlflow_green.track(sample_interval_s=QUIET_S) as t:
        after = fake_nvml.advance(2.5)  # past the reset: the counter is far below its start
        # What the restarted counter holds (150 J) at least, the truth (750 J) at most.
        across = t.report.energy_j_by_domain["gpu"]
        assert 150.0 - 1e-6 <= across <= 750.0 + 1e-6
        t1 = fake_nvml.advance(2.0)
    energy = t.report.energy_j_by_device["gpu"][UUIDS[0]]
    assert energy - across == pytest.approx(
        fake_nvml.counter_integral_j(UUIDS[0], after, t1), abs=1e-9
    )
    assert energy - across == pytest.approx(600.0, abs=1e-6)


def test_powercap_wrap_mid_window_is_counted_once(fake_powercap) -> None:
    max_uj = 50_000_000_000
    zones = fake_powercap.add_package(0, energy_uj=max_uj - 2_000_000, max_energy_range_uj=max_uj)
    with mlflow_green.track(sample_interval_s=QUIET_S) as t:
        fake_powercap.advance(zones.package, 1.0)
        assert t.report.energy_j_by_domain["cpu"] == pytest.approx(1.0, abs=1e-9)
        fake_powercap.advance(zones.package, 5.0)  # passes the range: restarts from zero
        assert fake_powercap.energy_uj(zones.package) == 4_000_000
        fake_powercap.advance(zones.dram, 2.5)  # wraps too, with no read in between
        fake_powercap.advance(zones.package, 0.75)
    assert t.report.energy_j_by_device["cpu"] == pytest.approx({"package-0": 6.75}, abs=1e-9)
    assert t.report.energy_j_by_device["ram"] == pytest.approx({"dram-0": 2.5}, abs=1e-9)


# --- 6. Power integration in real time --------------------------------------------------------


def test_power_only_gpu_is_integrated_by_the_sampler_within_one_percent(fake_nvml) -> None:
    fake_nvml.use_real_time()
    # Flat at both ends, a 300 W hump in between, changes no faster than 1 Hz: reads at the
    # window's ends alone would see 100 W throughout, 2/3 of the true energy.
    profile = [[0.0, 100.0], [0.3, 100.0], [0.8, 300.0], [1.5, 300.0], [2.0, 100.0]]
    fake_nvml.configure([{"uuid": UUIDS[0], "name": V100, "counter": False, "profile": profile}])
    before_open = fake_nvml.now()
    with mlflow_green.track(sample_interval_s=5.0) as t:
        after_open = fake_nvml.now()
        time.sleep(2.2)  # the measured time: power flows while the sampler polls
        before_close = fake_nvml.now()
    after_close = fake_nvml.now()
    report = t.report
    assert report.methods["gpu"] == "nvml-power"
    energy = report.energy_j_by_device["gpu"][UUIDS[0]]
    low = fake_nvml.integral_j(UUIDS[0], after_open, before_close)
    high = fake_nvml.integral_j(UUIDS[0], before_open, after_close)
    assert low * 0.99 <= energy <= high * 1.01
    assert report.failures == {}


# --- 7. A GPU lost mid-window ----------------------------------------------------------------


def test_lost_gpu_stops_at_its_last_good_reading(fake_nvml, fake_powercap) -> None:
    fake_nvml.configure([counter_gpu(0, ramp()), counter_gpu(1, spiky(), lost_at_s=6.0)])
    zones = fake_powercap.add_package(0, energy_uj=1_000_000, dram=False)
    fake_nvml.advance(1.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with mlflow_green.track(sample_interval_s=QUIET_S) as t:
            t0 = fake_nvml.now()
            last_good = fake_nvml.advance(4.5)
            t.report  # noqa: B018 - the last good reading
            fake_nvml.advance(1.0)  # lost at 6 s
            t.report  # noqa: B018 - meets the lost GPU
            fake_nvml.advance(2.0)
            fake_powercap.advance(zones.package, 3.0)
            t.report  # noqa: B018 - reads again: no second warning
            fake_nvml.advance(1.0)
        report = t.report
    runtime = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(runtime) == 1, [str(w.message) for w in caught]
    assert "GPU is lost" in str(runtime[0].message)
    assert set(report.failures) == {"gpu"}
    lost = report.energy_j_by_device["gpu"][UUIDS[1]]
    assert lost == pytest.approx(fake_nvml.counter_integral_j(UUIDS[1], t0, last_good), abs=1e-9)
    # The healthy GPU shares the meter: it keeps at least what was read before the loss.
    healthy = report.energy_j_by_device["gpu"][UUIDS[0]]
    assert healthy >= fake_nvml.counter_integral_j(UUIDS[0], t0, last_good) - 1e-9
    assert report.energy_j_by_device["cpu"]["package-0"] == pytest.approx(3.0, abs=1e-9)


# --- 8. Timeline ------------------------------------------------------------------------------


def test_timeline_points_integrate_to_the_window_energy(fake_nvml) -> None:
    fake_nvml.use_real_time()
    fake_nvml.configure([counter_gpu(0, [[0.0, 250.0]])])
    with mlflow_green.track(sample_interval_s=0.2) as t:
        time.sleep(1.0)  # the measured time
    report = t.report
    points = report.timeline
    assert 4 <= len(points) <= 6, [p.t_s for p in points]
    times = [p.t_s for p in points]
    assert times == sorted(times) and times[0] > 0
    assert times[-1] == pytest.approx(report.duration_s, abs=1e-9)
    for domain in ("gpu", "cpu", "ram"):
        integrated, previous = 0.0, 0.0
        for point in points:
            integrated += point.power_w[domain] * (point.t_s - previous)
            previous = point.t_s
        assert integrated == pytest.approx(report.energy_j_by_domain[domain], rel=1e-9, abs=1e-9)
    assert report.energy_j_by_domain["gpu"] == pytest.approx(250.0 * report.duration_s, abs=30.0)
    frame = report.timeline_frame()
    assert list(frame.columns) == ["t_s", "gpu_w", "cpu_w", "ram_w"]
    assert len(frame) == len(points)
    assert list(frame["t_s"]) == times


# --- 9. Process scope -------------------------------------------------------------------------


@pytest.fixture
def busy_stranger():
    """A CPU-bound process that is not a descendant of this one (orphaned through ``sh``)."""
    script = (
        "import time\nprint('ready', flush=True)\nend = time.monotonic() + 10\n"
        "while time.monotonic() < end:\n    pass\n"
    )
    sh = subprocess.Popen(
        ["sh", "-c", '"$0" -c "$1" & echo $!', sys.executable, script],
        stdout=subprocess.PIPE,
        text=True,
    )
    lines = [sh.stdout.readline().strip(), sh.stdout.readline().strip()]
    sh.wait()
    sh.stdout.close()
    pid = int(next(line for line in lines if line.isdigit()))
    assert "ready" in lines
    stranger = psutil.Process(pid)
    assert stranger.pid not in {c.pid for c in psutil.Process().children(recursive=True)}
    yield stranger
    stranger.kill()


def tree_rss() -> int:
    """Resident memory of this process and its descendants (other tests may leave a server)."""
    me = psutil.Process()
    total = me.memory_info().rss
    for child in me.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            continue
    return total


def test_process_scope_scales_cpu_by_this_process_share(fake_powercap, busy_stranger) -> None:
    zones = fake_powercap.add_package(0, energy_uj=2_000_000)

    def measure(work) -> tuple:
        process = mlflow_green.track("p", scope="process", sample_interval_s=QUIET_S).start()
        machine = mlflow_green.track("m", scope="machine", sample_interval_s=QUIET_S).start()
        work()
        fake_powercap.advance(zones.package, 100.0)
        fake_powercap.advance(zones.dram, 40.0)
        m, p = machine.stop(), process.stop()
        return p, m, tree_rss()

    idle_p, idle_m, _ = measure(lambda: time.sleep(0.4))  # the stranger alone is busy
    busy_p, busy_m, rss = measure(lambda: busy_for(0.4))  # both are

    for p, m in ((idle_p, idle_m), (busy_p, busy_m)):
        assert (p.scope, m.scope) == ("process", "machine")
        assert m.energy_j_by_domain["cpu"] == pytest.approx(100.0, abs=1e-9)
        assert 0.0 <= p.energy_j_by_domain["cpu"] <= m.energy_j_by_domain["cpu"]
    assert idle_p.energy_j_by_domain["cpu"] < 25.0
    assert busy_p.energy_j_by_domain["cpu"] > idle_p.energy_j_by_domain["cpu"]
    # RAM: this process tree's share of installed memory.
    share = rss / psutil.virtual_memory().total
    assert busy_p.energy_j_by_domain["ram"] == pytest.approx(40.0 * share, rel=0.05)
    assert busy_m.energy_j_by_domain["ram"] == pytest.approx(40.0, abs=1e-9)


def test_process_scope_counts_a_busy_child(fake_powercap) -> None:
    zones = fake_powercap.add_package(0, energy_uj=2_000_000, dram=False)
    with mlflow_green.track(scope="process", sample_interval_s=QUIET_S) as t:
        child = subprocess.run(
            [
                sys.executable,
                "-c",
                "import time\nend = time.monotonic() + 0.4\nwhile time.monotonic() < end: pass",
            ],
            check=True,
        )
        fake_powercap.advance(zones.package, 100.0)
    assert child.returncode == 0
    assert 0.0 < t.report.energy_j_by_domain["cpu"] <= 100.0


# --- 10. One sampler thread, only while a window is open --------------------------------------


def _parked(thread: threading.Thread) -> bool:
    """Whether ``thread`` waits in the sampler's sleep (its stack: Event.wait in _run)."""
    frame = sys._current_frames().get(thread.ident)
    names = []
    while frame is not None:
        names.append(frame.f_code.co_name)
        frame = frame.f_back
    return bool(names) and names[0] == "wait" and "_run" in names


def wait_until_parked(thread: threading.Thread, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not _parked(thread):
        assert time.monotonic() < deadline, "the sampler never went to sleep"
        time.sleep(0.001)


def test_one_sampler_thread_serves_every_window_and_ends_with_them() -> None:
    assert sampler_threads() == []
    trackers = [mlflow_green.track(f"w{i}", sample_interval_s=0.05).start() for i in range(3)]
    threads = sampler_threads()
    assert len(threads) == 1 and threads[0].daemon
    with mlflow_green.track("nested", sample_interval_s=0.05):
        assert sampler_threads() == threads
    for tracker in trackers[:2]:
        tracker.stop()
        assert sampler_threads() == threads  # a window is still open
    trackers[2].stop()
    threads[0].join(timeout=5.0)
    assert not threads[0].is_alive()
    # The next window starts a new one.
    with mlflow_green.track(sample_interval_s=0.05):
        again = sampler_threads()
        assert len(again) == 1 and again[0].name == SAMPLER_THREAD_NAME
    assert all(r.report is not None for r in trackers)


def test_sampler_thread_ends_promptly_when_the_last_window_closes() -> None:
    tracker = mlflow_green.track(sample_interval_s=QUIET_S).start()
    [thread] = sampler_threads()
    wait_until_parked(thread)
    tracker.stop()
    thread.join(timeout=1.0)
    assert not thread.is_alive()


def test_reset_monitor_never_reads_closed_meters(fake_nvml) -> None:
    fake_nvml.configure([counter_gpu(0, ramp())])
    mlflow_green.track(sample_interval_s=QUIET_S).start()  # left open: reset ends it
    [thread] = sampler_threads()
    wait_until_parked(thread)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reset_monitor()
        thread.join(timeout=5.0)
    assert not thread.is_alive()
    assert [str(w.message) for w in caught] == []


def test_timeline_memory_is_bounded_and_energy_stays_exact(monkeypatch, fake_powercap) -> None:
    from mlflow_green.measure import monitor as monitor_module

    monkeypatch.setattr(monitor_module, "MAX_TIMELINE_POINTS", 20)
    fake_powercap.add_package(0, dram=False)
    with mlflow_green.track(sample_interval_s=0.05) as t:
        sampler = sampler_threads()[0]
        for _ in range(60):
            fake_powercap.advance("intel-rapl:0", 1.0)
            # Wait for the sampler to take a point (bounded), so that thinning happens.
            start = len(get_monitor()._timeline)
            deadline = time.monotonic() + 2.0
            while len(get_monitor()._timeline) == start and time.monotonic() < deadline:
                time.sleep(0.001)
            assert len(get_monitor()._timeline) <= 21
        assert sampler.is_alive()
    assert t.report.energy_j_by_domain["cpu"] == pytest.approx(60.0, abs=1e-6)
    assert 10 <= len(t.report.timeline) <= 22
