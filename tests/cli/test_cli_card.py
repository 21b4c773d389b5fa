"""``mlflow-green card NAME VERSION``: the model-card block printed, written, refused, named.

The store is tests/registry/test_card.py's (runs measured by autolog on a fake RAPL
tree, models logged and registered by MLflow) in SQLite, and once more on a real
``mlflow server``; every output is read back with ``huggingface_hub``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from huggingface_hub import ModelCard
from mlflow import MlflowClient

from mlflow_green.cli import main
from mlflow_green.cli.card import _TRAINING_TYPES
from mlflow_green.registry.card import CARD_ARTIFACT, CARD_TAG, TRAINING_TYPES
from tests.mlflow_server import server_fixture
from tests.registry.test_card import (
    MEASURED,
    UNKNOWN_CO2,
    Store,
    measured_store,
    parse_metadata,
)

mlflow_server = server_fixture()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with measured_store(tmp_path_factory.mktemp("cli-card")) as built:
        yield built


def card(store: Store, *args: str) -> Result:
    """``mlflow-green card ARGS --tracking-uri <store>``."""
    return CliRunner().invoke(main, ["card", *args, "--tracking-uri", store.uri])


def co2eq_g(store: Store, run_id: str) -> float:
    return store.client.get_run(run_id).data.metrics["green/co2eq_kg"] * 1000


def assert_error(result: Result, *fragments: str) -> None:
    """Exit 2, one ``Error:`` line naming every fragment, no traceback, nothing on stdout."""
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Error: ") or "\nError: " in result.stderr, result.stderr
    assert "Traceback" not in result.output and result.stdout == ""
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)


# -- printed: Must show 3 -------------------------------------------------------------------------


def test_card_prints_the_yaml_block_huggingface_hub_loads(store) -> None:
    result = card(store, MEASURED, "1")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("co2_eq_emissions:\n  emissions: ") and result.stderr == ""
    block = parse_metadata(result.stdout).co2_eq_emissions
    assert block["emissions"] == co2eq_g(store, store.measured_run)
    assert block["training_type"] == "pre-training"
    assert block["geographical_location"] == "France (FRA)"
    assert store.measured_run in block["source"]


def test_card_json_and_whole_card_formats_hold_the_same_block(store) -> None:
    yaml_block = parse_metadata(card(store, MEASURED, "1").stdout).co2_eq_emissions
    as_json = card(store, MEASURED, "1", "--format", "json")
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout) == {"co2_eq_emissions": yaml_block}
    whole = card(store, MEASURED, "1", "--format", "card", "--training-type", "fine-tuning")
    assert whole.exit_code == 0, whole.output
    loaded = ModelCard(whole.stdout)
    assert loaded.data.co2_eq_emissions == {**yaml_block, "training_type": "fine-tuning"}
    assert loaded.data.co2_eq_emissions["emissions"] == co2eq_g(store, store.measured_run)
    assert f"# {MEASURED} version 1" in loaded.text
    # Printing writes nothing.
    assert CARD_TAG not in store.client.get_model_version(MEASURED, "1").tags


# -- written ------------------------------------------------------------------------------------


def copy_of_measured(client: MlflowClient, name: str) -> str:
    """Version 1 of a new model ``name``: the latest version of :data:`MEASURED` again (the
    same LoggedModel), so that writing to it leaves :data:`MEASURED`'s tags as they are."""
    versions = client.search_model_versions(f"name='{MEASURED}'")
    mv = max(versions, key=lambda v: int(v.version))
    client.create_registered_model(name)
    model_id = mv.source.removeprefix("models:/")  # a server wants it named, too
    return str(
        client.create_model_version(name, mv.source, run_id=mv.run_id, model_id=model_id).version
    )


def test_card_write_sets_the_version_tag_and_the_runs_card_artifact(store) -> None:
    name = "cli-card-written"
    assert copy_of_measured(store.client, name) == "1"
    result = card(store, name, "1", "--write", "--training-type", "fine-tuning")
    assert result.exit_code == 0, result.output
    printed = parse_metadata(result.stdout).co2_eq_emissions
    assert f"wrote tag {CARD_TAG} on model '{name}' version 1" in result.stderr
    assert f"artifact {CARD_ARTIFACT} of run {store.measured_run}" in result.stderr
    tag = json.loads(store.client.get_model_version(name, "1").tags[CARD_TAG])
    assert tag == printed and tag["training_type"] == "fine-tuning"
    assert tag["emissions"] == co2eq_g(store, store.measured_run)
    local = store.client.download_artifacts(
        store.measured_run, CARD_ARTIFACT, str(store.folder / "down")
    )
    assert ModelCard.load(local).data.co2_eq_emissions == tag


# -- refused: no number is made up ---------------------------------------------------------------


def test_card_of_a_version_without_measured_co2_is_refused_exit_1(store) -> None:
    for extra in ([], ["--write"]):
        result = card(store, UNKNOWN_CO2, "1", *extra)
        assert result.exit_code == 1, result.output
        assert result.stdout == ""
        assert result.stderr.startswith(f"REFUSED: model '{UNKNOWN_CO2}' version 1: emissions ")
        assert "has no green/co2eq_kg metric" in result.stderr
        assert "its carbon intensity was unknown" in result.stderr
    assert CARD_TAG not in store.client.get_model_version(UNKNOWN_CO2, "1").tags
    assert not store.client.list_artifacts(store.unknown_co2_run, "green/model_card.md")


# -- errors: exit 2, named plainly ---------------------------------------------------------------


def test_card_of_an_unknown_model_or_version_exits_2_naming_it(store) -> None:
    assert_error(card(store, "card-no-such-model", "1"), "no registered model 'card-no-such-model'")
    assert_error(card(store, MEASURED, "7"), f"model '{MEASURED}' has no version 7 (versions: 1)")


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["x", "abc"], ["VERSION 'abc'", "a version number"]),
        (["x", "0"], ["VERSION '0'"]),
        ([" ", "1"], ["NAME ' '", "the name of a registered model"]),
        (
            ["x", "1", "--training-type", "pretraining"],
            ["--training-type", "'pretraining'", "'pre-training'", "'fine-tuning'"],
        ),
        (["x", "1", "--format", "toml"], ["--format", "'toml'", "'yaml'", "'json'", "'card'"]),
    ],
)
def test_card_bad_arguments_exit_2_before_connecting(tmp_path: Path, args, fragments) -> None:
    # A store that does not exist: the arguments are refused before it is looked at.
    missing = f"sqlite:///{tmp_path / 'none.db'}"
    result = CliRunner().invoke(main, ["card", *args, "--tracking-uri", missing])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "no SQLite database" not in result.output
    for fragment in fragments:
        assert fragment in result.output, (fragment, result.output)
    assert not (tmp_path / "none.db").exists()


def test_the_cli_offers_the_hubs_training_types() -> None:
    assert _TRAINING_TYPES == TRAINING_TYPES


# -- a real mlflow server ------------------------------------------------------------------------


def test_card_on_a_real_server_prints_and_writes(mlflow_server, tmp_path_factory) -> None:
    with measured_store(tmp_path_factory.mktemp("cli-card-server"), mlflow_server) as server:
        name = f"cli-card-server-{server.measured_run[:8]}"  # the server is shared
        version = copy_of_measured(server.client, name)
        result = card(server, name, version, "--write")
        assert result.exit_code == 0, result.output
        block = parse_metadata(result.stdout).co2_eq_emissions
        assert block["emissions"] == co2eq_g(server, server.measured_run)
        assert server.measured_run in block["source"]
        tag = server.client.get_model_version(name, version).tags[CARD_TAG]
        assert json.loads(tag) == block
        local = server.client.download_artifacts(
            server.measured_run, CARD_ARTIFACT, str(server.folder / "down")
        )
        assert ModelCard.load(local).data.co2_eq_emissions == block
        versions = server.client.search_model_versions(f"name='{UNKNOWN_CO2}'")
        latest = str(max(int(v.version) for v in versions))
        refused = card(server, UNKNOWN_CO2, latest)
        assert refused.exit_code == 1, refused.output
        assert "REFUSED: " in refused.stderr and "has no green/co2eq_kg" in refused.stderr
