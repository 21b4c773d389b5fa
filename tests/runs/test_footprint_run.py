"""A measured run's cost, water and embodied emissions, read back from MLflow (SQLite).

On a fake RAPL tree with exact joules, a run with a price, a WUE and embodied figures
gets metrics equal to the formulas applied to its measured energy and duration, at
every flush as at its end; a run without them gets no new metric or tag; zero-code
mode with a bad footprint variable still measures the energy.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient

import mlflow_green
from mlflow_green.measure.report import J_PER_KWH
from mlflow_green.runs.autologging import autolog_from_env
from tests.measure.test_footprint import SETTINGS

PUE = 1.5
FOOTPRINT_KEYS = {"green/cost", "green/water_l", "green/embodied_co2eq_kg"}


@pytest.fixture
def client(experiment_client: MlflowClient) -> MlflowClient:
    return experiment_client


@pytest.fixture
def zones(fake_nvml: Any, fake_powercap: Any) -> Any:
    """One CPU package with DRAM on the fake RAPL tree (and no GPU)."""
    return fake_powercap.add_package(0, energy_uj=7_000_000)


def run_with_exact_joules(fake_powercap: Any, zones: Any) -> str:
    """A run that draws 36 J of CPU and 18 J of DRAM, flushed, then 24 J and 12 J more."""
    with mlflow.start_run() as run:
        fake_powercap.advance(zones.package, 36.0)
        fake_powercap.advance(zones.dram, 18.0)
        mlflow_green.flush()  # what the periodic flush logs
        fake_powercap.advance(zones.package, 24.0)
        fake_powercap.advance(zones.dram, 12.0)
    return run.info.run_id


def history(client: MlflowClient, run_id: str, key: str) -> dict[tuple[int, int], float]:
    return {(m.step, m.timestamp): m.value for m in client.get_metric_history(run_id, key)}


def test_cost_water_and_embodied_metrics_are_the_formulas_on_the_measured_run(
    client: MlflowClient, fake_powercap: Any, zones: Any
) -> None:
    mlflow_green.autolog(country="FRA", pue=PUE, flush_interval_s=86400, **SETTINGS)
    run_id = run_with_exact_joules(fake_powercap, zones)
    run = client.get_run(run_id)
    m, t = run.data.metrics, run.data.tags
    device_kwh = 90.0 / J_PER_KWH
    kwh = device_kwh * PUE
    assert m["green/energy_kwh"] == pytest.approx(kwh, rel=1e-12)
    assert m["green/cost"] == pytest.approx(kwh * 0.25, rel=1e-12)
    assert m["green/water_l"] == pytest.approx(device_kwh * 1.8 + kwh * 3.1, rel=1e-12)
    duration_s = m["green/duration_s"]
    assert duration_s > 0
    embodied = 1500.0 * duration_s / (4.0 * 365.25 * 86400) * 0.5
    assert m["green/embodied_co2eq_kg"] == pytest.approx(embodied, rel=1e-12)
    assert t["green.currency"] == "EUR"
    # Every point of each history follows from energy and duration at that point: 0 at the
    # start, the flush's (54 J so far), the end's.
    energy = history(client, run_id, "green/energy_kwh")
    durations = history(client, run_id, "green/duration_s")
    cost = history(client, run_id, "green/cost")
    water = history(client, run_id, "green/water_l")
    embodied_h = history(client, run_id, "green/embodied_co2eq_kg")
    assert set(cost) == set(water) == set(embodied_h) == set(energy) == set(durations)
    assert len(cost) == 3
    assert sorted(energy.values())[1] == pytest.approx(54.0 * PUE / J_PER_KWH, rel=1e-12)
    for point, e in energy.items():
        assert cost[point] == pytest.approx(e * 0.25, rel=1e-12, abs=0)
        assert water[point] == pytest.approx(e / PUE * 1.8 + e * 3.1, rel=1e-12, abs=0)
        share = durations[point] / (4.0 * 365.25 * 86400) * 0.5
        assert embodied_h[point] == pytest.approx(1500.0 * share, rel=1e-12, abs=0)
    # report.json: the settings, each figure and its method; the page shows them.
    folder = Path(client.download_artifacts(run_id, "green"))
    report = json.loads((folder / "report.json").read_text())
    footprint = report["footprint"]
    assert footprint["settings"] == SETTINGS
    assert footprint["cost"]["value"] == pytest.approx(m["green/cost"], rel=1e-12)
    assert footprint["cost"]["method"] == f"{kwh:.6g} kWh x 0.25 EUR/kWh (given)"
    assert footprint["water_l"]["value"] == pytest.approx(m["green/water_l"], rel=1e-12)
    assert footprint["embodied_co2eq_kg"]["value"] == pytest.approx(embodied, rel=1e-12)
    # SCI per run, (E x I + M) / R in grams: this run's CO2eq plus its embodied share.
    sci = report["sci"]
    assert sci["unit"] == "run"
    assert sci["sci_g"] == pytest.approx((m["green/co2eq_kg"] + embodied) * 1000, rel=1e-9)
    assert sci["embodied_g"] == pytest.approx(embodied * 1000, rel=1e-9)
    page = (folder / "report.html").read_text()
    assert "Footprint beyond energy" in page and "0.25 EUR/kWh (given)" in page


def test_a_run_without_footprint_settings_gets_no_new_metric_or_tag(
    client: MlflowClient, fake_powercap: Any, zones: Any
) -> None:
    mlflow_green.autolog(country="FRA", flush_interval_s=86400)
    run_id = run_with_exact_joules(fake_powercap, zones)
    run = client.get_run(run_id)
    assert {k for k in run.data.metrics if not k.startswith("green/power/")} == {
        "green/energy_kwh",
        "green/co2eq_kg",
        "green/duration_s",
        "green/energy/cpu_kwh",
        "green/energy/ram_kwh",
    }
    assert "green.currency" not in run.data.tags
    folder = Path(client.download_artifacts(run_id, "green"))
    footprint = json.loads((folder / "report.json").read_text())["footprint"]
    assert footprint["cost"] == {"value": None, "unit": "", "method": "no price_per_kwh given"}
    assert "Footprint beyond energy" not in (folder / "report.html").read_text()


def test_variables_set_the_footprint_and_a_bad_one_in_zero_code_mode_only_drops_it(
    client: MlflowClient, fake_powercap: Any, zones: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_GREEN_COUNTRY", "FRA")
    monkeypatch.setenv("MLFLOW_GREEN_FLUSH_INTERVAL_S", "86400")
    monkeypatch.setenv("MLFLOW_GREEN_PRICE_PER_KWH", "0.3")
    monkeypatch.setenv("MLFLOW_GREEN_CURRENCY", "usd")
    mlflow_green.autolog()
    run_id = run_with_exact_joules(fake_powercap, zones)
    run = client.get_run(run_id)
    m = run.data.metrics
    assert m["green/cost"] == pytest.approx(m["green/energy_kwh"] * 0.3, rel=1e-12)
    assert run.data.tags["green.currency"] == "USD"
    assert not {"green/water_l", "green/embodied_co2eq_kg"} & set(m)
    mlflow_green.autolog(disable=True)
    # Zero-code mode: a bad value is one warning; energy is measured, the footprint is not.
    monkeypatch.setenv("MLFLOW_GREEN_CURRENCY", "EUO")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        autolog_from_env()
    [warning] = [str(w.message) for w in caught if "mlflow-green" in str(w.message)]
    assert "MLFLOW_GREEN_CURRENCY='EUO' is not an active ISO 4217 currency code" in warning
    assert "did you mean EUR" in warning
    run_id = run_with_exact_joules(fake_powercap, zones)
    run = client.get_run(run_id)
    assert run.data.metrics["green/energy_kwh"] > 0
    assert not FOOTPRINT_KEYS & set(run.data.metrics)
    assert "green.currency" not in run.data.tags
    folder = Path(client.download_artifacts(run_id, "green"))
    footprint = json.loads((folder / "report.json").read_text())["footprint"]
    assert footprint["cost"]["method"].startswith("not computed: MLFLOW_GREEN_CURRENCY='EUO'")


def test_a_resumed_run_holds_the_footprint_of_all_its_sessions(
    client: MlflowClient, fake_powercap: Any, zones: Any
) -> None:
    """Cost and water add up over a resumed run's sessions, like its energy."""
    mlflow_green.autolog(country="FRA", price_per_kwh=0.25, wue_l_per_kwh=2.0)
    run_id = run_with_exact_joules(fake_powercap, zones)  # 90 J
    with mlflow.start_run(run_id):
        fake_powercap.advance(zones.package, 30.0)  # 30 J more
    m = client.get_run(run_id).data.metrics
    kwh = 120.0 / J_PER_KWH
    assert m["green/energy_kwh"] == pytest.approx(kwh, rel=1e-12)
    assert m["green/cost"] == pytest.approx(kwh * 0.25, rel=1e-12)
    assert m["green/water_l"] == pytest.approx(kwh * 2.0, rel=1e-12)
    # A session without a price: the earlier sessions' cost is not the run's total any more,
    # so the run's cost (and water) is unknown from now on: NaN, not a part as the whole.
    mlflow_green.autolog(country="FRA", wue_l_per_kwh=2.0)
    with mlflow.start_run(run_id):
        fake_powercap.advance(zones.package, 30.0)
    m = client.get_run(run_id).data.metrics
    assert m["green/energy_kwh"] == pytest.approx(150.0 / J_PER_KWH, rel=1e-12)
    assert math.isnan(m["green/cost"])
    assert m["green/water_l"] == pytest.approx(150.0 / J_PER_KWH * 2.0, rel=1e-12)


def test_a_run_resumed_in_another_currency_gets_no_cost(
    client: MlflowClient, fake_powercap: Any, zones: Any
) -> None:
    mlflow_green.autolog(country="FRA", price_per_kwh=0.25, currency="EUR")
    run_id = run_with_exact_joules(fake_powercap, zones)
    mlflow_green.autolog(country="FRA", price_per_kwh=30, currency="JPY")
    with mlflow.start_run(run_id):
        fake_powercap.advance(zones.package, 30.0)
    run = client.get_run(run_id)
    assert math.isnan(run.data.metrics["green/cost"])  # EUR + JPY is no amount
    assert run.data.tags["green.currency"] == "JPY"
    # A priced session after an unpriced one: this session's cost is not the run's.
    mlflow_green.autolog(country="FRA")
    plain = run_with_exact_joules(fake_powercap, zones)
    mlflow_green.autolog(country="FRA", price_per_kwh=0.25, currency="EUR")
    with mlflow.start_run(plain):
        fake_powercap.advance(zones.package, 30.0)
    assert math.isnan(client.get_run(plain).data.metrics["green/cost"])
