"""Ranking registered models by quality per kWh (issue 4), against a real MLflow.

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


def test_ranks_by_accuracy_per_kwh_with_exact_ratios_and_pareto_flags(must_show) -> None:
    frame = rank_models("accuracy")

    assert list(frame.columns) == [
        "model",
        "version",
        "aliases",
        "run_id",
        "accuracy",
        "energy_kwh",
        "co2eq_kg",
        "inference_wh_per_1k",
        "accuracy_per_kwh",
        "pareto",
        "rank",
        "reason",
    ]
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
