"""The callbacks' core on a plain training loop: per-epoch energy, forecast, budget stop.

Exact figures come from the fake RAPL tree (tests/fakes/powercap.py): each "epoch"
advances the package and DRAM counters by known joules, so the logged energy and
the forecast are known to the joule.
"""

from __future__ import annotations

import warnings

import mlflow
import pytest
from mlflow import MlflowClient

import mlflow_green
from mlflow_green.callbacks import TrainingEnergy
from tests.callbacks.conftest import history

J_PER_KWH = 3.6e6
EPOCH_J = 36.0  # 30 J package + 6 J DRAM per epoch
EPOCH_KWH = EPOCH_J / J_PER_KWH


def train(tree, zones, energy: TrainingEnergy, epochs: int, **begin) -> int:
    """A plain loop: each epoch spends EPOCH_J on the fake counters. Returns epochs run."""
    energy.begin(total_epochs=epochs, **begin)
    done = 0
    for epoch in range(epochs):
        tree.advance(zones.package, 30.0)
        tree.advance(zones.dram, 6.0)
        done += 1
        if energy.epoch_end(epoch):
            break
    energy.end()
    return done


@pytest.fixture
def rapl(fake_powercap, monkeypatch):
    monkeypatch.setenv("MLFLOW_GREEN_CARBON_INTENSITY", "500")
    zones = fake_powercap.add_package(0, energy_uj=1_000_000)
    return fake_powercap, zones


def test_no_budget_runs_to_the_end_and_logs_each_epoch_and_the_forecast(sqlite_uri, rapl) -> None:
    tree, zones = rapl
    energy = TrainingEnergy()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with mlflow.start_run() as run:
            assert train(tree, zones, energy, 4) == 4
    assert [str(w.message) for w in caught if "mlflow-green" in str(w.message)] == []
    run_id = run.info.run_id
    assert history(run_id, "green/epoch_kwh") == [(e, pytest.approx(EPOCH_KWH)) for e in range(4)]
    assert history(run_id, "green/projected_kwh") == [
        (e, pytest.approx(4 * EPOCH_KWH)) for e in range(4)
    ]
    assert history(run_id, "green/projected_co2eq_kg") == [
        (e, pytest.approx(4 * EPOCH_KWH * 0.5)) for e in range(4)
    ]
    data = MlflowClient().get_run(run_id)
    assert data.info.status == "FINISHED"
    assert "green.stopped_by_budget" not in data.data.tags
    assert data.data.tags["green.projection_method"].startswith("linear:")
    assert energy.stop_reason is None and len(energy.history) == 4


def test_the_forecast_stops_before_the_budget_is_spent(sqlite_uri, rapl) -> None:
    tree, zones = rapl
    budget = 5 * EPOCH_KWH  # 10 epochs would spend 10 x EPOCH_KWH
    energy = TrainingEnergy(max_kwh=budget)
    expected = "stopping the training at epoch 0: projected energy"
    with pytest.warns(UserWarning, match=expected), mlflow.start_run() as run:
        assert train(tree, zones, energy, 10) == 1
    tags = MlflowClient().get_run(run.info.run_id).data.tags
    reason = tags["green.stopped_by_budget"]
    assert reason == energy.stop_reason
    assert reason.startswith("epoch 0: projected energy at the end of training 0.0001 kWh")
    assert "(10% done) exceeds max_kwh = 5e-05 kWh" in reason
    assert history(run.info.run_id, "green/epoch_kwh") == [(0, pytest.approx(EPOCH_KWH))]


def test_the_co2_budget_stops_on_the_energy_spent_so_far(sqlite_uri, rapl) -> None:
    tree, zones = rapl
    # Over after the third epoch (3 x 36 J x 0.5 kg/kWh); the forecast is unknown without a length.
    energy = TrainingEnergy(max_co2eq_kg=2.5 * EPOCH_KWH * 0.5)
    with pytest.warns(UserWarning, match="CO2eq so far"), mlflow.start_run() as run:
        energy.begin()
        for epoch in range(10):
            tree.advance(zones.package, EPOCH_J)
            if energy.epoch_end(epoch):
                break
        energy.end()
    assert epoch == 2
    assert history(run.info.run_id, "green/projected_kwh") == []
    assert (
        MlflowClient()
        .get_run(run.info.run_id)
        .data.tags["green.stopped_by_budget"]
        .startswith("epoch 2: CO2eq so far")
    )


def test_with_autolog_the_forecast_is_the_runs_energy_and_the_budget_the_gates(
    sqlite_uri, rapl
) -> None:
    tree, zones = rapl
    mlflow_green.autolog(log_artifacts=False)
    with mlflow.start_run() as run:
        tree.advance(zones.package, 360.0)  # data preparation: 10 epochs' worth, before training
        energy = TrainingEnergy()
        assert train(tree, zones, energy, 5) == 5
    run_id = run.info.run_id
    before_kwh = 360.0 / J_PER_KWH
    assert energy.history[0].total_kwh == pytest.approx(before_kwh + EPOCH_KWH)
    assert history(run_id, "green/projected_kwh")[0] == (
        0,
        pytest.approx(before_kwh + 5 * EPOCH_KWH),
    )
    assert (
        "the run's energy (autolog)"
        in MlflowClient().get_run(run_id).data.tags["green.projection_method"]
    )


def test_fraction_done_overrides_the_epoch_count(sqlite_uri, rapl) -> None:
    tree, zones = rapl
    energy = TrainingEnergy()
    with mlflow.start_run() as run:
        energy.begin(total_epochs=100)
        tree.advance(zones.package, EPOCH_J)
        energy.epoch_end(0, fraction_done=0.25)  # e.g. steps done / total steps
        energy.end()
    assert history(run.info.run_id, "green/projected_kwh") == [(0, pytest.approx(4 * EPOCH_KWH))]


def test_no_run_measures_and_stops_but_logs_nothing(sqlite_uri, rapl) -> None:
    tree, zones = rapl
    energy = TrainingEnergy(max_kwh=EPOCH_KWH / 2)
    with (
        pytest.warns(RuntimeWarning, match="no MLflow run"),
        pytest.warns(UserWarning, match="stopping the training at epoch 0"),
    ):
        assert train(tree, zones, energy, 3) == 1
    assert energy.stop_reason.startswith("epoch 0: energy so far")
    assert MlflowClient().search_experiments()[0].name == "Default"
    assert MlflowClient().search_runs(["0"]) == []


def test_a_named_run_is_used_without_an_active_run(sqlite_uri, rapl) -> None:
    tree, zones = rapl
    run_id = MlflowClient().create_run("0").info.run_id
    energy = TrainingEnergy(run_id=run_id)
    assert train(tree, zones, energy, 2) == 2
    assert [s for s, _ in history(run_id, "green/epoch_kwh")] == [0, 1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_kwh": -1}, "max_kwh must be a non-negative finite number, got -1"),
        ({"max_co2eq_kg": "lots"}, "max_co2eq_kg must be a number, got 'lots'"),
        ({"max_kwh": float("nan")}, "max_kwh must be a non-negative finite number"),
        ({"registered_model_name": ""}, "registered_model_name must be the name"),
        ({"run_id": 7}, "run_id must be an MLflow run id"),
    ],
)
def test_bad_arguments_are_errors_at_the_call(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        TrainingEnergy(**kwargs)


def test_a_failing_meter_costs_one_warning_and_never_stops_training(
    sqlite_uri, rapl, monkeypatch
) -> None:
    energy = TrainingEnergy(max_kwh=0.0)
    with mlflow.start_run():
        energy.begin(total_epochs=3)

        def broken() -> None:
            raise OSError("meter gone")

        monkeypatch.setattr(energy._meter, "read", broken)
        with pytest.warns(RuntimeWarning, match="training goes on") as caught:
            stops = [energy.epoch_end(e) for e in range(3)]
        energy.end()
    assert stops == [False, False, False]
    assert len([w for w in caught if "training goes on" in str(w.message)]) == 1


def test_the_callbacks_package_imports_no_framework() -> None:
    import subprocess
    import sys

    code = (
        "import sys, mlflow_green.callbacks as c; c.TrainingEnergy; "
        "print(sorted(m for m in ('lightning', 'pytorch_lightning', 'transformers', 'keras', "
        "'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_tracking_server_that_is_down_costs_one_warning_and_the_budget_still_stops(
    sqlite_uri, rapl
) -> None:
    from tests.mlflow_server import free_port

    tree, zones = rapl
    client = MlflowClient(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    energy = TrainingEnergy(max_kwh=2.5 * EPOCH_KWH, run_id="0123456789abcdef")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert train(tree, zones, energy, 10, client=client) == 1
    messages = [str(w.message) for w in caught if "mlflow-green" in str(w.message)]
    assert len([m for m in messages if "not logged yet" in m]) == 1
    assert "cannot connect to 127.0.0.1" in " ".join(messages)
    assert any("stopping the training at epoch 0" in m for m in messages)


def test_a_resumed_training_forecasts_only_what_is_left(sqlite_uri, rapl) -> None:
    # Resumed at epoch 5 of 10 (Keras' initial_epoch=5): five epochs are left, not ten.
    tree, zones = rapl
    energy = TrainingEnergy()
    with mlflow.start_run() as run:
        energy.begin(total_epochs=10)
        for epoch in range(5, 10):
            tree.advance(zones.package, 30.0)
            tree.advance(zones.dram, 6.0)
            energy.epoch_end(epoch)
        energy.end()
    projected = history(run.info.run_id, "green/projected_kwh")
    assert projected == [(e, pytest.approx(5 * EPOCH_KWH)) for e in range(5, 10)]
    # The same with steps: 40% done before this session, a fifth of the rest per epoch.
    energy = TrainingEnergy()
    energy.begin(done_before=0.4, log=False)
    for i in range(1, 6):
        tree.advance(zones.package, EPOCH_J)
        energy.epoch_end(i, fraction_done=0.4 + 0.12 * i)
    energy.end()
    assert [row.projected_kwh for row in energy.history] == pytest.approx([5 * EPOCH_KWH] * 5)


# -- found by the hostile review of issue 15 ----------------------------------------------------


def test_a_registry_that_is_down_is_probed_not_retried_for_minutes(
    sqlite_uri, rapl, monkeypatch
) -> None:
    from tests.mlflow_server import free_port

    # The tracking store answers (SQLite); the registry MLflow resolves beside it does not.
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", f"http://127.0.0.1:{free_port()}")
    tree, zones = rapl
    energy = TrainingEnergy(max_kwh=2.5 * EPOCH_KWH, registered_model_name="m")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with mlflow.start_run():
            assert train(tree, zones, energy, 10) == 1  # the budget given still applies
    messages = [str(w.message) for w in caught if "mlflow-green" in str(w.message)]
    assert any("could not read the budget of registered model 'm'" in m for m in messages)
    assert any("cannot connect to 127.0.0.1" in m for m in messages), messages


def test_a_co2_budget_that_cannot_be_applied_says_so_once(sqlite_uri, rapl, monkeypatch) -> None:
    # A bad country without autolog: the CO2eq is unknown, the energy budget still applies.
    tree, zones = rapl
    monkeypatch.delenv("MLFLOW_GREEN_CARBON_INTENSITY")
    monkeypatch.setenv("MLFLOW_GREEN_COUNTRY", "XXQ")
    energy = TrainingEnergy(max_co2eq_kg=1e-15, max_kwh=2.5 * EPOCH_KWH)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with mlflow.start_run():
            assert train(tree, zones, energy, 10) == 1
    messages = [str(w.message) for w in caught if "mlflow-green" in str(w.message)]
    assert any("MLFLOW_GREEN_COUNTRY='XXQ'" in m for m in messages), messages
    unknown = [m for m in messages if "cannot be applied: the carbon intensity is unknown" in m]
    assert len(unknown) == 1 and "max_co2eq_kg = 1e-15 kg" in unknown[0]
    assert energy.stop_reason is not None and "exceeds max_kwh" in energy.stop_reason


def test_epochs_run_after_a_stop_request_are_still_logged(sqlite_uri, rapl) -> None:
    # Lightning's min_epochs ignores should_stop: the epochs it runs anyway are logged.
    tree, zones = rapl
    energy = TrainingEnergy(max_kwh=1e-15)
    with pytest.warns(UserWarning, match="at epoch 0"), mlflow.start_run() as run:
        energy.begin(total_epochs=3)
        stops = []
        for epoch in range(3):
            tree.advance(zones.package, 30.0)
            tree.advance(zones.dram, 6.0)
            stops.append(energy.epoch_end(epoch))
        energy.end()
    assert stops == [True, True, True]
    assert history(run.info.run_id, "green/epoch_kwh") == [
        (e, pytest.approx(EPOCH_KWH)) for e in range(3)
    ]
    tags = MlflowClient().get_run(run.info.run_id).data.tags
    assert tags["green.stopped_by_budget"].startswith("epoch 0:")


def test_a_training_that_raised_has_its_window_closed_by_the_next_begin(sqlite_uri, rapl) -> None:
    from mlflow_green.measure import monitor

    tree, zones = rapl
    energy = TrainingEnergy()
    for _ in range(3):  # HF and Keras call no end hook after an exception
        energy.begin(total_epochs=3, log=False)
        tree.advance(zones.package, 30.0)
    energy.end()
    assert monitor.get_monitor()._windows == {}  # no public count of open windows


def test_a_training_resumed_in_the_same_run_is_budgeted_from_the_runs_epochs(
    sqlite_uri, rapl
) -> None:
    tree, zones = rapl
    with mlflow.start_run() as run:
        assert train(tree, zones, TrainingEnergy(), 3) == 3  # 3 x EPOCH_KWH, no budget
    # Resumed (epochs 3-5 of 6) with a budget of 4 epochs: the run already spent 3.
    energy = TrainingEnergy(max_kwh=4.5 * EPOCH_KWH)
    with pytest.warns(UserWarning, match="at epoch 3"), mlflow.start_run(run.info.run_id):
        energy.begin(total_epochs=6)
        for epoch in range(3, 6):
            tree.advance(zones.package, 30.0)
            tree.advance(zones.dram, 6.0)
            if energy.epoch_end(epoch):
                break
        energy.end()
    # Epoch 3: 4 epochs so far, forecast 4 + 1 x 2 = 6 > 4.5: stopped at once.
    assert energy.history[0].total_kwh == pytest.approx(4 * EPOCH_KWH)
    assert energy.history[0].projected_kwh == pytest.approx(6 * EPOCH_KWH)
