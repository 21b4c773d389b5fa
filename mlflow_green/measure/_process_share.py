"""This process tree's share of the machine's CPU time and memory, for ``scope="process"``.

The monitor multiplies each segment's machine energy (between two meter reads)
by these fractions to attribute it to the process and its children. GPUs are
attributed by their meters (``Meter.process_shares``, given :meth:`ProcessShare.pids`);
a GPU whose meter cannot attribute it counts whole.
"""

from __future__ import annotations

import time

import psutil

from mlflow_green.measure.meters.estimate import busy_and_total_s


class ProcessShare:
    """This process tree's share of machine CPU time and memory, per segment between reads."""

    #: Listing descendants scans all of /proc, slow when a busy main thread holds the
    #: GIL: the list is refreshed this often, outside the timed readings.
    CHILDREN_REFRESH_S = 5.0

    def __init__(self) -> None:
        self._proc = psutil.Process()
        self._children: list[psutil.Process] = []
        self._children_t = float("-inf")
        self._refresh_children()
        self._cpu_s, self._busy_s = self._tree_cpu_s(), busy_and_total_s()[0]
        self._total_mem = psutil.virtual_memory().total
        self._cpu_share = 0.0

    def _refresh_children(self) -> None:
        now = time.monotonic()
        if now - self._children_t >= self.CHILDREN_REFRESH_S:
            try:
                self._children = self._proc.children(recursive=True)
            except psutil.Error:
                self._children = []
            self._children_t = now

    def _tree_cpu_s(self) -> float:
        t = self._proc.cpu_times()
        # children_* holds children already waited for; live ones are added one by one.
        total = t.user + t.system + t.children_user + t.children_system
        for child in self._children:
            try:
                c = child.cpu_times()
                total += c.user + c.system
            except psutil.Error:
                continue
        return total

    def _tree_rss(self) -> int:
        rss = self._proc.memory_info().rss
        for child in self._children:
            try:
                rss += child.memory_info().rss
            except psutil.Error:
                continue
        return rss

    def update(self) -> dict[str, float]:
        """Fractions of each domain's energy since the last update that belong to this tree."""
        # Read both CPU clocks back to back, so that they cover the same segment.
        cpu_s, busy_s = self._tree_cpu_s(), busy_and_total_s()[0]
        d_busy = busy_s - self._busy_s
        if d_busy > 0:  # else a segment shorter than the clock tick: keep the last share
            self._cpu_share = min(max((cpu_s - self._cpu_s) / d_busy, 0.0), 1.0)
            self._cpu_s, self._busy_s = cpu_s, busy_s
        ram = min(self._tree_rss() / self._total_mem, 1.0)
        self._refresh_children()
        # A GPU whose meter gives no per-device shares is attributed whole to its user.
        return {"cpu": self._cpu_share, "ram": ram, "gpu": 1.0}

    def pids(self) -> frozenset[int]:
        """This process and its descendants as of the last refresh."""
        return frozenset([self._proc.pid, *(child.pid for child in self._children)])
