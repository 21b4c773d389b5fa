"""Energy accuracy on scripted hardware profiles: each tool's error against the exact integral.

One fake GPU (``tests/fakes/pynvml.py``: energy counter updated every 100 ms,
1 s-average power readings) and one fake RAPL package (``tests/fakes/powercap.py``,
moved every 5 ms, wrapping at ``max_energy_range_uj``) follow a scripted power
profile in real time (see ``bench/_fake_hw.py``). In the same window, measured by
all at once:

* mlflow-green: an MLflow run under ``mlflow_green.autolog()``, its
  ``green/energy/gpu_kwh`` and ``green/energy/cpu_kwh`` metrics;
* CodeCarbon ``OfflineEmissionsTracker``, ``measure_power_secs=1`` and its default
  (15 s): ``gpu_energy`` and ``cpu_energy``;
* MLflow system metrics at a 1 s interval: GPU energy derived from the logged
  ``system/gpu_0_power_usage_watts`` (sum x interval); no CPU energy (they log
  utilisation only).

Ground truth: the exact integral of the profile over the window.

    python bench/accuracy.py            # 8 s per profile
    python bench/accuracy.py --quick    # 3 s per profile
"""

from __future__ import annotations

from typing import Any

import _common
import _fake_hw as hw
from _fake_hw import Profile


def spikes(base: float, peak: float, seconds: float, period: float = 0.7) -> list[list[float]]:
    """``base`` watts with 100 ms spikes to ``peak`` every ``period`` s (no 1 s alignment)."""
    points, t = [[0.0, base]], 0.23
    while t + 0.1 < seconds + 1:
        points += [[t, base], [t, peak], [t + 0.1, peak], [t + 0.1, base]]
        t += period
    return points


def profiles(seconds: float) -> list[Profile]:
    """The scripted machines, each ``seconds`` long."""
    half = seconds / 2
    return [
        Profile("steady", [[0, 300]], [[0, 80]], "GPU 300 W, CPU 80 W"),
        Profile(
            "100 ms spikes",
            spikes(80, 600, seconds),
            spikes(30, 120, seconds),
            "GPU 80 W with 100 ms spikes to 600 W every 0.7 s; CPU 30 W, spikes to 120 W",
        ),
        Profile(
            "ramps",
            [[0, 50], [half, 450], [seconds, 50]],
            [[0, 20], [half, 100], [seconds, 20]],
            "GPU 50 -> 450 -> 50 W, CPU 20 -> 100 -> 20 W, linear",
        ),
        Profile(
            "counter wrap (CPU)",
            [[0, 250]],
            [[0, 80]],
            "RAPL counter starts 40 J below max_energy_range_uj: wraps after 0.5 s",
            rapl_start_below_wrap_j=40.0,
        ),
        Profile(
            "counter reset (GPU)",
            [[0, 300]],
            [[0, 80]],
            f"GPU energy counter restarts from 0 at {seconds * 0.55:.2f} s (driver reload)",
            gpu_reset_at_s=seconds * 0.55,
            gpu_counter_start_mj=5_000_000_000,
        ),
        Profile(
            "spikes, GPU without counter",
            spikes(80, 600, seconds),
            [[0, 80]],
            "pre-Volta GPU (no energy counter, instantaneous power); same spikes as above",
            gpu_counter=False,
        ),
    ]


def main() -> None:
    """Measure every profile with every tool; print and save the error table."""
    parser = _common.parser(__doc__, "3 s per profile")
    parser.add_argument("--seconds", type=float, default=None, help="length of each profile")
    args = parser.parse_args()
    seconds = args.seconds or (3.0 if args.quick else 8.0)
    _common.begin(args)

    rows: list[dict[str, Any]] = []
    with hw.session((1.0,)) as (machine, tools):
        for profile in profiles(seconds):
            result = hw.measure(machine, profile, seconds, tools)
            row = {"profile": profile.name, "note": profile.note, **result, "error_pct": {}}
            for tool, energy in result["tools"].items():
                row["error_pct"][tool] = {
                    d: hw.error_pct(energy.get(d), result["truth"][d]) for d in ("gpu", "cpu")
                }
            rows.append(row)
            hw.print_errors(f"{profile.name} ({result['seconds']} s):", row["error_pct"])
    _common.save("accuracy", args, {"seconds": seconds, "profiles": rows})


if __name__ == "__main__":
    main()
