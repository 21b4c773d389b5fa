"""One RAPL zone's counter and running total: wraps told apart from step-backs.

A reading lower than the previous one is taken for a wrap only where a wrap is
physically plausible: the energy it implies (``max_energy_range_uj - previous
+ current``) must not exceed :data:`MAX_PLAUSIBLE_POWER_W` times the time since
the previous reading (at least :data:`MIN_WRAP_ELAPSED_S`). A counter that steps
back by a microjoule would otherwise count as a whole range (262 kJ, whatever
the elapsed time). Such a reading is not counted: the interval since the
previous reading gets 0 J (the counter itself says no energy was used; anything
else would be a guess), counting restarts from the new value, the user is warned
once per zone, and :meth:`RaplMeter.notes` says which zone, when, and how long
went uncounted, for the report.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mlflow_green.measure.meters._sysfs import read_attribute

#: Highest power in watts one zone (a package or its DRAM) could plausibly draw: twice the
#: highest TDP of any CPU package sold today (500 W: AMD EPYC 9965, Intel Xeon 6980P), and
#: well above any DRAM zone. It sets the poll interval from the wrap range, and bounds the
#: energy a wrap may imply. The zones' constraint files are not used: they hold power
#: *limits*, which turbo (PL2, PL4) exceeds and which firmware often leaves at a
#: placeholder such as 4095.875 W, so they could neither safely lower nor usefully raise it.
MAX_PLAUSIBLE_POWER_W = 1000.0
#: Shortest elapsed time, seconds, a wrap is judged over: a wrap of up to 1 kJ is always
#: accepted. It needs a previous reading within 1 kJ of the top of the range and a new one
#: within 1 kJ of zero, which a counter stepping back on a real range (65 kJ and up) never
#: shows; and two reads milliseconds apart carry timestamps too coarse (the counters update
#: about every millisecond, a read may lag) to judge energies that small.
MIN_WRAP_ELAPSED_S = 1.0
#: Step-backs remembered per zone for :meth:`RaplMeter.notes` (older ones are forgotten).
MAX_NOTED_STEP_BACKS = 100

#: The clock readings are timed with (seconds, ``time.monotonic``, the monitor's clock); a
#: module attribute so tests can let fake time pass between two readings.
_clock: Callable[[], float] = time.monotonic


@dataclass(frozen=True)
class StepBack:
    """A reading lower than the previous one that no plausible wrap explains."""

    t: float  # _clock() at the reading
    from_uj: int
    to_uj: int
    elapsed_s: float  # since the previous reading: the interval counted as 0 J


@dataclass
class Zone:
    """One powercap zone and its running total. Energies in microjoules."""

    zone_id: str  # directory name, e.g. "intel-rapl:0:1"
    path: Path  # resolved real path of the zone directory
    seen_as: Path  # the path it was found at under the powercap root, for messages
    name: str  # content of `name`: "package-0", "dram"...
    parent_name: str | None  # `name` of the enclosing zone, for subzones
    mmio: bool
    device: str = ""
    max_uj: int = 0
    last_uj: int = 0
    last_t: float = 0.0  # _clock() at the last reading
    total_uj: int = 0
    step_backs: deque[StepBack] = field(default_factory=lambda: deque(maxlen=MAX_NOTED_STEP_BACKS))
    step_back_count: int = 0  # all of them, including those forgotten

    def read_uj(self) -> int:
        """The raw counter, microjoules; raises OSError or ValueError, never blocks."""
        return int(read_attribute(self.path / "energy_uj"))

    def start(self) -> None:
        """Take the first reading: the baseline energies are counted from."""
        self.last_uj = self.read_uj()
        self.last_t = _clock()

    def sample(self) -> int:
        """Read the counter, add the energy since the last reading to the total; return it (uJ)."""
        now = self.read_uj()
        t = _clock()
        elapsed_s = t - self.last_t
        if now >= self.last_uj:
            delta = now - self.last_uj
        else:
            # A lower reading is one wrap at max_energy_range_uj (the poll interval is
            # chosen so that it cannot wrap twice between reads) if that much energy could
            # have been used in the time; else the counter stepped back: count nothing.
            delta = self.max_uj - self.last_uj + now
            limit_uj = MAX_PLAUSIBLE_POWER_W * max(elapsed_s, MIN_WRAP_ELAPSED_S) * 1e6
            if delta > limit_uj:
                self.step_backs.append(StepBack(t, self.last_uj, now, elapsed_s))
                self.step_back_count += 1
                delta = 0
        self.last_uj, self.last_t = now, t
        self.total_uj += delta
        return delta

    def step_back_note(self, since_s: float) -> str | None:
        """One sentence on the step-backs at or after ``since_s`` (a ``_clock()`` value)."""
        events = [e for e in self.step_backs if e.t >= since_s]
        if not events:
            return None
        uncounted_s = sum(e.elapsed_s for e in events)
        first = events[0]
        what = (
            f"from {first.from_uj} to {first.to_uj} uJ"
            if len(events) == 1
            else f"{len(events)} times (first from {first.from_uj} to {first.to_uj} uJ)"
        )
        return (
            f"RAPL counter {self.device or self.zone_id} went back {what}, which no wrap "
            f"explains at up to {MAX_PLAUSIBLE_POWER_W:g} W: not counted as a wrap, "
            f"{uncounted_s:.3g} s counted as 0 J"
        )
