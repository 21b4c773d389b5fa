"""Apple silicon energy through IOReport, read with ``zeus-apple-silicon`` (no sudo).

``zeus_apple_silicon.AppleEnergyMonitor`` subscribes to IOReport's "Energy Model"
channels, cumulative energy counters of the SoC's parts, and
``get_cumulative_energy()`` returns them converted to whole millijoules as an
``AppleEnergyMetrics`` (``cpu_total_mj``, ``gpu_mj``, ``ane_mj``, ``dram_mj``...,
each ``None`` where the chip has no such channel: DRAM on some older chips, GPU
SRAM on M5). The counters run from an unspecified point fixed for the monitor's
life, so the difference of two readings is the energy in between, to within 1 mJ
per channel; differences of cumulative readings (as Zeus takes them) do not add
up rounding as summed ``begin_window``/``end_window`` deltas would. Apple says the
figures are model-based estimates of the SoC, not sensor readings: the method
name ``apple-ioreport`` tells them apart from RAPL and NVML counters.

Domains (method ``apple-ioreport`` for all three):

* ``cpu``: device ``apple-cpu``, ``cpu_total_mj`` (all CPU clusters; the per-core
  and per-cluster fields are parts of it and are not added again);
* ``gpu``: device ``apple-gpu``, ``gpu_mj``, and device ``apple-ane``, ``ane_mj``,
  the Neural Engine, an accelerator Core ML runs models on: leaving it out would
  miss ML work, and as its own device the report shows it apart from the GPU.
  ``gpu_sram_mj`` is left out: IOReport does not say whether "GPU Energy"
  includes it (the CPU's SRAM channels are parts of "CPU Energy"), and
  powermetrics-style tools report the GPU from "GPU Energy" alone;
* ``ram``: device ``apple-dram``, ``dram_mj`` (unified memory).

A domain whose fields are ``None`` gets no meter here, so :func:`discover` falls
back for it (e.g. RAM to the capacity estimate). ``zeus_apple_silicon`` is
imported inside :func:`open_apple_meters`, on macOS only.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from mlflow_green.measure.meters.base import Meter, MeterUnavailable

_log = logging.getLogger(__name__)

METHOD = "apple-ioreport"
#: (domain, device id, ``AppleEnergyMetrics`` field), in report order.
CHANNELS: tuple[tuple[str, str, str], ...] = (
    ("gpu", "apple-gpu", "gpu_mj"),
    ("gpu", "apple-ane", "ane_mj"),
    ("cpu", "apple-cpu", "cpu_total_mj"),
    ("ram", "apple-dram", "dram_mj"),
)
_INSTALL = "pip install zeus-apple-silicon"


def open_apple_meters() -> list[Meter]:
    """The Apple silicon meters: one per domain the chip reports (``gpu``, ``cpu``, ``ram``).

    Raises:
        MeterUnavailable: not macOS or not Apple silicon (``warn=False``: nothing to
            fix), ``zeus-apple-silicon`` not installed, or IOReport failing
            (``warn=True``: the user can fix these).
    """
    if sys.platform != "darwin":
        raise MeterUnavailable(f"not macOS (platform {sys.platform}): no Apple silicon")
    machine = platform.machine()
    if machine != "arm64":
        raise MeterUnavailable(
            f"not Apple silicon (machine {machine}): IOReport energy exists on M-series chips "
            "only (an Intel Mac, or Python running under Rosetta)"
        )
    try:
        from zeus_apple_silicon import AppleEnergyMonitor
    except ImportError as err:
        raise MeterUnavailable(
            f"zeus-apple-silicon is not installed: {_INSTALL} to measure Apple silicon",
            warn=True,
        ) from err
    try:
        monitor = AppleEnergyMonitor()
        first = monitor.get_cumulative_energy()
    except Exception as err:  # nanobind turns the library's std::runtime_error into RuntimeError
        raise MeterUnavailable(f"IOReport energy monitor failed: {err}", warn=True) from err

    chip = _chip_name()
    meters: list[Meter] = []
    for domain in ("gpu", "cpu", "ram"):
        channels = [
            (device, field)
            for d, device, field in CHANNELS
            if d == domain and getattr(first, field, None) is not None
        ]
        if channels:
            meters.append(AppleSiliconMeter(domain, monitor, channels, first, chip=chip))
    if not meters:
        raise MeterUnavailable(
            "IOReport reports no CPU, GPU or DRAM energy on this chip "
            "(zeus-apple-silicon may not know its channel names yet: upgrade it)",
            warn=True,
        )
    return meters


class AppleSiliconMeter(Meter):
    """The IOReport energy channels of one domain; cumulative joules since opened.

    A reading lower than the previous one (a counter restarted, which IOReport
    does not document) adds nothing for that interval, counting goes on from the
    new value, and :meth:`notes` says so: too little energy rather than a
    whole counter's worth of made-up energy.
    """

    method = METHOD
    poll_interval_s = None  # 64-bit millijoule counters: no wrap in practice

    def __init__(
        self,
        domain: str,
        monitor: Any,
        channels: Sequence[tuple[str, str]],
        first: Any,
        *,
        chip: str = "",
    ) -> None:
        """``channels``: (device id, ``AppleEnergyMetrics`` field); ``first``: the first reading."""
        self.domain = domain
        self._monitor = monitor
        self._channels = list(channels)
        self._chip = chip
        self._last_mj = {device: int(getattr(first, field)) for device, field in self._channels}
        self._total_mj = dict.fromkeys(self._last_mj, 0)
        self._step_backs: list[tuple[float, str, int]] = []  # (monotonic s, device, mJ)

    @property
    def devices(self) -> list[str]:
        return [device for device, _ in self._channels]

    def read(self) -> dict[str, float]:
        """Joules of each channel since the meter was opened.

        Raises:
            RuntimeError: IOReport failed, or stopped reporting a channel it had.
        """
        now = self._monitor.get_cumulative_energy()
        t = time.monotonic()
        for device, field in self._channels:
            value = getattr(now, field, None)
            if value is None:
                raise RuntimeError(f"IOReport no longer reports {field} ({device})")
            value_mj = int(value)
            delta_mj = value_mj - self._last_mj[device]
            if delta_mj >= 0:
                self._total_mj[device] += delta_mj
            else:
                self._step_backs.append((t, device, -delta_mj))
                _log.debug("mlflow-green: %s stepped back %d mJ", device, -delta_mj)
            self._last_mj[device] = value_mj
        return {device: mj / 1000.0 for device, mj in self._total_mj.items()}

    def notes(self, since_s: float = float("-inf")) -> list[str]:
        """Counter step-backs at or after ``since_s``, one note per device."""
        by_device: dict[str, list[int]] = {}
        for t, device, mj in self._step_backs:
            if t >= since_s:
                by_device.setdefault(device, []).append(mj)
        return [
            f"{device}: the IOReport counter stepped back {len(mjs)} time(s) (by up to "
            f"{max(mjs)} mJ); those intervals count no energy"
            for device, mjs in by_device.items()
        ]

    def hardware(self) -> str:
        parts = {"apple-cpu": "CPU", "apple-gpu": "GPU", "apple-ane": "Neural Engine"}
        named = [parts.get(device, "DRAM") for device in self.devices]
        return f"{self._chip or 'Apple silicon'} ({', '.join(named)}; IOReport)"


def _chip_name() -> str:
    """``machdep.cpu.brand_string``, e.g. ``"Apple M2 Pro"``; ``""`` when unknown."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            ["sysctl", "-n", "machdep.cpu.brand_string"],
            capture_output=True,
            text=True,
            timeout=2,
            check=False,
        )
        if done.returncode == 0:
            return done.stdout.strip()
    return ""
