"""Measure what ``import mlflow_green`` adds to ``import mlflow`` (``python -X importtime``).

Run from the repository root: ``python bench/import_cost.py [--runs N] [--quick]``; it prints
the breakdown by module and saves ``bench/results/import_cost.json`` for docs/benchmarks.md. A
measurement, not a test (timings want a quiet machine): the tests do not call it.

``import mlflow`` itself loads our run-context-provider entry point (``mlflow_green.runs.plugin``),
so the cost of our package is the self-time of every ``mlflow_green*`` line in the whole output,
whether it comes from MLflow's plugin loading or from the ``import mlflow_green`` after it.

One catch: MLflow loads entry points through ``importlib.import_module``, which ``-X importtime``
does not time (only the ``import`` statement is), so the plain command misses the lines of the
modules that the entry point names and of their packages (``mlflow_green``, ``mlflow_green.runs``,
``mlflow_green.runs.plugin``). The instrumented command routes that one ``import_module`` (the one
``importlib.metadata`` calls for entry points) through ``__import__`` so that they are timed too;
the published figure is the instrumented one. Both figures are printed, each as median and max over
``--runs`` fresh interpreters, after one discarded warm-up run of each (``.pyc`` files, disk cache).
Also printed: modules outside the package first imported under one of ours (what our modules
pulled in; an upper bound, since MLflow may have imported some of them later anyway).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "mlflow_green"
PLAIN = "import mlflow; import mlflow_green"
# Entry points are loaded with importlib.metadata's own ``import_module`` name; send it through
# ``__import__`` (the import statement's path, which -X importtime times).
INSTRUMENTED = (
    "import importlib.metadata as m, sys; "
    "m.import_module = lambda n, p=None: (__import__(n), sys.modules[n])[1]; " + PLAIN
)


@dataclass
class Run:
    """The figures of one interpreter's ``-X importtime`` output, in microseconds."""

    ours_us: int = 0  # self-time of every mlflow_green* line
    pulled_in_us: int = 0  # self-time of other modules first imported under one of ours
    per_module: dict[str, int] = field(default_factory=dict)
    pulled_in: dict[str, int] = field(default_factory=dict)
    # Self-times of MLflow's own modules: what one small module costs on this machine.
    mlflow_us: list[int] = field(default_factory=list)


def _is_ours(name: str) -> bool:
    return name == PACKAGE or name.startswith(PACKAGE + ".")


def parse_importtime(stderr: str) -> Run:
    """Sum our lines' self-times; find what was imported under them.

    Lines read ``import time: <self> | <cumulative> | <indent><module>``; a module's line comes
    after those of the modules it imported, indented deeper; so reading the lines backwards, the
    nearest earlier-read shallower line is a module's importer.
    """
    run = Run()
    stack: list[tuple[int, bool]] = []  # (depth, this module is ours or imported under ours)
    for line in reversed(stderr.splitlines()):
        if not line.startswith("import time:"):
            continue
        fields = line[len("import time:") :].split("|")
        if len(fields) != 3 or not fields[0].strip().isdigit():
            continue  # the header line
        self_us, raw_name = int(fields[0]), fields[2]
        name = raw_name.strip()
        depth = len(raw_name) - len(raw_name.lstrip())
        while stack and stack[-1][0] >= depth:
            stack.pop()
        under_ours = bool(stack) and stack[-1][1]
        if _is_ours(name):
            run.ours_us += self_us
            run.per_module[name] = run.per_module.get(name, 0) + self_us
        elif name == "mlflow" or name.startswith("mlflow."):
            run.mlflow_us.append(self_us)
        if not _is_ours(name) and under_ours:
            run.pulled_in_us += self_us
            run.pulled_in[name] = run.pulled_in.get(name, 0) + self_us
        stack.append((depth, _is_ours(name) or under_ours))
    return run


def measure(python: str, code: str, env: dict[str, str]) -> Run:
    """One fresh interpreter running ``code`` under ``-X importtime``."""
    done = subprocess.run(
        [python, "-X", "importtime", "-c", code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        sys.exit(f"the measured command failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return parse_importtime(done.stderr)


def _median_by_name(runs: list[Run], attr: str) -> dict[str, float]:
    values: dict[str, list[int]] = defaultdict(list)
    for run in runs:
        for name, us in getattr(run, attr).items():
            values[name].append(us)
    # A module missing from a run counts as 0 there.
    return {
        name: statistics.median(found + [0] * (len(runs) - len(found)))
        for name, found in values.items()
    }


def report(label: str, command: list[str], runs: list[Run]) -> dict[str, Any]:
    """Print one command's figures; return them (microseconds)."""
    ours = [run.ours_us for run in runs]
    pulled = [run.pulled_in_us for run in runs]
    print(f"\n== {label}: {' '.join(command)!s}")
    print(f"   {len(runs)} runs; mlflow_green* self-time sum (us):")
    # min too: on a busy machine it is the figure least inflated by other processes.
    print(f"   median {statistics.median(ours):.0f}, min {min(ours)}, max {max(ours)}")
    print(f"   all {sorted(ours)}")
    print(
        f"   other modules first imported under ours (us): median {statistics.median(pulled):.0f},"
        f" max {max(pulled)}"
    )
    print("   our modules (median self-time, us):")
    for name, us in sorted(_median_by_name(runs, "per_module").items(), key=lambda kv: -kv[1]):
        print(f"     {us:>8.0f}  {name}")
    pulled_in = _median_by_name(runs, "pulled_in")
    if pulled_in:
        print("   pulled in under ours (median self-time, us):")
        for name, us in sorted(pulled_in.items(), key=lambda kv: -kv[1])[:15]:
            print(f"     {us:>8.0f}  {name}")
    floors = [sorted(run.mlflow_us)[len(run.mlflow_us) // 10] for run in runs if run.mlflow_us]
    if floors:
        print(
            "   for scale: the 10th percentile of MLflow's own modules' self-times here is"
            f" {statistics.median(floors):.0f} us (median over the runs)"
        )
    if not any(f"{PACKAGE}.runs.plugin" in run.per_module for run in runs):
        print(f"   note: {PACKAGE}.runs.plugin never appears in this output")
    return {
        "command": " ".join(command),
        "median_us": statistics.median(ours),
        "min_us": min(ours),
        "max_us": max(ours),
        "pulled_in_median_us": statistics.median(pulled),
        "modules_us": dict(
            sorted(_median_by_name(runs, "per_module").items(), key=lambda kv: -kv[1])
        ),
        "mlflow_module_p10_us": statistics.median(floors) if floors else None,
    }


def measured_env() -> dict[str, str]:
    """The environment of the measured interpreters: default settings, ``.pyc`` files used."""
    # A MLFLOW_GREEN_* variable (zero-code mode, say) would change the cost.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_GREEN_")}
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed package has its .pyc files
    return env


def main() -> None:
    """Measure both commands; print, save ``bench/results/import_cost.json``, render the doc."""
    parser = _common.parser(__doc__, "5 interpreters per command")
    parser.add_argument("--runs", type=int, default=None, help="fresh interpreters per command")
    parser.add_argument("--python", default=sys.executable, help="interpreter to measure")
    args = parser.parse_args()
    _common.begin(args)
    runs = args.runs or (5 if args.quick else 25)
    env = measured_env()
    figures = {}
    for label, code in (("plain", PLAIN), ("instrumented", INSTRUMENTED)):
        measure(args.python, code, env)  # warm-up, discarded
        measured = [measure(args.python, code, env) for _ in range(runs)]
        figures[label] = report(label, ["python", "-X", "importtime", "-c", repr(code)], measured)
    added = figures["instrumented"]["median_us"]
    print(f"\nimport_cost_us={added:.0f} (plain importtime: {figures['plain']['median_us']:.0f})")
    _common.save("import_cost", args, {"runs": runs, **figures})


if __name__ == "__main__":
    main()
