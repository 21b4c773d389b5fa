"""Serving with and without metering, side by side; J per token on the scripted GPU.

Two ``mlflow models serve -w 2`` servers of the same model run at once, one
plain and one under zero-code mode (metering on, Prometheus exporter on). Rounds
of requests alternate between them, so both see the same machine load; the
figures are requests per second and p50/p99 latency of each, and their ratios.
The metered server runs with the default flush interval (30 s, what a
deployment gets) on the scripted GPU (constant power): its serving run's GPU
joules per output token are compared with the ground truth, the scripted power
times the metered time, per token. The run's final request count is checked
against the requests sent (the last flush must hold every worker's counts).

Targets (issue 13): throughput ratio without/with metering <= 1.02; p50 latency
added <= 0.5 ms; J per output token within 1 % of the ground truth.
"""

from __future__ import annotations

import math
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import _common

POWER_W = 300.0


def _log_model(root: Path, uri: str) -> None:
    import mlflow
    from mlflow import MlflowClient

    from tests.serving.served import Echo

    experiment = MlflowClient(uri).create_experiment(
        "models", artifact_location=(root / "artifacts").as_uri()
    )
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(experiment_id=experiment):
        mlflow.pyfunc.log_model(name="model", python_model=Echo(), registered_model_name="echo")


def _round(served: Any, body: bytes, n: int, concurrency: int) -> tuple[float, list[float]]:
    """``n`` requests, ``concurrency`` at a time: (wall seconds, latencies in seconds)."""

    def one(_: int) -> float:
        t0 = time.perf_counter()
        status, _ = served.invoke(body)
        if status != 200:
            raise RuntimeError(f"status {status}")
        return time.perf_counter() - t0

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = list(pool.map(one, range(n)))
    return time.perf_counter() - t0, latencies


def _summary(walls: list[float], latencies: list[float], n: int) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "requests_per_s": n * len(walls) / sum(walls),
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
    }


def _median_stderr(values: list[float]) -> dict[str, float]:
    """Median of per-round values and the standard error of their mean (spread of rounds)."""
    stderr = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return {"median": statistics.median(values), "stderr": stderr}


def main() -> None:
    args = _common.parser(__doc__, "2 rounds of 100 requests").parse_args()
    _common.begin(args)
    from mlflow import MlflowClient

    from mlflow_green.measure.config import AutologConfig
    from mlflow_green.measure.report import J_PER_KWH
    from tests.mlflow_server import free_port, sqlite_db_copy
    from tests.serving.served import Served, gpu_scenario, poll, texts_request

    rounds, per_round, concurrency = (2, 100, 4) if args.quick else (10, 300, 4)
    root = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    uri = f"sqlite:///{sqlite_db_copy(root / 'mlflow.db')}"
    _log_model(root, uri)
    plain = Served(root, "models:/echo/1", uri, MLFLOW_GREEN_AUTOLOG="false")
    metered = Served(
        root,
        "models:/echo/1",
        uri,
        FAKE_NVML_SCENARIO=str(gpu_scenario(root, POWER_W)),
        # No MLFLOW_GREEN_FLUSH_INTERVAL_S: a deployment's default (each flush is a store write).
        MLFLOW_GREEN_SERVING_DIR=str(root / "shared"),
        MLFLOW_GREEN_PROMETHEUS_PORT=str(free_port()),
    )
    body = texts_request(["the energy of one prediction"] * 4)
    results: dict[str, Any] = {
        "rounds": rounds,
        "requests_per_round": per_round,
        "concurrency": concurrency,
        "workers": 2,
        "flush_interval_s": AutologConfig.flush_interval_s,
    }
    warm_up = 50
    try:
        for served in (plain, metered):
            served.start(workers=2)
        for served in (plain, metered):
            served.wait_ready()
            _round(served, body, warm_up, concurrency)  # warm-up
        walls: dict[str, list[float]] = {"plain": [], "metered": []}
        lats: dict[str, list[float]] = {"plain": [], "metered": []}
        for i in range(rounds):
            # Alternate which goes first: neither gets the quieter half of the machine.
            order = [("plain", plain), ("metered", metered)]
            for label, served in order if i % 2 == 0 else order[::-1]:
                wall, latencies = _round(served, body, per_round, concurrency)
                walls[label].append(wall)
                lats[label].extend(latencies)
        for label in walls:
            results[label] = _summary(walls[label], lats[label], per_round)
        results["throughput_ratio"] = (
            results["plain"]["requests_per_s"] / results["metered"]["requests_per_s"]
        )
        # Round by round (each metered round next to its plain one): the spread of the ratio.
        per_round_ratio = [m / p for p, m in zip(walls["plain"], walls["metered"], strict=True)]
        results["throughput_ratio_rounds"] = _median_stderr(per_round_ratio)
        results["p50_added_ms"] = results["metered"]["p50_ms"] - results["plain"]["p50_ms"]
        results["p99_added_ms"] = results["metered"]["p99_ms"] - results["plain"]["p99_ms"]
        metered.stop()  # the last flush ends the serving run with the final values
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("mlflow-green-serving")

        def finished() -> Any:
            runs = client.search_runs([experiment.experiment_id])
            return runs[0] if runs and runs[0].info.status == "FINISHED" else None

        run = poll(finished, 60, "the serving run's end")
        results["sent_requests"] = warm_up + rounds * per_round
        results["served_requests"] = int(run.data.metrics["green/serving/requests"])
        metrics = run.data.metrics
        gpu_j = metrics["green/energy/gpu_kwh"] * J_PER_KWH
        truth_j = POWER_W * metrics["green/duration_s"]
        tokens = metrics["green/serving/tokens"]
        results["j_per_token"] = gpu_j / tokens
        results["j_per_token_truth"] = truth_j / tokens
        results["j_per_token_error_pct"] = (gpu_j - truth_j) / truth_j * 100
    finally:
        plain.stop()
        metered.stop()
    for key, value in results.items():
        print(f"{key}: {value}")
    _common.save("serving", args, results)


if __name__ == "__main__":
    sys.exit(main())
