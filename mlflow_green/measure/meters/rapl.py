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

A reading lower than the previous one counts as a wrap only where a wrap is
physically plausible (:mod:`mlflow_green.measure.meters._rapl_counter`).

Every powercap file is read with :func:`mlflow_green.measure.meters._sysfs.read_attribute`,
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
from pathlib import Path

from mlflow_green._warnings import warn
from mlflow_green.measure.meters._cpuinfo import cpu_description
from mlflow_green.measure.meters._rapl_counter import MAX_PLAUSIBLE_POWER_W, Zone
from mlflow_green.measure.meters._sysfs import NotARegularFile, read_attribute
from mlflow_green.measure.meters.base import Meter, MeterUnavailable

logger = logging.getLogger(__name__)

#: Environment variable naming the powercap directory (tests, containers with /sys elsewhere).
ROOT_ENV = "MLFLOW_GREEN_POWERCAP_ROOT"
DEFAULT_ROOT = "/sys/class/powercap"

_ZONE_PREFIX = "intel-rapl"
_MMIO_PREFIX = "intel-rapl-mmio"

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


class RaplMeter(Meter):
    """Cumulative energy of RAPL zones of one domain (``"cpu"``: packages, ``"ram"``: DRAM).

    Built by :func:`open_rapl_meters`; the zones' counters are read once there,
    and :meth:`read` reports joules since that reading.
    """

    method = "rapl"

    def __init__(self, domain: str, zones: list[Zone], notes: Iterable[str] = ()) -> None:
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
    configured = root is None and bool(os.environ.get(ROOT_ENV))
    if root is None:
        root = os.environ.get(ROOT_ENV) or DEFAULT_ROOT
    root_path = Path(root)
    try:
        zones = _scan(root_path)
        if not any(z.name.startswith("package") for z in zones):
            raise MeterUnavailable(f"no RAPL powercap zones under {root_path}")
    except MeterUnavailable as exc:
        if configured:  # the user pointed at it: a wrong folder is a fault to hear of
            raise MeterUnavailable(f"{ROOT_ENV}={root!r}: {exc}", warn=True) from None
        raise
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


def _scan(root: Path) -> list[Zone]:
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

    by_real_path: dict[Path, Zone] = {}
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
        by_real_path[real] = Zone(
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


def _open_zone(zone: Zone, root: Path) -> None:
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


def _drop_mirrored_packages(packages: list[Zone]) -> tuple[list[Zone], list[str]]:
    """Leave out package zones that mirror another one's counter (multi-die parts).

    Returns the zones kept and one note per group of mirrors.
    """
    groups: list[list[Zone]] = []
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


def _package_index(zone: Zone) -> str:
    """The package of a DRAM zone: N of its parent ``package-N``, else of ``intel-rapl:N``."""
    match = re.match(r"package-(\d+)", zone.parent_name or "")
    if match:
        return match.group(1)
    return zone.zone_id.split(":")[1]


def _make_devices_unique(zones: list[Zone]) -> None:
    """Append the zone id to device ids that more than one zone has."""
    ids = [z.device for z in zones]
    for zone in zones:
        if ids.count(zone.device) > 1:
            zone.device = f"{zone.device}@{zone.zone_id}"
