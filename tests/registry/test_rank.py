"""Ranking registered models by quality per kWh (issue 4) and over a lifecycle (issue 13).

SQLite stores in ``tmp_path`` for the ranking rules and the CLI; the real
``mlflow server`` for the request count (counted at MLflow's own HTTP boundary,
``mlflow.utils.rest_utils.http_request``). Runs hold metrics logged directly: the
ranking reads what autolog writes, it does not need autolog to run.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import os
import random
import re
import socket
import uuid
from collections.abc import Iterator

import mlflow
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient
from mlflow.tracking import fluent
from mlflow.utils import rest_utils
from sklearn.datasets import load_digits
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from mlflow_green.cli import main
from mlflow_green.registry.inference import INFERENCE_METRIC, INFERENCE_TAG, measure_inference
from mlflow_green.registry.rank import RankingError, pareto_front, rank_models
from tests.mlflow_server import boot_fixture, server_fixture, sqlite_db_copy

mlflow_server = server_fixture()
_boot_mlflow_server = boot_fixture()

# (model, accuracy, energy kWh or None); registered in this order, versions counting up.
MUST_SHOW = [
    ("alpha", 0.90, 0.002),  # 450 per kWh, front
    ("alpha", 0.95, 0.010),  # 95 per kWh, front: the most accurate
    ("beta", 0.80, 0.001),  # 800 per kWh, front: the least energy
    ("beta", 0.88, None),  # no energy: last, with a reason
    ("gamma", 0.70, 0.004),  # 175 per kWh, dominated
    ("gamma", 0.85, 0.002),  # 425 per kWh, dominated by alpha:1 (same energy, less accurate)
]
G_PER_KWH = 56.0


class Registry:
    """A tracking URI with its registry, an experiment, and helpers to fill them."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.client = MlflowClient(uri, registry_uri=uri)
        self.experiment_id = self.client.create_experiment(f"rank-{uuid.uuid4().hex[:8]}")

    def version(
        self, model: str, metrics: dict[str, float] | None, *, tags: dict | None = None
    ) -> tuple[str, str | None]:
        """Register a version of ``model`` made by a run holding ``metrics`` (no run if None)."""
        try:
            self.client.get_registered_model(model)
        except mlflow.exceptions.MlflowException:
            self.client.create_registered_model(model)
        run_id = None
        if metrics is not None:
            run_id = self.client.create_run(self.experiment_id).info.run_id
            entities = [mlflow.entities.Metric(k, v, 0, 0) for k, v in metrics.items()]
            self.client.log_batch(run_id, metrics=entities)
            self.client.set_terminated(run_id)
        mv = self.client.create_model_version(
            model, f"s3://bucket/models/{model}", run_id, tags=tags
        )
        return mv.version, run_id


def green_metrics(accuracy: float, energy_kwh: float | None) -> dict[str, float]:
    out = {"accuracy": accuracy}
    if energy_kwh is not None:
        out |= {"green/energy_kwh": energy_kwh, "green/co2eq_kg": energy_kwh * G_PER_KWH / 1000}
    return out


@pytest.fixture
def registry(tmp_path, monkeypatch) -> Iterator[Registry]:
    """A SQLite tracking store and registry of its own, as ``MLFLOW_TRACKING_URI``."""
    for name in list(os.environ):
        if name.startswith("MLFLOW_GREEN_") or name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{sqlite_db_copy(tmp_path / 'mlflow.db')}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    mlflow.set_tracking_uri(uri)
    monkeypatch.setattr(fluent, "_active_experiment_id", None)
    try:
        yield Registry(uri)
    finally:
        mlflow.set_tracking_uri(None)


@pytest.fixture
def must_show(registry: Registry) -> Registry:
    """Issue 4's three models; ``alpha`` version 2 carries the alias ``champion``."""
    for model, accuracy, energy in MUST_SHOW:
        registry.version(model, green_metrics(accuracy, energy))
    registry.client.set_registered_model_alias("alpha", "champion", "2")
    return registry


# -- the ranking -------------------------------------------------------------------------------
def test_cost_is_the_runs_own_price_times_the_training_energy(registry: Registry) -> None:
    """``cost``: the run's ``green/cost`` (autolog's ``price_per_kwh``) in its currency; a
    train phase gets its share at the run's price; a run without a price has none."""
    priced = {"green/cost": 0.004 * 0.25}  # 0.004 kWh at 0.25 EUR/kWh
    _, whole = registry.version("m", green_metrics(0.9, 0.004) | priced)
    registry.client.set_tag(whole, "green.currency", "EUR")
    phase = green_metrics(0.8, 0.004) | priced | {"green/phase/train_kwh": 0.001}
    _, part = registry.version("m", phase)
    registry.client.set_tag(part, "green.currency", "EUR")
    registry.version("m", green_metrics(0.7, 0.002))  # no price

    frame = rank_models("accuracy").set_index("version")
    assert frame.loc[1, "cost"] == pytest.approx(0.001) and frame.loc[1, "currency"] == "EUR"
    assert frame.loc[2, "cost"] == pytest.approx(0.00025)  # 0.001 kWh x 0.25 EUR/kWh
    assert math.isnan(frame.loc[3, "cost"]) and frame.loc[3, "currency"] == ""

    from mlflow_green.cli.rank import to_table

    header = to_table(rank_models("accuracy")).splitlines()[0].split()
    assert header[header.index("co2eq_kg") + 1 : header.index("co2eq_kg") + 3] == [
        "cost",
        "currency",
    ]


def test_a_ranking_without_prices_has_no_cost_column_in_the_table(must_show: Registry) -> None:
    from mlflow_green.cli.rank import to_table

    frame = rank_models("accuracy")
    assert frame["cost"].isna().all() and (frame["currency"] == "").all()
    assert "cost" not in to_table(frame).splitlines()[0].split()


def test_ranks_by_accuracy_per_kwh_with_exact_ratios_and_pareto_flags(must_show) -> None:
    frame = rank_models("accuracy")

    assert list(frame.columns) == [
        "model",
        "version",
        "aliases",
        "run_id",
        "accuracy",
        "energy_kwh",
        "energy_source",
        "co2eq_kg",
        "cost",
        "currency",
        "inference_wh_per_1k",
        "break_even_queries",
        "accuracy_per_kwh",
        "pareto",
        "rank",
        "reason",
    ]
    assert frame["break_even_queries"].isna().all()  # no version has inference energy
    got = list(zip(frame["model"], frame["version"], strict=True))
    assert got == [("beta", 1), ("alpha", 1), ("gamma", 2), ("gamma", 1), ("alpha", 2), ("beta", 2)]
    # Exact: the same float division as here, no rounding on the way.
    assert frame["accuracy_per_kwh"].tolist()[:5] == [
        0.80 / 0.001,
        0.90 / 0.002,
        0.85 / 0.002,
        0.70 / 0.004,
        0.95 / 0.010,
    ]
    assert frame["pareto"].tolist() == [True, True, False, False, True, False]
    assert frame["rank"].tolist()[:5] == [1, 2, 3, 4, 5]
    assert frame["rank"].isna().tolist() == [False] * 5 + [True]
    assert frame["co2eq_kg"].tolist()[:2] == [0.001 * G_PER_KWH / 1000, 0.002 * G_PER_KWH / 1000]
    assert frame["energy_source"].tolist() == ["run"] * 5 + [""]  # no run has a train phase
    assert frame["aliases"].tolist() == ["", "", "", "", "champion", ""]
    assert (frame["reason"].iloc[:5] == "").all()
    last = frame.iloc[-1]
    assert last["accuracy"] == 0.88 and math.isnan(last["energy_kwh"])
    assert "green/energy_kwh" in last["reason"]
    assert math.isnan(last["accuracy_per_kwh"]) and not last["pareto"]


def test_model_names_select_models(must_show) -> None:
    frame = rank_models("accuracy", model_names=["gamma", "alpha"])
    assert set(frame["model"]) == {"alpha", "gamma"} and len(frame) == 4
    assert frame["rank"].tolist() == [1, 2, 3, 4]  # ranked among themselves


def test_lower_is_better_ranks_by_the_metric_then_energy(registry) -> None:
    rows = [  # (rmse, kWh)
        (2.0, 0.010),  # dominated by 1.5 @ 0.005
        (1.5, 0.020),  # dominated by 1.5 @ 0.005: same error, more energy
        (1.5, 0.005),  # best error, least energy for it: rank 1, front
        (3.0, 0.001),  # least energy: front
        (2.2, 0.003),  # front: nothing is both as accurate and as cheap
        (2.6, 0.009),  # dominated
    ]
    for rmse, energy in rows:
        registry.version("reg", {"rmse": rmse, "green/energy_kwh": energy})
    frame = rank_models("rmse", greater_is_better=False)
    # By the error ascending, ties by energy ascending.
    assert list(zip(frame["rmse"], frame["energy_kwh"], strict=True)) == [
        (1.5, 0.005),
        (1.5, 0.020),
        (2.0, 0.010),
        (2.2, 0.003),
        (2.6, 0.009),
        (3.0, 0.001),
    ]
    assert frame["pareto"].tolist() == [True, False, False, True, False, True]
    assert frame["rmse_per_kwh"].isna().all()  # "error per kWh" rewards spending energy
    assert frame["rank"].tolist() == [1, 2, 3, 4, 5, 6]


def test_versions_lacking_data_are_kept_last_with_reasons(registry) -> None:
    registry.version("m", green_metrics(0.9, 0.01))
    registry.version("m", None)  # no source run
    registry.version("m", {"green/energy_kwh": 0.01})  # run without the metric
    registry.version("m", green_metrics(0.9, 0.0))  # nothing measured
    registry.version("m", {"accuracy": float("nan"), "green/energy_kwh": 0.01})
    frame = rank_models("accuracy")
    assert frame["version"].tolist() == [1, 2, 3, 4, 5]
    assert frame["rank"].tolist()[0] == 1 and frame["rank"].iloc[1:].isna().all()
    reasons = frame["reason"].tolist()
    assert reasons[0] == ""
    assert "no source run" in reasons[1]
    assert "no metric 'accuracy'" in reasons[2]
    assert "energy_kwh is 0" in reasons[3]
    assert "NaN" in reasons[4]
    assert not frame["pareto"].iloc[1:].any()


def test_pareto_front_matches_the_definition() -> None:
    rng = random.Random(4)
    for n in (1, 2, 7, 60):
        # Coarse values, so that ties on one axis or both are common.
        quality = np.array([rng.randint(0, 6) / 6 for _ in range(n)])
        energy = np.array([rng.randint(1, 5) / 1000 for _ in range(n)])
        expected = [
            not any(
                quality[j] >= quality[i]
                and energy[j] <= energy[i]
                and (quality[j] > quality[i] or energy[j] < energy[i])
                for j in range(n)
            )
            for i in range(n)
        ]
        assert pareto_front(quality, energy).tolist() == expected


def test_unknown_model_and_unknown_metric_name_what_was_wrong(must_show) -> None:
    with pytest.raises(RankingError, match="no-such-model"):
        rank_models("accuracy", model_names=["alpha", "no-such-model"])
    with pytest.raises(RankingError, match=r"'f1'.*accuracy"):
        rank_models("f1")
    with pytest.raises(RankingError, match="'gpu'"):
        rank_models("accuracy", energy="gpu")


def test_ranking_changes_nothing(must_show) -> None:
    client = must_show.client

    def snapshot() -> list:
        versions = client.search_model_versions()
        return sorted(
            (v.name, v.version, v.last_updated_timestamp, sorted(v.tags.items())) for v in versions
        )

    before = snapshot()
    rank_models("accuracy")
    assert snapshot() == before


# -- the command line -------------------------------------------------------------------------


def invoke(*args: str):
    return CliRunner().invoke(main, ["rank", *args])


def test_cli_json_prints_the_same_ranking(must_show) -> None:
    result = invoke("--metric", "accuracy", "--format", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    frame = rank_models("accuracy")
    assert [(r["model"], r["version"]) for r in rows] == list(
        zip(frame["model"], frame["version"], strict=True)
    )
    assert [r["accuracy_per_kwh"] for r in rows[:5]] == frame["accuracy_per_kwh"].tolist()[:5]
    assert [r["pareto"] for r in rows] == frame["pareto"].tolist()
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5, None]
    assert rows[-1]["energy_kwh"] is None and "green/energy_kwh" in rows[-1]["reason"]


def test_cli_csv_and_table(must_show) -> None:
    result = invoke("--format", "csv")
    assert result.exit_code == 0, result.output
    csv = pd.read_csv(io.StringIO(result.stdout))
    assert csv["model"].tolist()[:2] == ["beta", "alpha"]
    assert csv["accuracy_per_kwh"].iloc[0] == 0.80 / 0.001

    table = invoke().stdout.splitlines()
    assert table[0].split()[:4] == ["rank", "model", "version", "aliases"]
    assert table[1].split()[:3] == ["1", "beta", "1"]
    assert "champion" in table[5] and table[6].split()[:3] == ["-", "beta", "2"]


def test_cli_plot_writes_a_png(must_show, tmp_path) -> None:
    out = tmp_path / "out.png"
    result = invoke("--metric", "accuracy", "--plot", str(out))
    assert result.exit_code == 0, result.output
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--model", "no-such-model"], "no-such-model"),
        (["--model", "alpha", "--model", "nope-2"], "nope-2"),
        (["--metric", "f1_macro"], "f1_macro"),
        (["--energy", "gpu"], "gpu"),
        (["--format", "xml"], "xml"),
    ],
)
def test_cli_bad_input_exits_2_naming_it(must_show, args, named) -> None:
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert named in result.output


@pytest.mark.parametrize("server", ["refusing", "silent"])
def test_cli_server_down_exits_2_naming_the_server(monkeypatch, server) -> None:
    # MLflow retries for minutes by default; these make its own failure path quick too.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        # Bound but not listening: connections are refused. Listening but never
        # accepting: connections complete in the kernel and nothing ever answers.
        if server == "silent":
            listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        result = invoke("--tracking-uri", url)
    assert result.exit_code == 2, result.output
    assert f"cannot read the model registry at {url}" in result.output
    assert "Traceback" not in result.output


# -- training energy: the train phase where the run has one (issue 14) -------------------------

PHASE = "green/phase/train_kwh"


@pytest.fixture
def phases(registry: Registry) -> Registry:
    """``fit`` v1's fit costs 0.001 of its run's 0.010 kWh; ``whole`` v1's run has no phase.

    By the whole runs, ``whole`` (0.9 / 0.005 = 180 per kWh) beats ``fit`` (0.9 / 0.010 =
    90); by the fit, ``fit`` (0.9 / 0.001 = 900) comes first. ``fit`` v2 has a phase and no
    run totals (phase() outside autolog); ``none`` v1 has neither.
    """
    registry.version("fit", green_metrics(0.9, 0.010) | {PHASE: 0.001})
    registry.version("whole", green_metrics(0.9, 0.005))
    registry.version("fit", {"accuracy": 0.5, PHASE: 0.002})
    registry.version("none", {"accuracy": 0.99})
    return registry


def test_train_phase_energy_ranks_where_the_run_has_one(phases) -> None:
    frame = rank_models("accuracy")

    got = list(zip(frame["model"], frame["version"], strict=True))
    assert got == [("fit", 1), ("fit", 2), ("whole", 1), ("none", 1)]
    assert frame["energy_source"].tolist() == ["phase:train", "phase:train", "run", ""]
    assert frame["energy_kwh"].tolist()[:3] == [0.001, 0.002, 0.005]
    assert frame["accuracy_per_kwh"].tolist()[:3] == [0.9 / 0.001, 0.5 / 0.002, 0.9 / 0.005]
    # The phase's CO2eq: its share of the run's (one intensity per run); unknown without them.
    co2eq = frame["co2eq_kg"].tolist()
    assert co2eq[0] == (0.010 * G_PER_KWH / 1000) * (0.001 / 0.010)
    assert co2eq[0] == pytest.approx(0.001 * G_PER_KWH / 1000, rel=1e-12)
    assert math.isnan(co2eq[1]) and co2eq[2] == 0.005 * G_PER_KWH / 1000
    assert frame["rank"].tolist()[:3] == [1, 2, 3] and pd.isna(frame["rank"].iloc[3])
    assert PHASE in frame["reason"].iloc[3] and "green/energy_kwh" in frame["reason"].iloc[3]
    assert frame["pareto"].tolist() == [True, False, False, False]

    # The CLI prints the same ranking; JSON carries the source.
    rows = json.loads(invoke("--format", "json").stdout)
    assert [(r["model"], r["version"], r["energy_source"]) for r in rows] == list(
        zip(frame["model"], frame["version"], frame["energy_source"], strict=True)
    )
    assert [r["energy_kwh"] for r in rows[:3]] == [0.001, 0.002, 0.005]
    table = invoke().stdout.splitlines()
    assert table[1].split()[:3] == ["1", "fit", "1"] and "0.001" in table[1].split()


def test_inference_and_lifecycle_use_the_same_training_energy(phases) -> None:
    for model, version in (("fit", "1"), ("whole", "1")):
        phases.client.set_model_version_tag(model, version, INFERENCE_TAG, "0.5")
    frames = {
        "inference": rank_models("accuracy", ["fit", "whole"], energy="inference"),
        "lifecycle": rank_models("accuracy", ["fit", "whole"], energy="lifecycle", queries=4_000),
    }
    for energy, frame in frames.items():
        row = frame.set_index(["model", "version"]).loc[("fit", 1)]
        assert row["energy_kwh"] == 0.001 and row["energy_source"] == "phase:train", energy
        assert row["break_even_queries"] == 0.001 / (0.5 / 1e6), energy  # 2,000 queries
        whole = frame.set_index(["model", "version"]).loc[("whole", 1)]
        assert whole["energy_kwh"] == 0.005 and whole["energy_source"] == "run", energy
    lifecycle = frames["lifecycle"].set_index(["model", "version"])
    assert lifecycle.loc[("fit", 1), "lifecycle_kwh"] == lifecycle_kwh(0.001, 0.5, 4_000)
    assert lifecycle.loc[("whole", 1), "lifecycle_kwh"] == lifecycle_kwh(0.005, 0.5, 4_000)
    # fit:2 has a training energy but no inference energy: unranked, with that reason.
    fit2 = lifecycle.loc[("fit", 2)]
    assert pd.isna(fit2["rank"]) and "no inference energy" in fit2["reason"]


# -- inference energy ---------------------------------------------------------------------------


def test_measure_inference_records_and_ranks(registry) -> None:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True, as_frame=True)
    for c in (0.05, 1.0):
        with mlflow.start_run(experiment_id=registry.experiment_id):
            model = LogisticRegression(C=c, max_iter=300).fit(x, y)
            mlflow.log_metric("accuracy", model.score(x, y))
            # No requirement inference: it costs seconds and is not what is tested.
            mlflow.sklearn.log_model(
                model, name="model", registered_model_name="iris", pip_requirements=[]
            )
    registry.client.set_registered_model_alias("iris", "champion", "2")
    registry.version("iris", {"accuracy": 0.5})  # never measured

    by_version = measure_inference("models:/iris/1", x, repeats=5)
    by_alias = measure_inference("models:/iris@champion", x, repeats=5)

    assert by_version.predictions == len(x) * 5 and by_version.model_version == "1"
    assert by_alias.model_name == "iris" and by_alias.model_version == "2"
    for measured in (by_version, by_alias):
        assert measured.wh_per_1k > 0
        assert measured.wh_per_1k == pytest.approx(
            measured.report.energy_kwh * 1e6 / measured.predictions, rel=1e-12
        )
        mv = registry.client.get_model_version("iris", measured.model_version)
        assert float(mv.tags[INFERENCE_TAG]) == measured.wh_per_1k
        run = registry.client.get_run(measured.run_id)
        assert run.data.metrics[INFERENCE_METRIC] == measured.wh_per_1k

    frame = rank_models("accuracy", energy="inference")
    assert "accuracy_per_wh_per_1k" in frame.columns
    assert frame["rank"].tolist()[:2] == [1, 2] and pd.isna(frame["rank"].iloc[2])
    measured = {m.model_version: m.wh_per_1k for m in (by_version, by_alias)}
    for _, row in frame.iloc[:2].iterrows():
        assert row["inference_wh_per_1k"] == measured[str(row["version"])]
        assert row["accuracy_per_wh_per_1k"] == row["accuracy"] / row["inference_wh_per_1k"]
    ratios = frame["accuracy_per_wh_per_1k"].iloc[:2].tolist()
    assert ratios == sorted(ratios, reverse=True)
    assert frame["version"].iloc[2] == 3 and "inference" in frame["reason"].iloc[2]
    assert pareto_front(frame["accuracy"][:2], frame["inference_wh_per_1k"][:2]).tolist() == (
        frame["pareto"].iloc[:2].tolist()
    )

    cli = invoke("--energy", "inference", "--format", "json")
    assert cli.exit_code == 0, cli.output
    assert [r["version"] for r in json.loads(cli.stdout)] == frame["version"].tolist()


def test_measure_inference_rejects_bad_repeats() -> None:
    with pytest.raises(ValueError, match="repeats"):
        measure_inference("models:/iris/1", [[1.0]], repeats=0)


# -- the lifecycle view: training plus N queries, and the break-even ----------------------------

# (model, accuracy, training kWh or None, inference Wh per 1,000 or None); in this order.
LIFECYCLE = [
    ("a", 0.90, 0.002, 0.5),  # cheap to train, dear to serve: 0.502 kWh at 1M queries
    ("a", 0.95, 0.010, 0.1),  # 0.110 kWh at 1M: the most accurate, front
    ("b", 0.80, 0.001, None),  # never measured for inference: unranked
    ("b", 0.85, None, 0.2),  # no training energy: unranked
    ("c", 0.70, 0.004, 0.05),  # 0.054 kWh at 1M: the least energy, front
    ("c", 0.85, 0.002, 0.0),  # inference measured as 0 Wh: nothing was measured, unranked
]
MILLION = 1_000_000


@pytest.fixture
def lifecycle(registry: Registry) -> Registry:
    """:data:`LIFECYCLE`: inference energy as the version tag, except ``c`` v1's (run metric)."""
    for model, accuracy, train_kwh, wh_per_1k in LIFECYCLE:
        metrics = green_metrics(accuracy, train_kwh)
        tags = None
        if model == "c" and wh_per_1k:  # the run's metric, as measure_inference logs it
            metrics[INFERENCE_METRIC] = wh_per_1k
        elif wh_per_1k is not None:  # the version's tag, written as measure_inference does
            tags = {INFERENCE_TAG: repr(wh_per_1k)}
        registry.version(model, metrics, tags=tags)
    return registry


def lifecycle_kwh(train_kwh: float, wh_per_1k: float, queries: int) -> float:
    """Training plus ``queries`` predictions at ``wh_per_1k``, as documented (same operations)."""
    return train_kwh + queries * (wh_per_1k / 1e6)


def test_lifecycle_ranks_by_training_plus_queries(lifecycle) -> None:
    frame = rank_models("accuracy", energy="lifecycle", queries=MILLION)

    assert list(frame.columns) == [
        "model",
        "version",
        "aliases",
        "run_id",
        "accuracy",
        "energy_kwh",
        "energy_source",
        "co2eq_kg",
        "cost",
        "currency",
        "inference_wh_per_1k",
        "inference_kwh",
        "lifecycle_kwh",
        "break_even_queries",
        "accuracy_per_lifecycle_kwh",
        "pareto",
        "rank",
        "reason",
    ]
    assert frame.attrs["queries"] == MILLION
    assert frame.attrs["energy_column"] == "lifecycle_kwh"
    got = list(zip(frame["model"], frame["version"], strict=True))
    # c:1 0.70/0.054 = 13.0, a:2 0.95/0.110 = 8.6, a:1 0.90/0.502 = 1.8; then the unranked.
    assert got == [("c", 1), ("a", 2), ("a", 1), ("b", 1), ("b", 2), ("c", 2)]
    ranked = frame.iloc[:3]
    expected = [lifecycle_kwh(0.004, 0.05, MILLION), lifecycle_kwh(0.010, 0.1, MILLION)]
    expected.append(lifecycle_kwh(0.002, 0.5, MILLION))
    assert ranked["lifecycle_kwh"].tolist() == expected
    assert ranked["inference_kwh"].tolist() == [MILLION * (w / 1e6) for w in (0.05, 0.1, 0.5)]
    assert ranked["lifecycle_kwh"].tolist() == pytest.approx([0.054, 0.110, 0.502], rel=1e-12)
    assert ranked["accuracy_per_lifecycle_kwh"].tolist() == [
        a / e for a, e in zip((0.70, 0.95, 0.90), expected, strict=True)
    ]
    # The front on (accuracy, lifecycle energy): the cheapest and the most accurate;
    # a:1 is beaten on both by a:2 once a million queries are served.
    assert frame["pareto"].tolist() == [True, True, False, False, False, False]
    assert frame["rank"].tolist()[:3] == [1, 2, 3] and frame["rank"].iloc[3:].isna().all()
    reasons = frame["reason"].tolist()
    assert reasons[:3] == ["", "", ""]
    assert "no inference energy" in reasons[3] and "measure_inference" in reasons[3]
    assert "green/energy_kwh" in reasons[4]
    assert "inference_wh_per_1k is 0" in reasons[5]
    assert frame["lifecycle_kwh"].iloc[3:5].isna().all()
    assert not frame["pareto"].iloc[3:].any()


def test_lifecycle_order_follows_the_number_of_queries(lifecycle) -> None:
    # With one query training dominates: the cheap-to-train a:1 comes first, as on the
    # training axis; at a million queries its serving energy puts it last (previous test).
    few = rank_models("accuracy", energy="lifecycle", queries=1)
    train = rank_models("accuracy", energy="train")
    ranked = list(zip(few["model"], few["version"], strict=True))[:3]
    assert ranked == [("a", 1), ("c", 1), ("a", 2)]
    assert [k for k in zip(train["model"], train["version"], strict=True) if k in ranked] == ranked
    assert few["lifecycle_kwh"].iloc[0] == lifecycle_kwh(0.002, 0.5, 1)
    # c:1 trains on twice a:1's energy for less accuracy: off the front while serving is cheap.
    assert few["pareto"].tolist()[:3] == [True, False, True]


def test_break_even_queries_in_every_frame(lifecycle) -> None:
    frames = {
        "train": rank_models("accuracy", energy="train"),
        "inference": rank_models("accuracy", energy="inference"),
        "lifecycle": rank_models("accuracy", energy="lifecycle", queries=MILLION),
    }
    expected = {  # training kWh / (kWh per query); NaN where either is unknown or 0
        ("a", 1): 0.002 / (0.5 / 1e6),
        ("a", 2): 0.010 / (0.1 / 1e6),
        ("b", 1): math.nan,
        ("b", 2): math.nan,
        ("c", 1): 0.004 / (0.05 / 1e6),
        ("c", 2): math.nan,
    }
    for energy, frame in frames.items():
        keys = zip(frame["model"], frame["version"], strict=True)
        got = dict(zip(keys, frame["break_even_queries"], strict=True))
        assert got.keys() == expected.keys(), energy
        for key, value in expected.items():
            if math.isnan(value):
                assert math.isnan(got[key]), (energy, key)
            else:
                assert got[key] == value, (energy, key)
    assert expected[("a", 1)] == pytest.approx(4_000, rel=1e-12)
    assert expected[("a", 2)] == pytest.approx(100_000, rel=1e-12)
    # The meaning: serving break_even_queries queries costs what training did.
    at = rank_models("accuracy", model_names=["a"], energy="lifecycle", queries=100_000)
    row = at[at["version"] == 2].iloc[0]
    assert row["inference_kwh"] == pytest.approx(row["energy_kwh"], rel=1e-12)
    assert row["lifecycle_kwh"] == pytest.approx(2 * row["energy_kwh"], rel=1e-12)


def test_the_version_tag_wins_over_the_run_metric(registry) -> None:
    metrics = green_metrics(0.9, 0.003) | {INFERENCE_METRIC: 9.0}
    registry.version("both", metrics, tags={INFERENCE_TAG: "0.3"})
    registry.version("both", metrics)  # the run's metric only
    frame = rank_models("accuracy", energy="lifecycle", queries=10_000)
    by_version = dict(zip(frame["version"], frame["inference_wh_per_1k"], strict=True))
    assert by_version == {1: 0.3, 2: 9.0}
    assert frame["version"].tolist() == [1, 2]  # less serving energy, same training and accuracy
    assert frame["lifecycle_kwh"].tolist() == [
        lifecycle_kwh(0.003, 0.3, 10_000),
        lifecycle_kwh(0.003, 9.0, 10_000),
    ]


@pytest.mark.parametrize(
    ("energy", "queries", "named"),
    [
        ("lifecycle", None, "queries=None"),
        ("lifecycle", 0, "got 0"),
        ("lifecycle", -5, "got -5"),
        ("lifecycle", 1.5, "got 1.5"),
        ("lifecycle", 1e6, "got 1000000.0"),
        ("lifecycle", "1000", "got '1000'"),
        ("lifecycle", True, "got True"),
        ("train", 1000, "queries=1000 applies only to energy='lifecycle'"),
        ("inference", 1, "with energy='inference'"),
    ],
)
def test_bad_queries_are_refused_naming_the_value(lifecycle, energy, queries, named) -> None:
    with pytest.raises(RankingError, match=re.escape(named)) as raised:
        rank_models("accuracy", energy=energy, queries=queries)
    assert isinstance(raised.value, ValueError)
    if energy == "lifecycle":
        assert "positive integer" in str(raised.value)


def test_queries_accepts_any_integer_type(lifecycle) -> None:
    frame = rank_models("accuracy", energy="lifecycle", queries=np.int64(MILLION))
    assert frame.attrs["queries"] == MILLION and type(frame.attrs["queries"]) is int
    assert frame["lifecycle_kwh"].iloc[0] == lifecycle_kwh(0.004, 0.05, MILLION)


def test_cli_lifecycle_json_csv_and_table(lifecycle, tmp_path) -> None:
    frame = rank_models("accuracy", energy="lifecycle", queries=MILLION)
    result = invoke("--energy", "lifecycle", "--queries", "1000000", "--format", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["model"], r["version"]) for r in rows] == list(
        zip(frame["model"], frame["version"], strict=True)
    )
    assert [r["lifecycle_kwh"] for r in rows[:3]] == frame["lifecycle_kwh"].tolist()[:3]
    assert [r["break_even_queries"] for r in rows] == [
        None if math.isnan(b) else b for b in frame["break_even_queries"]
    ]
    assert rows[3]["lifecycle_kwh"] is None and rows[3]["rank"] is None

    csv = invoke("--energy", "lifecycle", "--queries", "1_000_000", "--format", "csv")
    assert csv.exit_code == 0, csv.output
    read = pd.read_csv(io.StringIO(csv.stdout))
    assert read["accuracy_per_lifecycle_kwh"].iloc[0] == frame["accuracy_per_lifecycle_kwh"][0]
    assert read["break_even_queries"].iloc[0] == frame["break_even_queries"][0]

    table = invoke("--energy", "lifecycle", "--queries", "1000000").stdout.splitlines()
    header = table[0].split()
    for column in ("energy_kwh", "inference_kwh", "lifecycle_kwh", "break_even_queries"):
        assert column in header
    assert table[1].split()[:3] == ["1", "c", "1"] and table[1].split()[-1] == "*"
    assert "80,000" in table[1].split()  # c:1's break-even, whole and grouped
    # Every axis's table shows the break-even.
    for energy in ("train", "inference"):
        assert "break_even_queries" in invoke("--energy", energy).stdout.splitlines()[0]

    out = tmp_path / "lifecycle.png"
    plotted = invoke("--energy", "lifecycle", "--queries", "1000000", "--plot", str(out))
    assert plotted.exit_code == 0, plotted.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--energy", "lifecycle"], "--queries"),
        (["--queries", "1000"], "--queries 1000"),
        (["--energy", "inference", "--queries", "5"], "--energy inference"),
        (["--energy", "lifecycle", "--queries", "0"], "got 0"),
        (["--energy", "lifecycle", "--queries", "-3"], "got -3"),
        (["--energy", "lifecycle", "--queries", "1e6"], "1e6"),
        (["--energy", "lifecycle", "--queries", "many"], "many"),
    ],
)
def test_cli_bad_queries_exit_2_naming_them(lifecycle, args, named) -> None:
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert named in result.output
    assert "Traceback" not in result.output


# -- the quick start's models: Must show 3 -------------------------------------------------------

# examples/quickstart.py's procedure on a small subset of its models (same constructors).
QUICKSTART_MODELS = {
    "logreg": lambda: LogisticRegression(max_iter=500),
    "forest-30": lambda: RandomForestClassifier(n_estimators=30, random_state=0),
    "forest-60": lambda: RandomForestClassifier(n_estimators=60, random_state=0),
}


@pytest.fixture
def quickstart(registry: Registry, tmp_path, monkeypatch) -> Iterator[tuple[Registry, dict]]:
    """The quick start's models, trained under autolog and registered as ``digits-<name>``."""
    import mlflow_green

    monkeypatch.setenv("MLFLOW_GREEN_SPOOL_DIR", str(tmp_path / "spool"))
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=0)
    mlflow_green.autolog(country="FRA", silent=True)
    try:
        for name, make in QUICKSTART_MODELS.items():
            with mlflow.start_run(experiment_id=registry.experiment_id, run_name=name):
                model = make()
                with mlflow_green.phase("train"):
                    model.fit(x_train, y_train)
                with mlflow_green.phase("evaluate"):
                    accuracy = model.score(x_test, y_test)
                mlflow.log_metric("accuracy", accuracy)
                mlflow.sklearn.log_model(
                    model,
                    name="model",
                    registered_model_name=f"digits-{name}",
                    input_example=x_test[:2],
                    pip_requirements=[],  # requirement inference costs seconds; not tested here
                    skops_trusted_types=["sklearn.tree._tree.Tree"],
                )
    finally:
        mlflow_green.autolog(disable=True)
    yield registry, {"x_test": x_test}


def test_quickstart_models_lifecycle_and_break_even(quickstart) -> None:
    registry, data = quickstart
    names = [f"digits-{name}" for name in QUICKSTART_MODELS]
    measured = {n: measure_inference(f"models:/{n}/1", data["x_test"], repeats=3) for n in names}

    frame = rank_models("accuracy", model_names=names, energy="lifecycle", queries=MILLION)

    assert len(frame) == 3 and (frame["reason"] == "").all(), frame["reason"].tolist()
    assert frame["rank"].tolist() == [1, 2, 3]
    for _, row in frame.iterrows():
        run = registry.client.get_run(row["run_id"])
        # The fit alone (phase "train"), not the whole run with its logging and registering.
        train_kwh = run.data.metrics["green/phase/train_kwh"]
        wh_per_1k = measured[row["model"]].wh_per_1k
        assert 0 < train_kwh < run.data.metrics["green/energy_kwh"] and wh_per_1k > 0
        assert row["energy_kwh"] == train_kwh and row["energy_source"] == "phase:train"
        assert row["inference_wh_per_1k"] == wh_per_1k  # the version's tag, exactly
        assert row["accuracy"] == run.data.metrics["accuracy"]
        assert row["lifecycle_kwh"] == lifecycle_kwh(train_kwh, wh_per_1k, MILLION)
        assert row["accuracy_per_lifecycle_kwh"] == row["accuracy"] / row["lifecycle_kwh"]
        assert row["break_even_queries"] == train_kwh / (wh_per_1k / 1e6)
        assert row["break_even_queries"] > 0
    ratios = frame["accuracy_per_lifecycle_kwh"].tolist()
    assert ratios == sorted(ratios, reverse=True)
    expected_front = pareto_front(frame["accuracy"].to_numpy(), frame["lifecycle_kwh"].to_numpy())
    assert frame["pareto"].tolist() == expected_front.tolist() and frame["pareto"].any()

    # The break-even is the same on every axis, and the CLI prints the front.
    for energy in ("train", "inference"):
        other = rank_models("accuracy", model_names=names, energy=energy).set_index("model")
        assert other.loc[frame["model"], "break_even_queries"].tolist() == (
            frame["break_even_queries"].tolist()
        )
    args = [a for n in names for a in ("--model", n)]
    result = invoke(*args, "--energy", "lifecycle", "--queries", "1000000")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    front = {line.split()[1] for line in lines[1:] if line.rstrip().endswith("*")}
    assert front == set(frame.loc[frame["pareto"], "model"])


# -- bulk reading through the real server ------------------------------------------------------


class RequestLog:
    """The endpoints of MLflow's HTTP requests, recorded at ``rest_utils.http_request``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.endpoints: list[str] = []
        original = rest_utils.http_request

        def recording(*args, **kwargs):
            self.endpoints.append(kwargs.get("endpoint", args[1] if len(args) > 1 else "?"))
            return original(*args, **kwargs)

        monkeypatch.setattr(rest_utils, "http_request", recording)

    def take(self) -> list[str]:
        out, self.endpoints = self.endpoints, []
        return out


def test_requests_grow_with_pages_not_versions(mlflow_server, monkeypatch) -> None:
    registry = Registry(mlflow_server)
    prefix = f"bulk-{uuid.uuid4().hex[:8]}"
    names = [f"{prefix}-{i}" for i in range(3)]
    rng = random.Random(7)
    for name, _ in itertools.product(names, range(10)):
        registry.version(name, green_metrics(rng.uniform(0.5, 1), rng.uniform(0.001, 0.01)))
    log = RequestLog(monkeypatch)

    few = rank_models("accuracy", model_names=names[:1], tracking_uri=mlflow_server)
    few_requests = log.take()
    many = rank_models("accuracy", model_names=names, tracking_uri=mlflow_server)
    many_requests = log.take()
    paged = rank_models("accuracy", model_names=names, tracking_uri=mlflow_server, page_size=7)
    paged_requests = log.take()

    assert len(few) == 10 and len(many) == 30 and many["rank"].notna().all()
    # 10 or 30 versions: the same four requests (models, experiments, versions, runs).
    assert sorted(few_requests) == sorted(many_requests)
    assert len(many_requests) == 4
    # Pages of 7: ceil(30 / 7) = 5 version pages, each followed by one runs batch.
    assert sum("model-versions/search" in e for e in paged_requests) == 5
    assert sum("runs/search" in e for e in paged_requests) == 5
    assert len(paged_requests) == 2 + 5 + 5
    assert all(e.endswith("/search") for e in paged_requests)  # ranking only reads
    pd.testing.assert_frame_equal(paged, many)
