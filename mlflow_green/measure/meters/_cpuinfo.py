"""CPU model and socket count from ``/proc/cpuinfo``, for ``green.hardware``.

Read once per process and cached: the file does not change while we run, and
on machines with hundreds of threads it is a few hundred kilobytes.
"""

from __future__ import annotations

import platform
from functools import lru_cache

CPUINFO_PATH = "/proc/cpuinfo"


@lru_cache(maxsize=4)
def _cpuinfo_fields(path: str) -> tuple[str | None, int | None]:
    """(first ``model name``, number of distinct ``physical id``) of a cpuinfo file."""
    model: str | None = None
    sockets: set[str] = set()
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if not sep:
                    continue
                key = key.strip()
                if key == "model name" and model is None:
                    model = value.strip() or None
                elif key == "physical id":
                    sockets.add(value.strip())
    except OSError:
        return None, None
    return model, (len(sockets) or None)


def cpu_model_name(path: str = CPUINFO_PATH) -> str:
    """The CPU model, e.g. ``"Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz"``.

    Falls back to :func:`platform.processor` (which is only the architecture on
    many Linux systems, but the model on macOS and Windows) and then to
    ``"unknown CPU"``; never raises.
    """
    model, _ = _cpuinfo_fields(path)
    if model:
        return model
    try:
        fallback = platform.processor().strip()
    except Exception:  # platform may shell out; a description is never worth a crash
        fallback = ""
    return fallback or "unknown CPU"


def cpu_socket_count(path: str = CPUINFO_PATH) -> int | None:
    """Number of CPU sockets (distinct ``physical id``), or ``None`` when not reported."""
    return _cpuinfo_fields(path)[1]


def cpu_description(path: str = CPUINFO_PATH) -> str:
    """Model name, with the socket count when above one: e.g. ``"2 x AMD EPYC 7763"``."""
    model = cpu_model_name(path)
    sockets = cpu_socket_count(path)
    return f"{sockets} x {model}" if sockets and sockets > 1 else model
