"""On a real NVIDIA GPU: the same load measured three ways in one run.

1. mlflow-green's ``nvml-energy-counter`` (``mlflow_green.track()``),
2. mlflow-green's ``nvml-power`` method forced on the same GPU (power polled
   at 10 Hz and integrated), the fallback used on GPUs without the counter,
3. CodeCarbon's ``OfflineEmissionsTracker(measure_power_secs=1)`` GPU energy.

Loads: steady bf16 matrix products, bursts (100 ms on, 400 ms idle), and
short runs of 1 s and 5 s. Needs torch with CUDA. Prints a Markdown table.

Then two processes share the GPU (the two-process case of ``scope="process"``): one
runs the steady load, the other the bursts, at the same time, each measuring itself
with ``mlflow_green.track(scope="process")``. Their attributed GPU energies must add up
to the counter's total over the same time (each report keeps that whole-GPU figure,
``gpu_whole_j_by_device``) and the heavier process must get the larger share.

Without torch or a CUDA GPU the script says so and exits 0 without results.

    python bench/gpu_validation.py [--quick] [--sync-only | --two-process-only]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from typing import Any

import _common

#: How far the two attributed figures may be from the counter's total (the two windows
#: open and close a few milliseconds apart; the counter updates every 100 ms).
TWO_PROCESS_TOLERANCE = 0.05


def _load(kind: str, seconds: float) -> None:
    import torch

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        if kind == "bursts":
            burst_end = time.perf_counter() + 0.1
            while time.perf_counter() < burst_end:
                a @ b
                torch.cuda.synchronize()
            time.sleep(max(min(0.4, deadline - time.perf_counter()), 0.0))
        else:
            for _ in range(10):
                a @ b
            torch.cuda.synchronize()
    torch.cuda.synchronize()


def sync_check() -> str:
    """Kernels launched (asynchronously) inside a window belong to it: track() synchronises.

    Queues 20 products of 16384x16384 bf16 matrices (~0.2 s of GPU work, launched
    in milliseconds) without waiting for them; without a
    synchronise at the window's end the window would close in microseconds,
    before the GPU did the work.
    """
    import torch

    import mlflow_green
    from mlflow_green.measure.monitor import get_monitor

    get_monitor()  # hardware discovery, outside the timing
    a = torch.randn(16384, 16384, device="cuda", dtype=torch.bfloat16)
    a @ a  # cuBLAS set-up happens on the first product, synchronously: not in the window
    torch.cuda.synchronize()
    with mlflow_green.track("async launch") as t:
        start = time.perf_counter()
        for _ in range(20):
            a @ a  # queued, not waited for
        launched_ms = (time.perf_counter() - start) * 1000
    return (
        f"async check: 20 products queued in {launched_ms:.1f} ms; the window closed after "
        f"{t.report.duration_s * 1000:.0f} ms with {t.report.energy_j_by_domain['gpu']:.0f} J "
        "(its end synchronised with the queued kernels)"
    )


def no_gpu_reason() -> str | None:
    """Why this machine cannot run the validation (no torch, no CUDA GPU), or None."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible"
    return None


def _child(kind: str) -> None:
    """One of the two processes: warm up, say ready, wait for go, measure its own share."""
    import mlflow_green
    from mlflow_green.measure.monitor import get_monitor

    get_monitor()  # hardware discovery, outside the timing
    _load(kind, 1.0)  # CUDA context, cuBLAS, clocks
    print("ready", flush=True)
    # The parent's go holds the common end, on the clock all processes share.
    end = float(sys.stdin.readline())
    with mlflow_green.track(f"two-process {kind}", scope="process", sample_interval_s=1.0) as t:
        _load(kind, end - time.monotonic())
    r = t.report
    figures = {
        "load": kind,
        "pid": os.getpid(),
        "duration_s": r.duration_s,
        "attributed_j": r.energy_j_by_domain["gpu"],
        "whole_j": sum(r.gpu_whole_j_by_device.values()),
        "method": r.methods["gpu"],
    }
    print(json.dumps(figures), flush=True)


def two_process_check(seconds: float) -> dict[str, Any]:
    """Two processes on one GPU, steady and bursts: their shares against the counter."""
    import mlflow_green

    command = [sys.executable, os.path.abspath(__file__), "--child"]
    children = [
        subprocess.Popen([*command, kind], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for kind in ("steady", "bursts")
    ]
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        with mlflow_green.track("two-process machine", sample_interval_s=1.0) as machine:
            end = time.monotonic() + seconds  # both windows end here, whatever the load
            for child in children:
                assert child.stdin is not None
                child.stdin.write(f"{end!r}\n")
                child.stdin.flush()
            heavy, light = (json.loads(c.stdout.readline()) for c in children)  # type: ignore[union-attr]
    finally:
        for child in children:
            try:
                child.wait(60)
            except subprocess.TimeoutExpired:
                child.kill()
    # Each child's whole-GPU figure is the counter over its own window; the two windows
    # open a few milliseconds apart and end together.
    whole_j = (heavy["whole_j"] + light["whole_j"]) / 2
    attributed_j = heavy["attributed_j"] + light["attributed_j"]
    off = attributed_j / whole_j - 1 if whole_j > 0 else float("nan")  # no GPU energy at all
    return {
        "seconds": seconds,
        "processes": [heavy, light],
        "counter_whole_j": whole_j,
        "machine_window_j": machine.report.energy_j_by_domain["gpu"],
        "attributed_sum_j": attributed_j,
        "sum_vs_counter": off,
        "adds_up": abs(off) <= TWO_PROCESS_TOLERANCE,
        "heavier_gets_more": heavy["attributed_j"] > light["attributed_j"],
    }


def two_process_summary(r: dict[str, Any]) -> str:
    heavy, light = r["processes"]
    return (
        f"two processes, {r['seconds']:g} s: steady {heavy['attributed_j']:.1f} J + bursts "
        f"{light['attributed_j']:.1f} J = {r['attributed_sum_j']:.1f} J vs the counter's "
        f"{r['counter_whole_j']:.1f} J ({r['sum_vs_counter']:+.2%}; within "
        f"{TWO_PROCESS_TOLERANCE:.0%}: {'yes' if r['adds_up'] else 'NO'}); the heavier gets "
        f"more: {'yes' if r['heavier_gets_more'] else 'NO'} ({heavy['method']})"
    )


def main() -> None:
    parser = _common.parser(__doc__, "10 s instead of 30 s for the long loads")
    parser.add_argument("--sync-only", action="store_true", help="only the async-kernel check")
    parser.add_argument(
        "--two-process-only", action="store_true", help="only the two-process (shared GPU) case"
    )
    parser.add_argument("--child", choices=("steady", "bursts"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    reason = no_gpu_reason()
    if reason is not None:
        print(f"gpu_validation: skipped, {reason}: nothing measured, no results written")
        return
    if args.child:
        _child(args.child)
        return
    _common.begin(args)

    if args.sync_only:
        print(sync_check())
        return
    if args.two_process_only:
        print(two_process_summary(two_process_check(10.0 if args.quick else 20.0)))
        return
    import pynvml
    import torch
    from codecarbon import OfflineEmissionsTracker

    import mlflow_green
    from mlflow_green.measure.meters.nvml import NvmlPowerMeter, _NvmlSession, _visible_gpus
    from mlflow_green.measure.monitor import Monitor

    pynvml.nvmlInit()
    session = _NvmlSession(pynvml)
    power_meter = NvmlPowerMeter(session, _visible_gpus(pynvml))
    session.holders = 1
    power_monitor = Monitor([power_meter])
    gpu = torch.cuda.get_device_name(0)
    _load("steady", 2.0)  # warm up clocks, cuBLAS and CodeCarbon's first start
    warm = OfflineEmissionsTracker(measure_power_secs=1, save_to_file=False, log_level="error")
    warm.start()
    warm.stop()

    long_s = 10.0 if args.quick else 30.0
    cases = [("steady", long_s), ("bursts", long_s), ("steady", 5.0), ("steady", 1.0)]
    rows = []
    for kind, seconds in cases:
        cc = OfflineEmissionsTracker(
            measure_power_secs=1, save_to_file=False, log_level="error", country_iso_code="FRA"
        )
        cc.start()
        forced = power_monitor.open(f"{kind}-power", sample_interval_s=1.0)
        with mlflow_green.track(f"{kind}-{seconds:g}s", country="FRA") as t:
            _load(kind, seconds)
        power_j = sum(forced.close().energy_j_by_device["gpu"].values())
        cc.stop()
        counter_j = t.report.energy_j_by_domain["gpu"]
        cc_j = cc.final_emissions_data.gpu_energy * 3.6e6
        rows.append((kind, seconds, t.report.duration_s, counter_j, power_j, cc_j))
        print(
            f"{kind} {seconds:g}s: counter={counter_j:.1f} J power={power_j:.1f} J "
            f"codecarbon={cc_j:.1f} J",
            flush=True,
        )

    sync = sync_check()
    print(sync)
    two = two_process_check(10.0 if args.quick else 20.0)
    print(two_process_summary(two))
    device = (
        f"{gpu}; driver {pynvml.nvmlSystemGetDriverVersion()}; "
        f"host {platform.node()}; torch {torch.__version__}"
    )
    print(f"\nGPU: {device}\n")
    print(
        "| load | seconds | counter (J) | mean W | integrated power 10 Hz (J) | vs counter "
        "| CodeCarbon 1 s (J) | vs counter |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for kind, seconds, dur, c, p, cc in rows:
        print(
            f"| {kind} | {seconds:g} | {c:.1f} | {c / dur:.0f} | {p:.1f} | {p / c - 1:+.2%} "
            f"| {cc:.1f} | {cc / c - 1:+.2%} |"
        )
    fields = ("load", "seconds", "duration_s", "counter_j", "power_j", "codecarbon_j")
    table = [dict(zip(fields, row, strict=True)) for row in rows]
    _common.save(
        "gpu_validation",
        args,
        {"device": device, "sync_check": sync, "rows": table, "two_process": two},
    )


if __name__ == "__main__":
    main()
