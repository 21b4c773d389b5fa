"""Workloads shared by the tests."""

from __future__ import annotations

import time


def busy_for(seconds: float) -> int:
    """Keep this thread on the CPU for ``seconds`` of real time; returns a checksum."""
    end, x = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        for i in range(1000):
            x = (x * 31 + i) % 1_000_003
    return x
