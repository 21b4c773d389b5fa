"""Short runs: the energy each tool records for 1 s, 5 s and 15 s runs, against ground truth.

The scripted machine of ``bench/accuracy.py`` (fake GPU with NVML's 100 ms
energy counter, fake RAPL package; see ``bench/_fake_hw.py``) runs a
training-like profile: GPU power stepping between 200 W and 320 W every 0.3 s,
CPU at 60 W. Each run is measured in the same window by mlflow-green (autolog
on an MLflow run), CodeCarbon (``measure_power_secs=1`` and its default 15 s)
and MLflow system metrics at 1 s and at their default 10 s interval. System
metrics log power readings, not energy: their "energy" here is the sum of the
logged ``system/gpu_0_power_usage_watts`` times the interval, and none for the
CPU (they log utilisation only). A run shorter than their interval logs nothing.

    python bench/short_runs.py           # 3 runs of each length (median error)
    python bench/short_runs.py --quick   # 1 run of each length
"""

from __future__ import annotations

import statistics
from typing import Any

import _common
import _fake_hw as hw
from _fake_hw import Profile

LENGTHS_S = (1.0, 5.0, 15.0)
#: Where in the counter's 100 ms period each repeat's window opens.
PHASES_S = (0.037, 0.071, 0.013)


def training_like(seconds: float) -> Profile:
    """GPU 200 W / 320 W in 0.3 s steps (compute and data loading), CPU 60 W."""
    gpu, t, high = [], 0.0, True
    while t < seconds + 1:
        watts = 320.0 if high else 200.0
        gpu += [[t, watts], [t + 0.3, watts]]
        t, high = t + 0.3, not high
    return Profile("training-like", gpu, [[0, 60]], "GPU 200/320 W in 0.3 s steps, CPU 60 W")


def main() -> None:
    """Measure runs of each length with every tool; print and save the table."""
    parser = _common.parser(__doc__, "one run of each length")
    parser.add_argument("--repeats", type=int, default=None, help="runs of each length")
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)
    _common.begin(args)

    rows: list[dict[str, Any]] = []
    with hw.session((1.0, 10.0)) as (machine, tools):
        for seconds in LENGTHS_S:
            runs = [
                hw.measure(machine, training_like(seconds), seconds, tools, PHASES_S[i % 3])
                for i in range(repeats)
            ]
            row: dict[str, Any] = {"seconds": seconds, "runs": runs, "median_error_pct": {}}
            for tool in runs[0]["tools"]:
                errors: dict[str, float | None] = {}
                for domain in ("gpu", "cpu"):
                    each = [
                        hw.error_pct(r["tools"][tool].get(domain), r["truth"][domain]) for r in runs
                    ]
                    known = [e for e in each if e is not None]
                    errors[domain] = statistics.median(known) if known else None
                errors["samples"] = runs[0]["tools"][tool].get("samples")
                row["median_error_pct"][tool] = errors
            hw.print_errors(
                f"{seconds:g} s runs (x{repeats}), median error:", row["median_error_pct"]
            )
            rows.append(row)
    _common.save("short_runs", args, {"repeats": repeats, "lengths": rows})


if __name__ == "__main__":
    main()
