"""Settings of ``track()``/``autolog()``: arguments, then ``MLFLOW_GREEN_<NAME>``, then defaults.

Everything is validated here, when the user calls ``track()`` or ``autolog()``,
so a bad value fails in the caller's frame and never later in a thread. Every
setting has a documented range (the ``*_BOUNDS*`` constants); an error names the
value, the accepted range and where the value came from: the argument (``pue=5``)
or the environment variable (``MLFLOW_GREEN_PUE='5'``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from mlflow_green.measure._env import NumberParser, bounded_number, env_name, parse_bool
from mlflow_green.measure.carbon import (
    CARBON_INTENSITY_BOUNDS_G_PER_KWH,
    CarbonIntensity,
    parse_carbon_intensity,
    resolve_intensity,
)
from mlflow_green.measure.footprint import FOOTPRINT_SETTINGS, Footprint

__all__ = [
    "CARBON_INTENSITY_BOUNDS_G_PER_KWH",
    "FLUSH_INTERVAL_BOUNDS_S",
    "PUE_BOUNDS",
    "SAMPLE_INTERVAL_BOUNDS_S",
    "SCOPES",
    "AutologConfig",
    "MeasureConfig",
    "bounded_number",
    "env_name",
    "parse_bool",
    "resolve_disable",
    "resolve_footprint",
    "setting",
]

T = TypeVar("T")

SCOPES = ("machine", "process")

#: ``sample_interval_s``, the power timeline's resolution. Below 0.05 s the sampler costs a
#: noticeable share of a core and the points are noise: NVML's energy counter moves every
#: ~100 ms (GPU points closer than that alternate between 0 and double). Above an hour the
#: timeline of a day's run has too few points to show anything. Counters never wrap unseen
#: whatever the interval: the sampler wakes at the shortest of this and every meter's own
#: poll period (RAPL's is at most 60 s, set from its wrap range; NVML power polling 0.1 s).
SAMPLE_INTERVAL_BOUNDS_S = (0.05, 3600.0)
#: ``flush_interval_s``: each flush is one request to the tracking server per open run
#: (and, in a distributed job, one live report per rank), so not more than once a second;
#: at most a day, after which a crashed run would have lost a day of figures.
FLUSH_INTERVAL_BOUNDS_S = (1.0, 86400.0)
#: ``pue``: 1.0 is no facility overhead (the device energy itself); data centres report
#: 1.1-1.6 (Green Algorithms' default is 1.56, the 2024 survey mean); beyond 3 is a mistake
#: (a percentage, an overhead given as a share) rather than a building.
PUE_BOUNDS = (1.0, 3.0)

parse_sample_interval_s: NumberParser = bounded_number(*SAMPLE_INTERVAL_BOUNDS_S, "seconds")
parse_flush_interval_s: NumberParser = bounded_number(*FLUSH_INTERVAL_BOUNDS_S, "seconds")
parse_pue: NumberParser = bounded_number(
    *PUE_BOUNDS,
    "a power usage effectiveness (pue)",
    " (1.0: no facility overhead; data centres typically 1.1-1.6, Green Algorithms uses 1.56)",
)

_LOCATION = ("country", "region", "cloud_provider", "cloud_region", "carbon_intensity")


def parse_scope(value: Any, label: str) -> str:
    """``"machine"`` or ``"process"`` (any case), else ``ValueError`` naming ``label``."""
    text = value.strip().lower() if isinstance(value, str) else None
    if text not in SCOPES:
        raise ValueError(f"{label}={value!r} is invalid: expected one of {', '.join(SCOPES)}")
    return text


def _raw(name: str, value: Any) -> tuple[Any, str]:
    """``(value, label)``: the argument if given, else its variable's text (if not blank)."""
    if value is not None:
        return value, name
    raw = os.environ.get(env_name(name))
    if raw is None or raw.strip() == "":
        return None, name
    return raw, env_name(name)


def setting(name: str, value: Any, default: T, parse: Callable[[Any, str], T]) -> T:
    """Argument ``name``'s value: ``value`` if given, else ``MLFLOW_GREEN_<NAME>``, else
    ``default`` (not parsed). ``parse(value, label)`` validates; its errors name the argument,
    or the variable when the value came from the environment."""
    raw, label = _raw(name, value)
    return default if raw is None else parse(raw, label)


def resolve_disable(disable: Any = None) -> bool:
    """``autolog(disable=...)``: the argument, else ``MLFLOW_GREEN_DISABLE``, else False."""
    return setting("disable", disable, False, parse_bool)


def resolve_location(
    unknown_location_ok: bool = False, **given: Any
) -> tuple[CarbonIntensity, tuple[str, ...]]:
    """The carbon intensity of the location settings (``country``, ``region``,
    ``cloud_provider``, ``cloud_region``, ``carbon_intensity``), and warnings.

    A bad setting raises ``ValueError`` naming it, unless ``unknown_location_ok``
    (zero-code mode, where nobody is there to catch it and energy does not depend
    on the location): then the intensity is unknown (``g_per_kwh`` None, the source
    says why), or the explicit ``carbon_intensity`` if that one is valid, and the
    second item holds one message saying what was wrong and what is recorded.
    """
    raw = {n: _raw(n, given.get(n)) for n in _LOCATION}
    values = {n: v for n, (v, _) in raw.items()}
    labels = {n: label for n, (_, label) in raw.items()}
    hourly, problem = None, None
    try:
        hourly = hourly_setting(values["carbon_intensity"], labels["carbon_intensity"])
    except ValueError as exc:
        if not unknown_location_ok:
            raise
        problem = f"{str(exc).rstrip('.')}. CO2 uses the location's yearly figure instead."
    if hourly is not None or problem is not None:  # the location's figure: the fall-back
        values["carbon_intensity"] = None
    try:
        found = resolve_intensity(**values, labels=labels)
        if hourly is not None:
            found = dataclasses.replace(found, hourly=hourly)
        if problem:  # the run's source tag says it too, not only the warning
            refused = f"{labels['carbon_intensity']} not used: see the run's warning"
            found = dataclasses.replace(found, source=f"{found.source} ({refused})")
        return found, (problem,) if problem else ()
    except Exception as exc:
        if not unknown_location_ok:
            raise
        # Anything else is a fault of the look-up (e.g. CodeCarbon's data), not of a setting.
        reason = str(exc) if isinstance(exc, ValueError) else f"no carbon intensity ({exc!r})."
    if hourly is not None:  # a valid series or provider does not need the location
        note = f"{reason} The location is not recorded; CO2 uses {labels['carbon_intensity']}."
        return dataclasses.replace(CarbonIntensity.unknown(reason), hourly=hourly), (note,)
    try:  # a valid intensity of its own does not need the location
        value = values["carbon_intensity"]
        if value is not None:
            intensity = parse_carbon_intensity(value, labels["carbon_intensity"])
            note = f"{reason} The location is not recorded; CO2 uses {labels['carbon_intensity']}."
            return CarbonIntensity(intensity, "user-supplied"), (note,)
    except ValueError as exc:
        reason = str(exc)
    return CarbonIntensity.unknown(reason), (
        f"{reason} Energy is measured, but CO2 is unknown: green/co2eq_kg is not logged and "
        "the tag green.carbon_intensity_source says why.",
    )


def resolve_footprint(tolerant: bool = False, **given: Any) -> tuple[Footprint, tuple[str, ...]]:
    """The footprint settings (``price_per_kwh``, ``currency``, ``wue_l_per_kwh``,
    ``electricity_water_l_per_kwh``, ``embodied_co2eq_kg``, ``lifetime_years``,
    ``reserved_share``): each argument, else its ``MLFLOW_GREEN_<NAME>``; and warnings.

    A bad value raises ``ValueError`` naming it, unless ``tolerant`` (zero-code mode: the
    footprint does not change the energy): then no footprint figure is computed, the
    footprint's ``refused`` says why, and the second item holds one message saying so.
    """
    unknown = set(given) - set(FOOTPRINT_SETTINGS)
    if unknown:
        raise TypeError(f"unknown footprint settings: {', '.join(sorted(unknown))}")
    raw = {n: _raw(n, given.get(n)) for n in FOOTPRINT_SETTINGS}
    try:
        return Footprint.parse(
            {n: v for n, (v, _) in raw.items()}, {n: lb for n, (_, lb) in raw.items()}
        ), ()
    except ValueError as exc:
        if not tolerant:
            raise
        reason = str(exc)
    return Footprint(refused=reason), (
        f"{reason}. Energy is measured, with no cost, water or embodied emissions "
        "(report.json's footprint says why).",
    )


def hourly_setting(value: Any, label: str) -> Any:
    """A ``carbon_intensity`` that names an hourly intensity, read and checked now: the
    live provider (``electricitymaps:<ZONE>``) or a CSV time series (an ``os.PathLike``,
    or a text that is no number and names an existing file, has a folder separator or
    ends in ``.csv``); None for a number (even one that is also a file's name)."""
    from mlflow_green.measure import electricitymaps
    from mlflow_green.measure.intensity_series import load_series

    if isinstance(value, os.PathLike):
        return load_series(os.fspath(value), label)
    if not isinstance(value, str):
        return None
    if electricitymaps.is_provider_setting(value):
        return electricitymaps.parse_provider_setting(value, label)
    text = value.strip()
    try:
        float(text)
        return None  # a number: its own parser checks it
    except ValueError:
        pass
    if os.path.exists(text) or os.sep in text or "/" in text or text.lower().endswith(".csv"):
        return load_series(text, label)
    return None


@dataclass(frozen=True)
class MeasureConfig:
    """What to measure and how to turn it into emissions; shared by ``track`` and ``autolog``."""

    intensity: CarbonIntensity
    pue: float = 1.0
    scope: str = "machine"
    sample_interval_s: float = 1.0
    footprint: Footprint = field(default_factory=Footprint)
    """Cost, water and embodied-emissions settings (see :mod:`~mlflow_green.measure.footprint`)."""

    @classmethod
    def build(
        cls,
        country: str | None = None,
        region: str | None = None,
        cloud_provider: str | None = None,
        cloud_region: str | None = None,
        carbon_intensity: float | None = None,
        pue: float | None = None,
        scope: str | None = None,
        sample_interval_s: float | None = None,
        **footprint: Any,
    ) -> MeasureConfig:
        """Resolve arguments against ``MLFLOW_GREEN_*`` variables and validate them all.

        ``footprint``: the settings :func:`resolve_footprint` takes (``price_per_kwh``, ...).
        Raises ``ValueError`` naming the bad value, its source and what is accepted.
        """
        intensity, _ = resolve_location(
            country=country,
            region=region,
            cloud_provider=cloud_provider,
            cloud_region=cloud_region,
            carbon_intensity=carbon_intensity,
        )
        measured, _ = resolve_footprint(**footprint)
        return cls._with(intensity, pue, scope, sample_interval_s, measured)

    @classmethod
    def _with(
        cls,
        intensity: CarbonIntensity,
        pue: Any,
        scope: Any,
        sample_interval_s: Any,
        footprint: Footprint | None = None,
    ) -> MeasureConfig:
        return cls(
            intensity=intensity,
            pue=setting("pue", pue, 1.0, parse_pue),
            scope=setting("scope", scope, "machine", parse_scope),
            sample_interval_s=setting(
                "sample_interval_s", sample_interval_s, 1.0, parse_sample_interval_s
            ),
            footprint=footprint if footprint is not None else Footprint(),
        )


@dataclass(frozen=True)
class AutologConfig:
    """``autolog`` arguments after resolution against ``MLFLOW_GREEN_*`` variables."""

    measure: MeasureConfig
    flush_interval_s: float = 30.0
    log_artifacts: bool = True
    silent: bool = False
    warnings: tuple[str, ...] = ()
    """What was wrong with settings that were tolerated (``unknown_location_ok``); the
    caller says it in one warning."""

    @classmethod
    def build(
        cls,
        country: str | None = None,
        carbon_intensity: float | None = None,
        pue: float | None = None,
        scope: str | None = None,
        sample_interval_s: float | None = None,
        flush_interval_s: float | None = None,
        log_artifacts: bool | None = None,
        silent: bool | None = None,
        region: str | None = None,
        cloud_provider: str | None = None,
        cloud_region: str | None = None,
        unknown_location_ok: bool = False,
        **footprint: Any,
    ) -> AutologConfig:
        """Resolve ``autolog``'s arguments against ``MLFLOW_GREEN_*`` variables; validate all.

        Raises ``ValueError`` naming the bad value, its source and what is accepted.
        With ``unknown_location_ok`` (zero-code mode) a bad location or
        ``carbon_intensity`` is not an error: energy is measured, the intensity is
        unknown, and :attr:`warnings` says why; so is a bad footprint setting (``footprint``:
        the settings :func:`resolve_footprint` takes): no cost, water or embodied figure.
        """
        intensity, notes = resolve_location(
            unknown_location_ok,
            country=country,
            region=region,
            cloud_provider=cloud_provider,
            cloud_region=cloud_region,
            carbon_intensity=carbon_intensity,
        )
        measured, footprint_notes = resolve_footprint(unknown_location_ok, **footprint)
        return cls(
            measure=MeasureConfig._with(intensity, pue, scope, sample_interval_s, measured),
            flush_interval_s=setting(
                "flush_interval_s", flush_interval_s, 30.0, parse_flush_interval_s
            ),
            log_artifacts=setting("log_artifacts", log_artifacts, True, parse_bool),
            silent=setting("silent", silent, False, parse_bool),
            warnings=notes + footprint_notes,
        )
