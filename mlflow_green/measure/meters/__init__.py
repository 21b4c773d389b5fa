"""Energy sources, one module per vendor interface, and the choice between them.

Each domain gets the best method the machine offers: hardware counters (Apple
silicon's IOReport, NVML, AMD SMI, RAPL) where they exist, labelled estimates where
they do not, a null meter where the domain is absent.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from mlflow_green._warnings import warn
from mlflow_green.measure.meters.base import DOMAINS, Meter, MeterUnavailable, NullMeter

__all__ = ["DOCTOR_HINT", "DOMAINS", "Meter", "MeterUnavailable", "NullMeter", "discover"]

_log = logging.getLogger(__name__)

_APPLE_FALLBACK = "Apple silicon energy not measured, CPU/RAM fall back to an estimate"
#: How every fallback warning ends: where the user learns why, and the fix.
DOCTOR_HINT = "; `mlflow-green doctor` says why and how to fix it"


def discover() -> list[Meter]:
    """Open the meters of this machine, best method first for each domain.

    On macOS, Apple silicon's meters first (CPU, GPU, RAM). GPUs: NVML, then AMD SMI
    when NVML found none. CPU and RAM: RAPL. A domain still without a meter gets an
    estimate (CPU, RAM) or a null meter (GPU). A method that is present but unusable
    warns once, saying why, and the warning ends with :data:`DOCTOR_HINT`.
    """
    from mlflow_green.measure.meters._cpuinfo import cpu_model_name, cpu_socket_count
    from mlflow_green.measure.meters.amdsmi import open_amdsmi_meters
    from mlflow_green.measure.meters.estimate import CpuTdpMeter, RamSizeMeter
    from mlflow_green.measure.meters.nvml import open_nvml_meters
    from mlflow_green.measure.meters.rapl import open_rapl_meters

    meters: list[Meter] = []
    if sys.platform == "darwin":
        try:
            from mlflow_green.measure.meters.apple import open_apple_meters
        except ImportError as exc:
            _log.debug("mlflow-green: no Apple silicon meter module: %s", exc)
        else:
            _add(meters, open_apple_meters, _APPLE_FALLBACK)
    if "gpu" not in _domains(meters):
        _add(meters, open_nvml_meters, "GPU energy not measured")
    if "gpu" not in _domains(meters):
        _add(meters, open_amdsmi_meters, "AMD GPU energy not measured")
    if not {"cpu", "ram"} <= _domains(meters):
        _add(meters, open_rapl_meters, "CPU/RAM energy falls back to an estimate")
    present = _domains(meters)
    if "cpu" not in present:
        meters.append(CpuTdpMeter(cpu_model_name(), sockets=cpu_socket_count() or 1))
    if "ram" not in present:
        meters.append(RamSizeMeter())
    if "gpu" not in present:
        meters.append(NullMeter("gpu"))
    return meters


def _domains(meters: list[Meter]) -> set[str]:
    return {m.domain for m in meters}


def _add(meters: list[Meter], opener: Callable[[], list[Meter]], fallback: str) -> None:
    """Add the meters ``opener`` opens for domains that have none yet; warn if it cannot.

    A meter for a domain already covered (RAPL's CPU on a Mac whose IOReport covers
    it) is closed at once, so that it holds nothing.
    """
    try:
        opened = opener()
    except MeterUnavailable as exc:
        _log.debug("mlflow-green: %s: %s", fallback, exc)
        if exc.warn:
            warn(f"mlflow-green: {fallback}: {exc}{DOCTOR_HINT}", stacklevel=4)
        return
    except Exception as exc:  # a vendor library's own fault: the other meters still open
        warn(f"mlflow-green: {fallback}: {type(exc).__name__}: {exc}{DOCTOR_HINT}", stacklevel=4)
        return
    covered = _domains(meters)
    for meter in opened:
        if meter.domain in covered:
            meter.close()
        else:
            meters.append(meter)
