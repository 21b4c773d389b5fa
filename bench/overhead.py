"""Throughput cost of measuring: two workloads with and without each tool, interleaved.

Workloads: a pure-Python CPU-bound loop (iterations/s) and a small PyTorch CPU
training loop (an MLP on random data, a fixed number of SGD steps; steps/s),
each run bare and inside every contender, in one process:

* ``mlflow-green``: ``mlflow_green.track(sample_interval_s=1)`` (the sampler
  ``autolog()`` runs for an MLflow run: one thread, 1 s);
* ``codecarbon-1s``: ``OfflineEmissionsTracker(measure_power_secs=1)``;
* ``codecarbon-default``: ``OfflineEmissionsTracker()`` (15 s);
* ``system-metrics``: ``mlflow.start_run(log_system_metrics=True)`` after
  ``mlflow.set_system_metrics_sampling_interval(1)``, on a SQLite store.

Each round runs, per workload, ``none, tool, none, tool, ..., none`` with the
tools in an order rotated from round to round: every trial with a tool sits
between two bare ones. Only the workload is timed (tool start/stop costs:
``bench/run_overhead.py``). Ratio = mean throughput of the two neighbouring
bare trials / throughput with the tool; the median over rounds is reported, with
its standard error and the spread of the bare trials (the machine's noise).
Also: the CPU time the tools' own threads used (exact, whatever the noise) and
the import cost that ``import mlflow_green`` adds to ``import mlflow``. Last line:
``overhead_ratio=<mlflow-green, CPU loop> codecarbon_ratio=<CodeCarbon 1 s, CPU loop>``.

    python bench/overhead.py            # 12 rounds, 1.5 s per trial (~6 minutes)
    python bench/overhead.py --quick    # 2 rounds, 0.8 s per trial (< 1 minute)
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import _common
import psutil

CONTENDERS = ("none", "mlflow-green", "codecarbon-1s", "codecarbon-default", "system-metrics")


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


class TorchTraining:
    """A small MLP trained with SGD on random data: the PyTorch CPU workload."""

    def __init__(self, threads: int) -> None:
        import torch

        # Two intra-op threads on this 2-core machine collapse (5x slower) whenever any other
        # process runs; one thread keeps the trials comparable. See --torch-threads.
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        self.torch = torch
        self.model = torch.nn.Sequential(
            torch.nn.Linear(256, 512),
            torch.nn.ReLU(),
            torch.nn.Linear(512, 512),
            torch.nn.ReLU(),
            torch.nn.Linear(512, 10),
        )
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01)
        self.x, self.y = torch.randn(128, 256), torch.randint(0, 10, (128,))
        self.loss = torch.nn.CrossEntropyLoss()
        self.steps = 50

    def calibrate(self, seconds: float) -> None:
        """Pick the fixed number of steps that takes about ``seconds`` here."""
        self(0.5)  # the first steps allocate and warm caches: not representative
        self.steps = max(int(self(1.0) * seconds), 10)

    def __call__(self, seconds: float | None = None) -> float:
        """Train a fixed number of steps (or ``seconds``' worth); return steps per second."""
        steps = self.steps if seconds is None else None
        start, done = time.perf_counter(), 0
        while (steps is not None and done < steps) or (
            steps is None and time.perf_counter() - start < seconds  # type: ignore[operator]
        ):
            self.optimizer.zero_grad()
            self.loss(self.model(self.x), self.y).backward()
            self.optimizer.step()
            done += 1
        return done / (time.perf_counter() - start)


@contextmanager
def _codecarbon(measure_power_secs: float | None) -> Any:
    tracker = _common.codecarbon_tracker(measure_power_secs)
    tracker.start()
    try:
        yield tracker
    finally:
        tracker.stop()


@contextmanager
def _system_metrics() -> Any:
    import mlflow

    with mlflow.start_run(log_system_metrics=True) as run:
        yield run


def _thread_cpu_s() -> dict[int, float]:
    return {t.id: t.user_time + t.system_time for t in psutil.Process().threads()}


def _timed(
    ctx: Callable[[], AbstractContextManager], work: Callable[[], float]
) -> tuple[float, float, float]:
    """Throughput of ``work`` inside ``ctx``; the CPU seconds the tool's threads used; wall s.

    The tool's threads are those that did not exist before ``ctx`` was entered
    (exited ones included): process CPU time minus that of the threads already
    there (the main thread, PyTorch's workers).
    """
    process = psutil.Process()
    existing = set(_thread_cpu_s())
    with ctx():
        start_threads, start_process = _thread_cpu_s(), sum(process.cpu_times()[:2])
        t0 = time.perf_counter()
        rate = work()
        wall = time.perf_counter() - t0
        end_threads, end_process = _thread_cpu_s(), sum(process.cpu_times()[:2])
    # A thread that ended meanwhile counts as the tool's: a small overestimate, never an under.
    ours = sum(end_threads.get(i, 0.0) - start_threads.get(i, 0.0) for i in existing)
    return rate, max(end_process - start_process - ours, 0.0), wall


def _robust_sd(values: list[float]) -> float:
    """Standard deviation estimated from the median absolute deviation (robust to bursts).

    1.4826 MAD estimates the standard deviation of normal data; a burst of another
    job on the machine moves it far less than it moves the plain standard deviation.
    """
    mid = statistics.median(values)
    return 1.4826 * statistics.median(abs(v - mid) for v in values)


def _median_stderr(values: list[float]) -> float:
    """Standard error of a median: about 1.25 sd / sqrt(n)."""
    return 1.25 * _robust_sd(values) / len(values) ** 0.5


def main() -> None:
    """Run the interleaved rounds; print and save the ratios."""
    parser = _common.parser(__doc__, "2 rounds of 0.8 s trials")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None, help="workload time per trial")
    parser.add_argument("--torch-threads", type=int, default=1, help="PyTorch intra-op threads")
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.quick else 12)
    seconds = args.seconds or (0.8 if args.quick else 1.5)
    _common.begin(args)
    for name in [n for n in os.environ if n.startswith("MLFLOW_GREEN_")]:
        del os.environ[name]  # the zero-code plugin must not turn tracking on for every run

    import mlflow

    import mlflow_green

    folder = tempfile.mkdtemp(prefix="mlflow-green-bench-overhead-")
    mlflow.set_tracking_uri(f"sqlite:///{folder}/mlflow.db")
    mlflow.set_experiment("overhead")
    mlflow.set_system_metrics_sampling_interval(1)

    contenders: dict[str, Callable[[], AbstractContextManager]] = {
        "none": nullcontext,
        "mlflow-green": lambda: mlflow_green.track(country="FRA", sample_interval_s=1.0),
        "codecarbon-1s": lambda: _codecarbon(1.0),
        "codecarbon-default": lambda: _codecarbon(None),
        "system-metrics": _system_metrics,
    }
    training = TorchTraining(args.torch_threads)
    training.calibrate(seconds)
    workloads: dict[str, Callable[[], float]] = {
        "cpu-loop": lambda: spin(seconds),
        "torch-mlp": training,
    }
    # Warm up: first starts pay for imports and hardware detection, not loop overhead.
    for ctx in contenders.values():
        _timed(ctx, lambda: spin(0.2))

    names = list(contenders)
    tools = names[1:]
    rates = {w: {n: [] for n in names} for w in workloads}
    # Per round and tool: bare throughput / throughput with the tool, where "bare" is the mean
    # of the bare trials just before and just after, so that slow drift and other jobs'
    # bursts (this machine is shared) cancel as far as they can.
    paired: dict[str, dict[str, list[float]]] = {w: {n: [] for n in tools} for w in workloads}
    helper_s = {w: {n: 0.0 for n in names} for w in workloads}
    timed_s = {w: {n: 0.0 for n in names} for w in workloads}
    for r in range(rounds):
        shift = r % len(tools)
        order = tools[shift:] + tools[:shift]
        for workload, work in workloads.items():
            # none, tool, none, tool, ..., none: every tool trial between two bare ones.
            sequence = [x for tool in order for x in ("none", tool)] + ["none"]
            trial_rates = []
            for name in sequence:
                rate, cpu, wall = _timed(contenders[name], work)
                trial_rates.append(rate)
                rates[workload][name].append(rate)
                helper_s[workload][name] += cpu
                timed_s[workload][name] += wall
            for i in range(1, len(sequence), 2):
                bare = (trial_rates[i - 1] + trial_rates[i + 1]) / 2
                paired[workload][sequence[i]].append(bare / trial_rates[i])
            print(
                f"round {r + 1}/{rounds} {workload:9s} "
                + "  ".join(f"{n}={paired[workload][n][-1]:.3f}" for n in tools),
                flush=True,
            )

    tick_s = 1.0 / os.sysconf("SC_CLK_TCK")  # resolution of per-thread CPU times
    results: dict[str, Any] = {
        "rounds": rounds,
        "seconds": seconds,
        "torch_threads": args.torch_threads,
        "torch_steps": training.steps,
        "workloads": {},
    }
    for workload in workloads:
        bare = rates[workload]["none"]
        entry: dict[str, Any] = {
            "unit": "iterations/s" if workload == "cpu-loop" else "steps/s",
            "bare_median": statistics.median(bare),
            # Noise: how far single bare trials stray from their median (robust sd, and range).
            "bare_sd_pct": _robust_sd(bare) / statistics.median(bare) * 100,
            "bare_spread_pct": (max(bare) - min(bare)) / statistics.median(bare) * 100,
            "ratios": {},
        }
        for name in tools:
            per_round = paired[workload][name]
            used = helper_s[workload][name]
            entry["ratios"][name] = {
                "median": statistics.median(per_round),
                "stderr": _median_stderr(per_round),
                "per_round": per_round,
                "min": min(per_round),
                "max": max(per_round),
                "helper_cpu_s": used,
                "helper_cpu_below_tick": used < tick_s,
                "timed_s": timed_s[workload][name],
            }
        results["workloads"][workload] = entry
        print(
            f"{workload}: bare {entry['bare_median']:.4g} {entry['unit']} "
            f"(trials: robust sd {entry['bare_sd_pct']:.1f}%, "
            f"range {entry['bare_spread_pct']:.1f}%)"
        )
        for name, ratio in entry["ratios"].items():
            share = max(ratio["helper_cpu_s"], tick_s) / ratio["timed_s"]
            print(
                f"  {name:18s} ratio {ratio['median']:.4f} ± {ratio['stderr']:.4f} "
                f"[{ratio['min']:.3f}, {ratio['max']:.3f}]  own threads "
                f"{ratio['helper_cpu_s'] * 1000:.0f} ms CPU over {ratio['timed_s']:.0f} s "
                f"(<= {share:.3%} of a core)"
            )
    results["tick_s"] = tick_s
    loop = results["workloads"]["cpu-loop"]["ratios"]
    print(
        f"overhead_ratio={loop['mlflow-green']['median']:.4f} "
        f"codecarbon_ratio={loop['codecarbon-1s']['median']:.4f}"
    )
    _common.save("overhead", args, results)


if __name__ == "__main__":
    main()
