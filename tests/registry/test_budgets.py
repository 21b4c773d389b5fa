"""Energy budgets on the model registry: the client check and the server gate.

Client side (advisory) runs against a SQLite store of its own. The server gate
runs against one real ``mlflow server --registry-store-uri green+sqlite:///...``
for the whole module, tried over raw REST (every promotion route) and through
a plain ``MlflowClient`` that knows nothing of mlflow-green.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
import requests
from click.testing import CliRunner
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlflow_green.cli import registry as cli_registry
from mlflow_green.registry.budgets import (
    BUDGET_CO2EQ_TAG,
    BUDGET_KWH_TAG,
    BudgetCheck,
    EnergyBudgetExceeded,
    check_budget,
    evaluate,
    get_budget,
    promote,
    remove_budget,
    set_budget,
)
from mlflow_green.registry.lineage import is_within
from mlflow_green.registry.rule import budget_tag_value, parse_budget_tag
from tests.mlflow_server import free_port, server_fixture, sqlite_db_copy

mlflow_server = server_fixture(registry_store_uri="green+sqlite:///{db}")

API = "/api/2.0/mlflow"


# -- helpers -------------------------------------------------------------------------------------


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Registry:
    """Runs with green metrics, registered models and versions made from them."""

    def __init__(self, client: MlflowClient) -> None:
        self.client = client
        self.experiment_id = client.create_experiment(_name("registry"))

    def run(self, energy_kwh: float | None, co2eq_kg: float | None = None) -> str:
        run = self.client.create_run(self.experiment_id)
        run_id = run.info.run_id
        if energy_kwh is not None:
            self.client.log_metric(run_id, "green/energy_kwh", energy_kwh)
        if co2eq_kg is not None:
            self.client.log_metric(run_id, "green/co2eq_kg", co2eq_kg)
        self.client.set_terminated(run_id)
        return run_id

    def model(self, prefix: str = "m", **budget: float) -> str:
        name = _name(prefix)
        self.client.create_registered_model(name)
        if budget:
            set_budget(name, client=self.client, **budget)
        return name

    def version(self, model: str, energy_kwh: float | None, co2eq_kg: float | None = None) -> str:
        run_id = self.run(energy_kwh, co2eq_kg)
        mv = self.client.create_model_version(model, f"runs:/{run_id}/model", run_id=run_id)
        return str(mv.version)


def _rest(url: str, method: str, path: str, body: dict[str, Any]) -> requests.Response:
    return requests.request(method, f"{url}{API}{path}", json=body, timeout=30)


def _alias(url: str, name: str, alias: str, version: str) -> requests.Response:
    return _rest(
        url, "POST", "/registered-models/alias", {"name": name, "alias": alias, "version": version}
    )


def _stage(url: str, name: str, version: str, stage: str) -> requests.Response:
    body = {"name": name, "version": version, "stage": stage, "archive_existing_versions": False}
    return _rest(url, "POST", "/model-versions/transition-stage", body)


def _assert_denied(resp: requests.Response, *fragments: str) -> str:
    assert resp.status_code == 403, (resp.status_code, resp.text)
    payload = resp.json()
    assert payload["error_code"] == "PERMISSION_DENIED", payload
    for fragment in fragments:
        assert fragment in payload["message"], (fragment, payload["message"])
    return payload["message"]


def _assert_ok(resp: requests.Response) -> dict[str, Any]:
    assert resp.status_code == 200, (resp.status_code, resp.text)
    return resp.json()


def _aliases(client: MlflowClient, name: str) -> dict[str, str]:
    return {k: str(v) for k, v in client.get_registered_model(name).aliases.items()}


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Registry]:
    """A SQLite store of its own (no gate): the client-side check alone."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{sqlite_db_copy(tmp_path / 'mlflow.db')}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    mlflow.set_tracking_uri(uri)
    yield Registry(MlflowClient(uri))


@pytest.fixture(scope="module")
def gated(mlflow_server: str) -> Registry:
    """The gated server, through a plain MlflowClient (what any user has)."""
    return Registry(MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server))


# -- the rule ------------------------------------------------------------------------------------


def test_rule_edges() -> None:
    tags = {BUDGET_KWH_TAG: "1.0"}
    assert evaluate("m", 1, tags, "r", {"green/energy_kwh": 1.0}).passed  # on the budget
    assert not evaluate("m", 1, tags, "r", {"green/energy_kwh": 1.0000001}).passed
    nan = evaluate("m", 1, tags, "r", {"green/energy_kwh": math.nan})
    assert not nan.passed and nan.energy_kwh is None and "unknown" in nan.reason
    assert evaluate("m", 1, {}, None, None).passed  # no budget, nothing known: passes
    no_run = evaluate("m", 1, tags, None, None)
    assert not no_run.passed and "no source run" in no_run.reason
    both = evaluate(
        "m",
        2,
        {BUDGET_KWH_TAG: "1", BUDGET_CO2EQ_TAG: "0.1"},
        "r",
        {"green/energy_kwh": 0.5, "green/co2eq_kg": 0.2},
    )
    assert not both.passed and BUDGET_CO2EQ_TAG in both.reason and "0.2 kg" in both.reason
    assert (both.energy_kwh, both.co2eq_kg, both.budget_kwh, both.budget_co2eq_kg) == (
        0.5,
        0.2,
        1.0,
        0.1,
    )


@pytest.mark.parametrize(
    ("source", "root", "inside"),
    [
        ("mlflow-artifacts:/1/r/artifacts/model", "mlflow-artifacts:/1/r/artifacts", True),
        ("mlflow-artifacts:/1/r/artifacts", "mlflow-artifacts:/1/r/artifacts/", True),
        ("MLFLOW-ARTIFACTS:/1/r/artifacts/m", "mlflow-artifacts:/1/r/artifacts", True),
        ("s3://B/e/r/artifacts/m", "s3://b/e/r/artifacts", True),  # host: any case
        ("/tmp/m/1/r/artifacts/m", "file:///tmp/m/1/r/artifacts", True),
        ("file://localhost/tmp/r/artifacts/m", "/tmp/r/artifacts", True),
        ("mlflow-artifacts:/1/r/artifacts-evil/m", "mlflow-artifacts:/1/r/artifacts", False),
        ("mlflow-artifacts:/1/r/artifacts/../q/m", "mlflow-artifacts:/1/r/artifacts", False),
        ("mlflow-artifacts:/1/r/artifacts/%2E%2E/q", "mlflow-artifacts:/1/r/artifacts", False),
        ("mlflow-artifacts:/1/r/artifacts/%252e%252e/q", "mlflow-artifacts:/1/r/artifacts", False),
        ("mlflow-artifacts:/1/r%2Fartifacts/m", "mlflow-artifacts:/1/r/artifacts", False),
        ("mlflow-artifacts://evil/1/r/artifacts/m", "mlflow-artifacts:/1/r/artifacts", False),
        (
            "http://h/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/m",
            "mlflow-artifacts:/1/r/artifacts",
            False,
        ),
        ("mlflow-artifacts:/1/r/artifacts/m?x=1", "mlflow-artifacts:/1/r/artifacts", False),
        ("mlflow-artifacts:/1/r/artifacts/m#x", "mlflow-artifacts:/1/r/artifacts", False),
        ("s3://b/e//r/artifacts/m", "s3://b/e/r/artifacts", False),
        ("s3://[b/m", "s3://b", False),
        ("/anything", "/", False),
        (None, "s3://b/r/artifacts", False),
        ("s3://b/r/artifacts/m", None, False),
    ],
)
def test_source_containment_is_segment_by_segment(source: str, root: str, inside: bool) -> None:
    assert is_within(source, root) is inside


def test_budget_tag_syntax_and_round_trip() -> None:
    for good, number in (
        ("2.5", 2.5),
        ("0", 0.0),
        ("0.00001", 1e-05),
        ("1e-05", 1e-05),
        (".5", 0.5),
    ):
        assert parse_budget_tag(good) == number
    for bad in ("1_0", " 1", "1 ", "\u0661", "+1", "-1", "inf", "nan", "0x1", "1e400", "1\n", ""):
        with pytest.raises(ValueError):
            parse_budget_tag(bad)
    for value in (1e-05, 5e-324, 0.1, 1 / 3, 123456789.125, 1e16, 1.7976931348623157e308, -0.0):
        written = budget_tag_value(value)
        assert "e" not in written and not written.startswith("-"), written
        assert parse_budget_tag(written) == value


# -- client side (Must-show 1) -------------------------------------------------------------------


def test_must_show_1_check_promote_gate(local: Registry) -> None:
    name = local.model()
    over = local.version(name, energy_kwh=0.5, co2eq_kg=0.03)
    under = local.version(name, energy_kwh=0.05, co2eq_kg=0.003)
    set_budget(name, max_kwh=0.1)

    check = check_budget(name, over)
    assert isinstance(check, BudgetCheck) and not check.passed
    assert (check.energy_kwh, check.budget_kwh, check.co2eq_kg) == (0.5, 0.1, 0.03)
    assert name in check.reason and "0.5 kWh" in check.reason and "0.1 kWh" in check.reason
    with pytest.raises(EnergyBudgetExceeded) as info:
        promote(name, over, "champion")
    assert info.value.check == check and info.value.error_code == "PERMISSION_DENIED"
    assert _aliases(local.client, name) == {}

    runner = CliRunner()
    result = runner.invoke(cli_registry.gate, [name, over])
    assert result.exit_code == 1, result.output
    assert "FAIL" in result.output and "0.5 kWh" in result.output

    assert check_budget(name, under).passed
    result = runner.invoke(cli_registry.gate, [name, under])
    assert result.exit_code == 0, result.output
    assert promote(name, under, "champion").passed
    assert str(local.client.get_model_version_by_alias(name, "champion").version) == under


def test_cli_budget_promote_and_errors(local: Registry, tmp_path: Path) -> None:
    runner = CliRunner()
    name = local.model()
    over = local.version(name, energy_kwh=2.0, co2eq_kg=0.5)
    under = local.version(name, energy_kwh=0.2, co2eq_kg=0.05)

    result = runner.invoke(
        cli_registry.budget, ["set", name, "--max-kwh", "1", "--max-co2eq-kg", "0.1"]
    )
    assert result.exit_code == 0, result.output
    assert get_budget(name, client=local.client) == {BUDGET_KWH_TAG: "1.0", BUDGET_CO2EQ_TAG: "0.1"}
    result = runner.invoke(cli_registry.budget, ["show", name])
    assert "green.budget_kwh=1.0" in result.output

    result = runner.invoke(cli_registry.promote, [name, over, "--alias", "prod"])
    assert result.exit_code == 1 and "REFUSED" in result.output, result.output
    assert _aliases(local.client, name) == {}
    result = runner.invoke(cli_registry.promote, [name, under, "--alias", "prod"])
    assert result.exit_code == 0, result.output
    assert _aliases(local.client, name) == {"prod": under}

    # Errors are exit 2, not a refusal: unknown model, unknown version, a server that is down.
    result = runner.invoke(cli_registry.gate, [_name("missing"), "1"])
    assert result.exit_code == 2 and "Error: " in result.output, result.output
    result = runner.invoke(cli_registry.gate, [name, "99"])
    assert result.exit_code == 2 and "Error: " in result.output, result.output
    down = f"http://127.0.0.1:{free_port()}"
    result = runner.invoke(
        cli_registry.gate,
        [name, under, "--tracking-uri", down],
        env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"},
    )
    assert result.exit_code == 2 and "Error: " in result.output, result.output
    assert f"{down} is unreachable" in result.output, result.output  # said at once, by name
    result = runner.invoke(cli_registry.budget, ["set", name, "--max-kwh", "-1"])
    assert result.exit_code == 2 and "non-negative" in result.output, result.output
    result = runner.invoke(cli_registry.budget, ["set", name])
    assert result.exit_code == 2, result.output

    # Removing the energy budget leaves the emissions one: the over version still fails on CO2.
    result = runner.invoke(cli_registry.budget, ["remove", name, "--kwh"])
    assert result.exit_code == 0, result.output
    assert get_budget(name, client=local.client) == {BUDGET_CO2EQ_TAG: "0.1"}
    result = runner.invoke(
        cli_registry.gate,
        [name, over, "--tracking-uri", local.client._tracking_client.tracking_uri],
    )
    assert result.exit_code == 1 and BUDGET_CO2EQ_TAG in result.output, result.output
    remove_budget(name, client=local.client)
    assert get_budget(name, client=local.client) == {}
    assert runner.invoke(cli_registry.gate, [name, over]).exit_code == 0


def test_set_budget_validates(local: Registry) -> None:
    name = local.model()
    for bad in (-1, math.nan, math.inf, "1", True):
        with pytest.raises(ValueError, match="max_kwh"):
            set_budget(name, max_kwh=bad)
    with pytest.raises(ValueError, match="max_co2eq_kg"):
        set_budget(name, max_co2eq_kg=-0.5)
    with pytest.raises(ValueError):
        set_budget(name)
    assert get_budget(name) == {}  # nothing written by a refused call
    set_budget(name, max_kwh=0)  # zero is a budget: nothing may be promoted
    set_budget(name, max_co2eq_kg=2.5)  # None leaves the energy budget as it is
    assert get_budget(name) == {BUDGET_KWH_TAG: "0.0", BUDGET_CO2EQ_TAG: "2.5"}


def test_unknown_energy_fails_closed(local: Registry) -> None:
    name = local.model(max_kwh=10.0)
    unmeasured = local.version(name, energy_kwh=None)
    check = check_budget(name, unmeasured)
    assert not check.passed and check.energy_kwh is None
    assert "unknown" in check.reason and "green/energy_kwh" in check.reason
    # With no budget the same version passes.
    remove_budget(name)
    assert check_budget(name, unmeasured).passed


def test_invalid_budget_tag_refuses(local: Registry) -> None:
    name = local.model()
    version = local.version(name, energy_kwh=0.001)
    for bad in ("lots", "-3", "nan"):
        local.client.set_registered_model_tag(name, BUDGET_KWH_TAG, bad)
        check = check_budget(name, version)
        assert not check.passed and BUDGET_KWH_TAG in check.reason and bad in check.reason
        with pytest.raises(EnergyBudgetExceeded, match=BUDGET_KWH_TAG):
            promote(name, version, "champion")
    assert _aliases(local.client, name) == {}


# -- server gate (Must-show 2) -------------------------------------------------------------------


def test_must_show_2_plain_client_alias(gated: Registry, mlflow_server: str) -> None:
    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    name = gated.model(max_kwh=0.1)
    over = gated.version(name, energy_kwh=0.5)
    under = gated.version(name, energy_kwh=0.05)

    with pytest.raises(MlflowException) as info:
        client.set_registered_model_alias(name, "champion", over)
    assert info.value.error_code == "PERMISSION_DENIED"
    message = info.value.message
    for fragment in (f"'{name}'", f"version {over}", "0.5 kWh", "0.1 kWh", BUDGET_KWH_TAG):
        assert fragment in message, (fragment, message)
    assert _aliases(client, name) == {}

    client.set_registered_model_alias(name, "champion", under)
    assert str(client.get_model_version_by_alias(name, "champion").version) == under


def test_rest_alias_and_stage_routes(gated: Registry, mlflow_server: str) -> None:
    name = gated.model(max_kwh=1.0, max_co2eq_kg=0.1)
    over_kwh = gated.version(name, energy_kwh=3.0, co2eq_kg=0.01)
    over_co2 = gated.version(name, energy_kwh=0.5, co2eq_kg=0.4)
    unmeasured = gated.version(name, energy_kwh=None)
    under = gated.version(name, energy_kwh=0.5, co2eq_kg=0.05)

    _assert_denied(_alias(mlflow_server, name, "a", over_kwh), "3 kWh", "1 kWh", BUDGET_KWH_TAG)
    _assert_denied(_alias(mlflow_server, name, "a", over_co2), "0.4 kg", BUDGET_CO2EQ_TAG)
    _assert_denied(_alias(mlflow_server, name, "a", unmeasured), "unknown", f"version {unmeasured}")
    _assert_ok(_alias(mlflow_server, name, "a", under))

    for stage in ("Staging", "Production", "production"):
        _assert_denied(_stage(mlflow_server, name, over_kwh, stage), BUDGET_KWH_TAG)
        _assert_denied(_stage(mlflow_server, name, unmeasured, stage), "unknown")
    for stage in ("Archived", "None"):  # demotions pass whatever the energy
        _assert_ok(_stage(mlflow_server, name, over_kwh, stage))
    body = _assert_ok(_stage(mlflow_server, name, under, "Production"))
    assert body["model_version"]["current_stage"] == "Production"
    stages = {
        mv.version: mv.current_stage for mv in gated.client.search_model_versions(f"name='{name}'")
    }
    assert stages[over_kwh] == "None" and stages[under] == "Production"
    assert _aliases(gated.client, name) == {"a": under}


def test_copy_routes(gated: Registry, mlflow_server: str) -> None:
    src = gated.model("src")  # no budget of its own: any version may carry an alias here
    over = gated.version(src, energy_kwh=5.0)
    under = gated.version(src, energy_kwh=0.5)
    gated.client.set_registered_model_alias(src, "latest-big", over)
    dst = gated.model("dst", max_kwh=1.0)
    run_of = {v: gated.client.get_model_version(src, v).run_id for v in (over, under)}

    def create(dst_name: str, source: str, run_id: str) -> requests.Response:
        body = {"name": dst_name, "source": source, "run_id": run_id}
        return _rest(mlflow_server, "POST", "/model-versions/create", body)

    # Over REST a copy is a version whose source is another registered version.
    _assert_denied(create(dst, f"models:/{src}/{over}", run_of[over]), "5 kWh", "1 kWh", dst)
    _assert_denied(create(dst, f"models:/{src}@latest-big", run_of[over]), "5 kWh")
    with pytest.raises(MlflowException) as info:  # MlflowClient.copy_model_version
        gated.client.copy_model_version(f"models:/{src}/{over}", dst)
    # MLflow's client wraps the server's answer in an error of its own; the 403 is the cause.
    cause = info.value.__cause__
    assert isinstance(cause, MlflowException) and cause.error_code == "PERMISSION_DENIED"
    assert BUDGET_KWH_TAG in info.value.message
    assert gated.client.search_model_versions(f"name='{dst}'") == []

    copied = gated.client.copy_model_version(f"models:/{src}/{under}", dst)
    assert copied.name == dst and copied.run_id == run_of[under]
    # Into a model without a budget, any copy passes.
    free = gated.model("free")
    _assert_ok(create(free, f"models:/{src}/{over}", run_of[over]))


def test_budget_changed_between_calls(gated: Registry, mlflow_server: str) -> None:
    name = gated.model(max_kwh=0.1)
    version = gated.version(name, energy_kwh=0.3)
    _assert_denied(_alias(mlflow_server, name, "champion", version), "0.3 kWh", "0.1 kWh")
    set_budget(name, max_kwh=0.5, client=gated.client)  # raised
    _assert_ok(_alias(mlflow_server, name, "champion", version))
    set_budget(name, max_kwh=0.2, client=gated.client)  # lowered again
    _assert_denied(_alias(mlflow_server, name, "challenger", version), "0.2 kWh")
    remove_budget(name, client=gated.client)  # removed: nothing to enforce
    _assert_ok(_alias(mlflow_server, name, "challenger", version))
    assert _aliases(gated.client, name) == {"champion": version, "challenger": version}


@pytest.mark.parametrize("bad", ["lots", "-0.5", "nan", "inf", ""])
def test_invalid_budget_tag_refused_on_server(
    gated: Registry, mlflow_server: str, bad: str
) -> None:
    name = gated.model()
    version = gated.version(name, energy_kwh=0.0001, co2eq_kg=0.00001)
    tag = BUDGET_CO2EQ_TAG if bad == "-0.5" else BUDGET_KWH_TAG
    gated.client.set_registered_model_tag(name, tag, bad)
    _assert_denied(_alias(mlflow_server, name, "a", version), tag, "invalid", name)
    _assert_denied(_stage(mlflow_server, name, version, "Production"), tag)
    assert _aliases(gated.client, name) == {}


def test_prompt_aliases_unaffected(gated: Registry, mlflow_server: str) -> None:
    """Prompts have no budget, so their aliases pass; one given a budget is gated like a model."""
    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    name = _name("prompt")
    prompt = client.register_prompt(name=name, template="Summarise {{text}}")
    client.set_prompt_alias(name, "production", prompt.version)
    assert client.get_prompt_version_by_alias(name, "production").version == prompt.version
    _assert_ok(_alias(mlflow_server, name, "staging", str(prompt.version)))
    # A budget tag on a prompt: it has no run, so it fails closed like any model with a budget.
    _assert_ok(
        _rest(
            mlflow_server,
            "POST",
            "/registered-models/set-tag",
            {"name": name, "key": BUDGET_KWH_TAG, "value": "0"},
        )
    )
    with pytest.raises(MlflowException) as info:
        client.set_prompt_alias(name, "canary", prompt.version)
    assert info.value.error_code == "PERMISSION_DENIED" and "no source run" in info.value.message


def test_non_promoting_calls_unaffected(gated: Registry, mlflow_server: str) -> None:
    name = gated.model(max_kwh=0.01)
    over = gated.version(name, energy_kwh=9.0)
    client = gated.client
    # Registering more over-budget versions, tags, descriptions, searches, reads: all pass.
    newer = gated.version(name, energy_kwh=12.0)
    client.set_model_version_tag(name, over, "owner", "team-a")
    client.set_registered_model_tag(name, "team", "a")
    client.update_model_version(name, over, description="big one")
    client.update_registered_model(name, description="budgeted")
    assert [m.name for m in client.search_registered_models(f"name='{name}'")] == [name]
    versions = client.search_model_versions(f"name='{name}'")
    assert sorted(mv.version for mv in versions) == sorted([over, newer])
    mv = client.get_model_version(name, over)
    assert mv.tags["owner"] == "team-a" and mv.description == "big one"
    client.delete_model_version_tag(name, over, "owner")
    _assert_ok(
        _rest(mlflow_server, "DELETE", "/registered-models/alias", {"name": name, "alias": "x"})
    )
    client.delete_model_version(name, newer)
    assert [mv.version for mv in client.search_model_versions(f"name='{name}'")] == [over]


def test_missing_model_or_version_is_mlflows_error(gated: Registry, mlflow_server: str) -> None:
    name = gated.model(max_kwh=1.0)
    gated.version(name, energy_kwh=0.5)
    for model, version in ((_name("missing"), "1"), (name, "99")):
        resp = _alias(mlflow_server, model, "a", version)
        assert resp.status_code == 404, resp.text
        assert resp.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"


def test_store_without_sql_fast_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``green+file://``: the gate reads through MLflow's public store methods."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    root = (tmp_path / "mlruns").as_uri()
    client = MlflowClient(tracking_uri=root, registry_uri=f"green+{root}")
    assert type(client._get_registry_client().store).__name__ == "GreenRegistryStore"
    registry = Registry(client)
    name = registry.model(max_kwh=1.0, max_co2eq_kg=1.0)
    over = registry.version(name, energy_kwh=2.0, co2eq_kg=0.1)
    energy_only = registry.version(name, energy_kwh=0.5)
    under = registry.version(name, energy_kwh=0.5, co2eq_kg=0.1)
    for version, fragment in ((over, "2 kWh"), (energy_only, "no green/co2eq_kg metric")):
        with pytest.raises(MlflowException, match=fragment) as info:
            client.set_registered_model_alias(name, "a", version)
        assert info.value.error_code == "PERMISSION_DENIED"
    client.set_registered_model_alias(name, "a", under)
    assert _aliases(client, name) == {"a": under}
    with pytest.raises(MlflowException) as info:
        client.set_registered_model_alias(_name("missing"), "a", "1")
    assert info.value.error_code == "RESOURCE_DOES_NOT_EXIST"
