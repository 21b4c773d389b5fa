"""A torchrun job for tests/distributed/test_distributed.py: one process per rank, own hardware.

``DIST_JOB_SPEC`` names a JSON file::

    {"tracking_uri": "sqlite:///...", "duration_s": 3.0, "runs": "rank0" | "every",
     "ranks": {"0": {"env": {...}, "drive": [["/path/energy_uj", watts], ...],
                     "kill_after_s": null}, "1": {...}}}

Each rank sets its ``env`` (node id, fake NVML scenario, fake powercap root, country)
before mlflow_green is imported, drives its fake RAPL counters at constant power
(the scripted ground truth), calls ``autolog()`` and joins the gloo process group.
Rank 0 (or every rank, with ``"runs": "every"``) runs an MLflow run while the ranks
all-reduce for ``duration_s``; a rank with ``kill_after_s`` SIGKILLs itself that long
into the run; ``"autolog": false`` leaves autolog off on a rank; a rank's own
``duration_s`` overrides the job's (a rank that ends early).
Rank ``r`` prints ``RUN <rank> <run_id>``; with ``"quick_runs": n``, rank 0 then
starts and ends n empty runs and prints ``QUICK <slowest seconds>``. With
``"exit_barrier": false`` the other ranks leave while rank 0 is still ending its run.
"""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

RANK = int(os.environ["RANK"])
SPEC = json.loads(Path(os.environ["DIST_JOB_SPEC"]).read_text())
MINE = SPEC["ranks"][str(RANK)]
os.environ.update(MINE.get("env", {}))
sys.path.insert(0, str(Path(__file__).parent / "fakes"))  # the fake pynvml


def drive(path: str, watts: float, stop: threading.Event) -> None:
    """Advance a fake RAPL counter at ``watts``, like the hardware, every 10 ms."""
    start_uj, t0 = int(Path(path).read_text()), time.monotonic()
    while not stop.wait(0.01):
        value = start_uj + round((time.monotonic() - t0) * watts * 1e6)
        staged = Path(path).with_name("energy_uj.new")
        staged.write_text(f"{value}\n")
        os.replace(staged, path)  # a reader never sees a half-written file


def main() -> None:
    # A hang shows where every thread is, in the test's output, before the test's timeout.
    faulthandler.dump_traceback_later(SPEC.get("hang_s", 90), exit=True)
    stop = threading.Event()
    for path, watts in MINE.get("drive", []):
        threading.Thread(target=drive, args=(path, watts, stop), daemon=True).start()

    import mlflow
    import torch
    import torch.distributed as dist

    import mlflow_green

    mlflow.set_tracking_uri(SPEC["tracking_uri"])
    if MINE.get("autolog", True):
        mlflow_green.autolog(log_artifacts=False)
    dist.init_process_group("gloo")
    tensor = torch.ones(64)
    mine_runs = SPEC.get("runs", "rank0") == "every" or RANK == 0
    run = mlflow.start_run(run_name=f"rank-{RANK}") if mine_runs else None
    dist.barrier()  # every rank's run (or rank 0's) has started
    kill_after = MINE.get("kill_after_s")
    duration_s = MINE.get("duration_s", SPEC["duration_s"])
    t0 = time.monotonic()
    collectives = SPEC.get("collectives", True)
    while True:
        if kill_after is not None and time.monotonic() - t0 >= kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        going = torch.tensor([float(time.monotonic() - t0 < duration_s)])
        if collectives:
            # Rank 0's clock decides for all: every rank makes the same collective calls.
            dist.broadcast(going, src=0)
            dist.all_reduce(tensor)
        if not going.item():
            break
        time.sleep(0.005)  # a light load: the energy comes from the scripted hardware
    if collectives:
        dist.barrier()
    if run is not None:
        mlflow.end_run()
        print(f"RUN {RANK} {run.info.run_id}", flush=True)
    if RANK == 0 and SPEC.get("quick_runs"):  # runs that end as soon as they start
        slowest_s = 0.0
        for _ in range(SPEC["quick_runs"]):
            started = time.monotonic()
            with mlflow.start_run(run_name="quick"):
                pass
            slowest_s = max(slowest_s, time.monotonic() - started)
        print(f"QUICK {slowest_s}", flush=True)
    if collectives and SPEC.get("exit_barrier", True):
        dist.barrier()  # rank 1 stays in the job while rank 0's quick runs go
    dist.destroy_process_group()
    stop.set()


if __name__ == "__main__":
    main()
