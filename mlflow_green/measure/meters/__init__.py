"""Energy sources, one module per vendor interface, and the choice between them.

Each domain gets the best method the machine offers: hardware counters (NVML,
RAPL) where they exist, labelled estimates where they do not, a null meter
where the domain is absent.
"""

from __future__ import annotations

import logging

from mlflow_green._warnings import warn
from mlflow_green.measure.meters.base import DOMAINS, Meter, MeterUnavailable, NullMeter

__all__ = ["DOMAINS", "Meter", "MeterUnavailable", "NullMeter", "discover"]

_log = logging.getLogger(__name__)


def discover() -> list[Meter]:
    """Open the meters of this machine: NVML for GPUs, RAPL or estimates for CPU and RAM."""
    from mlflow_green.measure.meters._cpuinfo import cpu_model_name, cpu_socket_count
    from mlflow_green.measure.meters.estimate import CpuTdpMeter, RamSizeMeter
    from mlflow_green.measure.meters.nvml import open_nvml_meters
    from mlflow_green.measure.meters.rapl import open_rapl_meters

    meters: list[Meter] = []
    try:
        meters += open_nvml_meters()
    except MeterUnavailable as exc:
        _log.debug("mlflow-green: no GPU meter: %s", exc)
        if exc.warn:
            warn(f"mlflow-green: GPU energy not measured: {exc}", stacklevel=3)
    try:
        meters += open_rapl_meters()
    except MeterUnavailable as exc:
        _log.debug("mlflow-green: no RAPL meter: %s", exc)
        if exc.warn:
            warn(f"mlflow-green: CPU/RAM energy falls back to an estimate: {exc}", stacklevel=3)
    present = {m.domain for m in meters}
    if "cpu" not in present:
        meters.append(CpuTdpMeter(cpu_model_name(), sockets=cpu_socket_count() or 1))
    if "ram" not in present:
        meters.append(RamSizeMeter())
    if "gpu" not in present:
        meters.append(NullMeter("gpu"))
    return meters
