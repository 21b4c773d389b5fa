"""Workloads shared by the tests."""

from __future__ import annotations

import time


def _spin(x: int) -> int:
    for i in range(1000):
        x = (x * 31 + i) % 1_000_003
    return x


def busy_for(seconds: float) -> int:
    """Keep this thread on the CPU for ``seconds`` of real time; returns a checksum.

    How much CPU time that is depends on what else the machine runs: where a test needs
    an amount of CPU work, use :func:`busy_for_cpu`.
    """
    end, x = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        x = _spin(x)
    return x


def busy_for_cpu(seconds: float) -> int:
    """Keep this thread busy until this process has used ``seconds`` more CPU time.

    The work done is the same however busy the machine is; only the real time it
    takes grows with the load. Returns a checksum.
    """
    end, x = time.process_time() + seconds, 0
    while time.process_time() < end:
        x = _spin(x)
    return x
