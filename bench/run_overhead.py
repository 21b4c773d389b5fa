"""Latency that autolog adds to ``start_run`` + ``end_run``, side by side in one process.

Modes, interleaved round by round on one SQLite store:
``plain`` (no hooks), ``green`` (autolog, artifacts off), ``green+artifacts``
(the artifact cost, reported separately), ``system-metrics``
(MLflow's ``log_system_metrics=True``). Also: what a 1-second run records with
each tool — mlflow-green's counter delta vs MLflow's system metrics, whose 10 s
sampling drops runs shorter than its interval.

    python bench/run_overhead.py [--quick]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
import warnings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (< 1 minute)")
    args = parser.parse_args()
    rounds = 8 if args.quick else 30
    warnings.simplefilter("ignore")
    logging.getLogger("mlflow").setLevel(logging.ERROR)

    import mlflow

    import mlflow_green

    folder = tempfile.mkdtemp(prefix="mlflow-green-bench-")
    mlflow.set_tracking_uri(f"sqlite:///{folder}/mlflow.db")
    mlflow.set_experiment("run-overhead")
    os.environ["MLFLOW_GREEN_SPOOL_DIR"] = os.path.join(folder, "spool")

    def cycle(system_metrics: bool = False) -> float:
        start = time.perf_counter()
        mlflow.start_run(log_system_metrics=system_metrics)
        mlflow.end_run()
        return (time.perf_counter() - start) * 1000

    modes = {
        "plain": lambda: (mlflow_green.autolog(disable=True), cycle())[1],
        "green": lambda: (mlflow_green.autolog(country="FRA", log_artifacts=False), cycle())[1],
        "green+artifacts": lambda: (
            mlflow_green.autolog(country="FRA", log_artifacts=True),
            cycle(),
        )[1],
        "system-metrics": lambda: (mlflow_green.autolog(disable=True), cycle(True))[1],
    }
    for mode in modes.values():  # warm: imports, DB tables, hardware discovery, matplotlib
        mode()
        mode()
    times: dict[str, list[float]] = {m: [] for m in modes}
    for r in range(rounds):
        names = list(modes)
        for name in names[r % 4 :] + names[: r % 4]:
            times[name].append(modes[name]())
    mlflow_green.autolog(disable=True)

    med = {m: statistics.median(v) for m, v in times.items()}

    # How much of the added time is the one log_batch request MLflow's store serves?
    from mlflow.tracking._tracking_service.client import TrackingServiceClient

    spent: list[float] = []
    original = TrackingServiceClient.log_batch

    def timed_log_batch(self, *a, **k):
        t = time.perf_counter()
        try:
            return original(self, *a, **k)
        finally:
            spent.append((time.perf_counter() - t) * 1000)

    TrackingServiceClient.log_batch = timed_log_batch
    mlflow_green.autolog(country="FRA", log_artifacts=False)
    for _ in range(rounds):
        cycle()
    mlflow_green.autolog(disable=True)
    TrackingServiceClient.log_batch = original
    request_ms = statistics.median(spent)
    print(f"start_run + end_run, median of {rounds} interleaved rounds (SQLite, warm):")
    for name, value in med.items():
        print(f"  {name:16s} {value:8.2f} ms   added vs plain: {value - med['plain']:+7.2f} ms")

    print(
        f"  of which the final log_batch request (store time): {request_ms:.2f} ms; "
        f"mlflow-green's own code: {med['green'] - med['plain'] - request_ms:+.2f} ms"
    )

    # A 1-second run: what does each tool record?
    mlflow_green.autolog(country="FRA", log_artifacts=False)
    with mlflow.start_run() as run:
        time.sleep(1.0)
    mlflow_green.autolog(disable=True)
    with mlflow.start_run(log_system_metrics=True) as sys_run:
        time.sleep(1.0)
    client = mlflow.MlflowClient()
    green = client.get_run(run.info.run_id).data.metrics
    system = [
        k for k in client.get_run(sys_run.info.run_id).data.metrics if k.startswith("system/")
    ]
    print(
        f"1-second run: mlflow-green logged green/energy_kwh={green['green/energy_kwh']:.3g} "
        f"over {green['green/duration_s']:.3f} s; MLflow system metrics logged "
        f"{len(system)} system/* metrics"
    )
    print(
        f"added_ms_green={med['green'] - med['plain']:.2f} "
        f"added_ms_green_excluding_request={med['green'] - med['plain'] - request_ms:.2f} "
        f"added_ms_artifacts={med['green+artifacts'] - med['green']:.2f} "
        f"added_ms_system_metrics={med['system-metrics'] - med['plain']:.2f}"
    )


if __name__ == "__main__":
    main()
