"""One background sampler per process; named, overlapping measurement windows.

A window is a pair of snapshots of the same cumulative counters, so opening
and closing one costs a meter read (microseconds), any number may overlap
(a run, its nested runs, their phases, in several threads), and a one-second
window still gets its exact counter delta. The sampler thread only exists
while a window is open; it polls meters that need it (power integration,
counter wraparound) and records the power timeline.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from mlflow_green._warnings import warn
from mlflow_green.measure._counters import (
    EnergyByDevice,
    Point,
    Snapshot,
    copy_energy,
    energy_diff,
    power_timeline,
)
from mlflow_green.measure._process_share import ProcessShare
from mlflow_green.measure.meters import DOMAINS, Meter

_log = logging.getLogger(__name__)

#: Timeline points held in memory (about 2.8 h at 1 s) before older ones are thinned.
MAX_TIMELINE_POINTS = 10_000


@dataclass(frozen=True)
class Measurement:
    """What a window measured, before PUE and carbon intensity are applied."""

    name: str
    start_time_s: float
    """Wall-clock start, seconds since the epoch."""
    duration_s: float
    energy_j_by_device: EnergyByDevice
    """Joules per domain and device over the window (device level, no PUE)."""
    methods: dict[str, str]
    """How each domain was measured, e.g. ``{"cpu": "rapl"}``."""
    hardware: dict[str, str]
    scope: str
    timeline: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    """``(seconds since start, {domain: average watts since the previous point})``."""
    failures: dict[str, str] = field(default_factory=dict)
    """Domain -> why its meter stopped during the window (its energy stops there), or a
    fault it measured through (a RAPL counter that stepped back: that interval counts 0 J)."""
    gpu_whole_j_by_device: dict[str, float] = field(default_factory=dict)
    """With ``scope="process"``: each GPU's whole energy over the window, beside the share
    attributed to the process tree in ``energy_j_by_device["gpu"]``; empty otherwise."""


def _cuda_synchronize() -> None:
    # Pending GPU kernels belong to the window being closed (as Zeus does); torch
    # is never imported here, only used if the user's program already has it.
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_initialized():
            for index in range(torch.cuda.device_count()):
                torch.cuda.synchronize(index)
    except Exception as exc:  # a broken CUDA context must not break the user's job
        _log.debug("mlflow-green: cuda synchronize failed: %s", exc)


class Window:
    """An open measurement: call :meth:`snapshot` for live values, :meth:`close` to end it."""

    def __init__(
        self, monitor: Monitor, name: str, scope: str, interval_s: float, start: Snapshot
    ) -> None:
        self.name, self.scope, self.sample_interval_s = name, scope, interval_s
        self._monitor, self._start = monitor, start
        self._wall = time.time() - (time.monotonic() - start.t)
        self._result: Measurement | None = None

    @property
    def closed(self) -> bool:
        return self._result is not None

    def snapshot(self, sync: bool = True) -> Measurement:
        """What the window has measured so far; it stays open.

        ``sync=False`` (signal handlers) skips waiting for pending GPU work, which can
        block for good, and raises ``RuntimeError`` rather than re-enter a measurement
        that the interrupted code of this thread had under way.
        """
        if self._result is not None:
            return self._result
        if not sync and getattr(self._monitor._local, "measuring", False):
            raise RuntimeError("a measurement of this thread is under way")
        return self._monitor._measure(self, close=False, sync=sync)

    def close(self) -> Measurement:
        """End the window (idempotent) and return its measurement."""
        if self._result is None:
            self._result = self._monitor._measure(self, close=True)
        return self._result


class Monitor:
    """Reads every meter of the process; owns the sampler thread and the open windows."""

    def __init__(self, meters: list[Meter]) -> None:
        self._meters = meters
        self._lock = threading.RLock()
        self._local = threading.local()  # .measuring: this thread reads the meters now
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._windows: dict[int, Window] = {}
        self._ids = itertools.count()
        self._last_raw: list[dict[str, float]] = [m.read() for m in meters]
        zero = {m.domain: dict.fromkeys(m.devices, 0.0) for m in meters}
        self._cum: dict[str, EnergyByDevice] = {"machine": copy_energy(zero)}
        self._zero = zero
        self._share: ProcessShare | None = None
        # Meter index -> how it last attributed its devices to processes (scope="process").
        self._attributing: dict[int, str] = {}
        self._raised: set[int] = set()  # meters whose process_shares raised: whole since
        # Meter index -> time of its last read with / without a split (scope="process").
        self._split_t: dict[int, float] = {}
        self._whole_t: dict[int, float] = {}
        self._failures: dict[int, str] = {}
        self._timeline: list[Point] = []
        self.methods = _methods(meters)
        self.hardware = {
            d: "; ".join(m.hardware() for m in meters if m.domain == d and m.hardware())
            for d in DOMAINS
        }

    def devices(self, domain: str) -> list[str]:
        """Ids of the measured devices of ``domain`` (GPU UUIDs, ``package-0``...), in order."""
        return [d for m in self._meters if m.domain == domain for d in m.devices]

    # -- reading ---------------------------------------------------------------------------
    def _read(self) -> Snapshot:
        """Advance the cumulative counters to now. Caller holds the lock."""
        shares = self._share.update() if self._share is not None else {}
        for i, meter in enumerate(self._meters):
            if i in self._failures:
                continue
            try:
                raw = meter.read()
            except Exception as exc:
                self._fail(i, meter, exc)
                continue
            by_device = self._device_shares(i, meter) if self._share is not None else None
            last = self._last_raw[i]
            for device, value in raw.items():
                delta = max(value - last.get(device, value), 0.0)
                last[device] = value
                for scope, cum in self._cum.items():
                    factor = 1.0
                    if scope == "process":
                        factor = shares[meter.domain]
                        if by_device is not None:
                            factor = by_device.get(device, factor)
                    by_dev = cum.setdefault(meter.domain, {})
                    by_dev[device] = by_dev.get(device, 0.0) + delta * factor
        return Snapshot(time.monotonic(), {s: copy_energy(c) for s, c in self._cum.items()})

    def _device_shares(self, index: int, meter: Meter) -> dict[str, float] | None:
        """The meter's own per-device process shares for the interval just read, if any."""
        by_device = None
        if index not in self._raised:
            try:
                by_device = meter.process_shares(self._share.pids())  # type: ignore[union-attr]
            except Exception as exc:  # attribution must never stop the measuring
                self._raised.add(index)
                warn(
                    f"mlflow-green: attributing {meter.domain} energy to this process tree "
                    f"failed ({type(exc).__name__}: {exc}); counted whole",
                    RuntimeWarning,
                    stacklevel=3,
                )
        if by_device is None:
            self._whole_t[index] = time.monotonic()
            return None
        self._attributing[index] = meter.process_method or "process-share"
        self._split_t[index] = time.monotonic()
        return by_device

    def _fail(self, index: int, meter: Meter, exc: Exception) -> None:
        reason = f"{meter.method} failed ({type(exc).__name__}: {exc})"
        self._failures[index] = reason
        warn(
            f"mlflow-green: {meter.domain} meter {reason}; its energy stops at the last reading",
            RuntimeWarning,
            stacklevel=2,
        )

    @contextlib.contextmanager
    def _measuring(self) -> Iterator[None]:
        self._local.measuring = getattr(self._local, "measuring", 0) + 1
        try:
            yield
        finally:
            self._local.measuring -= 1

    # -- windows ---------------------------------------------------------------------------
    def open(self, name: str, scope: str = "machine", sample_interval_s: float = 1.0) -> Window:
        """Open a window named ``name``; starts the sampler thread if none runs."""
        _cuda_synchronize()
        with self._lock, self._measuring():
            if scope == "process" and "process" not in self._cum:
                self._read()  # close the machine-scope segment before attribution starts
                self._share = ProcessShare()
                self._cum["process"] = copy_energy(self._zero)
            start = self._read()
            window = Window(self, name, scope, sample_interval_s, start)
            self._windows[next(self._ids)] = window
            if not self._timeline or self._timeline[-1].t < start.t:
                self._timeline.append(start.totals())
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="mlflow-green-sampler", daemon=True
                )
                self._thread.start()
            else:
                self._wake.set()  # a shorter interval may apply now
        return window

    def _measure(self, window: Window, close: bool, sync: bool = True) -> Measurement:
        if sync:
            _cuda_synchronize()
        with self._lock, self._measuring():
            end = self._read()
            points = [s for s in self._timeline if window._start.t < s.t < end.t]
            if close:
                self._windows = {k: w for k, w in self._windows.items() if w is not window}
                self._trim()
                if not self._windows:
                    self._wake.set()  # let the sampler thread end now, not one interval later
            failures = {self._meters[i].domain: r for i, r in self._failures.items()}
            for meter in self._meters:
                # Faults a meter handled and measured through (e.g. a RAPL counter that
                # stepped back), within this window: the report says so with the failures.
                try:
                    notes = meter.notes(window._start.t)
                except Exception as exc:
                    _log.debug("mlflow-green: notes of %s: %s", meter.method, exc)
                    continue
                if notes:
                    failures[meter.domain] = "; ".join(
                        r for r in (failures.get(meter.domain), *notes) if r
                    )
        start = window._start
        energy = energy_diff(end.energy_j[window.scope], start.energy_j[window.scope])
        whole: dict[str, float] = {}
        if window.scope == "process":
            whole = energy_diff(end.energy_j["machine"], start.energy_j["machine"]).get("gpu", {})
        return Measurement(
            name=window.name,
            start_time_s=window._wall,
            duration_s=end.t - start.t,
            energy_j_by_device=energy,
            methods=self._methods_for(window.scope, start.t, failures),
            hardware=dict(self.hardware),
            scope=window.scope,
            timeline=power_timeline(
                [start.totals(), *points, end.totals()], window.scope, window.sample_interval_s
            ),
            failures=failures,
            gpu_whole_j_by_device=whole,
        )

    def _methods_for(self, scope: str, start_t: float, failures: dict[str, str]) -> dict[str, str]:
        """The method tags of a window that started at ``start_t``. With ``scope="process"``,
        a meter that split any interval of the window between processes says how
        (``nvml-energy-counter+process-share``), one that split none gets its bare method
        (the figure is the whole); split for part of the window only, it keeps the split
        in its method and ``failures`` says the rest was counted whole."""
        if scope != "process":
            return dict(self.methods)
        how: dict[int, str] = {}
        for i, meter in enumerate(self._meters):
            if self._split_t.get(i, -math.inf) <= start_t:
                continue  # no interval of the window was split: its figure is the whole
            how[i] = self._attributing[i]
            if self._whole_t.get(i, -math.inf) > start_t:
                note = "split between processes for only part of the window, whole for the rest"
                failures[meter.domain] = "; ".join(
                    r for r in (failures.get(meter.domain), f"{meter.method}: {note}") if r
                )
        return _methods(self._meters, how)

    def _thin(self) -> None:
        # Bound memory for runs of days: past the limit, keep every other point of the
        # older half. Points are cumulative counters, so energies stay exact; only the
        # old part of the power timeline gets coarser.
        if len(self._timeline) > MAX_TIMELINE_POINTS:
            half = len(self._timeline) // 2
            self._timeline = self._timeline[:half:2] + self._timeline[half:]

    def _trim(self) -> None:
        # Keep only the samples an open window may still need.
        if not self._windows:
            self._timeline.clear()
            return
        oldest = min(w._start.t for w in self._windows.values())
        self._timeline = [s for s in self._timeline if s.t >= oldest]

    # -- sampler thread --------------------------------------------------------------------
    def _interval(self) -> float:
        intervals = [w.sample_interval_s for w in self._windows.values()]
        intervals += [m.poll_interval_s for m in self._meters if m.poll_interval_s]
        return min(intervals, default=1.0)

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._windows:
                    self._thread = None
                    return
                interval = self._interval()
                due = min(w.sample_interval_s for w in self._windows.values())
            self._wake.wait(interval)
            self._wake.clear()
            try:
                with self._lock:
                    if not self._windows:  # the last window closed (or close()) while we slept
                        continue
                    snap = self._read()
                    last = self._timeline[-1].t if self._timeline else float("-inf")
                    if snap.t - last >= due * 0.95:
                        self._timeline.append(snap.totals())
                        self._thin()
            except Exception as exc:  # the sampler must outlive any fault
                _log.warning("mlflow-green: sampler error: %s", exc)

    def close(self) -> None:
        """Stop measuring and release the meters."""
        with self._lock:
            self._windows.clear()
            self._wake.set()
            for meter in self._meters:
                try:
                    meter.close()
                except Exception as exc:
                    _log.debug("mlflow-green: closing %s: %s", meter.method, exc)


def _methods(meters: list[Meter], attributing: dict[int, str] | None = None) -> dict[str, str]:
    out: dict[str, list[str]] = {}
    for i, m in enumerate(meters):
        how = (attributing or {}).get(i)
        method = f"{m.method}+{how}" if how else m.method
        out.setdefault(m.domain, [])
        if method not in out[m.domain]:
            out[m.domain].append(method)
    return {d: "+".join(out.get(d, ["none"])) for d in DOMAINS}


_MONITOR: Monitor | None = None
_MONITOR_LOCK = threading.Lock()


def get_monitor() -> Monitor:
    """The process's monitor, opening the machine's meters on first use."""
    global _MONITOR
    with _MONITOR_LOCK:
        if _MONITOR is None:
            from mlflow_green.measure.meters import discover

            _MONITOR = Monitor(discover())
        return _MONITOR


def _forget_after_fork() -> None:
    # A forked child inherits the monitor but not its thread or meter handles.
    global _MONITOR, _MONITOR_LOCK
    _MONITOR, _MONITOR_LOCK = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def reset_monitor() -> None:
    """Close the process's monitor and its meters; the next use rediscovers the hardware.

    For tests and for programs whose hardware view changed (e.g. ``CUDA_VISIBLE_DEVICES``).
    """
    global _MONITOR
    with _MONITOR_LOCK:
        monitor, _MONITOR = _MONITOR, None
    if monitor is not None:
        monitor.close()
