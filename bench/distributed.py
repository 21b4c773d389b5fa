"""What a distributed job pays for one run holding every node's energy.

torchrun (``--standalone``, 2 ranks, gloo on the CPU) against the same program
in one process, alternating launches: rank 0's ``start_run`` + ``end_run`` with
``autolog()`` (the end now waits for the other rank's report), and the CPU the
other rank spends following rank 0's runs (it polls the store every 50 ms),
measured on that rank over an idle window inside a run, with and without
``autolog()``.

    python bench/distributed.py            # 3 launches per mode
    python bench/distributed.py --quick    # 1 launch per mode, under a minute
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common

WORKER_RUNS = 25  # start/end pairs timed per launch (the first 5 are warm-up)
IDLE_S = 5.0


def worker() -> None:
    """One rank (or the lone process): time runs on rank 0, CPU of following on rank 1."""
    import mlflow

    import mlflow_green

    rank = int(os.environ.get("RANK", "0"))
    distributed = "WORLD_SIZE" in os.environ
    mlflow.set_tracking_uri(os.environ["BENCH_URI"])
    if os.environ.get("BENCH_AUTOLOG", "1") == "1":
        mlflow_green.autolog(log_artifacts=False)
    if distributed:
        import torch.distributed as dist

        dist.init_process_group("gloo")
    out: dict[str, float] = {}
    if rank == 0:
        times = []
        for _ in range(WORKER_RUNS):
            t = time.perf_counter()
            mlflow.start_run()
            mlflow.end_run()
            times.append((time.perf_counter() - t) * 1000)
        out["start_end_ms"] = statistics.median(times[5:])
    if distributed:
        run = mlflow.start_run() if rank == 0 else None
        dist.barrier()  # rank 1 now follows rank 0's run
        cpu, wall = time.process_time(), time.monotonic()
        time.sleep(IDLE_S)
        out["cpu_pct"] = (time.process_time() - cpu) / (time.monotonic() - wall) * 100
        dist.barrier()
        if run is not None:
            mlflow.end_run()
        dist.destroy_process_group()
    # One write() of a short line is atomic on a pipe: the ranks' lines never interleave.
    os.write(1, ("RESULT " + json.dumps({"rank": rank, **out}) + "\n").encode())


def _launch(mode: str, folder: Path) -> dict[int, dict[str, float]]:
    env = {**os.environ, "BENCH_URI": f"sqlite:///{folder}/{mode}-{time.time_ns()}.db"}
    env["BENCH_AUTOLOG"] = "0" if mode == "job-no-autolog" else "1"
    env["PYTHONPATH"] = str(_common.ROOT)
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    me = [str(Path(__file__).resolve()), "--worker"]
    if mode == "solo":
        cmd = [sys.executable, *me]
    else:
        run = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
        cmd = [sys.executable, *run, *me]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} launch failed:\n{proc.stderr[-3000:]}")
    results = [json.loads(x[7:]) for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    return {r["rank"]: r for r in results}


def main() -> None:
    args = _common.parser(__doc__, "one launch per mode").parse_args()
    if "--worker" in sys.argv:
        return
    _common.begin(args)
    launches = 1 if args.quick else 3
    modes = ("solo", "job", "job-no-autolog")
    got: dict[str, list[dict[int, dict[str, float]]]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory(prefix="bench-dist-") as tmp:
        for i in range(launches):
            for mode in modes[i % 3 :] + modes[: i % 3]:  # rotate: drift hits all alike
                got[mode].append(_launch(mode, Path(tmp)))
                print(mode, got[mode][-1], flush=True)
    solo = statistics.median(g[0]["start_end_ms"] for g in got["solo"])
    job = statistics.median(g[0]["start_end_ms"] for g in got["job"])
    follow = statistics.median(g[1]["cpu_pct"] for g in got["job"])
    bare = statistics.median(g[1]["cpu_pct"] for g in got["job-no-autolog"])
    results = {
        "ranks": 2,
        "launches": launches,
        "runs_per_launch": WORKER_RUNS - 5,
        "idle_s": IDLE_S,
        "start_end_ms": {"one process": solo, "rank 0 of 2": job},
        "end_added_ms": job - solo,
        "follower_cpu_pct": {"autolog": follow, "no autolog": bare},
        "follower_added_cpu_pct": follow - bare,
    }
    print(
        f"end_added_ms={job - solo:.1f} follower_added_cpu_pct={follow - bare:.2f} "
        f"(start+end {solo:.1f} -> {job:.1f} ms; rank 1 CPU {bare:.2f}% -> {follow:.2f}%)"
    )
    _common.save("distributed", args, results)


if __name__ == "__main__":
    if "--worker" in sys.argv:
        worker()
    else:
        main()
