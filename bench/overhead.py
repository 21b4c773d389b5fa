"""Throughput cost of measuring: a CPU-bound pure-Python loop with and without a tracker open.

Interleaved in one process: each round runs the loop bare, inside
``mlflow_green.track()`` and inside CodeCarbon's
``OfflineEmissionsTracker(measure_power_secs=1)``, in a rotating order so
drift (thermal, other load) hits all three alike. Only the loop is timed:
tracker start/stop costs are measured by ``bench/run_overhead.py``.

Prints per-round figures, the import cost that ``import mlflow_green`` adds to
``import mlflow``, and last:
``overhead_ratio=<ours> codecarbon_ratio=<theirs>`` (throughput without / with).

    python bench/overhead.py            # 8 rounds of 4 s
    python bench/overhead.py --quick    # under a minute
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext


def spin(seconds: float) -> float:
    """Run a pure-Python loop for ``seconds``; return iterations per second."""
    n, x = 0, 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for i in range(2000):
            x = (x * 31 + i) % 1_000_003
        n += 2000
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


class _CodeCarbon(AbstractContextManager):
    def __enter__(self) -> _CodeCarbon:
        from codecarbon import OfflineEmissionsTracker

        self.tracker = OfflineEmissionsTracker(
            country_iso_code="FRA", measure_power_secs=1, save_to_file=False, log_level="error"
        )
        self.tracker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.tracker.stop()


def _background_cpu_s() -> float:
    """CPU seconds used so far by this process's threads other than the main one."""
    import psutil

    main_id = threading.main_thread().native_id
    return sum(t.user_time + t.system_time for t in psutil.Process().threads() if t.id != main_id)


def _timed(ctx: Callable[[], AbstractContextManager], seconds: float) -> tuple[float, float]:
    """Loop throughput inside ``ctx``, and the CPU its helper threads used per loop second."""
    with ctx():
        before = _background_cpu_s()
        rate = spin(seconds)
        used = _background_cpu_s() - before
    return rate, used / seconds


def import_cost_ms(repeats: int) -> float:
    """Median time mlflow-green's modules add to ``import mlflow; import mlflow_green``, in ms.

    Its MLflow plugin entry point loads ``mlflow_green`` during ``import mlflow``,
    so timing ``import mlflow_green`` afterwards would read 0: instead sum, from
    ``python -X importtime``, the cumulative time of every outermost
    ``mlflow_green`` module (which includes anything it pulls in that MLflow had not).
    """
    runs = []
    for _ in range(repeats):
        err = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import mlflow, mlflow_green"],
            capture_output=True,
            text=True,
            check=True,
        ).stderr
        rows = []  # (depth, name, cumulative us), in importtime's post-order
        for line in err.splitlines():
            parts = line[len("import time:") :].split("|")
            if not line.startswith("import time:") or len(parts) != 3 or "cumulative" in line:
                continue
            name = parts[2].rstrip()
            rows.append((len(name) - len(name.lstrip()), name.strip(), int(parts[1])))
        total_us = 0
        for i, (depth, name, cumulative) in enumerate(rows):
            if not name.startswith("mlflow_green"):
                continue
            # A module's importer is the next row that is less indented.
            parent = next((n for d, n, _ in rows[i + 1 :] if d < depth), "")
            if not parent.startswith("mlflow_green"):
                total_us += cumulative
        runs.append(total_us / 1000)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of 2.5 s (< 1 minute)")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None, help="loop time per trial")
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 8)
    seconds = args.seconds or (2.5 if args.quick else 4.0)

    import mlflow_green

    logging.getLogger("codecarbon").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    contenders: dict[str, Callable[[], AbstractContextManager]] = {
        "none": nullcontext,
        "mlflow-green": lambda: mlflow_green.track(country="FRA", sample_interval_s=1.0),
        "codecarbon": _CodeCarbon,
    }
    # Warm up: first starts pay for CPU detection and imports, which are not loop overhead.
    for ctx in contenders.values():
        _timed(ctx, 0.3)

    names = list(contenders)
    results: dict[str, list[float]] = {n: [] for n in names}
    helper_cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % 3 :] + names[: r % 3]
        for name in order:
            rate, cpu = _timed(contenders[name], seconds)
            results[name].append(rate)
            helper_cpu[name].append(cpu)
        print(
            f"round {r + 1}/{rounds}: "
            + "  ".join(f"{n}={results[n][-1] / 1e6:.3f} Mit/s" for n in names),
            flush=True,
        )

    def ratio(name: str) -> float:
        # Per-round ratios cancel slow drift; the median resists one noisy round.
        return statistics.median(b / w for b, w in zip(results["none"], results[name], strict=True))

    # Precise where throughput is noisy: what the tool's own threads cost. Under the GIL a
    # helper thread's CPU time is at most time taken from the measured loop.
    tick_s = 1.0 / os.sysconf("SC_CLK_TCK")  # resolution of per-thread CPU times
    loop_s = seconds * rounds
    for name in names[1:]:
        used_s = sum(helper_cpu[name]) * seconds
        bound = f"{used_s * 1000:.0f} ms" if used_s > 0 else f"< {tick_s * 1000:.0f} ms (one tick)"
        print(
            f"{name}: helper threads used {bound} of CPU over {loop_s:.0f} s of loop "
            f"(<= {max(used_s, tick_s) / loop_s:.3%} of a core)"
        )
    print(
        "import cost added to `import mlflow`: "
        f"{import_cost_ms(3 if args.quick else 7):.1f} ms (-X importtime: mlflow_green's "
        "modules and whatever they import that mlflow does not)"
    )
    print(f"overhead_ratio={ratio('mlflow-green'):.4f} codecarbon_ratio={ratio('codecarbon'):.4f}")


if __name__ == "__main__":
    main()
