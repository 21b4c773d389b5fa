"""Grid carbon intensity from CodeCarbon's offline data, and emissions from energy.

Pure functions of configuration: no network call, ever. Values come from the
data files CodeCarbon ships (read directly, so a country's figure is exactly
the published one), except US states and Canadian provinces, whose
conversion formulas are CodeCarbon's own and are delegated to it.
"""

from __future__ import annotations

import csv
import difflib
import functools
import importlib.util
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow_green.measure._env import bounded_number

#: CodeCarbon's world average (``carbon_intensity_per_source.json``), g/kWh; used
#: only when the user gives no location at all, and labelled as such.
_WORLD_AVERAGE_SOURCE = "codecarbon world average (no location given)"

#: Accepted ``carbon_intensity``, gCO2eq/kWh. 0 allows a fully renewable supply contract;
#: the dirtiest grid in CodeCarbon's data is 1306 (Turkmenistan), lignite plants emit about
#: 1,000-1,300, so anything above 2000 is a unit slip (e.g. g/MWh or lb/MWh) or a typo.
CARBON_INTENSITY_BOUNDS_G_PER_KWH = (0.0, 2000.0)
parse_carbon_intensity = bounded_number(
    *CARBON_INTENSITY_BOUNDS_G_PER_KWH,
    "gCO2eq/kWh",
    " (a grid's mean is 0-1306 in CodeCarbon's data; world average 475)",
)

#: Prefix of :attr:`CarbonIntensity.source` when the intensity is unknown.
UNKNOWN_SOURCE_PREFIX = "unknown: "

# Nordic bidding zones are named by a two-letter prefix (SE1..SE4, NO1..NO5, FI).
_NORDIC = {"SWE": "SE", "NOR": "NO", "FIN": "FI"}


@dataclass(frozen=True)
class CarbonIntensity:
    """Grid carbon intensity used to turn energy into emissions."""

    g_per_kwh: float | None
    """Grams of CO2-equivalent per kWh drawn from the grid; ``None`` when unknown (a location
    setting was invalid in zero-code mode: energy is measured, emissions are not known)."""
    source: str
    """Where the figure comes from, for the report and tags; for an unknown intensity,
    ``"unknown: "`` and why."""
    country: str | None = None
    region: str | None = None
    cloud_provider: str | None = None
    cloud_region: str | None = None
    hourly: Any = None
    """A time series (``IntensitySeries``) or a live provider (``ElectricityMapsSetting``)
    that :func:`mlflow_green.measure.hourly.applied` weights by each measurement's power;
    :attr:`g_per_kwh` and :attr:`source` are then the yearly fall-back for hours it lacks."""

    @property
    def known(self) -> bool:
        """Whether there is a figure (emissions can be computed)."""
        return self.g_per_kwh is not None

    @classmethod
    def unknown(cls, reason: str) -> CarbonIntensity:
        """An intensity nobody knows, and ``reason`` why (it becomes the source)."""
        return cls(None, UNKNOWN_SOURCE_PREFIX + reason)


def co2eq_kg(energy_kwh: float, g_per_kwh: float | None) -> float | None:
    """Emissions in kg CO2eq of ``energy_kwh`` at ``g_per_kwh``; ``None`` when that is unknown."""
    if g_per_kwh is None:
        return None
    return energy_kwh * g_per_kwh / 1000.0


@functools.cache
def _data_dir() -> Path:
    # find_spec does not execute codecarbon/__init__.py, which imports its whole
    # tracker (~0.2 s); only the data files are needed here.
    spec = importlib.util.find_spec("codecarbon")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("codecarbon is not installed; reinstall mlflow-green")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


@functools.cache
def _json(relative: str) -> Any:
    with open(_data_dir() / relative, encoding="utf-8") as f:
        return json.load(f)


def _energy_mix() -> dict[str, dict[str, Any]]:
    return _json("private_infra/global_energy_mix.json")


@functools.cache
def _cloud_rows() -> list[dict[str, str]]:
    with open(_data_dir() / "cloud/impact.csv", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


def available_countries() -> dict[str, str]:
    """ISO 3166-1 alpha-3 codes with an intensity in the shipped data, mapped to country names."""
    return {code: row.get("country_name", code) for code, row in sorted(_energy_mix().items())}


def available_regions(country: str) -> list[str]:
    """Regions with their own intensity for ``country`` (US states, provinces, bidding zones)."""
    country = country.upper()
    if country == "USA":
        return sorted(k for k in _json("private_infra/2023/usa_emissions.json") if k[0] != "_")
    if country == "CAN":
        return sorted(_json("private_infra/2023/canada_energy_mix.json"))
    if country == "CHN":
        data = _json("private_infra/2023/china_provincial_emissions.json")["data"]
        return sorted(name for row in data.values() for name in row["names"][:1])
    if country in _NORDIC:
        zones = _json("private_infra/nordic_emissions.json")["data"]
        return sorted(z for z in zones if z.startswith(_NORDIC[country]))
    return []


def available_cloud_regions() -> dict[str, list[str]]:
    """Cloud providers and regions with a published intensity (CodeCarbon ships GCP's)."""
    out: dict[str, list[str]] = {}
    for row in _cloud_rows():
        out.setdefault(row["provider"], []).append(row["region"])
    return out


def _country_g_per_kwh(country: str) -> float:
    row = _energy_mix()[country]
    if row.get("carbon_intensity") is not None:
        return float(row["carbon_intensity"])
    from codecarbon.core.emissions import Emissions  # rare: computed from the mix

    return Emissions._global_energy_mix_to_emissions_rate(row).kgs_per_kWh * 1000.0


def _region_g_per_kwh(country: str, region: str) -> float:
    if country in _NORDIC:
        return float(
            _json("private_infra/nordic_emissions.json")["data"][region]["emission_factor"]
        )
    if country == "CHN":
        for row in _json("private_infra/2023/china_provincial_emissions.json")["data"].values():
            if region in row["names"]:
                return float(row["emission_factor"])
    # US states (lbs/MWh) and Canadian provinces (energy mix): CodeCarbon's formulas.
    from codecarbon.core.emissions import Emissions
    from codecarbon.core.units import Energy
    from codecarbon.external.geography import GeoMetadata
    from codecarbon.input import DataSource

    geo = GeoMetadata(country_iso_code=country, region=region)
    kg = Emissions(DataSource()).get_region_emissions(Energy.from_energy(kWh=1), geo)
    return float(kg) * 1000.0


def _text(value: Any, label: str, what: str) -> str:
    # float()/str() would take 250 or b"FRA"; a location is a string.
    if not isinstance(value, str):
        raise ValueError(f"{label}={value!r} is not a string: expected {what}")
    return value


#: Common names of a country that are not its code or CodeCarbon's name for it.
_COUNTRY_ALIASES = {"UK": "GBR", "GB": "GBR", "BRITAIN": "GBR", "ENGLAND": "GBR", "US": "USA"}


def country_suggestions(value: str, n: int = 3) -> list[str]:
    """Known country codes close to ``value``, best first: a code with a letter wrong
    (``FRN``: ``FRA``), a two-letter code (``FR``, ``UK``), or a country's name, exact or
    misspelt (``France``, ``Frnace``: ``FRA``). Empty when nothing is close."""
    names = available_countries()
    key = value.strip()
    by_name = {name.casefold(): code for code, name in names.items()}
    alias = _COUNTRY_ALIASES.get(key.upper()) or by_name.get(key.casefold())
    if alias is not None:
        return [alias]
    upper = key.upper()
    codes = difflib.get_close_matches(upper, list(names), n=2 * n, cutoff=0.6)

    def closeness(code: str) -> tuple[int, float, str]:  # a code that starts alike first
        pairs = enumerate(zip(code, upper, strict=False))
        alike = next((i for i, (a, b) in pairs if a != b), min(len(code), len(upper)))
        return -alike, -difflib.SequenceMatcher(None, upper, code).ratio(), code

    codes.sort(key=closeness)
    if len(key) > 3:
        matches = difflib.get_close_matches(key.casefold(), list(by_name), n=n, cutoff=0.75)
        codes = [by_name[m] for m in matches] + codes
    return list(dict.fromkeys(codes))[:n]


def did_you_mean_country(value: str) -> str:
    """``" Did you mean FRA (France)?"`` for a mistyped country, or ``""``."""
    names = available_countries()
    close = [f"{code} ({names[code]})" for code in country_suggestions(value)]
    return f" Did you mean {' or '.join(close)}?" if close else ""


def _check_country(country: str, label: str = "country") -> str:
    code = country.strip().upper()
    if code not in _energy_mix():
        examples = ", ".join(["FRA", "DEU", "USA", "GBR", "IND"])
        raise ValueError(
            f"{label}={country!r} is not a known country code.{did_you_mean_country(country)} "
            "Expected an ISO 3166-1 alpha-3 "
            f"code with data in CodeCarbon's energy mix (e.g. {examples}; {len(_energy_mix())} "
            "codes, listed by `mlflow-green countries`). Or give the intensity itself: "
            "carbon_intensity=<g/kWh> or MLFLOW_GREEN_CARBON_INTENSITY."
        )
    return code


def _check_region(country: str, region: str, label: str = "region") -> str:
    valid = available_regions(country)
    if not valid:
        raise ValueError(
            f"{label}={region!r} is invalid: there is no regional data for country {country} "
            "(regions are available for USA, CAN, CHN, SWE, NOR and FIN). Drop the region to "
            "use the country value."
        )
    key = region.strip()
    key = key.upper() if country in _NORDIC else key.lower()
    if country == "CHN":
        data = _json("private_infra/2023/china_provincial_emissions.json")["data"]
        if any(key in row["names"] for row in data.values()):
            return key
    elif key in valid:
        return key
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.75)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(
        f"{label}={region!r} is not a region of {country}.{hint} Expected one of "
        f"{', '.join(valid)}."
    )


def resolve_intensity(
    country: str | None = None,
    region: str | None = None,
    cloud_provider: str | None = None,
    cloud_region: str | None = None,
    carbon_intensity: float | str | None = None,
    *,
    labels: Mapping[str, str] | None = None,
) -> CarbonIntensity:
    """Validate a location and return its grid carbon intensity.

    Precedence: an explicit ``carbon_intensity`` (gCO2eq/kWh, 0 to 2000) overrides
    the location's value (the location is still recorded); a cloud provider and
    region; a country, refined by ``region`` where data exists; with nothing
    given, the world average, labelled as such. Raises ``ValueError`` naming any
    bad value and what is accepted; ``labels`` maps an argument to the name its
    value is shown under (``{"country": "MLFLOW_GREEN_COUNTRY"}`` for a value
    read from the environment).
    """
    names = {
        n: (labels or {}).get(n, n)
        for n in ("country", "region", "cloud_provider", "cloud_region", "carbon_intensity")
    }
    intensity = None
    if carbon_intensity is not None:
        intensity = parse_carbon_intensity(carbon_intensity, names["carbon_intensity"])
    if country is not None:
        country = _text(country, names["country"], "an ISO 3166-1 alpha-3 code such as 'FRA'")
    if region is not None:
        region = _text(region, names["region"], "a region name such as 'california'")
    if cloud_provider is not None:
        cloud_provider = _text(cloud_provider, names["cloud_provider"], "a provider such as 'gcp'")
    if cloud_region is not None:
        cloud_region = _text(cloud_region, names["cloud_region"], "a region such as 'us-east1'")
    if region is not None and country is None and cloud_provider is None:
        raise ValueError(
            f"{names['region']}={region!r} needs country= (or MLFLOW_GREEN_COUNTRY): "
            "an ISO alpha-3 code, e.g. 'USA'"
        )
    if (cloud_provider is None) != (cloud_region is None):
        raise ValueError(
            "cloud_provider and cloud_region go together: got "
            f"{names['cloud_provider']}={cloud_provider!r}, "
            f"{names['cloud_region']}={cloud_region!r}"
        )

    found: CarbonIntensity
    if cloud_provider is not None and cloud_region is not None:
        found = _cloud(cloud_provider, cloud_region, names)
    elif country is not None:
        code = _check_country(country, names["country"])
        if region is not None:
            reg = _check_region(code, region, names["region"])
            found = CarbonIntensity(
                _region_g_per_kwh(code, reg), "codecarbon regional data", code, reg
            )
        else:
            found = CarbonIntensity(_country_g_per_kwh(code), "codecarbon energy mix", code)
    else:
        world = _json("private_infra/carbon_intensity_per_source.json")["world_average"]
        found = CarbonIntensity(float(world), _WORLD_AVERAGE_SOURCE)

    if intensity is not None:
        return CarbonIntensity(
            intensity,
            "user-supplied",
            found.country,
            found.region,
            found.cloud_provider,
            found.cloud_region,
        )
    return found


def _cloud(provider: str, region: str, names: Mapping[str, str]) -> CarbonIntensity:
    regions = available_cloud_regions()
    prov = provider.strip().lower()
    if prov not in regions:
        raise ValueError(
            f"{names['cloud_provider']}={provider!r} is not a cloud provider with data: "
            f"CodeCarbon ships region intensities for {', '.join(sorted(regions))} only. "
            "For other clouds give the data centre's country (and region), or carbon_intensity."
        )
    for row in _cloud_rows():
        if row["provider"] == prov and row["region"] == region.strip():
            return CarbonIntensity(
                float(row["impact"]),
                f"codecarbon cloud data ({row.get('source') or prov})",
                row.get("countryIsoCode") or None,
                None,
                prov,
                row["region"],
            )
    raise ValueError(
        f"{names['cloud_region']}={region!r} is not a {prov} region: expected one of "
        f"{', '.join(regions[prov])}."
    )
