"""An hourly carbon intensity applied to a measurement: a time series, or Electricity Maps.

``carbon_intensity`` may name a CSV time series (:mod:`~mlflow_green.measure.intensity_series`)
or ``electricitymaps:<ZONE>`` (:mod:`~mlflow_green.measure.electricitymaps`). Either is
weighted by the measurement's own power timeline, so that ``energy_kwh x g_per_kwh``
is the exact integral of power x intensity; hours the series does not cover use the
location's yearly figure, and the source says which share of the energy each covers.

The provider's history is fetched at most every :data:`FRESH_S` per zone (a run's flushes
and its end reuse it; the history is hourly), a failure is retried after :data:`RETRY_S`
and costs one warning per reason; the figures then fall back to the yearly one, labelled.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from collections.abc import Sequence
from typing import Any

from mlflow_green._warnings import warn
from mlflow_green.measure.carbon import CarbonIntensity
from mlflow_green.measure.electricitymaps import (
    ElectricityMapsSetting,
    ProviderError,
    fetch_history,
    resolve_provider_intensity,
)
from mlflow_green.measure.intensity_series import IntensitySeries, weighted_intensity

#: Seconds a fetched history is reused; and before a failed fetch is tried again.
FRESH_S, RETRY_S = 900.0, 300.0

_lock = threading.Lock()
_fetched: dict[tuple[str, str, str], tuple[float, IntensitySeries | ProviderError]] = {}
_warned: set[str] = set()


def applied(
    intensity: CarbonIntensity, start_time_s: float, timeline: Sequence[Any]
) -> CarbonIntensity:
    """``intensity`` as used for a measurement that started at ``start_time_s`` (epoch s)
    with ``timeline`` (``(t_s, {domain: watts})`` points): itself, or for an hourly one,
    its energy-weighted mean over the measurement, with a source saying how it was made."""
    hourly = intensity.hourly
    if hourly is None:
        return intensity
    if isinstance(hourly, IntensitySeries):
        g, source, _ = weighted_intensity(
            hourly, start_time_s, timeline, intensity.g_per_kwh, intensity.source
        )
    elif isinstance(hourly, ElectricityMapsSetting) and not timeline:
        # Nothing to weight yet (a run's creation): no network call in the user's thread.
        g = intensity.g_per_kwh
        source = (
            f"{hourly.label} history, applied at the run's flushes and end; until then "
            f"{intensity.source}"
        )
    elif isinstance(hourly, ElectricityMapsSetting):
        g, source = resolve_provider_intensity(
            hourly.zone,
            hourly.token,
            start_time_s,
            timeline,
            intensity.g_per_kwh,
            intensity.source,
            base_url=hourly.base_url,
            timeout_s=hourly.timeout_s,
            on_error=_warn_once,
            history=_cached_history,
        )
    else:  # pragma: no cover - carbon.py builds only the two
        raise TypeError(f"not an hourly intensity: {hourly!r}")
    return dataclasses.replace(intensity, g_per_kwh=g, source=source, hourly=None)


def _cached_history(
    zone: str, token: str | None, *, base_url: str | None, timeout_s: float
) -> IntensitySeries:
    # A corrected token is a new key: its first call does not meet the old one's failure.
    key = (zone, base_url or "", hashlib.sha256((token or "").encode()).hexdigest())
    with _lock:  # one fetch at a time: a flush and a run's end may ask at once
        now = time.monotonic()
        hit = _fetched.get(key)
        if hit is not None:
            fresh = FRESH_S if isinstance(hit[1], IntensitySeries) else RETRY_S
            if now - hit[0] < fresh:
                if isinstance(hit[1], ProviderError):
                    raise hit[1]
                return hit[1]
        try:
            series = fetch_history(zone, token, base_url=base_url, timeout_s=timeout_s)
        except (ProviderError, ValueError) as exc:
            error = exc if isinstance(exc, ProviderError) else ProviderError(zone, str(exc))
            _fetched[key] = (time.monotonic(), error)
            raise error from None
        _fetched[key] = (time.monotonic(), series)
        return series


def _warn_once(error: ProviderError) -> None:
    if str(error) in _warned:
        return
    _warned.add(str(error))
    warn(
        f"mlflow-green: {error}; CO2eq uses the location's yearly intensity meanwhile "
        "(the run's green.carbon_intensity_source says so)",
        RuntimeWarning,
    )


def forget() -> None:
    """Drop every fetched history and remembered failure (tests; a changed token)."""
    with _lock:
        _fetched.clear()
        _warned.clear()
