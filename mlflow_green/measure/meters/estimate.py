"""Labelled estimates for machines without energy counters (VMs, laptops, CI).

CPU: the package's TDP from CodeCarbon's CPU power table, scaled by utilisation
with CodeCarbon's load model ``P = TDP * (0.1 + 0.9 * load**3)`` (idle draws
10% of TDP, full load the TDP). Unknown models get CodeCarbon's default of
4 W per logical CPU. RAM: 0.3725 W per GB installed (Green Algorithms,
Lannelongue et al. 2021), constant, since DRAM power is dominated by refresh
and background power that scale with capacity, not traffic.
"""

from __future__ import annotations

import csv
import functools
import time

import psutil

from mlflow_green.measure.meters.base import Meter

#: CodeCarbon's default for a CPU missing from its table, in W per logical CPU.
DEFAULT_W_PER_THREAD = 4.0
#: Green Algorithms' memory power, in W per GB.
RAM_W_PER_GB = 0.3725
_GB = 1e9


@functools.cache
def _tdp_table() -> dict[str, float]:
    from mlflow_green.measure.carbon import _data_dir

    table: dict[str, float] = {}
    with open(_data_dir() / "hardware" / "cpu_power.csv", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            try:
                table[row["Name"]] = float(row["TDP"])
            except ValueError:  # the table has a few malformed rows (e.g. "27.29.5")
                continue
    return table


def _clean(model: str) -> str:
    # "Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz" -> "Intel Xeon Gold 6248", as CodeCarbon does.
    text = model.replace("(R)", "").replace("(TM)", "")
    text = text.split(" CPU @ ")[0].split(" @ ")[0].replace(" CPU", "")
    return " ".join(text.split())


def _tokens(text: str) -> frozenset[str]:
    # rapidfuzz's default_process: lower case, anything not alphanumeric is a separator.
    return frozenset("".join(c if c.isalnum() else " " for c in text.lower()).split())


def lookup_tdp_w(model: str) -> float | None:
    """TDP in watts of a CPU model from CodeCarbon's table, or None when not known.

    An exact (case-insensitive) name match wins; otherwise a unique full
    token-set match, CodeCarbon's rule (rapidfuzz's ``token_set_ratio`` of 100:
    one name's words are all in the other), so a vague name such as "AMD EPYC"
    matches nothing rather than an arbitrary part. Plain set arithmetic, not
    rapidfuzz: importing it was most of the first run's hardware discovery.
    """
    table = _tdp_table()
    by_lower = {name.lower(): tdp for name, tdp in table.items()}
    for candidate in (model, _clean(model)):
        if candidate.lower() in by_lower:
            return by_lower[candidate.lower()]
    want = _tokens(_clean(model))
    if not want:
        return None
    matches = [n for n in table if (have := _tokens(n)) and (want <= have or have <= want)]
    return table[matches[0]] if len(matches) == 1 else None


def busy_and_total_s() -> tuple[float, float]:
    """Machine CPU seconds spent busy, and in all, since boot (all CPUs summed)."""
    t = psutil.cpu_times()
    # Linux counts guest time inside user time, and steal is time the hypervisor
    # gave to others: neither is work of this machine's CPUs.
    busy = sum(getattr(t, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq"))
    return busy, busy + t.idle + getattr(t, "iowait", 0.0) + getattr(t, "steal", 0.0)


class CpuTdpMeter(Meter):
    """Machine CPU energy estimated from TDP and utilisation (method ``estimate-tdp``)."""

    domain = "cpu"
    method = "estimate-tdp"

    def __init__(self, model: str, tdp_w: float | None = None, sockets: int = 1) -> None:
        self.model = model
        self.sockets = max(int(sockets), 1)
        known = lookup_tdp_w(model) if tdp_w is None else tdp_w
        self.tdp_from_table = known is not None
        threads = psutil.cpu_count(logical=True) or 1
        #: Thermal design power in watts of the whole machine's CPUs used for the estimate:
        #: the table's per-package TDP times the sockets (as CodeCarbon), or 4 W per thread.
        self.tdp_w = known * self.sockets if known is not None else DEFAULT_W_PER_THREAD * threads
        self._energy_j = 0.0
        self._t = time.monotonic()
        self._busy, self._total = busy_and_total_s()

    @property
    def devices(self) -> list[str]:
        return ["cpu"]

    def read(self) -> dict[str, float]:
        now = time.monotonic()
        busy, total = busy_and_total_s()
        d_total = total - self._total
        load = min(max((busy - self._busy) / d_total, 0.0), 1.0) if d_total > 0 else 0.0
        self._energy_j += self.tdp_w * (0.1 + 0.9 * load**3) * (now - self._t)
        self._t, self._busy, self._total = now, busy, total
        return {"cpu": self._energy_j}

    def hardware(self) -> str:
        source = "CodeCarbon table" if self.tdp_from_table else "default 4 W/thread"
        model = f"{self.sockets} x {self.model}" if self.sockets > 1 else self.model
        return f"{model} (TDP {self.tdp_w:g} W, {source})"


class RamSizeMeter(Meter):
    """Machine RAM energy estimated from installed capacity (method ``estimate-ram-size``)."""

    domain = "ram"
    method = "estimate-ram-size"

    def __init__(self) -> None:
        self.total_gb = psutil.virtual_memory().total / _GB
        #: Constant power in watts attributed to the installed memory.
        self.power_w = RAM_W_PER_GB * self.total_gb
        self._t0 = time.monotonic()

    @property
    def devices(self) -> list[str]:
        return ["ram"]

    def read(self) -> dict[str, float]:
        return {"ram": self.power_w * (time.monotonic() - self._t0)}

    def hardware(self) -> str:
        return f"{self.total_gb:.1f} GB RAM ({RAM_W_PER_GB} W/GB)"
