"""Putting a report on a run: one batch of metrics and tags, and the ``green/`` artifact files.

The artifacts are ``report.json``, ``timeline.csv``, ``power.png`` (and ``nodes.json``
for a distributed job). Shared by the run lifecycle, the flusher and ``mlflow-green sync``.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import TYPE_CHECKING, Any

from mlflow_green.measure.meters import DOMAINS
from mlflow_green.measure.report import EnergyReport, or_unknown

if TYPE_CHECKING:
    import pandas as pd

    from mlflow_green.distributed import JobEnergy


def log_batches(client: Any, run_id: str, metrics: list, run_tags: list) -> None:
    """Log ``metrics`` and ``run_tags`` on ``run_id`` in one ``log_batch`` call (if any)."""
    # MLflow's log_batch splits what exceeds its per-request limits by itself.
    if metrics or run_tags:
        client.log_batch(run_id, metrics=metrics, params=[], tags=run_tags)


def log_artifacts(
    client: Any, run_id: str, report: EnergyReport, job: JobEnergy | None = None
) -> None:
    """Write the report's artifacts (and ``nodes.json`` for a job) and log them under ``green/``."""
    with tempfile.TemporaryDirectory(prefix="mlflow-green-") as folder:
        write_artifacts(report, folder)
        if job is not None:
            with open(os.path.join(folder, "nodes.json"), "w", encoding="utf-8") as f:
                json.dump(job.to_dict(), f, indent=2)
        client.log_artifacts(run_id, folder, "green")


def write_artifacts(report: EnergyReport, folder: str) -> list[str]:
    """Write ``report.json``, ``timeline.csv`` and ``power.png`` into ``folder``."""
    paths = [os.path.join(folder, n) for n in ("report.json", "timeline.csv", "power.png")]
    with open(paths[0], "w", encoding="utf-8") as f:
        f.write(report.to_json(indent=2))
    frame = report.timeline_frame()
    frame.to_csv(paths[1], index=False)
    _plot_power(report, frame, paths[2])
    return paths


def _plot_power(report: EnergyReport, frame: pd.DataFrame, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # no pyplot: no global state, thread-safe

    fig = Figure(figsize=(8, 3.5), dpi=100)
    ax = fig.add_subplot()
    for domain in DOMAINS:
        if report.methods.get(domain, "none") != "none" and len(frame):
            # Each point is the average over the interval that ends at it: draw it from
            # the previous point (from 0 for the first).
            watts = list(frame[f"{domain}_w"])
            ax.step(
                [0.0, *frame["t_s"]],
                [watts[0], *watts],
                where="pre",
                label=f"{domain} ({report.methods[domain]})",
            )
    ax.set_ylim(bottom=0)
    ax.set_xlim(left=0)
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("power (W)")
    co2eq = report.co2eq_kg
    ax.set_title(
        f"{report.name}: {report.energy_kwh * 1000:.4g} Wh, "
        f"{or_unknown(None if co2eq is None else co2eq * 1000, '.4g')} g CO2eq"
    )
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
