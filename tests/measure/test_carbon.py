"""Carbon intensity look-ups against CodeCarbon's shipped data; bad locations are errors."""

from __future__ import annotations

import json

import pytest

from mlflow_green.measure import carbon


def _codecarbon_json(relative: str) -> dict:
    return json.loads((carbon._data_dir() / relative).read_text(encoding="utf-8"))


def test_country_value_is_codecarbons_exact_figure() -> None:
    mix = _codecarbon_json("private_infra/global_energy_mix.json")
    found = carbon.resolve_intensity(country="fra")
    assert found.g_per_kwh == mix["FRA"]["carbon_intensity"] == 56.039
    assert found.country == "FRA"


def test_us_state_matches_codecarbons_own_computation() -> None:
    from codecarbon.core.emissions import Emissions
    from codecarbon.core.units import Energy
    from codecarbon.external.geography import GeoMetadata
    from codecarbon.input import DataSource

    kg = Emissions(DataSource()).get_region_emissions(
        Energy.from_energy(kWh=1), GeoMetadata("USA", region="california")
    )
    found = carbon.resolve_intensity(country="USA", region="California")
    assert found.g_per_kwh == pytest.approx(kg * 1000, rel=1e-12)
    assert found.region == "california"


@pytest.mark.parametrize(
    ("country", "region", "expected"),
    [("SWE", "se3", ("nordic", "SE3")), ("CHN", "Beijing", ("china", "CN-BJ"))],
)
def test_regional_tables(country: str, region: str, expected: tuple[str, str]) -> None:
    kind, key = expected
    if kind == "nordic":
        value = _codecarbon_json("private_infra/nordic_emissions.json")["data"][key]
    else:
        value = _codecarbon_json("private_infra/2023/china_provincial_emissions.json")["data"][key]
    assert (
        carbon.resolve_intensity(country=country, region=region).g_per_kwh
        == value["emission_factor"]
    )


def test_gcp_region_and_its_country() -> None:
    found = carbon.resolve_intensity(cloud_provider="gcp", cloud_region="europe-west1")
    assert (found.g_per_kwh, found.country, found.cloud_region) == (122.0, "BEL", "europe-west1")


def test_explicit_intensity_overrides_but_keeps_location() -> None:
    found = carbon.resolve_intensity(country="DEU", carbon_intensity=12.5)
    assert (found.g_per_kwh, found.country, found.source) == (12.5, "DEU", "user-supplied")


def test_no_location_is_the_labelled_world_average() -> None:
    found = carbon.resolve_intensity()
    assert found.g_per_kwh == 475.0
    assert "world average" in found.source and found.country is None


@pytest.mark.parametrize(
    ("kwargs", "must_mention"),
    [
        ({"country": "XYZ"}, ["'XYZ'", "ISO 3166-1 alpha-3", "mlflow-green countries"]),
        ({"country": "FR"}, ["'FR'", "alpha-3"]),
        ({"carbon_intensity": -3}, ["-3", "between 0 and 2000"]),
        ({"carbon_intensity": "lots"}, ["'lots'", "not a number"]),
        ({"country": "USA", "region": "atlantis"}, ["'atlantis'", "california"]),
        ({"country": "FRA", "region": "bretagne"}, ["'bretagne'", "USA, CAN"]),
        ({"region": "california"}, ["needs country"]),
        ({"cloud_provider": "aws", "cloud_region": "us-east-1"}, ["'aws'", "gcp"]),
        ({"cloud_provider": "gcp", "cloud_region": "mars-1"}, ["'mars-1'", "europe-west1"]),
        ({"cloud_provider": "gcp"}, ["go together"]),
    ],
)
def test_bad_locations_name_the_value_and_what_is_accepted(
    kwargs: dict, must_mention: list[str]
) -> None:
    with pytest.raises(ValueError) as info:
        carbon.resolve_intensity(**kwargs)
    for text in must_mention:
        assert text in str(info.value)


def test_listing_helpers() -> None:
    countries = carbon.available_countries()
    assert countries["FRA"] == "France" and len(countries) > 200
    assert "texas" in carbon.available_regions("usa")
    assert carbon.available_regions("NOR") == ["NO1", "NO2", "NO3", "NO4", "NO5"]
    assert "europe-west1" in carbon.available_cloud_regions()["gcp"]
