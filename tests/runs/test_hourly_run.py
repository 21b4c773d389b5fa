"""A measured run with an hourly carbon intensity: a CSV time series, or Electricity Maps.

Issue 16, must-show 2, end to end: the run's ``green/co2eq_kg`` is its counters' energy
times the intensity weighted by its own power timeline (report.json), split exactly at the
series' row boundaries; the live provider against a fake server on 127.0.0.1, with its
timeout and the labelled fall-back to the yearly figure.
"""

# ruff: noqa: F811  (the fixtures imported from the footprint and provider tests)
from __future__ import annotations

import itertools
import json
import math
import time
import warnings
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient

import mlflow_green
from mlflow_green.measure import electricitymaps as em
from mlflow_green.measure import hourly
from tests.measure.test_electricitymaps import TOKEN, fake, no_proxy_no_settings  # noqa: F401
from tests.runs.test_footprint_run import client, zones  # noqa: F401

FRA_G_PER_KWH = 56.04


@pytest.fixture(autouse=True)
def _no_history_kept() -> Iterator[None]:
    hourly.forget()
    yield
    hourly.forget()


def iso(t_s: float) -> str:
    return datetime.fromtimestamp(t_s, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def report_of(client: MlflowClient, run_id: str) -> dict[str, Any]:
    folder = Path(client.download_artifacts(run_id, "green"))
    return json.loads((folder / "report.json").read_text())


def weighted_by_timeline(report: dict[str, Any], value_at: Any) -> float:
    """The energy-weighted mean intensity over the report's timeline, each interval split
    at whole seconds (the series below changes only on a whole second)."""
    start, before, weighted, energy = report["start_time_s"], 0.0, 0.0, 0.0
    for point in report["timeline"]:
        watts = sum(v for k, v in point.items() if k.endswith("_w"))
        a, b = start + before, start + point["t_s"]
        cuts = [a, *range(math.floor(a) + 1, math.ceil(b)), b]
        for lo, hi in itertools.pairwise(cuts):
            joules = watts * (hi - lo)
            weighted += joules * value_at((lo + hi) / 2)
            energy += joules
        before = point["t_s"]
    return weighted / energy


def test_a_run_across_two_hours_of_a_series_gets_the_exact_integral(
    client: MlflowClient, fake_powercap: Any, zones: Any, tmp_path: Path
) -> None:
    boundary = math.ceil(time.time()) + 3  # the series' next "hour" begins in 2-3 s
    series = tmp_path / "intensity.csv"
    series.write_text(f"timestamp,g_per_kwh\n{iso(boundary - 3600)},100\n{iso(boundary)},400\n")
    mlflow_green.autolog(country="FRA", carbon_intensity=str(series), sample_interval_s=0.05)
    with mlflow.start_run() as run:
        fake_powercap.advance(zones.package, 36.0)  # spent in the 100 g/kWh hour
        while time.time() < boundary + 0.3:  # the wall clock is what is under test here
            time.sleep(0.05)
        fake_powercap.advance(zones.package, 72.0)  # spent in the 400 g/kWh hour
    data = client.get_run(run.info.run_id).data
    report = report_of(client, run.info.run_id)
    assert report["start_time_s"] < boundary < report["start_time_s"] + report["duration_s"]
    g = weighted_by_timeline(report, lambda t: 100.0 if t < boundary else 400.0)
    assert 100.0 < g < 400.0 and g != pytest.approx(250.0, abs=1.0)  # not the hours' average
    assert report["carbon_intensity_g_per_kwh"] == pytest.approx(g, rel=1e-9)
    assert data.metrics["green/co2eq_kg"] == pytest.approx(
        data.metrics["green/energy_kwh"] * g / 1000, rel=1e-9
    )
    source = data.tags["green.carbon_intensity_source"]
    assert source == f"hourly series {series} (100% of the energy)", source


def _provider(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv(em.TOKEN_ENV, TOKEN)
    monkeypatch.setenv(em.URL_ENV, url)


def test_the_live_provider_weights_its_history_by_the_run(
    client: MlflowClient, fake_powercap: Any, zones: Any, fake: Any, monkeypatch: Any
) -> None:
    hour = math.floor(time.time() / 3600) * 3600
    rows = [{"carbonIntensity": 300, "datetime": iso(hour + 3600 * k)} for k in (-1, 0, 1)]
    fake.answer({"zone": "FR", "history": rows})
    _provider(monkeypatch, fake.url)
    mlflow_green.autolog(country="FRA", carbon_intensity="electricitymaps:FR")
    with mlflow.start_run() as run:
        fake_powercap.advance(zones.package, 36.0)
    data = client.get_run(run.info.run_id).data
    assert data.metrics["green/co2eq_kg"] == pytest.approx(
        data.metrics["green/energy_kwh"] * 300 / 1000, rel=1e-9
    )
    assert data.tags["green.carbon_intensity_source"].startswith(
        "hourly series electricitymaps FR (100% of the energy)"
    )
    assert fake.requests and all(r["headers"]["auth-token"] == TOKEN for r in fake.requests)
    assert len(fake.requests) == 1  # the run's start, flushes and end share one fetch


def test_a_provider_that_does_not_answer_falls_back_to_the_yearly_figure_labelled(
    client: MlflowClient, fake_powercap: Any, zones: Any, fake: Any, monkeypatch: Any
) -> None:
    fake.hang = True
    _provider(monkeypatch, fake.url)
    mlflow_green.autolog(country="FRA", carbon_intensity="electricitymaps:FR")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with mlflow.start_run() as run:
            fake_powercap.advance(zones.package, 36.0)
    ours = [str(w.message) for w in caught if "Electricity Maps zone FR" in str(w.message)]
    assert len(ours) == 1 and "timed out after 5 s" in ours[0], ours
    data = client.get_run(run.info.run_id).data
    assert data.metrics["green/co2eq_kg"] == pytest.approx(
        data.metrics["green/energy_kwh"] * FRA_G_PER_KWH / 1000, rel=1e-3
    )
    source = data.tags["green.carbon_intensity_source"]
    assert source.startswith("electricitymaps FR unavailable (timed out after 5 s); ")
    assert source.endswith("codecarbon energy mix 56.04 g/kWh used"), source
    assert len(fake.requests) == 1  # one wait, then the failure is remembered


def test_a_bad_series_is_an_error_at_the_call(client: MlflowClient, tmp_path: Path) -> None:
    series = tmp_path / "gaps.csv"
    series.write_text(
        "timestamp,g_per_kwh\n2026-01-01T00:00Z,100\n2026-01-01T01:00Z,120\n2026-01-01T03:00Z,90\n"
    )
    with pytest.raises(ValueError, match=r"carbon_intensity=.*gaps\.csv"):
        mlflow_green.autolog(carbon_intensity=str(series))
    with pytest.raises(ValueError, match="MLFLOW_GREEN_ELECTRICITYMAPS_TOKEN"):
        mlflow_green.autolog(carbon_intensity="electricitymaps:FR")


def test_zero_code_with_a_bad_series_uses_the_locations_yearly_figure(
    client: MlflowClient, fake_powercap: Any, zones: Any, monkeypatch: Any, tmp_path: Path
) -> None:
    from mlflow_green.runs.autologging import autolog_from_env

    missing = tmp_path / "missing.csv"
    monkeypatch.setenv("MLFLOW_GREEN_COUNTRY", "FRA")
    monkeypatch.setenv("MLFLOW_GREEN_CARBON_INTENSITY", str(missing))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        autolog_from_env()
    [warning] = [str(w.message) for w in caught if "mlflow-green" in str(w.message)]
    assert f"MLFLOW_GREEN_CARBON_INTENSITY={str(missing)!r} is not a number" in warning
    assert "CO2 uses the location's yearly figure instead" in warning
    with mlflow.start_run() as run:
        fake_powercap.advance(zones.package, 36.0)
    data = client.get_run(run.info.run_id).data
    assert data.tags["green.carbon_intensity_source"] == (
        "codecarbon energy mix (MLFLOW_GREEN_CARBON_INTENSITY not used: see the run's warning)"
    )
    assert data.metrics["green/co2eq_kg"] == pytest.approx(
        data.metrics["green/energy_kwh"] * FRA_G_PER_KWH / 1000, rel=1e-3
    )
