"""Measurement configuration: arguments, then ``MLFLOW_GREEN_<NAME>`` variables, then defaults.

Everything is validated here, when the user calls ``track()`` or ``autolog()``,
so a bad value fails in the caller's frame and never later in a thread.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlflow_green._env import parse_bool
from mlflow_green.carbon import CarbonIntensity, resolve_intensity

SCOPES = ("machine", "process")
__all__ = ["SCOPES", "MeasureConfig", "env_name", "parse_bool", "positive_seconds", "resolve"]


def env_name(name: str) -> str:
    """The environment variable that sets argument ``name``."""
    return f"MLFLOW_GREEN_{name.upper()}"


def positive_seconds(name: str) -> Callable[[Any], float]:
    """A parser for argument ``name``: a finite number of seconds > 0, else ``ValueError``."""

    def parse(value: Any) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name}={value!r} is not a number: expected seconds > 0") from None
        if not (number > 0 and math.isfinite(number)):
            raise ValueError(
                f"{name}={value!r} is invalid: expected a finite number of seconds > 0"
            )
        return number

    return parse


def _pue(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"pue={value!r} is not a number: expected a PUE >= 1.0") from None
    if not (number >= 1.0 and math.isfinite(number)):
        raise ValueError(
            f"pue={value!r} is invalid: power usage effectiveness is >= 1.0 "
            "(1.0 = no facility overhead; typical data centres 1.1-1.6)"
        )
    return number


def _scope(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in SCOPES:
        raise ValueError(f"scope={value!r} is invalid: expected one of {', '.join(SCOPES)}")
    return text


def resolve(name: str, value: Any, default: Any, parse: Callable[[Any], Any] | None = None) -> Any:
    """An argument's value: explicit ``value``, else its environment variable, else ``default``."""
    if value is None:
        raw = os.environ.get(env_name(name))
        value = default if raw is None or raw.strip() == "" else raw
    if value is None or parse is None:
        return value
    return parse(value)


@dataclass(frozen=True)
class MeasureConfig:
    """What to measure and how to turn it into emissions; shared by ``track`` and ``autolog``."""

    intensity: CarbonIntensity
    pue: float = 1.0
    scope: str = "machine"
    sample_interval_s: float = 1.0

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
    ) -> MeasureConfig:
        """Resolve arguments against ``MLFLOW_GREEN_*`` variables and validate them all."""
        intensity = resolve_intensity(
            country=resolve("country", country, None),
            region=resolve("region", region, None),
            cloud_provider=resolve("cloud_provider", cloud_provider, None),
            cloud_region=resolve("cloud_region", cloud_region, None),
            carbon_intensity=resolve("carbon_intensity", carbon_intensity, None),
        )
        return cls(
            intensity=intensity,
            pue=resolve("pue", pue, 1.0, _pue),
            scope=resolve("scope", scope, "machine", _scope),
            sample_interval_s=resolve(
                "sample_interval_s", sample_interval_s, 1.0, positive_seconds("sample_interval_s")
            ),
        )
