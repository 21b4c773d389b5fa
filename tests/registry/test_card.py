"""Hugging Face model-card metadata of a model version (``co2_eq_emissions``): the Python side.

Runs measured by ``mlflow_green.autolog()`` on a fake RAPL tree, models logged and
registered by MLflow, all in a real SQLite store; the block is read back with
``huggingface_hub``'s own ``ModelCard`` / ``ModelCardData`` (no network: both parse text).
The helpers here also build the CLI tests' store (tests/cli/test_cli_card.py).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
from huggingface_hub import ModelCard, ModelCardData
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.tracking import fluent

import mlflow_green
from mlflow_green.measure.meters.rapl import ROOT_ENV
from mlflow_green.registry.budgets import check_budget
from mlflow_green.registry.card import (
    CARD_ARTIFACT,
    CARD_TAG,
    TRAINING_TYPES,
    EmissionsUnknown,
    _location,
    check_training_type,
    emissions_card,
    write_card,
)
from mlflow_green.registry.lineage import ClientReader, evidence
from mlflow_green.runs import rendering
from mlflow_green.runs.autologging import autolog_from_env
from tests.conftest import reset_and_wait
from tests.fakes.powercap import PowercapTree
from tests.mlflow_server import sqlite_db_copy

#: Registered from the run measured in France, through its LoggedModel (source models:/<id>).
MEASURED = "card-measured"
#: Registered from a run measured with an unknown carbon intensity (zero-code mode, bad country).
UNKNOWN_CO2 = "card-unknown-co2"
#: Joules the fake CPU package spends during each training.
TRAIN_J = 36.0
#: CodeCarbon's figure for France, gCO2eq/kWh, roughly (the run's tag has it exactly).
FRA_G_PER_KWH = 56.0
BAD_COUNTRY = "FRQ"


class Echo(mlflow.pyfunc.PythonModel):
    """The smallest pyfunc model: gives back its input."""

    def predict(self, context: object, model_input: list[str], params: object = None) -> list[str]:
        return model_input


def train(tree: PowercapTree, package: str, registered_model_name: str) -> str:
    """One training: the fake CPU spends :data:`TRAIN_J`, a model is logged and registered."""
    with mlflow.start_run() as run:
        tree.advance(package, TRAIN_J)
        mlflow.pyfunc.log_model(
            name="model",
            python_model=Echo(),
            registered_model_name=registered_model_name,
            pip_requirements=[],  # requirement inference costs seconds; not tested here
        )
    return run.info.run_id


@dataclass(frozen=True)
class Store:
    """A store with measured runs and the models registered from them."""

    uri: str
    client: MlflowClient
    experiment_id: str
    measured_run: str
    unknown_co2_run: str
    folder: Path


@contextlib.contextmanager
def measured_store(folder: Path, uri: str | None = None) -> Iterator[Store]:
    """Runs measured by autolog in ``folder``'s SQLite store (or at ``uri``, a server).

    :data:`MEASURED` version 1 comes from a run measured in France (``country="FRA"``);
    :data:`UNKNOWN_CO2` version 1 from a run measured in zero-code mode with a country that
    does not exist, so its carbon intensity, and its emissions, are unknown.
    """
    tree = PowercapTree(folder / "powercap")
    package = tree.add_package(0, energy_uj=1_000_000, dram=False).package
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("MLFLOW_GREEN_"):
                mp.delenv(name)
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_RUN_ID"):
            mp.delenv(name, raising=False)
        mp.setenv(ROOT_ENV, str(tree.path))
        mp.setenv("MLFLOW_GREEN_SPOOL_DIR", str(folder / "spool"))
        if uri is None:
            uri = f"sqlite:///{sqlite_db_copy(folder / 'mlflow.db')}"
        client = MlflowClient(uri, registry_uri=uri)
        mlflow.set_tracking_uri(uri)
        try:
            location = None if uri.startswith("http") else (folder / "artifacts").as_uri()
            experiment_id = client.create_experiment(
                f"card-{folder.name}", artifact_location=location
            )
            # set_experiment sets both of these for the whole process: undone on leaving.
            mp.setenv("MLFLOW_EXPERIMENT_ID", experiment_id)
            mp.setattr(fluent, "_active_experiment_id", None)
            mlflow.set_experiment(experiment_id=experiment_id)
            mlflow_green.autolog(country="FRA", silent=True)
            measured_run = train(tree, package, MEASURED)
            mlflow_green.autolog(disable=True)
            # Zero-code mode: a location that is not valid leaves the intensity unknown.
            mp.setenv("MLFLOW_GREEN_COUNTRY", BAD_COUNTRY)
            mp.setenv("MLFLOW_GREEN_SILENT", "true")
            autolog_from_env()
            unknown_co2_run = train(tree, package, UNKNOWN_CO2)
            mlflow_green.autolog(disable=True)
            rendering.wait(60)
            yield Store(uri, client, experiment_id, measured_run, unknown_co2_run, folder)
        finally:
            mlflow_green.autolog(disable=True)
            while mlflow.active_run() is not None:
                mlflow.end_run()
            rendering.wait(60)
            reset_and_wait()
            mlflow.set_tracking_uri(None)


def parse_metadata(yaml_block: str) -> ModelCardData:
    """The metadata of a card whose YAML header is ``yaml_block``, as huggingface_hub reads it."""
    return ModelCard(f"---\n{yaml_block}\n---\n").data


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with measured_store(tmp_path_factory.mktemp("card")) as built:
        yield built


def version_of(store: Store, source: str, run_id: str | None, name: str) -> str:
    """A new version of registered model ``name`` (created if need be) with ``source``."""
    with contextlib.suppress(MlflowException):
        store.client.create_registered_model(name)
    return str(store.client.create_model_version(name, source, run_id=run_id).version)


# -- the block: Must show 3 -----------------------------------------------------------------------


def test_the_block_holds_the_runs_co2eq_in_grams_and_loads_in_huggingface_hub(store) -> None:
    run = store.client.get_run(store.measured_run)
    co2eq_kg = run.data.metrics["green/co2eq_kg"]
    assert co2eq_kg > 0
    # Measured on the fake package, in France: co2 = its energy x France's intensity.
    intensity = run.data.tags["green.carbon_intensity_g_per_kwh"]
    assert float(intensity) == pytest.approx(FRA_G_PER_KWH, abs=0.5)
    assert co2eq_kg == pytest.approx(run.data.metrics["green/energy_kwh"] * float(intensity) / 1000)

    card = emissions_card(MEASURED, 1, client=store.client)

    assert card.run_id == store.measured_run and card.co2eq_kg == co2eq_kg
    block = card.co2_eq_emissions
    assert block["emissions"] == co2eq_kg * 1000 and isinstance(block["emissions"], float)
    assert block["training_type"] == "pre-training"
    assert block["geographical_location"] == "France (FRA)"
    assert block["hardware_used"] == run.data.tags["green.hardware"]
    source = block["source"]
    assert source.startswith(f"mlflow-green {run.data.tags['green.version']} (MLflow run ")
    assert store.measured_run in source and "cpu rapl" in source
    assert f"{intensity} gCO2eq/kWh, codecarbon energy mix" in source and "PUE 1" in source
    # huggingface_hub reads the YAML, the JSON and the whole card back to the same block.
    for data in (parse_metadata(card.to_yaml()), ModelCard(card.card_text()).data):
        assert data.co2_eq_emissions == block
        assert data.co2_eq_emissions["emissions"] == co2eq_kg * 1000
    assert card.to_yaml().startswith("co2_eq_emissions:\n  emissions: ")
    assert json.loads(card.to_json()) == {"co2_eq_emissions": block}
    assert json.loads(card.tag_value()) == block and " " not in card.tag_value().split('"')[0]
    text = ModelCard(card.card_text()).text
    assert f"# {MEASURED} version 1" in text and "## Environmental impact" in text


def test_fine_tuning_is_the_other_training_type(store) -> None:
    card = emissions_card(MEASURED, "1", training_type="fine-tuning", client=store.client)
    assert parse_metadata(card.to_yaml()).co2_eq_emissions["training_type"] == "fine-tuning"


@pytest.mark.parametrize("bad", ["pretraining", "Fine-tuning", "", None, 1])
def test_a_training_type_the_hub_does_not_know_is_refused_before_any_read(bad) -> None:
    with pytest.raises(ValueError) as info:
        emissions_card(MEASURED, 1, training_type=bad, client=object())  # never used
    message = str(info.value)
    assert message.startswith(f"training_type={bad!r}: expected ")
    assert all(repr(t) in message for t in TRAINING_TYPES)
    assert check_training_type("fine-tuning") == "fine-tuning"


# -- the run whose energy counts: the gate's lineage ----------------------------------------------


def test_the_figures_come_from_the_run_the_gate_trusts(store) -> None:
    name = "card-lineage"
    # A runs:/ source: that run, whatever run_id is claimed.
    by_path = version_of(store, f"runs:/{store.measured_run}/model", store.unknown_co2_run, name)
    card = emissions_card(name, by_path, client=store.client)
    assert card.run_id == store.measured_run
    assert check_budget(name, by_path, client=store.client).run_id == store.measured_run
    # A source outside the claimed run's artifacts: no run can be trusted, no card.
    elsewhere = (store.folder / "elsewhere").as_uri()
    stray = version_of(store, elsewhere, store.measured_run, name)
    with pytest.raises(EmissionsUnknown) as info:
        emissions_card(name, stray, client=store.client)
    why = evidence(ClientReader(store.client), name, stray).why
    assert why is not None and "is not under the artifacts of its run" in why
    assert str(info.value).startswith(f"model '{name}' version {stray}: emissions unknown ({why})")


# -- no number is made up -----------------------------------------------------------------------


def test_a_run_of_unknown_carbon_intensity_gets_no_card(store) -> None:
    run = store.client.get_run(store.unknown_co2_run)
    assert "green/co2eq_kg" not in run.data.metrics and run.data.metrics["green/energy_kwh"] > 0
    with pytest.raises(EmissionsUnknown) as info:
        emissions_card(UNKNOWN_CO2, 1, client=store.client)
    message = str(info.value)
    assert f"its run {store.unknown_co2_run} has no green/co2eq_kg metric" in message
    assert "its carbon intensity was unknown" in message and BAD_COUNTRY in message
    assert "makes no model card without a measured green/co2eq_kg" in message


def test_a_run_that_was_not_measured_or_logged_no_measurement_gets_no_card(store) -> None:
    name = "card-not-measured"
    for co2eq_kg, why in ((None, "has no green/co2eq_kg metric"), (math.nan, "not a measurement")):
        run_id = store.client.create_run(store.experiment_id).info.run_id
        if co2eq_kg is not None:
            store.client.log_metric(run_id, "green/co2eq_kg", co2eq_kg)
        store.client.set_terminated(run_id)
        version = version_of(store, f"runs:/{run_id}/model", run_id, name)
        with pytest.raises(EmissionsUnknown, match=why):
            emissions_card(name, version, client=store.client)


def test_a_deleted_run_gets_no_card(store) -> None:
    name = "card-deleted-run"
    run_id = store.client.create_run(store.experiment_id).info.run_id
    store.client.log_metric(run_id, "green/co2eq_kg", 0.5)
    version = version_of(store, f"runs:/{run_id}/model", run_id, name)
    store.client.delete_run(run_id)
    with pytest.raises(EmissionsUnknown, match=f"its run {run_id} was deleted"):
        emissions_card(name, version, client=store.client)


def test_an_unknown_model_or_version_is_mlflows_own_error(store) -> None:
    for name, version in (("card-no-such-model", 1), (MEASURED, 99)):
        with pytest.raises(MlflowException) as info:
            emissions_card(name, version, client=store.client)
        assert info.value.error_code == "RESOURCE_DOES_NOT_EXIST"


# -- written to the version -----------------------------------------------------------------------


def test_write_card_sets_the_version_tag_and_logs_the_card_to_the_run(store) -> None:
    name = "card-written"
    measured = store.client.get_model_version(MEASURED, "1")  # source models:/<model_id>
    version = version_of(store, measured.source, measured.run_id, name)
    card = emissions_card(name, version, training_type="fine-tuning", client=store.client)
    write_card(card, client=store.client)

    tag = store.client.get_model_version(name, version).tags[CARD_TAG]
    assert json.loads(tag) == card.co2_eq_emissions
    assert json.loads(tag)["emissions"] == (
        store.client.get_run(store.measured_run).data.metrics["green/co2eq_kg"] * 1000
    )
    local = store.client.download_artifacts(
        store.measured_run, CARD_ARTIFACT, str(store.folder / f"down-{name}")
    )
    loaded = ModelCard.load(local)  # a local file: read, not fetched
    assert loaded.data.co2_eq_emissions == card.co2_eq_emissions
    assert loaded.data.co2_eq_emissions["training_type"] == "fine-tuning"
    # Written again, both are replaced, not added to.
    write_card(emissions_card(name, version, client=store.client), client=store.client)
    tag = store.client.get_model_version(name, version).tags[CARD_TAG]
    assert json.loads(tag)["training_type"] == "pre-training"
    assert ModelCard.load(
        store.client.download_artifacts(store.measured_run, CARD_ARTIFACT, str(store.folder))
    ).data.co2_eq_emissions == json.loads(tag)


# -- the location in words -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ({"green.country": "FRA"}, "France (FRA)"),
        ({"green.country": "USA", "green.region": "california"}, "california, United States (USA)"),
        (
            {"green.country": "BEL", "green.cloud": "gcp:europe-west1"},
            "gcp europe-west1, Belgium (BEL)",
        ),
        ({"green.country": "unknown", "green.cloud": "gcp:us-east1"}, "gcp us-east1"),
        ({"green.country": "unknown"}, None),
        ({}, None),
    ],
)
def test_the_location_names_country_region_and_cloud(tags, expected) -> None:
    assert _location(tags) == expected
