"""mlflow_green.phase(): energy of lifecycle phases inside a run (real MLflow, SQLite)."""

from __future__ import annotations

import time

import mlflow
import pytest
from mlflow import MlflowClient

import mlflow_green

J_PER_KWH = 3.6e6


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sum(i * i for i in range(2000))


def test_phases_repeat_summed_nested_and_pue_applied(sqlite_uri) -> None:
    mlflow_green.autolog(country="FRA", pue=1.5, log_artifacts=False)
    with mlflow.start_run() as run:
        with mlflow_green.phase("prep") as first:
            busy(0.2)
        with mlflow_green.phase("train") as train:
            with mlflow_green.phase("inner") as inner:
                busy(0.2)
            busy(0.1)
        with mlflow_green.phase("prep") as second:
            busy(0.2)
    metrics = MlflowClient().get_run(run.info.run_id).data.metrics
    prep_j = first.report.device_energy_j + second.report.device_energy_j
    assert metrics["green/phase/prep_kwh"] == pytest.approx(prep_j * 1.5 / J_PER_KWH, rel=1e-12)
    assert metrics["green/phase/train_kwh"] == pytest.approx(
        train.report.device_energy_j * 1.5 / J_PER_KWH, rel=1e-12
    )
    assert 0 < metrics["green/phase/inner_kwh"] <= metrics["green/phase/train_kwh"]
    phases_kwh = metrics["green/phase/prep_kwh"] + metrics["green/phase/train_kwh"]
    assert phases_kwh <= metrics["green/energy_kwh"]
    assert inner.report.duration_s <= train.report.duration_s


def test_phase_in_a_run_without_autolog_logs_its_own_energy(sqlite_uri) -> None:
    with mlflow.start_run() as run, mlflow_green.phase("evaluate") as phase:
        busy(0.1)
    metrics = MlflowClient().get_run(run.info.run_id).data.metrics
    assert metrics["green/phase/evaluate_kwh"] == pytest.approx(
        phase.report.device_energy_j / J_PER_KWH, rel=1e-12
    )
    assert "green/energy_kwh" not in metrics  # no autolog: only the phase was asked for


def test_a_repeated_phase_in_a_run_without_autolog_is_summed(sqlite_uri) -> None:
    with mlflow.start_run() as run:
        with mlflow_green.phase("train") as first:
            busy(0.1)
        with mlflow_green.phase("train") as second:
            busy(0.1)
    metrics = MlflowClient().get_run(run.info.run_id).data.metrics
    total_j = first.report.device_energy_j + second.report.device_energy_j
    assert metrics["green/phase/train_kwh"] == pytest.approx(total_j / J_PER_KWH, rel=1e-12)


def test_phase_without_a_run_measures_and_warns(sqlite_uri) -> None:
    with pytest.warns(UserWarning, match="phase 'export' has no MLflow run"):
        phase = mlflow_green.phase("export")
    with phase:
        busy(0.05)
    assert phase.report is not None and phase.report.device_energy_j > 0


def test_exception_in_a_phase_is_unchanged_and_the_phase_still_logged(sqlite_uri) -> None:
    mlflow_green.autolog(country="FRA", log_artifacts=False)
    error = KeyError("boom")
    with pytest.raises(KeyError) as info, mlflow.start_run() as run, mlflow_green.phase("train"):
        busy(0.05)
        raise error
    assert info.value is error
    client = MlflowClient()
    assert client.get_run(run.info.run_id).info.status == "FAILED"
    assert client.get_run(run.info.run_id).data.metrics["green/phase/train_kwh"] > 0


@pytest.mark.parametrize("name", ["a/b", "", "train!", 3])
def test_invalid_phase_name(name) -> None:
    with pytest.raises(ValueError, match="phase name"):
        mlflow_green.phase(name)


def test_phase_attaches_to_the_only_run_autolog_measures_when_no_run_is_active(sqlite_uri) -> None:
    # As Lightning's MLFlowLogger does: the run is created through MlflowClient, never active.
    mlflow_green.autolog(log_artifacts=False)
    client = MlflowClient()
    run_id = client.create_run("0").info.run_id
    assert mlflow.active_run() is None
    with mlflow_green.phase("train") as train:
        busy(0.1)
    client.set_terminated(run_id)
    metrics = client.get_run(run_id).data.metrics
    assert metrics["green/phase/train_kwh"] == pytest.approx(
        train.report.device_energy_j / J_PER_KWH, rel=1e-12
    )


def test_phase_with_two_measured_runs_and_none_active_logs_nothing_and_says_so(sqlite_uri) -> None:
    mlflow_green.autolog(log_artifacts=False)
    client = MlflowClient()
    runs = [client.create_run("0").info.run_id for _ in range(2)]
    expected = "phase 'train' has no MLflow run .* pass run_id="
    with pytest.warns(UserWarning, match=expected), mlflow_green.phase("train"):
        busy(0.05)
    for run_id in runs:
        client.set_terminated(run_id)
        assert "green/phase/train_kwh" not in client.get_run(run_id).data.metrics


def test_phase_run_id_names_a_run_autolog_does_not_measure(sqlite_uri) -> None:
    client = MlflowClient()
    run_id = client.create_run("0").info.run_id
    with mlflow_green.phase("evaluate", run_id=run_id) as evaluate:
        busy(0.05)
    assert client.get_run(run_id).data.metrics["green/phase/evaluate_kwh"] == pytest.approx(
        evaluate.report.device_energy_j / J_PER_KWH, rel=1e-12
    )
    with pytest.raises(ValueError, match="phase run_id 5 is invalid"):
        mlflow_green.phase("x", run_id=5)
