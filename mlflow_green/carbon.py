"""Grid carbon intensity from CodeCarbon's offline data, and emissions from energy.

Pure functions of configuration: no network call, ever. Values come from the
data files CodeCarbon ships (read directly, so a country's figure is exactly
the published one), except US states and Canadian provinces, whose
conversion formulas are CodeCarbon's own and are delegated to it.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: CodeCarbon's world average (``carbon_intensity_per_source.json``), g/kWh; used
#: only when the user gives no location at all, and labelled as such.
_WORLD_AVERAGE_SOURCE = "codecarbon world average (no location given)"

# Nordic bidding zones are named by a two-letter prefix (SE1..SE4, NO1..NO5, FI).
_NORDIC = {"SWE": "SE", "NOR": "NO", "FIN": "FI"}


@dataclass(frozen=True)
class CarbonIntensity:
    """Grid carbon intensity used to turn energy into emissions."""

    g_per_kwh: float
    """Grams of CO2-equivalent per kWh drawn from the grid."""
    source: str
    """Where the figure comes from, for the report and tags."""
    country: str | None = None
    region: str | None = None
    cloud_provider: str | None = None
    cloud_region: str | None = None


def co2eq_kg(energy_kwh: float, g_per_kwh: float) -> float:
    """Emissions in kg CO2eq of ``energy_kwh`` drawn at ``g_per_kwh``."""
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


def _check_country(country: str) -> str:
    code = country.strip().upper()
    if code not in _energy_mix():
        examples = ", ".join(["FRA", "DEU", "USA", "GBR", "IND"])
        raise ValueError(
            f"Unknown country code {country!r}: expected an ISO 3166-1 alpha-3 code with data in "
            f"CodeCarbon's energy mix (e.g. {examples}; {len(_energy_mix())} codes, listed by "
            "`mlflow-green countries` or mlflow_green.carbon.available_countries()). "
            "Or pass carbon_intensity=<g/kWh>."
        )
    return code


def _check_region(country: str, region: str) -> str:
    valid = available_regions(country)
    if not valid:
        raise ValueError(
            f"No regional data for country {country!r} (region {region!r}): regions are "
            "available for USA, CAN, CHN, SWE, NOR and FIN. Drop region= to use the country value."
        )
    key = region.strip()
    key = key.upper() if country in _NORDIC else key.lower()
    if country == "CHN":
        data = _json("private_infra/2023/china_provincial_emissions.json")["data"]
        if any(key in row["names"] for row in data.values()):
            return key
    elif key in valid:
        return key
    raise ValueError(
        f"Unknown region {region!r} for country {country}: expected one of {', '.join(valid)}."
    )


def resolve_intensity(
    country: str | None = None,
    region: str | None = None,
    cloud_provider: str | None = None,
    cloud_region: str | None = None,
    carbon_intensity: float | None = None,
) -> CarbonIntensity:
    """Validate a location and return its grid carbon intensity.

    Precedence: an explicit ``carbon_intensity`` (g/kWh) overrides the location's
    value (the location is still recorded); a cloud provider and region; a
    country, refined by ``region`` where data exists; with nothing given, the
    world average, labelled as such. Raises ``ValueError`` naming any bad value
    and what is accepted.
    """
    if carbon_intensity is not None:
        try:
            value = float(carbon_intensity)
        except (TypeError, ValueError):
            raise ValueError(
                f"carbon_intensity={carbon_intensity!r} is not a number: expected gCO2eq/kWh >= 0"
            ) from None
        if not value >= 0 or value == float("inf"):
            raise ValueError(
                f"carbon_intensity={carbon_intensity!r} is invalid: expected a finite "
                "gCO2eq/kWh >= 0"
            )
    if region is not None and country is None and cloud_provider is None:
        raise ValueError(f"region={region!r} needs country= (ISO alpha-3, e.g. 'USA')")
    if (cloud_provider is None) != (cloud_region is None):
        raise ValueError(
            "cloud_provider and cloud_region go together: got "
            f"cloud_provider={cloud_provider!r}, cloud_region={cloud_region!r}"
        )

    found: CarbonIntensity
    if cloud_provider is not None:
        found = _cloud(str(cloud_provider), str(cloud_region))
    elif country is not None:
        code = _check_country(str(country))
        if region is not None:
            reg = _check_region(code, str(region))
            found = CarbonIntensity(
                _region_g_per_kwh(code, reg), "codecarbon regional data", code, reg
            )
        else:
            found = CarbonIntensity(_country_g_per_kwh(code), "codecarbon energy mix", code)
    else:
        world = _json("private_infra/carbon_intensity_per_source.json")["world_average"]
        found = CarbonIntensity(float(world), _WORLD_AVERAGE_SOURCE)

    if carbon_intensity is not None:
        return CarbonIntensity(
            float(carbon_intensity),
            "user-supplied",
            found.country,
            found.region,
            found.cloud_provider,
            found.cloud_region,
        )
    return found


def _cloud(provider: str, region: str) -> CarbonIntensity:
    regions = available_cloud_regions()
    prov = provider.strip().lower()
    if prov not in regions:
        raise ValueError(
            f"Unknown cloud_provider {provider!r}: CodeCarbon ships region intensities for "
            f"{', '.join(sorted(regions))} only. For other clouds pass country= (and region=) "
            "of the data centre, or carbon_intensity=<g/kWh>."
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
        f"Unknown cloud_region {region!r} for {prov}: expected one of {', '.join(regions[prov])}."
    )
