"""CPU package and DRAM energy from the Linux powercap interface (Intel and AMD RAPL).

Each powercap zone is a directory holding ``name`` (``package-0``, ``dram``,
``core``...), ``energy_uj`` (a cumulative counter in microjoules) and
``max_energy_range_uj`` (where that counter wraps to zero). The layout under
``/sys/class/powercap``::

    intel-rapl:0            -> .../intel-rapl/intel-rapl:0          package-0
    intel-rapl:0/intel-rapl:0:0                                     core
    intel-rapl:0/intel-rapl:0:1                                     dram
    intel-rapl:0:0          -> .../intel-rapl:0/intel-rapl:0:0      (same zone again)
    intel-rapl-mmio:0       -> .../intel-rapl-mmio:0                package-0 (again)

Package zones make the CPU meter, ``dram`` zones the RAM meter. ``core`` and
``uncore`` are parts of their package and ``psys`` is the whole platform, so
counting them as well would count energy twice.

A counter must never be counted twice either, and three things show one
counter under several zones:

1. a subzone is reachable both nested in its package and as a top-level
   symlink: zones are keyed by their resolved real path;
2. ``intel-rapl-mmio:N`` reads the same package counter through MMIO as
   ``intel-rapl:N`` through MSRs: an MMIO zone whose (package, name) an MSR
   zone also has is dropped;
3. multi-die AMD parts (Threadripper, EPYC Zen 1/2) expose one package zone
   per die (``package-0-die-0``, ``package-0-die-1``...) that all mirror the
   socket's counter (CodeCarbon issues #1274, #788). Independent counters are
   very unlikely to agree to within a joule, so package zones whose nonzero
   readings agree at open are suspects; they are read again
   :data:`MIRROR_PROBE_S` later and a suspect that advanced by the same energy
   as the first zone of its group is a mirror and left out (noted in
   :meth:`RaplMeter.hardware` and the debug log). Suspects that did not move
   at all keep the verdict of their identical readings. The probe costs one
   short pause, only on machines that show suspects.

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

Every powercap file is read with :func:`mlflow_green.meters._sysfs.read_attribute`,
which refuses anything but a regular file without opening it: a FIFO, a device
or a directory where a counter should be makes the zone unreadable (the CPU
energy falls back to an estimate, saying why), never a hang.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mlflow_green._warnings import warn
from mlflow_green.meters._cpuinfo import cpu_description
from mlflow_green.meters._sysfs import NotARegularFile, read_attribute
from mlflow_green.meters.base import Meter, MeterUnavailable

logger = logging.getLogger(__name__)

#: Environment variable naming the powercap directory (tests, containers with /sys elsewhere).
ROOT_ENV = "MLFLOW_GREEN_POWERCAP_ROOT"
DEFAULT_ROOT = "/sys/class/powercap"

_ZONE_PREFIX = "intel-rapl"
_MMIO_PREFIX = "intel-rapl-mmio"

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
#: Bounds of :attr:`RaplMeter.poll_interval_s`, seconds.
POLL_INTERVAL_BOUNDS_S = (1.0, 60.0)
#: Pause between the two readings that confirm a mirrored package counter, seconds.
MIRROR_PROBE_S = 0.05
#: Two package readings closer than this (microjoules) may be one counter read twice: RAPL
#: updates about every millisecond, so two files read back to back can be one update apart.
MIRROR_TOLERANCE_UJ = 1_000_000

#: The pause of the mirror probe; a module attribute so tests can drive the fake counters
#: through it instead of sleeping.
_pause: Callable[[float], None] = time.sleep
#: The clock readings are timed with (seconds, ``time.monotonic``, the monitor's clock); a
#: module attribute so tests can let fake time pass between two readings.
_clock: Callable[[], float] = time.monotonic


@dataclass(frozen=True)
class _StepBack:
    """A reading lower than the previous one that no plausible wrap explains."""

    t: float  # _clock() at the reading
    from_uj: int
    to_uj: int
    elapsed_s: float  # since the previous reading: the interval counted as 0 J


@dataclass
class _Zone:
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
    step_backs: deque[_StepBack] = field(default_factory=lambda: deque(maxlen=MAX_NOTED_STEP_BACKS))
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
                self.step_backs.append(_StepBack(t, self.last_uj, now, elapsed_s))
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


class RaplMeter(Meter):
    """Cumulative energy of RAPL zones of one domain (``"cpu"``: packages, ``"ram"``: DRAM).

    Built by :func:`open_rapl_meters`; the zones' counters are read once there,
    and :meth:`read` reports joules since that reading.
    """

    method = "rapl"

    def __init__(self, domain: str, zones: list[_Zone], notes: Iterable[str] = ()) -> None:
        self.domain = domain
        self._zones = zones
        self._notes = list(notes)
        self._warned: set[str] = set()  # devices whose step-back the user has heard of
        # Between two reads a counter may wrap at most once: at the highest plausible
        # power, half the time one wrap takes.
        low, high = POLL_INTERVAL_BOUNDS_S
        wrap_s = min(z.max_uj for z in zones) / 1e6 / MAX_PLAUSIBLE_POWER_W
        self.poll_interval_s = min(max(wrap_s / 2, low), high)

    @property
    def devices(self) -> list[str]:
        return [z.device for z in self._zones]

    def read(self) -> dict[str, float]:
        """Joules used by each zone since the meter was opened; raises OSError on a read fault."""
        for zone in self._zones:
            zone.sample()
            if zone.step_back_count and zone.device not in self._warned:
                self._warned.add(zone.device)
                note = zone.step_back_note(float("-inf"))
                warn(f"mlflow-green: {note}; counting goes on from the new reading", RuntimeWarning)
        return {z.device: z.total_uj / 1e6 for z in self._zones}

    def notes(self, since_s: float = float("-inf")) -> list[str]:
        """Counter step-backs at or after ``since_s`` (``time.monotonic()``), one note per zone."""
        return [n for z in self._zones if (n := z.step_back_note(since_s)) is not None]

    def hardware(self) -> str:
        if self.domain == "cpu":
            text = cpu_description()
        else:
            count = len(self._zones)
            text = f"DRAM of {count} CPU package{'s' if count > 1 else ''}"
        return "; ".join([text, *self._notes])


def open_rapl_meters(root: str | os.PathLike[str] | None = None) -> list[Meter]:
    """Open the RAPL meters: ``[cpu]`` or ``[cpu, ram]`` when DRAM zones exist.

    ``root`` is the powercap directory; by default ``$MLFLOW_GREEN_POWERCAP_ROOT``
    or ``/sys/class/powercap``. Raises :class:`MeterUnavailable`, with the reason
    and the fix, when there is no package zone or its counter cannot be read.
    """
    if root is None:
        root = os.environ.get(ROOT_ENV) or DEFAULT_ROOT
    root_path = Path(root)
    zones = _scan(root_path)
    # Anything else is left out: core and uncore are parts of their package, psys is the
    # whole platform (package included).
    packages = [z for z in zones if z.name.startswith("package")]
    drams = [z for z in zones if z.name == "dram"]
    if not packages:
        raise MeterUnavailable(f"no RAPL powercap zones under {root_path}")

    for zone in packages:
        _open_zone(zone, root_path)
    usable_drams = []
    for zone in drams:
        # DRAM is a bonus: the CPU meter is worth keeping without it.
        try:
            _open_zone(zone, root_path)
        except MeterUnavailable as exc:
            logger.debug("RAPL: leaving out DRAM zone %s: %s", zone.seen_as, exc)
        else:
            usable_drams.append(zone)

    packages, notes = _drop_mirrored_packages(packages)
    for zone in packages:
        zone.device = zone.name
    for zone in usable_drams:
        zone.device = f"dram-{_package_index(zone)}"
    _make_devices_unique(packages)
    _make_devices_unique(usable_drams)

    meters: list[Meter] = [RaplMeter("cpu", packages, notes)]
    if usable_drams:
        meters.append(RaplMeter("ram", usable_drams))
    return meters


def _scan(root: Path) -> list[_Zone]:
    """Every RAPL zone under ``root`` once, MSR zones before MMIO mirrors dropped."""
    try:
        top = [root / entry for entry in os.listdir(root)]
    except FileNotFoundError:
        raise MeterUnavailable(
            f"no RAPL powercap zones under {root} (the directory does not exist: "
            "not Linux, or a VM or container without powercap)"
        ) from None
    except OSError as exc:
        raise MeterUnavailable(f"cannot list RAPL powercap zones under {root}: {exc}") from None

    by_real_path: dict[Path, _Zone] = {}
    # Breadth first: a subzone is first met as its top-level symlink, the path users know.
    pending = deque(p for p in top if _is_zone_dir_name(p.name))
    while pending:
        entry = pending.popleft()
        try:
            real = entry.resolve(strict=True)
            name = read_attribute(real / "name").strip()
            children = [entry / c for c in os.listdir(real) if _is_zone_dir_name(c)]
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
            logger.debug("RAPL: %s is not a readable zone: %s", entry, exc)
            continue  # not a zone (or vanished): nothing to measure there
        pending.extend(children)
        if real in by_real_path:
            continue  # the nested directory and its top-level symlink
        parent_name = None
        if _is_zone_dir_name(real.parent.name):
            with contextlib.suppress(OSError):
                parent_name = read_attribute(real.parent / "name").strip()
        by_real_path[real] = _Zone(
            zone_id=real.name,
            path=real,
            seen_as=entry,
            name=name,
            parent_name=parent_name,
            mmio=real.name.startswith(_MMIO_PREFIX),
        )

    zones = sorted(by_real_path.values(), key=lambda z: _natural_key(z.zone_id))
    # An MMIO zone with the (package, name) of an MSR zone reads the same counter.
    msr_keys = {(z.parent_name, z.name) for z in zones if not z.mmio}
    return [z for z in zones if not (z.mmio and (z.parent_name, z.name) in msr_keys)]


def _open_zone(zone: _Zone, root: Path) -> None:
    """Read the zone's wrap range and first counter value; raise MeterUnavailable saying why."""
    try:
        zone.max_uj = int(read_attribute(zone.path / "max_energy_range_uj"))
        zone.start()
    except NotARegularFile as exc:
        raise MeterUnavailable(
            f"cannot read RAPL zone {zone.seen_as}: {exc.path.name} is {exc.kind}, "
            "not a regular file as a powercap attribute is",
            warn=True,
        ) from None
    except PermissionError:
        energy_file = zone.seen_as / "energy_uj"
        raise MeterUnavailable(
            f"{energy_file} is readable by root only (Linux >= 5.10, CVE-2020-8694); "
            f"grant access with `sudo chmod -R a+r {root}/*` (until reboot) or run as root",
            warn=True,
        ) from None
    except (OSError, ValueError) as exc:
        raise MeterUnavailable(f"cannot read RAPL zone {zone.seen_as}: {exc}", warn=True) from None
    if zone.max_uj <= 0:
        raise MeterUnavailable(f"RAPL zone {zone.seen_as} has no max_energy_range_uj")


def _drop_mirrored_packages(packages: list[_Zone]) -> tuple[list[_Zone], list[str]]:
    """Leave out package zones that mirror another one's counter (multi-die parts).

    Returns the zones kept and one note per group of mirrors.
    """
    groups: list[list[_Zone]] = []
    for zone in packages:
        # A zero counter carries no information: never a suspect.
        group = next(
            (
                g
                for g in groups
                if zone.last_uj > 0 and abs(g[0].last_uj - zone.last_uj) <= MIRROR_TOLERANCE_UJ
            ),
            None,
        )
        if group is None:
            groups.append([zone])
        else:
            group.append(zone)
    if all(len(g) == 1 for g in groups):
        return packages, []

    _pause(MIRROR_PROBE_S)
    mirrors: set[int] = set()
    notes = []
    for reference, *suspects in (g for g in groups if len(g) > 1):
        reference_delta = reference.sample()
        copies = []
        for zone in suspects:
            if abs(zone.sample() - reference_delta) <= MIRROR_TOLERANCE_UJ:
                mirrors.add(id(zone))
                copies.append(zone.name)
        if copies:
            note = f"{', '.join(copies)} mirror {reference.name}: counted once"
            logger.debug("RAPL: %s (multi-die package counters)", note)
            notes.append(note)
    return [z for z in packages if id(z) not in mirrors], notes


def _is_zone_dir_name(name: str) -> bool:
    # "intel-rapl" alone is the control type directory, not a zone.
    return name.startswith(_ZONE_PREFIX) and ":" in name


def _natural_key(zone_id: str) -> tuple[str | int, ...]:
    """Sort key putting intel-rapl:2 before intel-rapl:10."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", zone_id))


def _package_index(zone: _Zone) -> str:
    """The package of a DRAM zone: N of its parent ``package-N``, else of ``intel-rapl:N``."""
    match = re.match(r"package-(\d+)", zone.parent_name or "")
    if match:
        return match.group(1)
    return zone.zone_id.split(":")[1]


def _make_devices_unique(zones: list[_Zone]) -> None:
    """Append the zone id to device ids that more than one zone has."""
    ids = [z.device for z in zones]
    for zone in zones:
        if ids.count(zone.device) > 1:
            zone.device = f"{zone.device}@{zone.zone_id}"
