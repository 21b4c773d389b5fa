"""On a real NVIDIA GPU: the same load measured three ways in one run.

1. mlflow-green's ``nvml-energy-counter`` (``mlflow_green.track()``),
2. mlflow-green's ``nvml-power`` method forced on the same GPU (power polled
   at 10 Hz and integrated), the fallback used on GPUs without the counter,
3. CodeCarbon's ``OfflineEmissionsTracker(measure_power_secs=1)`` GPU energy.

Loads: steady bf16 matrix products, bursts (100 ms on, 400 ms idle), and
short runs of 1 s and 5 s. Needs torch with CUDA. Prints a Markdown table.

    python bench/gpu_validation.py [--quick]
"""

from __future__ import annotations

import platform
import time

import _common


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
            time.sleep(0.4)
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


def main() -> None:
    parser = _common.parser(__doc__, "10 s instead of 30 s for the long loads")
    parser.add_argument("--sync-only", action="store_true", help="only the async-kernel check")
    args = parser.parse_args()
    _common.begin(args)

    if args.sync_only:
        print(sync_check())
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
    _common.save("gpu_validation", args, {"device": device, "sync_check": sync, "rows": table})


if __name__ == "__main__":
    main()
