"""The budget gate against a hostile client (issue 11, items 1-7).

One real ``mlflow server --registry-store-uri green+sqlite:///...`` for the module,
attacked over raw REST (``/api/2.0/mlflow/...`` and ``/ajax-api/2.0/mlflow/...``)
and through a plain ``MlflowClient``, as anyone with access to the server could.
The client check (``check_budget``) shares the gate's decision and is held to the
same answers.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import mlflow
import pytest
import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlflow_green.registry.budgets import (
    BUDGET_CO2EQ_TAG,
    BUDGET_KWH_TAG,
    check_budget,
    get_budget,
    set_budget,
)
from tests.mlflow_server import server_fixture

mlflow_server = server_fixture(registry_store_uri="green+sqlite:///{db}")

API = "/api/2.0/mlflow"
AJAX = "/ajax-api/2.0/mlflow"
PROMPT_TAG = "mlflow.prompt.is_prompt"
# An object-store root the server never touches (versions only record the URI).
BUCKET = "s3://mlflow-green-gate-test"


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Attacker:
    """A plain MlflowClient and raw REST calls to the gated server."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = MlflowClient(tracking_uri=url, registry_uri=url)
        self.experiment_id = self.client.create_experiment(_name("gate"))
        # Runs of this experiment keep their artifacts under an object-store URI.
        self.s3_experiment_id = self.client.create_experiment(
            _name("gate-s3"), artifact_location=f"{BUCKET}/{uuid.uuid4().hex[:8]}"
        )

    def rest(self, method: str, path: str, body: dict[str, Any], prefix: str = API) -> Any:
        return requests.request(method, f"{self.url}{prefix}{path}", json=body, timeout=30)

    def run(
        self, energy_kwh: float | None, *, experiment_id: str | None = None, **metrics: float
    ) -> str:
        run_id = self.client.create_run(experiment_id or self.experiment_id).info.run_id
        if energy_kwh is not None:
            self.client.log_metric(run_id, "green/energy_kwh", energy_kwh)
        for key, value in metrics.items():
            self.client.log_metric(run_id, key, value)
        self.client.set_terminated(run_id)
        return run_id

    def model(self, **budget: float) -> str:
        name = _name("m")
        self.client.create_registered_model(name)
        if budget:
            set_budget(name, client=self.client, **budget)
        return name

    def version(self, model: str, run_id: str) -> str:
        """A version registered as MLflow's own clients do it (``runs:/``, claimed run)."""
        mv = self.client.create_model_version(model, f"runs:/{run_id}/model", run_id=run_id)
        return str(mv.version)

    def create_version(self, model: str, **body: str) -> str:
        resp = self.rest("POST", "/model-versions/create", {"name": model, **body})
        assert resp.status_code == 200, resp.text
        return str(resp.json()["model_version"]["version"])

    def alias(self, model: str, version: str, alias: str = "champion", prefix: str = API) -> Any:
        body = {"name": model, "alias": alias, "version": version}
        return self.rest("POST", "/registered-models/alias", body, prefix)

    def stage(self, model: str, version: str, stage: str, prefix: str = API) -> Any:
        body = {"name": model, "version": version, "stage": stage}
        body["archive_existing_versions"] = False
        return self.rest("POST", "/model-versions/transition-stage", body, prefix)

    def aliases(self, model: str) -> dict[str, str]:
        return {k: str(v) for k, v in self.client.get_registered_model(model).aliases.items()}


def denied(resp: Any, *fragments: str) -> str:
    assert resp.status_code == 403, (resp.status_code, resp.text)
    payload = resp.json()
    assert payload["error_code"] == "PERMISSION_DENIED", payload
    for fragment in fragments:
        assert fragment in payload["message"], (fragment, payload["message"])
    return payload["message"]


def ok(resp: Any) -> Any:
    assert resp.status_code == 200, (resp.status_code, resp.text)
    return resp.json()


def client_refuses(attacker: Attacker, model: str, version: str, *fragments: str) -> None:
    """The client check reaches the same answer as the server, for the same reason."""
    check = check_budget(model, version, client=attacker.client)
    assert not check.passed, check
    for fragment in fragments:
        assert fragment in check.reason, (fragment, check.reason)


@pytest.fixture(scope="module")
def attacker(mlflow_server: str) -> Attacker:
    return Attacker(mlflow_server)


@pytest.fixture
def fluent(mlflow_server: str) -> Iterator[None]:
    """MLflow's fluent API pointed at the gated server, then back."""
    mlflow.set_tracking_uri(mlflow_server)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)


# -- 1: a mutable tag does not switch the gate off ------------------------------------------------


def test_1_prompt_tag_does_not_switch_off_the_gate_of_a_model_with_a_budget(
    attacker: Attacker,
) -> None:
    name = attacker.model(max_kwh=0.1)
    over = attacker.version(name, attacker.run(0.5))
    tag = {"name": name, "key": PROMPT_TAG, "value": "true"}
    ok(attacker.rest("POST", "/registered-models/set-tag", tag))

    denied(attacker.alias(name, over), "0.5 kWh", "0.1 kWh")
    denied(attacker.alias(name, over, prefix=AJAX), "0.5 kWh")  # the UI's route, same store
    for stage in ("Production", "PRODUCTION", "sTaGiNg"):
        denied(attacker.stage(name, over, stage), "0.5 kWh")

    # Deleting the tag again leaves nothing promoted.
    ok(attacker.rest("DELETE", "/registered-models/delete-tag", {"name": name, "key": PROMPT_TAG}))
    assert attacker.aliases(name) == {}
    assert attacker.client.get_model_version(name, over).current_stage == "None"
    client_refuses(attacker, name, over, "0.5 kWh")
    # A model without a budget passes as before, prompt tag or not.
    free = attacker.model()
    ok(attacker.rest("POST", "/registered-models/set-tag", tag | {"name": free}))
    ok(attacker.alias(free, attacker.version(free, attacker.run(0.5))))


# -- 2: forged lineage ----------------------------------------------------------------------------


def test_2_energy_is_that_of_the_run_that_produced_the_artifacts(
    attacker: Attacker, fluent: None
) -> None:
    from sklearn.linear_model import LogisticRegression

    client = attacker.client
    name = attacker.model(max_kwh=1.0)
    small, big = attacker.run(0.05), attacker.run(5.0)

    # A LoggedModel made by the big run, registered claiming the small run.
    big_model = client.create_logged_model(attacker.experiment_id, source_run_id=big).model_id
    forged = attacker.create_version(
        name, source=f"models:/{big_model}", model_id=big_model, run_id=small
    )
    assert client.get_model_version(name, forged).run_id == small  # the claim MLflow stored
    denied(attacker.alias(name, forged), "5 kWh", "1 kWh", BUDGET_KWH_TAG)
    client_refuses(attacker, name, forged, "5 kWh")

    # A LoggedModel whose "source run" is a small run of another experiment.
    elsewhere = attacker.run(0.05, experiment_id=attacker.s3_experiment_id)
    stray = client.create_logged_model(attacker.experiment_id, source_run_id=elsewhere).model_id
    claimed = attacker.create_version(
        name, source=f"models:/{stray}", model_id=stray, run_id=elsewhere
    )
    denied(attacker.alias(name, claimed), "energy unknown", f"names run {elsewhere}")
    client_refuses(attacker, name, claimed, f"names run {elsewhere}")

    # Sources outside the claimed run's artifacts: elsewhere, and next to them by prefix.
    s3_small = attacker.run(0.05, experiment_id=attacker.s3_experiment_id)
    root = client.get_run(s3_small).info.artifact_uri
    assert root.startswith(BUCKET) and root.endswith("/artifacts")
    # (MLflow itself refuses ".." in a source, encoded or not; an encoded "/" it lets through.)
    encoded = root.replace(f"/{s3_small}/artifacts", f"/{s3_small}%2Fartifacts")
    for source in (f"{BUCKET}/elsewhere/model", f"{root}-evil/model", f"{encoded}/model"):
        version = attacker.create_version(name, source=source, run_id=s3_small)
        denied(attacker.alias(name, version), "energy unknown", "is not under the artifacts")
        client_refuses(attacker, name, version, "is not under the artifacts")

    # A copy holds the artifacts it was copied from, whatever becomes of its source model.
    src, free = attacker.model(), attacker.model()
    small_model = client.create_logged_model(attacker.experiment_id, source_run_id=small).model_id
    small_src = attacker.create_version(src, source=f"models:/{small_model}", model_id=small_model)
    big_src = attacker.version(src, big)
    small_copy = str(client.copy_model_version(f"models:/{src}/{small_src}", name).version)
    big_copy = str(client.copy_model_version(f"models:/{src}/{big_src}", free).version)
    client.delete_registered_model(src)
    client.create_registered_model(src)  # re-created: its versions are small runs' now
    assert [attacker.version(src, small) for _ in range(2)] == ["1", "2"]
    ok(attacker.alias(name, small_copy))
    resp = attacker.rest(
        "POST", "/model-versions/create", {"name": name, "source": f"models:/{free}/{big_copy}"}
    )
    denied(resp, "5 kWh")

    # Legitimate registrations keep passing: under the run's artifacts, runs:/, log_model.
    inside = attacker.create_version(name, source=f"{root}/model", run_id=s3_small)
    ok(attacker.alias(name, inside))
    assert check_budget(name, inside, client=client).passed
    ok(attacker.alias(name, attacker.version(name, small)))
    x, y = [[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1]
    with mlflow.start_run(experiment_id=attacker.experiment_id) as run:
        mlflow.log_metric("green/energy_kwh", 0.2)
        info = mlflow.sklearn.log_model(
            LogisticRegression().fit(x, y),
            name="model",
            registered_model_name=name,
            pip_requirements=[],
        )
    logged = client.search_model_versions(f"name='{name}' and run_id='{run.info.run_id}'")
    assert [mv.source for mv in logged] == [f"models:/{info.model_id}"]
    ok(attacker.alias(name, str(logged[0].version)))
    registered = mlflow.register_model(f"runs:/{run.info.run_id}/model", name)
    ok(attacker.alias(name, str(registered.version)))
    check = check_budget(name, str(registered.version), client=client)
    assert check.passed and check.run_id == run.info.run_id and check.energy_kwh == 0.2


def test_2_nested_artifact_folders_answer_for_the_innermost_run(attacker: Attacker) -> None:
    """An experiment whose artifact location lies inside a cheap run's (or LoggedModel's)
    artifacts: what its runs produce is theirs, not the cheap owner's."""
    client = attacker.client
    name = attacker.model(max_kwh=1.0)
    small = attacker.run(0.05, experiment_id=attacker.s3_experiment_id)
    small_root = client.get_run(small).info.artifact_uri
    small_model = client.create_logged_model(attacker.s3_experiment_id, source_run_id=small)

    # Inside the cheap LoggedModel's artifacts: a 500 kWh run and its LoggedModel.
    inside_model = client.create_experiment(
        _name("nested"), artifact_location=f"{small_model.artifact_location}/x"
    )
    big = attacker.run(500.0, experiment_id=inside_model)
    big_model = client.create_logged_model(inside_model, source_run_id=big)
    assert big_model.artifact_location.startswith(small_model.artifact_location + "/")
    version = attacker.create_version(
        name, source=big_model.artifact_location, model_id=big_model.model_id
    )
    denied(attacker.alias(name, version), "500 kWh")
    client_refuses(attacker, name, version, "500 kWh")

    # Inside the cheap run's artifacts, claiming the cheap run: by path and as runs:/.
    inside_run = client.create_experiment(_name("nested"), artifact_location=f"{small_root}/nest")
    big = attacker.run(500.0, experiment_id=inside_run)
    big_root = client.get_run(big).info.artifact_uri
    relative = big_root[len(small_root) + 1 :]
    for source in (f"{big_root}/model", f"runs:/{small}/{relative}/model"):
        version = attacker.create_version(name, source=source, run_id=small)
        denied(attacker.alias(name, version), "500 kWh")
        client_refuses(attacker, name, version, "500 kWh")

    # The cheap run's own artifacts beside them still count as its own.
    ok(attacker.alias(name, attacker.create_version(name, source=f"{small_root}/m", run_id=small)))


# -- 3: values that are not measurements ----------------------------------------------------------


def test_3_negative_infinite_and_nan_values_are_refused_naming_the_value(
    attacker: Attacker,
) -> None:
    name = attacker.model(max_kwh=1.0, max_co2eq_kg=1.0)
    cases = [
        (attacker.run(-5.0, **{"green/co2eq_kg": 0.01}), "green/energy_kwh=-5"),
        (attacker.run(math.inf, **{"green/co2eq_kg": 0.01}), "green/energy_kwh=inf"),
        (attacker.run(math.nan, **{"green/co2eq_kg": 0.01}), "green/energy_kwh=nan"),
        (attacker.run(0.5, **{"green/co2eq_kg": -math.inf}), "green/co2eq_kg=-inf"),
    ]
    for run_id, fragment in cases:
        version = attacker.version(name, run_id)
        message = denied(attacker.alias(name, version), fragment, "is not a measurement", run_id)
        assert "has no" not in message, message
        denied(attacker.stage(name, version, "Production"), fragment)
        client_refuses(attacker, name, version, fragment, f"logged to run {run_id}")
    assert attacker.aliases(name) == {}


# -- 4: metrics rewritten after the run ended -----------------------------------------------------


def test_4_a_lower_value_logged_later_never_lowers_the_energy(attacker: Attacker) -> None:
    name = attacker.model(max_kwh=1.0)
    run_id = attacker.run(5.0)
    version = attacker.version(name, run_id)
    denied(attacker.alias(name, version), "5 kWh")
    now_ms = int(time.time() * 1000)
    # After the run ended: later timestamps, later steps, earlier ones; one at a time and batched.
    for timestamp, step in ((now_ms + 3_600_000, 10**6), (now_ms - 3_600_000, 0), (now_ms, 1)):
        body = {
            "run_id": run_id,
            "key": "green/energy_kwh",
            "value": 0.01,
            "timestamp": timestamp,
            "step": step,
        }
        ok(attacker.rest("POST", "/runs/log-metric", body))
    metric = {"key": "green/energy_kwh", "value": 0.02, "timestamp": now_ms + 7_200_000, "step": 7}
    ok(attacker.rest("POST", "/runs/log-batch", {"run_id": run_id, "metrics": [metric]}))
    assert attacker.client.get_run(run_id).data.metrics["green/energy_kwh"] < 1  # its "latest"

    denied(attacker.alias(name, version), "5 kWh exceeds")
    denied(attacker.stage(name, version, "Staging"), "5 kWh exceeds")
    client_refuses(attacker, name, version, "5 kWh exceeds")
    # A run's cumulative flushes: the largest is its total.
    growing = attacker.run(0.1)
    attacker.client.log_metric(growing, "green/energy_kwh", 0.6, step=1)
    grown = attacker.version(name, growing)
    ok(attacker.alias(name, grown))
    assert check_budget(name, grown, client=attacker.client).energy_kwh == 0.6


# -- 5: a deleted run is no evidence --------------------------------------------------------------


def test_5_a_deleted_source_run_is_no_evidence(attacker: Attacker) -> None:
    name = attacker.model(max_kwh=1.0)
    run_id = attacker.run(0.05)
    version = attacker.version(name, run_id)
    attacker.client.delete_run(run_id)
    denied(attacker.alias(name, version), "energy unknown", f"its run {run_id} was deleted")
    denied(attacker.stage(name, version, "production"), "was deleted")
    client_refuses(attacker, name, version, f"its run {run_id} was deleted")
    assert attacker.aliases(name) == {}
    attacker.client.restore_run(run_id)  # restored: evidence again
    ok(attacker.alias(name, version))


# -- 6: a refused copy is PERMISSION_DENIED; names in models:/ are taken as written ---------------


def test_6_refused_copy_is_permission_denied_and_source_names_are_not_decoded(
    attacker: Attacker,
) -> None:
    client = attacker.client
    dst = attacker.model(max_kwh=1.0)
    src = attacker.model()
    over = attacker.version(src, attacker.run(5.0))

    with pytest.raises(MlflowException) as info:
        client.copy_model_version(f"models:/{src}/{over}", dst)
    assert info.value.error_code == "PERMISSION_DENIED", info.value.error_code
    assert "5 kWh exceeds the budget of 1 kWh" in info.value.message
    assert client.search_model_versions(f"name='{dst}'") == []

    # "ev%41x" (over budget) is not "evAx" (under budget): the gate reads the model copied.
    token = uuid.uuid4().hex[:6]
    for raw, decoded in ((f"ev%41{token}", f"evA{token}"), (f"ev%2F{token}", None)):
        client.create_registered_model(raw)
        raw_version = attacker.version(raw, attacker.run(5.0))
        if decoded is not None:
            client.create_registered_model(decoded)
            assert attacker.version(decoded, attacker.run(0.01)) == raw_version
        resp = attacker.rest(
            "POST", "/model-versions/create", {"name": dst, "source": f"models:/{raw}/1"}
        )
        denied(resp, "5 kWh", f"of '{raw}'")
        with pytest.raises(MlflowException) as info:
            client.copy_model_version(f"models:/{raw}/1", dst)
        assert info.value.error_code == "PERMISSION_DENIED" and "5 kWh" in info.value.message
    assert client.search_model_versions(f"name='{dst}'") == []


# -- 7: budget tags are plain decimal numbers -----------------------------------------------------


def test_7_a_budget_tag_that_is_not_a_plain_decimal_refuses_promotion(attacker: Attacker) -> None:
    name = attacker.model()
    version = attacker.version(name, attacker.run(0.0001))
    for bad in ("1_0", " 1", "\u0661", "+1", "1\n", "inf", "0x1", "1e400", "1e5\u0661"):
        attacker.client.set_registered_model_tag(name, BUDGET_KWH_TAG, bad)
        denied(attacker.alias(name, version), "invalid", f"{BUDGET_KWH_TAG}={bad!r}")
        denied(attacker.stage(name, version, "Production"), f"{BUDGET_KWH_TAG}={bad!r}")
        client_refuses(attacker, name, version, f"{BUDGET_KWH_TAG}={bad!r}")
    assert attacker.aliases(name) == {}


def test_7_set_budget_writes_plain_decimals_that_read_back_exactly(attacker: Attacker) -> None:
    for value in (1e-05, 5e-324, 0.1, 2.5, 123456789.125, 1e16, 1.7976931348623157e308, 0.0):
        name = attacker.model(max_kwh=value, max_co2eq_kg=value)
        tags = get_budget(name, client=attacker.client)
        for tag in (BUDGET_KWH_TAG, BUDGET_CO2EQ_TAG):
            assert re.fullmatch(r"[0-9]+\.[0-9]+|[0-9]+", tags[tag]), tags  # no exponent, no sign
            assert float(tags[tag]) == value, tags
    name = attacker.model(max_kwh=1e-05)
    assert get_budget(name, client=attacker.client) == {BUDGET_KWH_TAG: "0.00001"}
    on_budget = attacker.version(name, attacker.run(1e-05))
    just_over = attacker.version(name, attacker.run(1.01e-05))
    ok(attacker.alias(name, on_budget))
    denied(attacker.alias(name, just_over, "challenger"), "1.01e-05 kWh")
    # Budgets written by mlflow-green 0.1 (repr: "1e-05") still read as budgets.
    attacker.client.set_registered_model_tag(name, BUDGET_KWH_TAG, "1e-05")
    ok(attacker.alias(name, on_budget, "again"))
