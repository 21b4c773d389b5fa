"""Snapshots of cumulative energy counters, their differences, and the power timeline.

Every value here is cumulative joules: a window's energy is the difference of
two snapshots, and the timeline's average power is the difference of two kept
points over the time between them.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlflow_green.measure.meters import DOMAINS

EnergyByDevice = dict[str, dict[str, float]]


@dataclass(frozen=True)
class Snapshot:
    """Every scope's cumulative counters at one instant."""

    t: float  # time.monotonic()
    energy_j: dict[str, EnergyByDevice]  # scope -> domain -> device -> cumulative J

    def totals(self) -> Point:
        """The snapshot with devices summed, as a timeline point."""
        return Point(
            self.t,
            {s: {d: sum(devs.values()) for d, devs in e.items()} for s, e in self.energy_j.items()},
        )


@dataclass(frozen=True)
class Point:
    """A timeline sample: cumulative joules per scope and domain (devices summed, to stay small)."""

    t: float
    energy_j: dict[str, dict[str, float]]


def copy_energy(energy: EnergyByDevice) -> EnergyByDevice:
    """A copy of ``energy`` that later counting does not change."""
    return {domain: dict(devices) for domain, devices in energy.items()}


def energy_diff(end: EnergyByDevice, start: EnergyByDevice) -> EnergyByDevice:
    """Joules per domain and device between two cumulative readings."""
    return {
        domain: {dev: j - start.get(domain, {}).get(dev, 0.0) for dev, j in devices.items()}
        for domain, devices in end.items()
    }


def power_timeline(
    snaps: list[Point], scope: str, interval_s: float
) -> list[tuple[float, dict[str, float]]]:
    """Average power per domain between kept snapshots at least ``interval_s`` apart."""
    if len(snaps) < 2:
        return []
    t0, out = snaps[0].t, []
    prev = snaps[0]
    for i, snap in enumerate(snaps[1:], 1):
        is_last = i == len(snaps) - 1
        dt = snap.t - prev.t
        if dt <= 0 or (dt < interval_s * 0.95 and not is_last):
            continue
        now, before = snap.energy_j[scope], prev.energy_j[scope]
        power = {d: (now.get(d, 0.0) - before.get(d, 0.0)) / dt for d in DOMAINS}
        out.append((snap.t - t0, power))
        prev = snap
    return out
