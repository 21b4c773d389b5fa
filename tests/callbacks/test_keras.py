"""``mlflow_green.callbacks.keras.GreenCallback`` on real Keras 3 trainings (torch backend)."""

from __future__ import annotations

import os

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from tests.callbacks.conftest import history

# Keras reads its backend once, at its first import; these tests need no TensorFlow.
if "keras" not in __import__("sys").modules:
    os.environ["KERAS_BACKEND"] = "torch"
keras = pytest.importorskip("keras")
if keras.backend.backend() != "torch":
    pytest.skip(f"keras runs on {keras.backend.backend()!r}, not torch", allow_module_level=True)

from mlflow_green.callbacks.keras import GreenCallback  # noqa: E402

EPOCHS = 4


def fit(callback: GreenCallback | None) -> keras.callbacks.History:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 8)), rng.normal(size=(64, 1))
    callbacks = [callback] if callback is not None else []
    return model.fit(x, y, epochs=EPOCHS, batch_size=16, verbose=0, callbacks=callbacks)


def test_a_tiny_budget_stops_fit_after_its_first_epoch(sqlite_uri) -> None:
    expected = "stopping the training at epoch 0"
    with pytest.warns(UserWarning, match=expected), mlflow.start_run() as run:
        done = fit(GreenCallback(max_kwh=1e-15))
    assert len(done.history["loss"]) == 1 < EPOCHS
    data = MlflowClient().get_run(run.info.run_id)
    assert data.info.status == "FINISHED"
    assert data.data.tags["green.stopped_by_budget"].startswith("epoch 0: energy so far")
    assert [step for step, _ in history(run.info.run_id, "green/epoch_kwh")] == [0]


def test_without_a_budget_fit_runs_every_epoch(sqlite_uri) -> None:
    with mlflow.start_run() as run:
        done = fit(GreenCallback())
    assert len(done.history["loss"]) == EPOCHS
    data = MlflowClient().get_run(run.info.run_id)
    assert "green.stopped_by_budget" not in data.data.tags
    assert [step for step, _ in history(run.info.run_id, "green/epoch_kwh")] == list(range(EPOCHS))
    assert [step for step, _ in history(run.info.run_id, "green/projected_kwh")] == list(
        range(EPOCHS)
    )


def test_the_same_fit_without_the_callback_is_untouched(sqlite_uri) -> None:
    with mlflow.start_run() as run:
        done = fit(None)
    assert len(done.history["loss"]) == EPOCHS
    assert MlflowClient().get_run(run.info.run_id).data.metrics == {}


def test_with_mlflow_keras_autolog_the_callback_logs_on_its_run(sqlite_uri) -> None:
    mlflow.keras.autolog(log_models=False)
    try:
        with pytest.warns(UserWarning, match="stopping the training"):
            fit(GreenCallback(max_kwh=1e-15))
    finally:
        mlflow.keras.autolog(disable=True)
    run = MlflowClient().search_runs(["0"])[0]
    assert run.info.status == "FINISHED"
    assert "green.stopped_by_budget" in run.data.tags
    assert "green/epoch_kwh" in run.data.metrics
