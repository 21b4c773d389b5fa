"""What every benchmark shares: its command line, the machine, the results file, the docs.

Each script ends with :func:`save`, which writes ``bench/results/<name>.json``
(the figures, the exact command, the machine, its load average before and
after) and re-renders ``docs/benchmarks.md`` from every results file there, so
any one script run alone regenerates the document. A ``--quick`` run writes
``bench/results/quick/<name>.json`` instead and leaves the published figures
and the document alone.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import shlex
import sys
import time
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
#: The hardware stand-ins of the test suite (fake ``pynvml``, fake powercap tree).
FAKES = ROOT / "tests" / "fakes"
# The test suite's helpers (``tests.mlflow_server``) serve the benchmarks too.
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

#: A 1-minute load average above this means another job shared the machine's cores.
QUIET_LOAD = 0.5

_started: dict[str, Any] = {}


def parser(doc: str, quick_help: str) -> argparse.ArgumentParser:
    """An argument parser with the ``--quick`` flag every benchmark has."""
    p = argparse.ArgumentParser(
        description=doc.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help=f"{quick_help} (under a minute)")
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="S",
        help=f"first wait up to S seconds for a 1-minute load average below {QUIET_LOAD}",
    )
    return p


def begin(args: argparse.Namespace) -> None:
    """Note the start (time, load) and silence the tools' chatter; waits if ``--wait-quiet``."""
    warnings.simplefilter("ignore")
    for name in ("mlflow", "codecarbon", "alembic", "urllib3"):
        logging.getLogger(name).setLevel(logging.ERROR)
    deadline = time.monotonic() + args.wait_quiet
    while os.getloadavg()[0] >= QUIET_LOAD and time.monotonic() < deadline:
        time.sleep(10)  # the 1-minute average needs tens of seconds to fall
    _started.update(
        t=time.monotonic(), load=os.getloadavg(), when=_now(), busy=_busy_s(), own=_own_s()
    )


def _busy_s() -> float:
    """CPU seconds all cores of the machine have been busy (not idle, not waiting on I/O)."""
    import psutil

    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def _own_s() -> float:
    """CPU seconds of this process and of the children it has waited for (servers, probes)."""
    import psutil

    t = psutil.Process().cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def other_jobs_cores() -> float:
    """Cores that other jobs kept busy on average since :func:`begin` (0 on a quiet machine).

    The machine's busy CPU time minus this benchmark's own (children included),
    over the wall time: unlike the load average, it does not count the benchmark.
    """
    wall = time.monotonic() - _started.get("t", time.monotonic())
    if wall <= 0 or "busy" not in _started:
        return 0.0
    others = (_busy_s() - _started["busy"]) - (_own_s() - _started["own"])
    return max(others, 0.0) / wall


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def command() -> str:
    """The command that ran this script, as a user would type it from the repository root."""
    script = os.path.relpath(os.path.abspath(sys.argv[0]), ROOT)
    return shlex.join(["python", script, *sys.argv[1:]])


def machine() -> dict[str, str]:
    """CPU model, cores, memory, OS, Python and the versions of the compared packages."""
    import psutil

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                model,
            )
    except OSError:
        pass
    versions = {}
    for package in ("mlflow", "codecarbon", "torch", "mlflow-green"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "cpu": f"{model}, {os.cpu_count()} logical cores",
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "os": f"{platform.system()} {platform.release()} ({_os_name()})",
        "python": platform.python_version(),
        "packages": ", ".join(f"{k} {v}" for k, v in versions.items()),
        "gpu": "none" if not Path("/dev/nvidiactl").exists() else "NVIDIA (see nvidia-smi)",
        "rapl": "yes" if Path("/sys/class/powercap/intel-rapl:0").exists() else "no",
    }


def _os_name() -> str:
    try:
        return platform.freedesktop_os_release().get("PRETTY_NAME", "")
    except OSError:
        return ""


def save(name: str, args: argparse.Namespace, results: dict[str, Any], render: bool = True) -> Path:
    """Write ``bench/results/<name>.json`` and re-render ``docs/benchmarks.md``."""
    RESULTS.mkdir(exist_ok=True)
    record = {
        "name": name,
        "command": command(),
        "quick": bool(getattr(args, "quick", False)),
        "date": _started.get("when", _now()),
        "wall_s": round(time.monotonic() - _started.get("t", time.monotonic()), 1),
        "load_before": [round(x, 2) for x in _started.get("load", os.getloadavg())],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "other_jobs_cores": round(other_jobs_cores(), 3),
        "machine": machine(),
        "results": results,
    }
    folder = RESULTS / "quick" if record["quick"] else RESULTS
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(f"results: {os.path.relpath(path, ROOT)}")
    if record["quick"]:  # indicative only: the published figures come from full runs
        print("a --quick run: docs/benchmarks.md keeps the figures of the last full runs")
    elif render:
        from report import render_docs

        print(f"rendered: {os.path.relpath(render_docs(), ROOT)}")
    return path


def codecarbon_tracker(measure_power_secs: float | None = 1.0) -> Any:
    """CodeCarbon's offline tracker as users start it; ``None``: its default interval (15 s)."""
    from codecarbon import OfflineEmissionsTracker

    kwargs: dict[str, Any] = {}
    if measure_power_secs is not None:
        kwargs["measure_power_secs"] = measure_power_secs
    return OfflineEmissionsTracker(
        country_iso_code="FRA", save_to_file=False, log_level="error", **kwargs
    )
