"""A stand-in for ``zeus_apple_silicon`` (ml-energy/zeus-apple-silicon 1.1), driven by a scenario.

Tests put this module in ``sys.modules["zeus_apple_silicon"]`` (or ``tests/fakes``
first on ``sys.path``) so that the production code's unchanged
``from zeus_apple_silicon import AppleEnergyMonitor`` finds it. It mirrors the
real extension (``bindings/energy_bindings.hpp`` over ``apple_energy/apple_energy.hpp``):

* ``AppleEnergyMonitor()``: ``get_cumulative_energy()``, ``begin_window(key,
  restart=False)``, ``end_window(key)``; ``RuntimeError`` with the library's
  messages for a failed IOReport subscription, a key already open, a key never
  opened (nanobind turns ``std::runtime_error`` into ``RuntimeError``), and
  ``ValueError`` for an unknown energy unit (``std::invalid_argument``);
* ``AppleEnergyMetrics()``: eleven read-write fields, ``None`` where no channel of
  that kind exists: ``cpu_total_mj``, ``efficiency_cores_mj``,
  ``performance_cores_mj``, ``efficiency_cluster_mj``, ``performance_cluster_mj``,
  ``efficiency_core_manager_mj``, ``performance_core_manager_mj``, ``dram_mj``,
  ``gpu_mj``, ``gpu_sram_mj``, ``ane_mj``, all whole millijoules (lists for the
  per-core and per-cluster fields).

The hardware is a set of IOReport "Energy Model" channels, each a cumulative
counter in its own unit ("mJ" for most, "nJ" for "GPU Energy" on M-series chips),
given by :func:`configure`::

    configure({
        "CPU Energy": {"unit": "mJ", "profile": [[0, 5.0], [10, 5.0]], "start": 123456},
        "GPU Energy": {"unit": "nJ", "profile": [[0, 12.0]]},
        "ANE":        {"unit": "mJ", "profile": [[0, 0.5]]},
        "DRAM":       {"unit": "mJ", "profile": [[0, 1.0]]},
    }, init_error=False)

A profile is ``[[t_s, power_w], ...]``, piecewise linear and constant outside,
over seconds since the epoch (the moment of :func:`configure`) on the module's
clock (``time.monotonic`` unless :func:`set_clock` replaces it). A channel's raw
value at ``t`` is ``start`` plus the profile's integral, in whole units of the
channel. ``reset_at_s`` restarts a channel's counter from zero there.

As the library does, a cumulative reading converts each channel's raw value to
whole millijoules (integer division: 1,999,999 nJ is 1 mJ) and then sums the
channels of a field, and a window converts each channel's raw difference. Channel
names are classified with the library's rules, ``DIE_<n>_`` prefixes (multi-die
Ultra chips) stripped first. IOReport's own update period is not documented and
is not modelled: a reading sees the counters at that instant.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: Units IOReport energy channels use: (multiplier, divisor) to whole millijoules, as the
#: library converts them (integer arithmetic: a division truncates).
_UNITS: dict[str, tuple[int, int]] = {
    "nJ": (1, 1_000_000),
    "uJ": (1, 1_000),
    "µJ": (1, 1_000),
    "mJ": (1, 1),
    "cJ": (10, 1),
    "dJ": (100, 1),
    "J": (1_000, 1),
    "daJ": (10_000, 1),
    "hJ": (100_000, 1),
    "kJ": (1_000_000, 1),
    "MJ": (1_000_000_000, 1),
}
_FIELDS = (
    "cpu_total_mj",
    "efficiency_cores_mj",
    "performance_cores_mj",
    "efficiency_cluster_mj",
    "performance_cluster_mj",
    "efficiency_core_manager_mj",
    "performance_core_manager_mj",
    "dram_mj",
    "gpu_mj",
    "gpu_sram_mj",
    "ane_mj",
)
_LISTS = {f for f in _FIELDS if f.endswith(("cores_mj", "cluster_mj"))}


class AppleEnergyMetrics:
    """Energy of the SoC's parts in mJ; ``None`` where the chip has no such channel."""

    def __init__(self) -> None:
        for name in _FIELDS:
            setattr(self, name, None)

    def __repr__(self) -> str:
        lines = []
        for name in _FIELDS:
            value = getattr(self, name)
            shown = "None (unavailable)" if value is None else f"{value} mJ"
            lines.append(f"{name}: {shown}")
        return "\n".join(lines) + "\n"


class ManualClock:
    """A clock that moves only when told: ``clock()`` is the time in seconds."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, dt_s: float) -> float:
        """Move forward by ``dt_s`` seconds; returns the new time."""
        if dt_s < 0:
            raise ValueError("a monotonic clock cannot go back")
        self.now += dt_s
        return self.now


@dataclass
class _Channel:
    unit: str
    points: list[tuple[float, float]]
    start: int
    reset_at_s: float | None

    def integral_j(self, t0: float, t1: float) -> float:
        return _antiderivative_j(self.points, t1) - _antiderivative_j(self.points, t0)

    def raw(self, t: float) -> int:
        """The counter in whole units of the channel at ``t`` seconds since the epoch."""
        if self.reset_at_s is not None and t >= self.reset_at_s:
            joules, base = self.integral_j(self.reset_at_s, t), 0
        else:
            joules, base = self.integral_j(0.0, t), self.start
        multiplier, divisor = _UNITS[self.unit]
        return base + math.floor(joules * 1e3 * divisor / multiplier + 1e-6)


def _antiderivative_j(points: list[tuple[float, float]], t: float) -> float:
    """Integral of a piecewise-linear power profile from its first point to ``t``."""
    (t0, w0), (tn, wn) = points[0], points[-1]
    if t <= t0:
        return w0 * (t - t0)
    total = 0.0
    for (ta, wa), (tb, wb) in itertools.pairwise(points):
        if t <= tb:
            w_t = wa + (wb - wa) * ((t - ta) / (tb - ta)) if tb > ta else wb
            return total + (wa + w_t) / 2 * (t - ta)
        total += (wa + wb) / 2 * (tb - ta)
    return total + wn * (t - tn)


_clock: Callable[[], float] = time.monotonic
_epoch = _clock()
_channels: dict[str, _Channel] = {}
_init_error = False


def configure(channels: dict[str, dict[str, Any]], *, init_error: bool = False) -> None:
    """Describe the chip's energy channels (see the module docstring); restarts the epoch.

    ``init_error``: the IOReport subscription fails, as when the framework is missing.
    """
    global _channels, _epoch, _init_error
    parsed = {}
    for name, spec in channels.items():
        unit = spec.get("unit", "mJ")
        if unit not in _UNITS:
            raise ValueError(f"unknown unit {unit!r} for channel {name!r}")
        points = [(float(t), float(w)) for t, w in spec.get("profile", [[0.0, 0.0]])]
        reset = spec.get("reset_at_s")
        parsed[name] = _Channel(unit, points, int(spec.get("start", 0)), reset)
    _channels = parsed
    _init_error = init_error
    _epoch = _clock()


def set_clock(clock: Callable[[], float]) -> None:
    """Read time (seconds) from ``clock`` instead of ``time.monotonic``; restarts the epoch."""
    global _clock, _epoch
    _clock = clock
    _epoch = clock()


def now_s() -> float:
    """Seconds since the epoch: the time axis of the profiles."""
    return _clock() - _epoch


def integral_j(channel: str, t0: float, t1: float) -> float:
    """Exact energy in joules of ``channel`` from ``t0`` to ``t1`` (seconds since the epoch)."""
    return _channels[channel].integral_j(t0, t1)


def _sample() -> dict[str, tuple[int, str]]:
    """What ``IOReportCreateSamples`` gives: raw value and unit of every channel, now."""
    t = now_s()
    return {name: (channel.raw(t), channel.unit) for name, channel in _channels.items()}


def _to_mj(raw: int, unit: str) -> int:
    if unit not in _UNITS:
        raise ValueError(f"Unsupported or invalid energy unit provided: {unit}")
    multiplier, divisor = _UNITS[unit]
    # C++ integer division truncates toward zero (a negative window delta, across a reset).
    quotient = abs(raw) // divisor
    return (quotient if raw >= 0 else -quotient) * multiplier


def _parse(sample: dict[str, tuple[int, str]]) -> AppleEnergyMetrics:
    """``AppleEnergyMonitor::parse_sample``: channels into fields, in channel order."""
    result = AppleEnergyMetrics()

    def add(field: str, value: int) -> None:
        current = getattr(result, field)
        if field in _LISTS:
            setattr(result, field, [*(current or []), value])
        else:
            setattr(result, field, (current or 0) + value)

    for name, (raw, unit) in sample.items():
        energy = _to_mj(raw, unit)
        base = _strip_die_prefix(name)
        if "CPU Energy" in base:
            add("cpu_total_mj", energy)
        elif _is_efficiency_core(base):
            add("efficiency_cores_mj", energy)
        elif _is_performance_core(base):
            add("performance_cores_mj", energy)
        elif _is_efficiency_cluster(base):
            add("efficiency_cluster_mj", energy)
        elif base.startswith("P") and base.endswith("CPU"):
            add("performance_cluster_mj", energy)
        elif (base.startswith("E") and base.endswith("CPM")) or _all_digits_after(base, "MCPM"):
            add("efficiency_core_manager_mj", energy)
        elif base.startswith("P") and base.endswith("CPM"):
            add("performance_core_manager_mj", energy)
        elif "DRAM" in base:
            add("dram_mj", energy)
        elif "GPU Energy" in base:
            add("gpu_mj", energy)
        elif "GPU SRAM" in base:
            add("gpu_sram_mj", energy)
        elif "ANE" in base:
            add("ane_mj", energy)
    return result


def _strip_die_prefix(name: str) -> str:
    if len(name) > 4 and name.startswith("DIE_"):
        second = name.find("_", 4)
        if second != -1 and second + 1 < len(name):
            return name[second + 1 :]
    return name


def _digits_from(s: str, start: int) -> bool:
    return start < len(s) and s[start:].isdigit()


def _all_digits_after(s: str, prefix: str) -> bool:
    return s.startswith(prefix) and _digits_from(s, len(prefix))


def _cpu_digit_suffix(s: str) -> bool:
    pos = s.rfind("CPU")
    return pos != -1 and _digits_from(s, pos + 3)


def _is_efficiency_core(s: str) -> bool:
    if s.startswith("E"):
        return _cpu_digit_suffix(s)
    if len(s) >= 7 and s.startswith("MCPU") and "SRAM" not in s and "DTL" not in s:
        underscore = s.rfind("_")
        return underscore >= 4 and _digits_from(s, underscore + 1)
    return False


def _is_performance_core(s: str) -> bool:
    if s.startswith("P") and "CPU" in s:
        return _cpu_digit_suffix(s)
    return len(s) >= 6 and s.startswith("PACC_") and _digits_from(s, 5)


def _is_efficiency_cluster(s: str) -> bool:
    if s.startswith("E") and s.endswith("CPU"):
        return True
    plain = "_" not in s and "SRAM" not in s and "DTL" not in s
    return len(s) >= 5 and plain and _all_digits_after(s, "MCPU")


class AppleEnergyMonitor:
    """Cumulative readings and labelled windows over the chip's IOReport energy channels."""

    def __init__(self) -> None:
        if _init_error:
            raise RuntimeError("Failed to create IOReport subscription.")
        self._begin: dict[str, dict[str, tuple[int, str]]] = {}

    def get_cumulative_energy(self) -> AppleEnergyMetrics:
        """Energy from a point fixed for the monitor's life (e.g. boot), per field, in mJ."""
        return _parse(_sample())

    def begin_window(self, key: str, restart: bool = False) -> None:
        if key in self._begin and not restart:
            raise RuntimeError("Measurement with specified key already exists.")
        self._begin[key] = _sample()

    def end_window(self, key: str) -> AppleEnergyMetrics:
        if key not in self._begin:
            raise RuntimeError("No measurement with provided key had been started.")
        start = self._begin.pop(key)
        end = _sample()
        # IOReportCreateSamplesDelta: raw differences of the channels in both samples.
        delta = {n: (raw - start[n][0], unit) for n, (raw, unit) in end.items() if n in start}
        return _parse(delta)
