"""Latency that autolog adds to ``start_run`` + ``end_run``, side by side in one process.

Modes, interleaved round by round on one SQLite store:
``plain`` (no hooks), ``green`` (autolog, artifacts off), ``green+artifacts``
(the artifact cost on the run's path, reported separately: ``power.png`` is drawn in
the background, and each round waits for it untimed), ``system-metrics``
(MLflow's ``log_system_metrics=True``). Then a sweep of empty runs back to back, with
the background charts' cost included. Also: what a 1-second run records with
each tool — mlflow-green's counter delta vs MLflow's system metrics, whose 10 s
sampling drops runs shorter than its interval.

First run in a process: the same modes, each in a fresh interpreter (so the
first run pays for hardware discovery, lazy imports and the first request),
interleaved; the store already exists and ``set_experiment`` has run, so only
``start_run`` + ``end_run`` are timed.

    python bench/run_overhead.py            # 30 warm rounds, 10 fresh processes per mode
    python bench/run_overhead.py --quick    # 8 warm rounds, 2 fresh processes per mode
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import _common

#: Run in a fresh interpreter: argv[1] mode, argv[2] tracking URI; prints JSON timings (ms).
_FIRST_RUN = """
import json, sys, time
t0 = time.perf_counter()
import mlflow
mode, uri = sys.argv[1], sys.argv[2]
if mode.startswith("green"):
    import mlflow_green
    mlflow_green.autolog(country="FRA", log_artifacts=mode == "green+artifacts")
import_ms = (time.perf_counter() - t0) * 1000
mlflow.set_tracking_uri(uri)
mlflow.set_experiment("first-run")
t = time.perf_counter()
mlflow.start_run(log_system_metrics=mode == "system-metrics")
mlflow.end_run()
first_ms = (time.perf_counter() - t) * 1000
t = time.perf_counter()
mlflow.start_run(log_system_metrics=mode == "system-metrics")
mlflow.end_run()
print(json.dumps({"import_ms": import_ms, "first_ms": first_ms,
                  "second_ms": (time.perf_counter() - t) * 1000}))
"""
FIRST_RUN_MODES = ("plain", "green", "green+artifacts", "system-metrics")


def first_runs(folder: str, per_mode: int) -> dict[str, dict[str, float]]:
    """Median first (and second) ``start_run`` + ``end_run`` of a fresh process, per mode."""
    uri = f"sqlite:///{folder}/first.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_GREEN_")}
    env["MLFLOW_GREEN_SPOOL_DIR"] = os.path.join(folder, "spool")
    # Create the store's schema once, outside the timing, as an existing store would be.
    subprocess.run(
        [sys.executable, "-c", _FIRST_RUN, "plain", uri], env=env, check=True, capture_output=True
    )
    samples: dict[str, list[dict[str, float]]] = {m: [] for m in FIRST_RUN_MODES}
    for i in range(per_mode):
        for mode in FIRST_RUN_MODES[i % 4 :] + FIRST_RUN_MODES[: i % 4]:
            out = subprocess.run(
                [sys.executable, "-c", _FIRST_RUN, mode, uri],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            samples[mode].append(json.loads(out.strip().splitlines()[-1]))
    return {
        mode: {k: statistics.median(s[k] for s in runs) for k in runs[0]}
        for mode, runs in samples.items()
    }


def main() -> None:
    parser = _common.parser(__doc__, "8 warm rounds, 2 fresh processes per mode")
    args = parser.parse_args()
    rounds = 8 if args.quick else 30
    _common.begin(args)

    import mlflow

    import mlflow_green

    folder = tempfile.mkdtemp(prefix="mlflow-green-bench-")
    mlflow.set_tracking_uri(f"sqlite:///{folder}/mlflow.db")
    mlflow.set_experiment("run-overhead")
    os.environ["MLFLOW_GREEN_SPOOL_DIR"] = os.path.join(folder, "spool")

    from mlflow_green.runs import rendering

    def cycle(system_metrics: bool = False) -> float:
        start = time.perf_counter()
        mlflow.start_run(log_system_metrics=system_metrics)
        mlflow.end_run()
        elapsed = (time.perf_counter() - start) * 1000
        # The chart is drawn in the background: let it finish outside the timing, as it
        # would while the next run works, so that it does not slow the next mode's run.
        rendering.wait(60)
        return elapsed

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

    # A sweep of empty runs back to back: nothing to overlap the background chart with, so
    # the per-run cost includes drawing it (the wait for the last charts is timed too).
    sweep_runs = 10 if args.quick else 40
    sweep: dict[str, float] = {}
    for _ in range(2):
        for label, with_artifacts in (("artifacts off", False), ("artifacts on", True)):
            mlflow_green.autolog(country="FRA", log_artifacts=with_artifacts)
            start = time.perf_counter()
            for _ in range(sweep_runs):
                mlflow.start_run()
                mlflow.end_run()
            rendering.wait(600)
            per_run = (time.perf_counter() - start) * 1000 / sweep_runs
            sweep[label] = min(sweep.get(label, float("inf")), per_run)
    mlflow_green.autolog(disable=True)

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
    print(
        f"{sweep_runs} empty runs back to back, per run (best of 2), charts included: "
        f"artifacts off {sweep['artifacts off']:.1f} ms, on {sweep['artifacts on']:.1f} ms "
        f"({sweep['artifacts on'] - sweep['artifacts off']:+.1f} ms)"
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
    first = first_runs(folder, 2 if args.quick else 10)
    print("first start_run + end_run in a fresh process, median (import time apart):")
    for name, value in first.items():
        print(
            f"  {name:16s} {value['first_ms']:8.2f} ms   added vs plain: "
            f"{value['first_ms'] - first['plain']['first_ms']:+7.2f} ms   "
            f"(second run {value['second_ms']:.2f} ms; imports {value['import_ms']:.0f} ms)"
        )
    _common.save(
        "run_overhead",
        args,
        {
            "rounds": rounds,
            "warm_ms": med,
            "request_ms": request_ms,
            "sweep_runs": sweep_runs,
            "sweep_ms_per_run": sweep,
            "first_ms": first,
            "one_second_run": {
                "green_energy_kwh": green["green/energy_kwh"],
                "green_duration_s": green["green/duration_s"],
                "green_meters": {
                    k: v
                    for k, v in client.get_run(run.info.run_id).data.tags.items()
                    if k.endswith("_meter")
                },
                "system_metrics_logged": len(system),
            },
        },
    )
    print(
        f"added_ms_green={med['green'] - med['plain']:.2f} "
        f"added_ms_green_excluding_request={med['green'] - med['plain'] - request_ms:.2f} "
        f"added_ms_artifacts={med['green+artifacts'] - med['green']:.2f} "
        f"added_ms_system_metrics={med['system-metrics'] - med['plain']:.2f}"
    )


if __name__ == "__main__":
    main()
