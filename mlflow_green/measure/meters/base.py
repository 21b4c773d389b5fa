"""The meter interface: every energy source reports cumulative joules per device.

Nothing outside :mod:`mlflow_green.measure.meters` talks to hardware. A meter is
opened once per process by :func:`mlflow_green.measure.meters.discover`, read by the
monitor (which serialises all reads under one lock, so a meter need not be
thread-safe) and closed when the process no longer measures anything.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection

#: Hardware domains, in the order reports list them.
DOMAINS: tuple[str, ...] = ("gpu", "cpu", "ram")


class MeterUnavailable(Exception):
    """Raised by a meter's constructor when its hardware interface cannot be used.

    The message says why, in words a user can act on; :func:`discover` turns
    it into (at most) one warning and falls back to the next method.
    """

    def __init__(self, reason: str, *, warn: bool = False) -> None:
        super().__init__(reason)
        #: True when the user should hear about the fallback (e.g. counters present
        #: but unreadable); False when the hardware is simply absent.
        self.warn = warn


class Meter(ABC):
    """One energy source of one domain (``gpu``, ``cpu`` or ``ram``).

    Subclasses set :attr:`domain` and :attr:`method`, and implement
    :attr:`devices` and :meth:`read`.
    """

    #: The hardware domain this meter measures: ``"gpu"``, ``"cpu"`` or ``"ram"``.
    domain: str
    #: How the energy is obtained, e.g. ``"nvml-energy-counter"``, ``"rapl"``,
    #: ``"estimate-tdp"``; becomes the ``green.<domain>_meter`` tag.
    method: str
    #: Longest time in seconds the monitor may leave between two reads for the
    #: meter to stay correct (power integration, counter wraparound); ``None``
    #: when any period will do.
    poll_interval_s: float | None = None
    #: How :meth:`process_shares` attributes energy to processes, appended to
    #: :attr:`method` (``+``) in ``scope="process"`` reports, e.g. ``"process-share"``.
    process_method: str = "process-share"

    @property
    @abstractmethod
    def devices(self) -> list[str]:
        """Stable identifiers of the measured devices (e.g. a GPU UUID, ``"package-0"``)."""

    @abstractmethod
    def read(self) -> dict[str, float]:
        """Energy in joules used by each device since the meter was opened.

        Each value is non-decreasing from one call to the next: counter
        wraparound and resets are handled here, never passed on as negative
        energy. May raise on a hardware fault; the monitor then keeps the last
        values and warns once.
        """

    def hardware(self) -> str:
        """Human-readable description of the measured hardware (model names)."""
        return ""

    def notes(self, since_s: float = float("-inf")) -> list[str]:
        """What a report should say about readings at or after ``since_s``, one sentence each.

        ``since_s`` is a ``time.monotonic()`` value (a window's start). A note is a fault
        the meter handled and kept measuring through, e.g. a counter that stepped back
        and was not counted as energy; a fault that stops the meter is raised by
        :meth:`read` instead. Default: nothing to say.
        """
        return []

    def process_shares(self, pids: Collection[int]) -> dict[str, float] | None:
        """Fraction of each device's energy since the previous call that belongs to ``pids``.

        For ``scope="process"``: the monitor calls it right after each :meth:`read` while a
        process-scope window is open, with the pids of the measured process tree, and
        scales each device's energy of that interval by its fraction (0 to 1). A device
        left out keeps the monitor's own share for the domain (a GPU: 1, whole). Default
        ``None``: this meter cannot attribute its devices to processes.
        """
        return None

    def close(self) -> None:  # noqa: B027 - most meters hold nothing to release
        """Release the hardware interface. Called once; reads stop before it."""


class NullMeter(Meter):
    """A domain with no hardware to measure: no devices, zero energy."""

    method = "none"

    def __init__(self, domain: str) -> None:
        self.domain = domain

    @property
    def devices(self) -> list[str]:
        return []

    def read(self) -> dict[str, float]:
        return {}
