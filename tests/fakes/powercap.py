"""A fake Linux powercap (RAPL) tree in a temporary folder, laid out like real sysfs.

Real sysfs keeps the zones under ``/sys/devices/virtual/powercap/<control type>/``
and ``/sys/class/powercap`` holds one symlink per zone, subzones included, so a
subzone is reachable both nested in its package and at the top::

    <root>/sys/devices/virtual/powercap/intel-rapl/           control type (``enabled``)
        intel-rapl:0/{name,energy_uj,max_energy_range_uj,enabled}
            intel-rapl:0:0/...                                  core
            intel-rapl:0:1/...                                  dram
    <root>/sys/devices/virtual/powercap/intel-rapl-mmio/intel-rapl-mmio:0/...
    <root>/sys/class/powercap/intel-rapl:0 -> ../../devices/virtual/powercap/intel-rapl/intel-rapl:0
    <root>/sys/class/powercap/intel-rapl:0:0 -> .../intel-rapl:0/intel-rapl:0:0

Pass :attr:`PowercapTree.path` (the ``class/powercap`` folder) to the code under
test. Counters are in microjoules and wrap to zero at ``max_energy_range_uj``,
as the hardware counters do. Zones that share one hardware counter (an MMIO
mirror, the dies of a multi-die package) always hold the same value. The fake
does not model containment: advancing a package does not advance its ``core``.

A counter can also misbehave as real ones have been seen to: step back a few
microjoules (:meth:`PowercapTree.step_back`), which is no wrap, and a zone file can
be replaced by something that is not a regular file (:meth:`PowercapTree.break_file`:
a FIFO, a directory, a device), on which a naive reader blocks or fails.
Whether a lower reading is a plausible wrap depends on the time between two
readings: :class:`ManualClock` stands in for the meter's clock
(``mlflow_green.measure.meters._rapl_counter._clock``) where a test needs that time to be exact.

Tests run as root here, and root reads any file whatever its mode; to see a
real ``PermissionError`` the reading code must run as another user:
:func:`run_python_unprivileged` does that (as ``nobody``) when we are root.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: A real counter's range: 2**32 units of 61.035 uJ (Intel energy unit 2**-14 J).
DEFAULT_MAX_ENERGY_RANGE_UJ = 262143328850
NOBODY_UID = 65534
NOBODY_GID = 65534
#: What :meth:`PowercapTree.break_file` can put in place of a zone file.
BROKEN_FILE_KINDS = ("fifo", "directory", "device")


class ManualClock:
    """A monotonic clock that moves only when told: ``clock()`` is the time in seconds."""

    def __init__(self, start_s: float = 1000.0) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass."""
        if seconds < 0:
            raise ValueError(f"a monotonic clock cannot go back ({seconds} s)")
        self.now_s += seconds


@dataclass(frozen=True)
class PackageZones:
    """Zone ids (directory names) created by :meth:`PowercapTree.add_package`."""

    package: str
    core: str | None = None
    uncore: str | None = None
    dram: str | None = None
    mmio: str | None = None


class PowercapTree:
    """A powercap tree under ``root`` (which must exist); see the module docstring."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._devices = self.root / "sys" / "devices" / "virtual" / "powercap"
        #: The folder to hand to ``open_rapl_meters`` (the fake ``/sys/class/powercap``).
        self.path = self.root / "sys" / "class" / "powercap"
        self.path.mkdir(parents=True, exist_ok=True)
        self._zone_dirs: dict[str, Path] = {}  # zone id -> real directory
        self._counter_of: dict[str, str] = {}  # zone id -> id of the zone owning its counter
        self._energy_uj: dict[str, int] = {}  # counter owner -> value
        self._max_uj: dict[str, int] = {}  # counter owner -> wrap range

    # --- building --------------------------------------------------------------------------

    def add_package(
        self,
        index: int,
        energy_uj: int = 0,
        max_energy_range_uj: int = DEFAULT_MAX_ENERGY_RANGE_UJ,
        dram: bool = True,
        core: bool = True,
        mmio_mirror: bool = False,
        uncore: bool = False,
        name: str | None = None,
    ) -> PackageZones:
        """Add ``intel-rapl:<index>`` (``package-<index>``) and its subzones.

        Subzones are numbered like the kernel does, in the order core, uncore,
        dram, each starting at ``energy_uj``. ``mmio_mirror`` adds
        ``intel-rapl-mmio:<index>``, the same package counter read through MMIO.
        """
        package_name = name or f"package-{index}"
        package = self._add_zone(
            "intel-rapl", None, f"intel-rapl:{index}", package_name, energy_uj, max_energy_range_uj
        )
        subzones: dict[str, str] = {}
        wanted = [("core", core), ("uncore", uncore), ("dram", dram)]
        for number, sub_name in enumerate(n for n, on in wanted if on):
            subzones[sub_name] = self._add_zone(
                "intel-rapl",
                package,
                f"{package}:{number}",
                sub_name,
                energy_uj,
                max_energy_range_uj,
            )
        mmio = None
        if mmio_mirror:
            mmio = self._add_zone(
                "intel-rapl-mmio",
                None,
                f"intel-rapl-mmio:{index}",
                package_name,
                energy_uj,
                max_energy_range_uj,
                same_as=package,
            )
        return PackageZones(package=package, mmio=mmio, **subzones)

    def add_psys(self, index: int, energy_uj: int = 0) -> str:
        """Add a platform zone ``intel-rapl:<index>`` named ``psys`` (laptops, Skylake+)."""
        return self._add_zone(
            "intel-rapl",
            None,
            f"intel-rapl:{index}",
            "psys",
            energy_uj,
            DEFAULT_MAX_ENERGY_RANGE_UJ,
        )

    def set_mirrored_packages(
        self,
        n: int,
        energy_uj: int = 123_456_789_012,
        max_energy_range_uj: int = DEFAULT_MAX_ENERGY_RANGE_UJ,
    ) -> list[str]:
        """Add ``n`` package zones ``package-0-die-<i>`` that all mirror one socket counter.

        As on multi-die AMD parts (Threadripper, EPYC Zen 1/2): ``intel-rapl:0`` to
        ``intel-rapl:<n-1>``, no subzones, always the same value. Returns their ids.
        """
        first = self._add_zone(
            "intel-rapl", None, "intel-rapl:0", "package-0-die-0", energy_uj, max_energy_range_uj
        )
        ids = [first]
        for die in range(1, n):
            ids.append(
                self._add_zone(
                    "intel-rapl",
                    None,
                    f"intel-rapl:{die}",
                    f"package-0-die-{die}",
                    energy_uj,
                    max_energy_range_uj,
                    same_as=first,
                )
            )
        return ids

    # --- driving ---------------------------------------------------------------------------

    def advance(self, zone_id: str, joules: float) -> None:
        """Add ``joules`` to the zone's counter (and its mirrors'), wrapping at the max range."""
        owner = self._counter_of[zone_id]
        added_uj = round(joules * 1_000_000)
        self.set_energy_uj(zone_id, (self._energy_uj[owner] + added_uj) % self._max_uj[owner])

    def set_energy_uj(self, zone_id: str, value: int) -> None:
        """Set the raw counter of the zone (and its mirrors) to ``value`` microjoules."""
        owner = self._counter_of[zone_id]
        self._energy_uj[owner] = value
        for zone, counter in self._counter_of.items():
            if counter == owner:
                # A sysfs read returns a whole value: write aside and rename, so a reader
                # in another thread never sees a half-written (empty) file.
                target = self._zone_dirs[zone] / "energy_uj"
                staged = target.with_name("energy_uj.new")
                staged.write_text(f"{value}\n")
                if target.exists():
                    staged.chmod(target.stat().st_mode & 0o777)
                os.replace(staged, target)

    def step_back(self, zone_id: str, microjoules: int = 1) -> None:
        """Move the zone's counter back by ``microjoules``: a glitch, not a wrap."""
        owner = self._counter_of[zone_id]
        if not 0 < microjoules <= self._energy_uj[owner]:
            raise ValueError(f"cannot step back {microjoules} uJ from {self._energy_uj[owner]}")
        self.set_energy_uj(zone_id, self._energy_uj[owner] - microjoules)

    def energy_uj(self, zone_id: str) -> int:
        """The zone's raw counter, microjoules."""
        return self._energy_uj[self._counter_of[zone_id]]

    def max_energy_range_uj(self, zone_id: str) -> int:
        """Where the zone's counter wraps to zero, microjoules."""
        return self._max_uj[self._counter_of[zone_id]]

    def break_file(self, zone_id: str, file: str, kind: str) -> Path:
        """Replace ``file`` of the zone by something that is not a regular file; return its path.

        ``kind`` is one of :data:`BROKEN_FILE_KINDS`: ``"fifo"`` (a named pipe: opening
        it for reading waits for a writer, for ever), ``"directory"``, or ``"device"``
        (a symlink to the character device ``/dev/null``, which needs no privilege to
        make). Do not advance the zone afterwards. See :func:`unblock_fifo`.
        """
        path = self._zone_dirs[zone_id] / file
        path.unlink()
        if kind == "fifo":
            os.mkfifo(path, 0o644)
        elif kind == "directory":
            _mkdir(path)
        elif kind == "device":
            path.symlink_to("/dev/null")
        else:
            raise ValueError(f"kind={kind!r}: expected one of {', '.join(BROKEN_FILE_KINDS)}")
        return path

    def zone_dir(self, zone_id: str) -> Path:
        """The real directory of the zone (under ``sys/devices``)."""
        return self._zone_dirs[zone_id]

    def deny_energy_access(self, zone_id: str | None = None) -> None:
        """Make ``energy_uj`` of one zone (default: all) unreadable to unprivileged users.

        As root, mode 0400 like Linux >= 5.10 (CVE-2020-8694): only another user
        gets ``PermissionError`` (see :func:`run_python_unprivileged`). As any
        other user, the owner, mode 000 is needed. Call after the last advance.
        """
        mode = 0o400 if os.geteuid() == 0 else 0o000
        for zone in [zone_id] if zone_id else list(self._zone_dirs):
            (self._zone_dirs[zone] / "energy_uj").chmod(mode)

    # --- internals -------------------------------------------------------------------------

    def _add_zone(
        self,
        control_type: str,
        parent: str | None,
        zone_id: str,
        name: str,
        energy_uj: int,
        max_energy_range_uj: int,
        same_as: str | None = None,
    ) -> str:
        if zone_id in self._zone_dirs:
            raise ValueError(f"zone {zone_id} already exists")
        control_dir = self._devices / control_type
        if not control_dir.exists():
            _mkdir(control_dir)
            _write(control_dir / "enabled", "1")
            self._link(control_type, control_dir)
        zone_dir = (self._zone_dirs[parent] if parent else control_dir) / zone_id
        _mkdir(zone_dir)
        _write(zone_dir / "name", name)
        _write(zone_dir / "enabled", "1")
        _write(zone_dir / "max_energy_range_uj", str(max_energy_range_uj))
        self._zone_dirs[zone_id] = zone_dir
        self._link(zone_id, zone_dir)
        owner = same_as or zone_id
        self._counter_of[zone_id] = owner
        if same_as is None:
            self._energy_uj[zone_id] = energy_uj
            self._max_uj[zone_id] = max_energy_range_uj
        _write(zone_dir / "energy_uj", str(self._energy_uj[owner]))
        return zone_id

    def _link(self, entry: str, target: Path) -> None:
        # Relative links, as in sysfs: the tree can be reached from anywhere.
        (self.path / entry).symlink_to(os.path.relpath(target, self.path))


def unblock_fifo(path: str | os.PathLike[str]) -> bool:
    """Release a reader stuck opening the FIFO at ``path``: it then reads end of file.

    Opens the FIFO for writing without blocking (which only succeeds while a reader
    has it open) and closes it at once. Returns whether a reader was there.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # ENXIO: no reader (any more)
        return False
    os.close(fd)
    return True


def _mkdir(path: Path) -> None:
    path.mkdir(parents=True)
    path.chmod(0o755)  # traversable by the unprivileged reader whatever the umask


def _write(path: Path, text: str) -> None:
    path.write_text(text + "\n")
    path.chmod(0o644)


# --- running code as an unprivileged user ------------------------------------------------


def world_traversable_tmpdir() -> Path:
    """A new temporary folder under /tmp that ``nobody`` can enter (remove it with rmtree)."""
    path = Path(tempfile.mkdtemp(prefix="mlflow-green-powercap-", dir="/tmp"))
    path.chmod(0o755)
    return path


def _python_runs_unprivileged(python: str) -> bool:
    try:
        result = subprocess.run(
            [python, "-c", "import sys; sys.exit(sys.version_info < (3, 10))"],
            user=NOBODY_UID,
            group=NOBODY_GID,
            extra_groups=[],
            capture_output=True,
            timeout=30,
            cwd="/",
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0


@functools.cache
def unprivileged_python() -> str | None:
    """A Python >= 3.10 interpreter that ``nobody`` can run, or ``None``.

    The venv's interpreter may live under /root (mode 700), so system ones are
    tried too; the code run with it must then need only the standard library.
    """
    candidates = [sys.executable]
    for directory in ("/usr/local/bin", "/usr/bin", "/bin"):
        candidates += [os.path.join(directory, "python3"), os.path.join(directory, "python")]
    seen = set()
    for python in candidates:
        if python in seen or not os.access(python, os.X_OK):
            continue
        seen.add(python)
        if _python_runs_unprivileged(python):
            return python
    return None


def run_python_unprivileged(
    code: str, pythonpath: str | os.PathLike[str], args: Sequence[str] = ()
) -> subprocess.CompletedProcess[str]:
    """Run ``python -c code *args`` as ``nobody`` (we must be root), ``pythonpath`` importable.

    Raises ``RuntimeError`` with the reason when no interpreter can run as nobody.
    """
    python = unprivileged_python()
    if python is None:
        raise RuntimeError("no Python >= 3.10 interpreter can be run by user nobody")
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": "/tmp",
        "PYTHONPATH": os.fspath(pythonpath),
        "PYTHONDONTWRITEBYTECODE": "1",
        "LANG": "C.UTF-8",
    }
    return subprocess.run(
        [python, "-c", code, *args],
        user=NOBODY_UID,
        group=NOBODY_GID,
        extra_groups=[],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/tmp",
    )
