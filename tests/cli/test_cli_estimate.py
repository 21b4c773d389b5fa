"""``mlflow-green estimate``: the output, several locations, the accelerator table, bad input,
and ``--against MODEL`` on a real SQLite store and a real ``mlflow server``.

Issue 15, parts 3 and 4. Exit codes as ``gate``: 0 fits (or no budget), 1 over budget or an
invalid budget tag, 2 bad input or an unknown model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from mlflow import MlflowClient

from mlflow_green.cli import main
from mlflow_green.measure import accelerators
from mlflow_green.measure.planning import estimate
from tests.mlflow_server import free_port, server_fixture, sqlite_db_copy

mlflow_server = server_fixture()

# 4 x T4 for 10 h at PUE 1.5: 70 W x 40 accelerator-hours x 1.5 = 4.2 kWh.
JOB = ["--accelerator", "t4", "--count", "4", "--hours", "10", "--pue", "1.5"]
JOB_KWH = 4.2


def invoke(*args: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(main, ["estimate", *args], env=env)


def assert_error(result: Result, *fragments: str) -> str:
    """Exit 2, click's ``Error:`` style, every fragment; no traceback."""
    output = result.output
    assert result.exit_code == 2, output
    assert output.startswith("Error: ") or "\nError: " in output, output
    assert "Traceback" not in output, output
    for fragment in fragments:
        assert fragment in output, (fragment, output)
    return output


@pytest.fixture(autouse=True)
def _no_uri_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)


# -- the estimate ---------------------------------------------------------------------------------


def test_one_location_shows_each_figure_and_how_it_was_obtained() -> None:
    result = invoke(*JOB, "--country", "FRA", "--price-per-kwh", "0.2", "--currency", "eur")
    assert result.exit_code == 0, result.output
    expected = estimate("t4", 4, 10, pue=1.5, country="FRA", price_per_kwh=0.2, currency="EUR")
    assert expected.energy_kwh == pytest.approx(JOB_KWH)
    lines = result.output.splitlines()
    assert lines[0] == "energy  4.2 kWh"
    # The methods name the options the user typed, where the function names its arguments.
    assert lines[1].strip() == expected.energy_method.replace(
        "utilisation for", "--utilisation for"
    )
    assert "70 W TDP of NVIDIA T4" in lines[1] and "40 accelerator-hours" in lines[1]
    assert lines[2] == "cost    0.84 EUR" and lines[3].strip() == expected.cost_method
    assert lines[4] == "CO2eq   0.2354 kg" and lines[5].strip() == expected.co2eq_method


def test_json_holds_every_field_of_the_estimate() -> None:
    result = invoke(*JOB, "--format", "json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)["estimates"]
    expected = estimate("t4", 4, 10, pue=1.5).to_dict()
    # The method names the option the user typed, not the Python argument.
    assert expected.pop("cost_method") == "no price_per_kwh given"
    assert row.pop("cost_method") == "no --price-per-kwh given"
    method = expected.pop("energy_method")
    assert "give utilisation for a lighter load" in method
    assert row.pop("energy_method") == method.replace("utilisation for", "--utilisation for")
    assert row == expected
    assert row["intensity_source"] == "codecarbon world average (no location given)"


def test_several_countries_compare_the_same_job_one_row_each_in_the_order_given() -> None:
    result = invoke(*JOB, "--country", "DEU", "--country", "fra", "--country", "IND")
    assert result.exit_code == 0, result.output
    table = result.output.split("CO2eq by location")[1].splitlines()[1:]
    rows = [line.split() for line in table]
    assert rows[0] == ["country", "gCO2eq/kWh", "CO2eq", "kg", "x", "lowest"]
    assert [r[0] for r in rows[1:4]] == ["DEU", "FRA", "IND"]
    assert rows[2][-1] == "1.0"  # France is the lowest
    deu = estimate("t4", 4, 10, pue=1.5, country="DEU")
    fra = estimate("t4", 4, 10, pue=1.5, country="FRA")
    assert float(rows[1][-1]) == pytest.approx(deu.co2eq_kg / fra.co2eq_kg, abs=0.05)
    assert result.output.count("energy  4.2 kWh") == 1  # the energy does not depend on where
    as_json = json.loads(
        invoke(*JOB, "--country", "DEU", "--country", "FRA", "--format", "json").output
    )
    assert [r["country"] for r in as_json["estimates"]] == ["DEU", "FRA"]
    assert as_json["estimates"][0]["co2eq_kg"] == pytest.approx(deu.co2eq_kg)


def test_the_accelerator_table_with_its_sources() -> None:
    result = invoke("--list-accelerators")
    assert result.exit_code == 0, result.output
    for acc in accelerators.ACCELERATORS:
        assert acc.name in result.output and acc.source in result.output
    assert "NVIDIA A100 SXM              400 W  TDP" in result.output
    listed = json.loads(invoke("--list-accelerators", "--format", "json").output)
    assert {a["name"]: a["power_w"] for a in listed}["AMD Instinct MI300X"] == 750


# -- bad input ------------------------------------------------------------------------------------


# A valid job (one T4 for one hour) that each bad case below spoils with one option.
T4 = ["--accelerator", "t4", "--hours", "1"]


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--accelerator", "t4", "--hours", "-1"], ["--hours=-1.0 is out of range"]),
        (["--accelerator", "t4", "--hours", "nan"], ["--hours=nan is not a finite number"]),
        (["--accelerator", "t4"], ["give --hours (with --count", "or --accelerator-hours"]),
        ([*T4, "--count", "0"], ["--count=0"]),
        (
            ["--accelerator", "h1000", "--hours", "1"],
            ["--accelerator='h1000'", "NVIDIA H100 SXM", "--power-w"],
        ),
        (
            ["--accelerator", "a100", "--hours", "1"],
            ["several boards", "NVIDIA A100 PCIe 40GB (250 W)"],
        ),
        (["--hours", "1"], ["give --accelerator=<name>", "--list-accelerators", "--power-w"]),
        (
            ["--power-w", "300", "--utilisation", "0.5", "--hours", "1"],
            ["--utilisation=0.5 with --power-w"],
        ),
        ([*T4, "--utilisation", "2"], ["--utilisation=2.0 is out of range"]),
        ([*T4, "--pue", "0.5"], ["--pue=0.5"]),
        ([*T4, "--currency", "EUR"], ["--currency='EUR' without --price-per-kwh"]),
        ([*T4, "--price-per-kwh", "1", "--currency", "euro"], ["--currency='euro'", "3 letters"]),
        (
            [*T4, "--country", "FRN"],
            ["--country='FRN'", "Did you mean FRA", "--carbon-intensity=<g/kWh>"],
        ),
        (
            [*T4, "--country", "FRA", "--country", "DEU", "--carbon-intensity", "50"],
            ["--carbon-intensity replaces"],
        ),
        (["--list-accelerators", "--hours", "3"], ["takes no job options (got --hours)"]),
        ([*T4, "--tracking-uri", "sqlite:///x.db"], ["--tracking-uri is only read with --against"]),
        ([*T4, "--against", " "], ["--against ' '"]),
        (["--count", "2.5"], ["'2.5' is not a valid integer"]),
        ([*T4, "--price-per-kwh", "-0.1"], ["--price-per-kwh=-0.1 is out of range"]),
    ],
)
def test_bad_input_exits_2_naming_the_option(args: list[str], fragments: list[str]) -> None:
    assert_error(invoke(*args), *fragments)


def test_bad_input_is_refused_before_any_store_is_opened(tmp_path: Path) -> None:
    missing = f"sqlite:///{tmp_path / 'none.db'}"
    dead = f"http://127.0.0.1:{free_port()}"
    for uri in (missing, dead):
        output = assert_error(invoke("--hours", "-1", "--accelerator", "t4", "--against", "m",
                                     "--tracking-uri", uri), "--hours=-1.0")  # fmt: skip
        assert uri not in output
    assert not (tmp_path / "none.db").exists()
    assert_error(invoke(*JOB, "--against", "m", "--tracking-uri", missing), "no SQLite database")
    assert not (tmp_path / "none.db").exists()


# -- --against MODEL ------------------------------------------------------------------------------


def _models(client: MlflowClient) -> None:
    """Registered models with budgets around the 4.2 kWh job (CO2eq from the country's grid)."""
    budgets = {
        "fits": {"green.budget_kwh": "10"},
        "exactly": {"green.budget_kwh": "4.2"},
        "over": {"green.budget_kwh": "1"},
        "co2": {"green.budget_co2eq_kg": "1"},  # FRA ~0.24 kg fits; DEU ~1.6 kg does not
        "invalid": {"green.budget_kwh": "ten"},
        "no-budget": {"team": "nlp"},
    }
    for name, tags in budgets.items():
        client.create_registered_model(name, tags=tags)


@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("estimate-store")
    uri = f"sqlite:///{sqlite_db_copy(folder / 'mlflow.db')}"
    _models(MlflowClient(uri, registry_uri=uri))
    return uri


@pytest.fixture(scope="module")
def server_store(mlflow_server: str) -> str:
    _models(MlflowClient(mlflow_server, registry_uri=mlflow_server))
    return mlflow_server


@pytest.fixture(params=["sqlite", "server"])
def store(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue(f"{request.param}_store")


@pytest.mark.parametrize(
    ("model", "code", "fragment"),
    [
        ("fits", 0, "PASS: model 'fits': planned energy 4.2 kWh within the budget of 10 kWh"),
        ("exactly", 0, "PASS: model 'exactly': planned energy 4.2 kWh within the budget of 4.2"),
        ("over", 1, "FAIL: model 'over': planned energy 4.2 kWh exceeds the budget of 1 kWh"),
        ("invalid", 1, "the budget tag green.budget_kwh='ten' of model 'invalid' is invalid"),
        ("no-budget", 0, "model 'no-budget' has no energy or carbon budget"),
    ],
)
def test_against_a_models_budget(store: str, model: str, code: int, fragment: str) -> None:
    # 4.2 kWh computed in floating point: 70 x 40 x 1.5 / 1000 is exactly 4.2 here.
    assert estimate("t4", 4, 10, pue=1.5).energy_kwh == 4.2
    result = invoke(*JOB, "--against", model, "--tracking-uri", store)
    assert result.exit_code == code, result.output
    assert fragment in result.output, result.output
    assert result.output.startswith("energy  4.2 kWh")  # the estimate, then the verdict


def test_against_with_several_countries_fits_only_if_every_row_fits(store: str) -> None:
    result = invoke(*JOB, "--country", "FRA", "--country", "DEU", "--against", "co2",
                    "--tracking-uri", store)  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "PASS FRA: model 'co2': planned CO2eq 0.235" in result.output
    assert "FAIL DEU: model 'co2': planned CO2eq 1.6 kg CO2eq exceeds" in result.output
    assert "exceeds the budget of 1 kg CO2eq (green.budget_co2eq_kg)" in result.output
    alone = invoke(*JOB, "--country", "FRA", "--against", "co2", "--tracking-uri", store)
    assert alone.exit_code == 0 and "PASS: model 'co2'" in alone.output, alone.output


def test_against_in_json(store: str) -> None:
    result = invoke(*JOB, "--country", "FRA", "--country", "DEU", "--against", "co2",
                    "--tracking-uri", store, "--format", "json")  # fmt: skip
    assert result.exit_code == 1, result.output
    verdict = json.loads(result.output)["against"]
    assert (verdict["model"], verdict["fits"], verdict["budget_co2eq_kg"]) == ("co2", False, 1.0)
    assert [(r["country"], r["fits"]) for r in verdict["rows"]] == [("FRA", True), ("DEU", False)]


def test_against_an_unknown_model_exits_2(store: str) -> None:
    assert_error(
        invoke(*JOB, "--against", "no-such-model", "--tracking-uri", store),
        f"no registered model 'no-such-model' at {store}",
    )


def test_against_reads_mlflow_tracking_uri_like_gate(sqlite_store: str) -> None:
    result = invoke(*JOB, "--against", "over", env={"MLFLOW_TRACKING_URI": sqlite_store})
    assert result.exit_code == 1 and "FAIL" in result.output, result.output
