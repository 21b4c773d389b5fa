"""A real ``mlflow models serve --workers 2`` under zero-code mode meters itself (issue 13, item 2).

One server for the whole module (its start costs 10-20 s): 200 requests, then the
serving run, the scripted GPU's energy (counted once, not once per worker), the
Prometheus endpoint, failed requests, the host meter's takeover when its worker
is killed, and the run's end when the server stops. The tests run in file order
and build on each other's requests; each states the totals it expects.
"""

from __future__ import annotations

import os
import signal
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient
from prometheus_client.parser import text_string_to_metric_families

import mlflow_green
from mlflow_green.measure.report import J_PER_KWH
from tests.mlflow_server import free_port, sqlite_db_copy
from tests.serving.served import Echo, Served, gpu_scenario, poll, texts_request

POWER_W = 150.0
N_REQUESTS = 200
EXPERIMENT = "serving-test"
#: Counter ticks every 0.1 s, read at both ends of a window: at most this much energy apart.
QUANTUM_S = 0.25
#: The server's footprint settings (MLFLOW_GREEN_<NAME>), as a training run takes them.
FOOTPRINT = {
    "price_per_kwh": 0.25,
    "currency": "EUR",
    "wue_l_per_kwh": 1.8,
    "embodied_co2eq_kg": 2500.0,
    "lifetime_years": 4.0,
}


@dataclass
class Session:
    served: Served
    client: MlflowClient
    experiment_id: str
    metrics_url: str
    predictions: int
    tokens: int
    run_id: str = ""


def _request_texts(i: int) -> list[str]:
    # 1 to 3 rows; each row 1 to 4 words (the model answers with 2 words more).
    return [" ".join(["w"] * ((i + j) % 4 + 1)) for j in range(i % 3 + 1)]


def _expected(indices: range) -> tuple[int, int]:
    rows = [t for i in indices for t in _request_texts(i)]
    return len(rows), sum(len(t.split()) + 2 for t in rows)


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("serving")
    uri = f"sqlite:///{sqlite_db_copy(root / 'mlflow.db')}"
    client = MlflowClient(uri)
    models = client.create_experiment("models", artifact_location=(root / "artifacts").as_uri())
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run(experiment_id=models):
            mlflow.pyfunc.log_model(name="model", python_model=Echo(), registered_model_name="echo")
    finally:
        mlflow.set_tracking_uri(previous)
    metrics_port = free_port()
    served = Served(
        root,
        "models:/echo/1",
        uri,
        FAKE_NVML_SCENARIO=str(gpu_scenario(root, POWER_W)),
        MLFLOW_GREEN_FLUSH_INTERVAL_S="1",
        MLFLOW_GREEN_SERVING_EXPERIMENT=EXPERIMENT,
        MLFLOW_GREEN_PROMETHEUS_PORT=str(metrics_port),
        MLFLOW_GREEN_SERVING_DIR=str(root / "shared"),
        MLFLOW_GREEN_COUNTRY="FRA",
        **{f"MLFLOW_GREEN_{k.upper()}": str(v) for k, v in FOOTPRINT.items()},
    )
    served.start(workers=2)
    try:
        served.wait_ready()
        with ThreadPoolExecutor(4) as pool:
            answers = list(
                pool.map(lambda i: served.invoke(texts_request(_request_texts(i))), range(200))
            )
        assert [status for status, _ in answers] == [200] * N_REQUESTS, served.tail()
        predictions, tokens = _expected(range(N_REQUESTS))
        experiment = poll(
            lambda: client.get_experiment_by_name(EXPERIMENT), 60, "the serving experiment"
        )
        yield Session(
            served,
            client,
            experiment.experiment_id,
            f"http://127.0.0.1:{metrics_port}/metrics",
            predictions,
            tokens,
        )
    finally:
        served.stop()


def _runs(s: Session) -> list[Any]:
    return s.client.search_runs([s.experiment_id])


def _run_with(s: Session, tags: dict[str, str] | None = None, **want: float) -> Any:
    """The one serving run, once its latest metrics hold ``want`` (green/serving/<key>)
    and its tags ``tags``. Both are polled: MLflow's SQL store commits a log_batch's
    metrics and tags in two transactions, so a reader may see the new metrics beside
    the tags of the flush before."""

    def check() -> Any:
        runs = _runs(s)
        assert len(runs) <= 1, f"one serving run per session, got {len(runs)}"
        if (
            runs
            and all(runs[0].data.metrics.get(f"green/serving/{k}") == v for k, v in want.items())
            and all(runs[0].data.tags.get(k) == v for k, v in (tags or {}).items())
        ):
            return runs[0]
        return None

    what = f"a serving run with {want} and tags {tags or {}}"
    return poll(check, 60, f"{what}; server log:\n{s.served.tail()}")


def _scrape(s: Session) -> dict[str, dict[tuple, float]]:
    with urllib.request.urlopen(s.metrics_url, timeout=5) as r:
        text = r.read().decode()
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def _scrape_when(s: Session, requests: int) -> dict[str, dict[tuple, float]]:
    def check() -> Any:
        try:
            values = _scrape(s)
        except OSError:
            return None  # the exporter moves with the host meter
        return values if values["mlflow_green_requests_total"][()] == requests else None

    return poll(check, 60, f"Prometheus showing {requests} requests")


def test_serving_run_holds_the_requests_predictions_and_tokens(session: Session) -> None:
    run = _run_with(
        session,
        tags={"green.serving_token_counter": "whitespace-words"},
        requests=N_REQUESTS,
        predictions=session.predictions,
        tokens=session.tokens,
        errors=0,
    )
    session.run_id = run.info.run_id
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["green.serving_model"] == "echo"
    assert tags["green.serving_version"] == "1"
    assert tags["green.serving_token_counter"] == "whitespace-words"
    assert tags["green.gpu_meter"] == "nvml-energy-counter"
    assert run.info.status == "RUNNING"
    assert metrics["green/energy_kwh"] > 0 and metrics["green/co2eq_kg"] > 0
    expected_wh_per_1k = metrics["green/energy_kwh"] * 1e6 / session.predictions
    assert metrics["green/serving/wh_per_1k"] == pytest.approx(expected_wh_per_1k, rel=1e-9)
    tag = poll(
        lambda: session.client.get_model_version("echo", "1").tags.get("green.serving_wh_per_1k"),
        30,
        "the version's green.serving_wh_per_1k",
    )
    assert float(tag) > 0


def test_serving_run_holds_cost_water_embodied_and_sci(session: Session) -> None:
    run = _run_with(session, requests=N_REQUESTS, predictions=session.predictions)
    m = run.data.metrics
    kwh, co2, duration_s = m["green/energy_kwh"], m["green/co2eq_kg"], m["green/duration_s"]
    assert run.data.tags["green.currency"] == "EUR"
    assert m["green/cost"] == pytest.approx(kwh * 0.25, rel=1e-9)
    assert m["green/water_l"] == pytest.approx(kwh * 1.8, rel=1e-9)  # PUE 1: devices = all
    embodied = 2500.0 * duration_s / (4.0 * 365.25 * 86400)
    assert m["green/embodied_co2eq_kg"] == pytest.approx(embodied, rel=1e-6)
    per_1k = (co2 + embodied) * 1000 / (session.predictions / 1000)
    assert m["green/serving/sci_g_per_1k"] == pytest.approx(per_1k, rel=1e-6)
    per_token = (co2 + embodied) * 1000 / session.tokens
    assert m["green/serving/sci_g_per_token"] == pytest.approx(per_token, rel=1e-6)


def _gpu_windows(s: Session) -> list[tuple[float, float]]:
    """(duration_s, gpu joules) at each flush of the serving run, by step."""
    energy = {
        m.step: m.value for m in s.client.get_metric_history(s.run_id, "green/energy/gpu_kwh")
    }
    duration = {m.step: m.value for m in s.client.get_metric_history(s.run_id, "green/duration_s")}
    return sorted((duration[k], energy[k] * J_PER_KWH) for k in energy.keys() & duration.keys())


def test_host_energy_is_counted_once_not_per_worker(session: Session, fake_nvml: Any) -> None:
    fake_nvml.use_real_time()
    fake_nvml.configure([{"uuid": "GPU-here-0", "name": "NVIDIA H100", "profile": [[0, POWER_W]]}])
    start = _gpu_windows(session)[-1]
    with mlflow_green.track() as tracked:
        # The same scripted machine, measured here over at least 4 s of the server's flushes.
        end = poll(
            lambda: next((w for w in _gpu_windows(session) if w[0] >= start[0] + 4.0), None),
            60,
            "4 s more of serving flushes",
        )
    served_j, served_s = end[1] - start[1], end[0] - start[0]
    # Exact on scripted hardware: P x time, up to the counter's 0.1 s ticks at both ends.
    assert served_j == pytest.approx(POWER_W * served_s, abs=POWER_W * QUANTUM_S)
    mine = tracked.report
    assert mine.energy_j_by_domain["gpu"] == pytest.approx(
        POWER_W * mine.duration_s, abs=POWER_W * QUANTUM_S
    )
    # Two workers, one machine: the serving run draws what one track() of it draws, not twice.
    ratio = (served_j / served_s) / (mine.energy_j_by_domain["gpu"] / mine.duration_s)
    assert ratio == pytest.approx(1.0, abs=0.1)


def test_prometheus_shows_the_same_counts(session: Session) -> None:
    values = _scrape_when(session, N_REQUESTS)
    assert values["mlflow_green_predictions_total"][()] == session.predictions
    assert values["mlflow_green_tokens_total"][()] == session.tokens
    gpu_j = values["mlflow_green_energy_joules_total"][(("domain", "gpu"),)]
    run = session.client.get_run(session.run_id)
    # Scraped after the run's last flush: at least what the run holds, at the host's power.
    assert gpu_j >= run.data.metrics["green/energy/gpu_kwh"] * J_PER_KWH - POWER_W * QUANTUM_S
    assert (("domain", "cpu"),) in values["mlflow_green_energy_joules_total"]
    assert values["mlflow_green_co2eq_grams_total"][()] > 0


def test_failed_requests_keep_their_status_and_are_counted(session: Session) -> None:
    status, body = session.served.invoke(b"{not json")
    assert status == 400 and b"error_code" in body
    status, _ = session.served.invoke(b"text", content_type="text/plain")
    assert status == 415
    _run_with(session, requests=N_REQUESTS + 2, errors=2, predictions=session.predictions)
    _scrape_when(session, N_REQUESTS + 2)


def test_another_worker_takes_over_when_the_host_meter_dies(session: Session) -> None:
    lock = next((Path(session.served.root) / "shared").rglob("host.lock"))
    holder = int(lock.read_text().split()[0])
    before = session.client.get_run(session.run_id).data.metrics["green/energy_kwh"]
    os.kill(holder, signal.SIGKILL)
    # The surviving worker (or uvicorn's replacement) answers and becomes the host meter.
    for i in range(10):
        poll(
            lambda i=i: (lambda a: a if a[0] == 200 else None)(
                session.served.invoke(texts_request(["x"]))
            ),
            60,
            f"request {i} after the kill",
        )
    total = N_REQUESTS + 2 + 10
    run = _run_with(session, requests=total, predictions=session.predictions + 10)
    assert run.info.run_id == session.run_id  # the same serving run continues
    assert int(lock.read_text().split()[0]) != holder
    assert run.data.metrics["green/energy_kwh"] > before
    values = _scrape_when(session, total)
    assert values["mlflow_green_tokens_total"][()] == session.tokens + 10 * 3


def test_stopping_the_server_finishes_the_serving_run(session: Session) -> None:
    session.served.stop()
    run = poll(
        lambda: (lambda r: r if r.info.status == "FINISHED" else None)(
            session.client.get_run(session.run_id)
        ),
        30,
        "the serving run to finish",
    )
    assert run.data.metrics["green/serving/requests"] == N_REQUESTS + 12
    assert len(_runs(session)) == 1
