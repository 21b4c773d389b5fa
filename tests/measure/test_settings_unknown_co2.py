"""A bad location in zero-code mode: energy is measured, CO2 is unknown, and says why.

Zero-code mode (``MLFLOW_GREEN_AUTOLOG=true``) has no caller to raise to, and energy
does not depend on the grid: ``AutologConfig.build(unknown_location_ok=True)`` turns a
bad location or intensity into an unknown intensity and one warning. Explicit
``track()``/``autolog()`` calls still raise. The report then has no CO2 anywhere:
no ``green/co2eq_kg`` metric, ``null`` in report.json, "unknown" in tags and text.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, RunTag

import mlflow_green
from mlflow_green.distributed.combine import combine, contribution
from mlflow_green.measure.carbon import CarbonIntensity
from mlflow_green.measure.config import AutologConfig, MeasureConfig
from mlflow_green.measure.report import J_PER_KWH, EnergyReport
from mlflow_green.measure.tracker import Tracker
from mlflow_green.registry.rule import BUDGET_CO2EQ_TAG, BUDGET_KWH_TAG, evaluate
from mlflow_green.runs import spool
from mlflow_green.runs.artifacts import write_artifacts
from mlflow_green.runs.names import cumulative_metrics, final_metrics, tags, timeline_metrics
from tests.mlflow_server import sqlite_db_copy

WHY = "MLFLOW_GREEN_COUNTRY='FRQ' is not a known country code"

pytestmark = pytest.mark.usefixtures("no_green_environment")


autolog_config = AutologConfig.build


# Bad location settings (variable -> value), and the variable the reason must name.
BAD_LOCATIONS: dict[str, tuple[dict[str, str], str]] = {
    "country": ({"COUNTRY": "FRQ"}, "MLFLOW_GREEN_COUNTRY='FRQ'"),
    "region": ({"COUNTRY": "USA", "REGION": "atlantis"}, "MLFLOW_GREEN_REGION='atlantis'"),
    "cloud": (
        {"CLOUD_PROVIDER": "aws", "CLOUD_REGION": "us-east-1"},
        "MLFLOW_GREEN_CLOUD_PROVIDER='aws'",
    ),
    "lonely-region": ({"REGION": "texas"}, "MLFLOW_GREEN_REGION='texas'"),
    "intensity-not-a-number": ({"CARBON_INTENSITY": "lots"}, "MLFLOW_GREEN_CARBON_INTENSITY"),
    "intensity-out-of-range": (
        {"COUNTRY": "FRA", "CARBON_INTENSITY": "5000"},
        "MLFLOW_GREEN_CARBON_INTENSITY='5000'",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_LOCATIONS))
def test_a_bad_location_is_an_unknown_intensity_only_when_asked(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    variables, named = BAD_LOCATIONS[case]
    for name, value in variables.items():
        monkeypatch.setenv(f"MLFLOW_GREEN_{name}", value)
    built = autolog_config(unknown_location_ok=True, pue=1.2)
    intensity = built.measure.intensity
    assert intensity.g_per_kwh is None
    assert intensity.source.startswith(f"unknown: {named}"), intensity.source
    assert built.measure.pue == 1.2  # the other settings are as given
    [warning] = built.warnings  # one message, for one warning
    assert warning.startswith(named) and "CO2 is unknown" in warning
    # Explicit calls still refuse, naming the variable.
    for call in (autolog_config, mlflow_green.track):
        with pytest.raises(ValueError) as info:
            call()
        assert str(info.value).startswith(named)


def test_a_valid_intensity_of_its_own_survives_a_bad_country(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_GREEN_COUNTRY", "FRQ")
    monkeypatch.setenv("MLFLOW_GREEN_CARBON_INTENSITY", "50")
    built = autolog_config(unknown_location_ok=True)
    intensity = built.measure.intensity
    assert (intensity.g_per_kwh, intensity.source) == (50.0, "user-supplied")
    assert intensity.country is None
    [warning] = built.warnings
    assert warning.startswith(WHY) and "MLFLOW_GREEN_CARBON_INTENSITY" in warning


def test_other_bad_settings_are_still_refused_in_zero_code_mode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # PUE and scope change the energy figures themselves: no silent default for them.
    monkeypatch.setenv("MLFLOW_GREEN_PUE", "30")
    with pytest.raises(ValueError, match=r"^MLFLOW_GREEN_PUE='30' is out of range"):
        autolog_config(unknown_location_ok=True)


def unknown_config(pue: float = 1.5) -> MeasureConfig:
    """What ``AutologConfig.build(unknown_location_ok=True)`` gives for ``COUNTRY=FRQ``."""
    return MeasureConfig(CarbonIntensity(None, f"unknown: {WHY} ..."), pue=pue)


def measured_report(fake_powercap: Any, config: MeasureConfig) -> EnergyReport:
    """36 J of CPU and 18 J of DRAM, measured through the real monitor on fake counters."""
    zones = fake_powercap.add_package(0, energy_uj=7_000_000)
    tracker = Tracker("unknown-co2", config).start()
    fake_powercap.advance(zones.package, 36.0)
    fake_powercap.advance(zones.dram, 18.0)
    return tracker.stop()


def test_an_unknown_intensity_measures_energy_and_leaves_co2_unknown_everywhere(
    fake_nvml: Any, fake_powercap: Any, tmp_path: Path
) -> None:
    report = measured_report(fake_powercap, unknown_config(pue=1.5))
    assert report.energy_j_by_domain == {"gpu": 0.0, "cpu": 36.0, "ram": 18.0}
    assert report.energy_kwh == pytest.approx(54.0 * 1.5 / J_PER_KWH, rel=1e-12)
    assert report.co2eq_kg is None and report.carbon_intensity_g_per_kwh is None
    # Metrics: energy yes, emissions no (no value is better than a made-up one).
    summary = final_metrics(report)
    assert "green/co2eq_kg" not in summary
    assert summary["green/energy_kwh"] == report.energy_kwh
    assert {"green/duration_s", "green/energy/cpu_kwh", "green/energy/ram_kwh"} <= set(summary)
    assert cumulative_metrics(report) == {"green/energy_kwh": report.energy_kwh}
    # Tags: "unknown", and the source says why.
    green_tags = tags(report)
    assert green_tags["green.carbon_intensity_g_per_kwh"] == "unknown"
    assert green_tags["green.carbon_intensity_source"].startswith(f"unknown: {WHY}")
    assert green_tags["green.country"] == "unknown"
    # Text, JSON, artifacts.
    assert "unknown kg CO2eq" in str(report) and "unknown g/kWh" in str(report)
    data = json.loads(report.to_json())
    assert data["co2eq_kg"] is None and data["carbon_intensity_g_per_kwh"] is None
    assert data["energy_kwh"] == report.energy_kwh
    paths = write_artifacts(report, str(tmp_path))
    names = ["report.json", "timeline.csv", "report.html", "power.png"]
    assert [Path(p).name for p in paths] == names
    assert json.loads(Path(paths[0]).read_text())["co2eq_kg"] is None
    assert Path(paths[3]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(report.timeline_frame().columns) == ["t_s", "gpu_w", "cpu_w", "ram_w"]
    # A spooled report (JSON) comes back unknown, not zero.
    back = spool._report_from_dict(json.loads(report.to_json()))
    assert back.co2eq_kg is None and "green/co2eq_kg" not in final_metrics(back)


def test_an_unknown_intensity_on_a_real_run_fails_a_co2_budget_closed(
    fake_nvml: Any, fake_powercap: Any, tmp_path: Path
) -> None:
    report = measured_report(fake_powercap, unknown_config())
    uri = f"sqlite:///{sqlite_db_copy(tmp_path / 'mlflow.db')}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("unknown-co2", (tmp_path / "art").as_uri())
    run_id = client.create_run(experiment_id).info.run_id
    # Logged as the run hooks log a run's end: one batch, then the artifacts.
    now_ms = int((report.start_time_s + report.duration_s) * 1000)
    metrics = [Metric(k, v, now_ms, 0) for k, v in final_metrics(report).items()]
    metrics += [Metric(k, v, ts, step) for k, v, step, ts in timeline_metrics(report)]
    client.log_batch(run_id, metrics=metrics, tags=[RunTag(k, v) for k, v in tags(report).items()])
    folder = tmp_path / "green"
    folder.mkdir()
    write_artifacts(report, str(folder))
    client.log_artifacts(run_id, str(folder), "green")
    client.set_terminated(run_id)

    run = client.get_run(run_id)
    assert run.data.metrics["green/energy_kwh"] == pytest.approx(report.energy_kwh)
    assert "green/co2eq_kg" not in run.data.metrics
    assert run.data.tags["green.carbon_intensity_g_per_kwh"] == "unknown"
    assert run.data.tags["green.carbon_intensity_source"].startswith(f"unknown: {WHY}")
    local = client.download_artifacts(run_id, "green/report.json", str(tmp_path / "down"))
    assert json.loads(Path(local).read_text())["co2eq_kg"] is None
    # The registry's rule: energy is known and within budget, emissions unknown (fail closed).
    budgets = {BUDGET_KWH_TAG: "1", BUDGET_CO2EQ_TAG: "1"}
    check = evaluate("model", 1, budgets, run_id, run.data.metrics)
    assert not check.passed and check.co2eq_kg is None
    assert "emissions unknown" in check.reason
    assert check.energy_kwh == pytest.approx(report.energy_kwh)
    assert evaluate("model", 1, {BUDGET_KWH_TAG: "1"}, run_id, run.data.metrics).passed


def test_a_job_with_a_node_of_unknown_intensity_has_unknown_co2(
    fake_nvml: Any, fake_powercap: Any
) -> None:
    unknown = measured_report(fake_powercap, unknown_config(pue=1.0))
    known = dataclasses.replace(unknown, carbon_intensity_g_per_kwh=100.0)
    nodes = {0: {"node": "a", "claims": []}, 1: {"node": "b", "claims": []}}
    # Sent through the job's store as JSON: null on the wire.
    wire = {
        0: json.loads(json.dumps(contribution(known, 0, "a", True, False))),
        1: json.loads(json.dumps(contribution(unknown, 1, "b", True, False))),
    }
    job = combine(wire, nodes, world_size=2)
    assert job.energy_kwh == pytest.approx(2 * unknown.energy_kwh)
    assert job.nodes["a"].co2eq_kg == pytest.approx(known.energy_kwh * 100.0 / 1000)
    assert job.nodes["b"].co2eq_kg is None
    assert job.co2eq_kg is None  # a partial sum would pass for the whole job's
    assert "green/co2eq_kg" not in job.metrics()
    assert job.metrics()["green/energy_kwh"] == job.energy_kwh
    assert json.loads(json.dumps(job.to_dict()))["co2eq_kg"] is None
    both_known = combine({0: wire[0]}, {0: nodes[0]}, world_size=1)
    assert both_known.co2eq_kg == pytest.approx(job.nodes["a"].co2eq_kg)
