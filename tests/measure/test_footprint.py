"""The footprint settings and figures: cost, water and embodied emissions, and their refusals.

Figures come from reports measured through the real monitor on a fake RAPL tree with
exact joules; every bad value is a ``ValueError`` at the call naming the value, where
it came from (argument or ``MLFLOW_GREEN_<NAME>``) and what is accepted.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import pytest

import mlflow_green
from mlflow_green.distributed.combine import combine, contribution
from mlflow_green.measure.carbon import CarbonIntensity
from mlflow_green.measure.config import AutologConfig, MeasureConfig
from mlflow_green.measure.footprint import (
    FOOTPRINT_SETTINGS,
    ISO_4217_CODES,
    SECONDS_PER_YEAR,
    Footprint,
    parse_currency,
)
from mlflow_green.measure.report import J_PER_KWH, EnergyReport
from mlflow_green.measure.tracker import Tracker
from mlflow_green.runs import spool
from mlflow_green.runs.names import cumulative_metrics, final_metrics, tags

pytestmark = pytest.mark.usefixtures("no_green_environment")

SETTINGS: dict[str, Any] = dict(
    price_per_kwh=0.25,
    currency="EUR",
    wue_l_per_kwh=1.8,
    electricity_water_l_per_kwh=3.1,
    embodied_co2eq_kg=1500.0,
    lifetime_years=4.0,
    reserved_share=0.5,
)
CPU_J, RAM_J, PUE = 36.0, 18.0, 1.5


def measured(fake_powercap: Any, footprint: Footprint, pue: float = PUE) -> EnergyReport:
    """36 J of CPU and 18 J of DRAM, measured through the real monitor on fake counters."""
    zones = fake_powercap.add_package(0, energy_uj=7_000_000)
    config = MeasureConfig(CarbonIntensity(56.0, "user-supplied"), pue=pue, footprint=footprint)
    tracker = Tracker("footprint", config).start()
    fake_powercap.advance(zones.package, CPU_J)
    fake_powercap.advance(zones.dram, RAM_J)
    return tracker.stop()


# -- the figures -----------------------------------------------------------------------------


def test_the_figures_are_the_formulas_on_the_measured_energy_and_duration(
    fake_nvml: Any, fake_powercap: Any
) -> None:
    report = measured(fake_powercap, Footprint(**SETTINGS))
    assert report.energy_j_by_domain == {"gpu": 0.0, "cpu": CPU_J, "ram": RAM_J}
    device_kwh = (CPU_J + RAM_J) / J_PER_KWH
    kwh = device_kwh * PUE
    assert report.energy_kwh == pytest.approx(kwh, rel=1e-12)
    assert report.cost == pytest.approx(kwh * 0.25, rel=1e-12)
    # On-site WUE on the devices' energy (no PUE), the electricity's water on all of it.
    assert report.water_l == pytest.approx(device_kwh * 1.8 + kwh * 3.1, rel=1e-12)
    assert report.duration_s > 0
    embodied = 1500.0 * report.duration_s / (4.0 * 365.25 * 86400) * 0.5
    assert report.embodied_co2eq_kg == pytest.approx(embodied, rel=1e-12)
    # report.json: the settings, each figure, its unit and method.
    data = json.loads(report.to_json())["footprint"]
    assert data["settings"] == SETTINGS
    assert data["cost"] == {
        "value": report.cost,
        "unit": "EUR",
        "method": f"{kwh:.6g} kWh x 0.25 EUR/kWh (given)",
    }
    assert data["water_l"]["value"] == report.water_l and data["water_l"]["unit"] == "L"
    assert data["water_l"]["method"] == (
        f"{device_kwh:.6g} kWh at the devices x 1.8 L/kWh on-site WUE (given) + "
        f"{kwh:.6g} kWh x 3.1 L/kWh off-site water of the electricity (given)"
    )
    assert data["embodied_co2eq_kg"]["value"] == report.embodied_co2eq_kg
    assert data["embodied_co2eq_kg"]["method"] == (
        f"1500 kg x {report.duration_s:.6g} s / (4 years x 31557600 s) x 0.5 of the machine "
        "reserved (given)"
    )
    # Metrics (summary and every flush) and the currency tag.
    expected = {
        "green/cost": report.cost,
        "green/water_l": report.water_l,
        "green/embodied_co2eq_kg": report.embodied_co2eq_kg,
    }
    assert expected.items() <= cumulative_metrics(report).items()
    assert expected.items() <= final_metrics(report).items()
    assert tags(report)["green.currency"] == "EUR"
    # The spool keeps them.
    back = spool._report_from_dict(json.loads(report.to_json()))
    assert back == report and back.footprint == Footprint(**SETTINGS)
    assert (back.cost, back.water_l, back.embodied_co2eq_kg) == (
        report.cost,
        report.water_l,
        report.embodied_co2eq_kg,
    )


def test_worked_figures_with_round_numbers() -> None:
    footprint = Footprint(**SETTINGS)
    assert footprint.cost(0.42).value == pytest.approx(0.105)
    assert footprint.cost(0.42).method == "0.42 kWh x 0.25 EUR/kWh (given)"
    assert footprint.water_l(0.3, 0.42).value == pytest.approx(0.3 * 1.8 + 0.42 * 3.1)
    # One year of the whole machine is its whole embodied emissions over its lifetime.
    whole = dataclasses.replace(footprint, reserved_share=1.0)
    assert whole.embodied(SECONDS_PER_YEAR).value == pytest.approx(1500.0 / 4)
    # Without a currency the cost still is energy x price, and says it has no currency.
    plain = Footprint(price_per_kwh=0.2)
    assert plain.cost(2.0).value == pytest.approx(0.4) and plain.cost(2.0).unit == ""
    assert "no currency given" in plain.cost(2.0).method
    # Water without the electricity's: on-site WUE only.
    assert Footprint(wue_l_per_kwh=2.0).water_l(1.0, 1.5).value == pytest.approx(2.0)


def test_without_settings_every_figure_is_unknown_never_zero(
    fake_nvml: Any, fake_powercap: Any
) -> None:
    report = measured(fake_powercap, Footprint())
    assert (report.cost, report.water_l, report.embodied_co2eq_kg) == (None, None, None)
    data = json.loads(report.to_json())["footprint"]
    assert data["cost"] == {"value": None, "unit": "", "method": "no price_per_kwh given"}
    assert data["water_l"]["method"] == "no wue_l_per_kwh given"
    assert data["embodied_co2eq_kg"]["method"] == "no embodied_co2eq_kg given"
    # No new metric or tag: the run's names are exactly those of before.
    assert set(final_metrics(report)) == {
        "green/energy_kwh",
        "green/co2eq_kg",
        "green/duration_s",
        "green/energy/cpu_kwh",
        "green/energy/ram_kwh",
    }
    assert set(cumulative_metrics(report)) == {"green/energy_kwh", "green/co2eq_kg"}
    assert not any("currency" in t for t in tags(report))
    # One figure set, the others unknown.
    report = dataclasses.replace(report, footprint=Footprint(wue_l_per_kwh=0.0))
    assert report.water_l == 0.0  # given as 0 (air cooling): a real zero
    assert set(cumulative_metrics(report)) == {
        "green/energy_kwh",
        "green/co2eq_kg",
        "green/water_l",
    }


def test_a_spooled_report_of_an_older_version_has_no_footprint() -> None:
    data = json.loads(_plain_report().to_json())
    del data["footprint"]
    assert spool._report_from_dict(data).footprint == Footprint()


def _plain_report(**overrides: Any) -> EnergyReport:
    fields: dict[str, Any] = dict(
        name="r",
        start_time_s=1_700_000_000.0,
        duration_s=3600.0,
        energy_j_by_domain={"gpu": 0.0, "cpu": 3.6e6, "ram": 0.0},
        energy_j_by_device={"gpu": {}, "cpu": {"package-0": 3.6e6}, "ram": {}},
        methods={"gpu": "none", "cpu": "rapl", "ram": "none"},
        hardware={},
        scope="machine",
        pue=1.0,
        carbon_intensity_g_per_kwh=100.0,
        intensity_source="user-supplied",
        country=None,
        region=None,
    )
    fields.update(overrides)
    return EnergyReport(**fields)


# -- the settings ----------------------------------------------------------------------------


def test_settings_come_from_arguments_then_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SETTINGS.items():
        monkeypatch.setenv(f"MLFLOW_GREEN_{name.upper()}", str(value).lower())
    assert MeasureConfig.build().footprint == Footprint(**SETTINGS)
    assert AutologConfig.build().measure.footprint == Footprint(**SETTINGS)
    assert mlflow_green.track().config.footprint == Footprint(**SETTINGS)
    # An argument wins over its variable.
    assert MeasureConfig.build(price_per_kwh=0.1).footprint.price_per_kwh == 0.1
    # None set: no footprint, the whole machine.
    for name in SETTINGS:
        monkeypatch.delenv(f"MLFLOW_GREEN_{name.upper()}")
    assert MeasureConfig.build().footprint == Footprint()
    assert Footprint().reserved_share == 1.0 and not Footprint().configured


def test_iso_4217_list_is_the_current_list_one() -> None:
    assert len(ISO_4217_CODES) == len(set(ISO_4217_CODES)) == 178
    assert list(ISO_4217_CODES) == sorted(ISO_4217_CODES)
    assert all(re.fullmatch("[A-Z]{3}", c) for c in ISO_4217_CODES)
    assert {"EUR", "USD", "GBP", "JPY", "CHF", "CNY", "INR", "XCG", "ZWG", "SLE"} <= set(
        ISO_4217_CODES
    )
    assert not {"BGN", "HRK", "ANG", "ZWL", "SLL", "CUC"} & set(ISO_4217_CODES)  # withdrawn
    assert parse_currency(" eur ", "currency") == "EUR"


# (arguments, label=value the message starts with, words of what is accepted)
BAD: list[tuple[dict[str, Any], str, str]] = [
    ({"price_per_kwh": -1}, "price_per_kwh=-1 is out of range", "price per kWh between 0 and"),
    ({"price_per_kwh": float("nan")}, "price_per_kwh=nan is not a finite number", "per kWh"),
    ({"price_per_kwh": "cheap"}, "price_per_kwh='cheap' is not a number", "per kWh"),
    ({"price_per_kwh": True}, "price_per_kwh=True is a boolean", "per kWh"),
    ({"price_per_kwh": 2e6}, "price_per_kwh=2000000.0 is out of range", "and 1e+06"),
    ({"wue_l_per_kwh": -0.5}, "wue_l_per_kwh=-0.5 is out of range", "L/kWh between 0 and 20"),
    ({"wue_l_per_kwh": float("inf")}, "wue_l_per_kwh=inf is not a finite number", "L/kWh"),
    (
        {"wue_l_per_kwh": 1.0, "electricity_water_l_per_kwh": -2},
        "electricity_water_l_per_kwh=-2 is out of range",
        "L/kWh between 0 and 100",
    ),
    (
        {"embodied_co2eq_kg": -5, "lifetime_years": 4},
        "embodied_co2eq_kg=-5 is out of range",
        "kg CO2eq between 0 and",
    ),
    (
        {"embodied_co2eq_kg": 500, "lifetime_years": -4},
        "lifetime_years=-4 is out of range",
        "lifetime in years between 0.1 and 30",
    ),
    (
        {"embodied_co2eq_kg": 500, "lifetime_years": 0},
        "lifetime_years=0 is out of range",
        "between 0.1 and 30",
    ),
    (
        {"embodied_co2eq_kg": 500, "lifetime_years": float("nan")},
        "lifetime_years=nan is not a finite number",
        "lifetime in years",
    ),
    ({"reserved_share": 0}, "reserved_share=0 is out of range", "share of the machine"),
    ({"reserved_share": 1.5}, "reserved_share=1.5 is out of range", "between 0 and 1"),
    (
        {"price_per_kwh": 0.2, "currency": "EUO"},
        "currency='EUO' is not an active ISO 4217 currency code (did you mean EUR",
        "codes of ISO 4217 List One",
    ),
    (
        {"price_per_kwh": 0.2, "currency": "BGN"},
        "currency='BGN' is not an active ISO 4217 currency code (BGN was withdrawn; "
        "its successor is EUR)",
        "ISO 4217",
    ),
    (
        {"price_per_kwh": 0.2, "currency": "euro"},
        "currency='euro' is not a currency code",
        "3 letters A-Z",
    ),
    ({"currency": "EUR"}, "currency='EUR' without price_per_kwh", "price per kWh"),
    ({"embodied_co2eq_kg": 1500}, "embodied_co2eq_kg=1500 without lifetime_years", "lifetime"),
    ({"lifetime_years": 4}, "lifetime_years=4 without embodied_co2eq_kg", "embodied"),
    (
        {"electricity_water_l_per_kwh": 3.1},
        "electricity_water_l_per_kwh=3.1 without wue_l_per_kwh",
        "wue_l_per_kwh=0",
    ),
]
CALLS = {
    "track": mlflow_green.track,
    "autolog": AutologConfig.build,
    "Footprint": Footprint,
}


@pytest.mark.parametrize("call", sorted(CALLS))
@pytest.mark.parametrize("case", range(len(BAD)))
def test_every_bad_value_is_refused_at_the_call(call: str, case: int) -> None:
    kwargs, start, accepted = BAD[case]
    with pytest.raises(ValueError) as info:
        CALLS[call](**kwargs)
    message = str(info.value)
    assert message.startswith(start), message
    assert accepted in message, message


@pytest.mark.parametrize("case", range(len(BAD)))
def test_a_bad_variable_is_refused_under_its_own_name(
    case: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    kwargs, start, accepted = BAD[case]
    for name, value in kwargs.items():
        monkeypatch.setenv(f"MLFLOW_GREEN_{name.upper()}", repr(value).strip("'"))
    # The first label of the message, as a variable: MLFLOW_GREEN_PRICE_PER_KWH='-1'.
    name = start.split("=", 1)[0]
    variable = f"MLFLOW_GREEN_{name.upper()}="
    for call in (mlflow_green.track, AutologConfig.build, mlflow_green.autolog):
        with pytest.raises(ValueError) as info:
            call()
        message = str(info.value)
        assert message.startswith(variable), message
        assert accepted in message, message


def test_zero_code_mode_measures_and_says_why_the_footprint_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_GREEN_PRICE_PER_KWH", "-1")
    monkeypatch.setenv("MLFLOW_GREEN_WUE_L_PER_KWH", "1.8")
    built = AutologConfig.build(unknown_location_ok=True, pue=1.2)
    footprint = built.measure.footprint
    assert footprint.refused.startswith("MLFLOW_GREEN_PRICE_PER_KWH='-1' is out of range")
    assert built.measure.pue == 1.2
    [warning] = built.warnings
    assert warning.startswith("MLFLOW_GREEN_PRICE_PER_KWH='-1'")
    assert "no cost, water or embodied emissions" in warning
    report = _plain_report(footprint=footprint)
    assert (report.cost, report.water_l, report.embodied_co2eq_kg) == (None, None, None)
    data = report.to_dict()["footprint"]
    assert data["water_l"]["method"] == f"not computed: {footprint.refused}"
    assert data["settings"]["refused"] == footprint.refused
    assert "green/water_l" not in cumulative_metrics(report)
    assert spool._report_from_dict(json.loads(report.to_json())).footprint == footprint


def test_every_setting_is_a_keyword_of_track_and_autolog() -> None:
    import inspect

    for func in (mlflow_green.track, mlflow_green.autolog):
        params = inspect.signature(func).parameters
        for name in FOOTPRINT_SETTINGS:
            assert params[name].kind is inspect.Parameter.KEYWORD_ONLY, (func, name)
            assert params[name].default is None


# -- a distributed job -----------------------------------------------------------------------


def test_a_jobs_figures_add_up_its_nodes_each_with_its_own_settings() -> None:
    base = Footprint(**SETTINGS)
    r0 = _plain_report(footprint=base)
    r1 = _plain_report(
        footprint=dataclasses.replace(base, price_per_kwh=0.5, embodied_co2eq_kg=3000.0),
        energy_j_by_device={"gpu": {}, "cpu": {"package-0": 7.2e6}, "ram": {}},
        pue=1.2,
    )
    nodes = {0: {"node": "a"}, 1: {"node": "b"}}
    reports = {
        0: contribution(r0, 0, "a", True, False),
        1: json.loads(json.dumps(contribution(r1, 1, "b", True, False))),  # through the store
    }
    job = combine(reports, nodes, 2)
    kwh_a, kwh_b = 1.0, 2.0 * 1.2
    metrics = job.metrics()
    assert metrics["green/cost"] == pytest.approx(kwh_a * 0.25 + kwh_b * 0.5)
    water = 1.0 * 1.8 + kwh_a * 3.1 + 2.0 * 1.8 + kwh_b * 3.1
    assert metrics["green/water_l"] == pytest.approx(water)
    year_share = 3600.0 / (4 * SECONDS_PER_YEAR) * 0.5
    assert metrics["green/embodied_co2eq_kg"] == pytest.approx((1500 + 3000) * year_share)
    assert job.to_dict()["nodes"]["b"]["footprint"]["cost"]["value"] == pytest.approx(1.2)
    # A node without a figure: the job's is unknown; prices in two currencies: no sum.
    plain = _plain_report()
    reports[1] = contribution(plain, 1, "b", True, False)
    assert not {"green/cost", "green/water_l"} & set(combine(reports, nodes, 2).metrics())
    dollars = dataclasses.replace(base, currency="USD")
    reports[1] = contribution(_plain_report(footprint=dollars), 1, "b", True, False)
    job = combine(reports, nodes, 2)
    assert "green/cost" not in job.metrics() and "green/water_l" in job.metrics()
