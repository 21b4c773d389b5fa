"""``registered_model_name=``: a training reads its budget from the registry (SQLite, real server).

A plain training loop on the fake RAPL tree, so that the energy of each epoch is
exact (36 J = 1e-5 kWh) and the stop epoch is known.
"""

from __future__ import annotations

import uuid

import mlflow
import pytest
from mlflow import MlflowClient

import mlflow_green
from mlflow_green.callbacks import TrainingEnergy
from tests.mlflow_server import server_fixture

EPOCH_KWH = 36.0 / 3.6e6
mlflow_server = server_fixture()


@pytest.fixture
def rapl(fake_powercap, monkeypatch):
    monkeypatch.setenv("MLFLOW_GREEN_CARBON_INTENSITY", "500")
    return fake_powercap, fake_powercap.add_package(0, energy_uj=1_000_000, dram=False)


@pytest.fixture(params=["sqlite", "server"])
def store(request, sqlite_uri) -> str:
    """The tracking (and registry) URI: the test's SQLite file, or a real ``mlflow server``."""
    if request.param == "server":
        uri = request.getfixturevalue("mlflow_server")
        mlflow.set_tracking_uri(uri)
        return uri
    return sqlite_uri


def model_with_budget(**budget: float) -> str:
    name = f"model-{uuid.uuid4().hex[:8]}"
    MlflowClient().create_registered_model(name)
    if budget:
        mlflow_green.set_budget(name, **budget)
    return name


def train(rapl, energy: TrainingEnergy, epochs: int = 10) -> int:
    tree, zones = rapl
    with mlflow.start_run():
        energy.begin(total_epochs=epochs)
        for epoch in range(epochs):
            tree.advance(zones.package, 36.0)
            if energy.epoch_end(epoch):
                break
        energy.end()
    return epoch + 1


def test_the_registry_budget_stops_the_training(store, rapl) -> None:
    name = model_with_budget(max_kwh=4.5 * EPOCH_KWH)  # the 5th epoch would pass it
    energy = TrainingEnergy(registered_model_name=name)
    with pytest.warns(UserWarning, match="stopping the training at epoch 0: projected energy"):
        assert train(rapl, energy) == 1
    assert f"registered model '{name}' (green.budget_kwh)" in energy.stop_reason
    assert energy.limits["energy"].value == pytest.approx(4.5 * EPOCH_KWH)


def test_the_co2_budget_of_the_registry_applies_too(store, rapl) -> None:
    name = model_with_budget(max_co2eq_kg=2.5 * EPOCH_KWH * 0.5)
    energy = TrainingEnergy(registered_model_name=name)
    with pytest.warns(UserWarning, match="epoch 0: projected CO2eq"):
        assert train(rapl, energy) == 1  # 10 epochs would emit 4 times the budget
    assert "(green.budget_co2eq_kg)" in energy.stop_reason


def test_the_smaller_of_the_given_and_the_registry_budget_applies(store, rapl) -> None:
    name = model_with_budget(max_kwh=100 * EPOCH_KWH)
    energy = TrainingEnergy(max_kwh=2.5 * EPOCH_KWH, registered_model_name=name)
    with pytest.warns(UserWarning, match=r"exceeds max_kwh = 2\.5e-05 kWh"):
        assert train(rapl, energy) == 1
    assert energy.limits["energy"].source == "max_kwh"


def test_an_unknown_model_warns_and_the_training_runs_to_the_end(store, rapl) -> None:
    energy = TrainingEnergy(registered_model_name="no-such-model")
    with pytest.warns(RuntimeWarning, match="could not read the budget of registered model"):
        assert train(rapl, energy, epochs=3) == 3
    assert energy.limits == {} and energy.stop_reason is None


def test_a_model_without_budget_says_so_and_limits_nothing(store, rapl) -> None:
    name = model_with_budget()
    energy = TrainingEnergy(registered_model_name=name)
    with pytest.warns(RuntimeWarning, match="has no budget: the training is not limited"):
        assert train(rapl, energy, epochs=3) == 3


def test_a_malformed_budget_tag_warns_and_does_not_stop(store, rapl) -> None:
    name = model_with_budget()
    MlflowClient().set_registered_model_tag(name, "green.budget_kwh", "lots")
    energy = TrainingEnergy(registered_model_name=name)
    with pytest.warns(RuntimeWarning, match="green.budget_kwh='lots', not a plain decimal"):
        assert train(rapl, energy, epochs=3) == 3
