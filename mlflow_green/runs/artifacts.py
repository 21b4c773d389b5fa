"""Putting a report on a run: one batch of metrics and tags, and the ``green/`` artifact files.

The artifacts are ``report.json``, ``timeline.csv``, ``report.html`` (one self-contained
page, :mod:`~mlflow_green.runs.page`), ``power.png`` (and ``nodes.json`` for a
distributed job). A run's end writes all but the chart: matplotlib costs ~50 ms a
chart, so :mod:`~mlflow_green.runs.rendering` draws it off the run's path.
``mlflow-green sync`` writes them all. Shared by the run lifecycle, the flusher and sync.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlflow_green._warnings import warn
from mlflow_green.measure.meters import DOMAINS
from mlflow_green.measure.report import EnergyReport, or_unknown

if TYPE_CHECKING:
    from mlflow_green.distributed import JobEnergy

# Matplotlib's default colour cycle, one colour per domain whatever the others.
_COLOURS = {"gpu": "#2ca02c", "cpu": "#1f77b4", "ram": "#ff7f0e"}


@dataclass
class PageInfo:
    """What a run's page and chart show beside its report (JSON-ready, for the spool)."""

    run_name: str | None = None
    phases: list[tuple[str, float, float]] = field(default_factory=list)
    """``(name, start_s, end_s)`` of each ``phase()`` block, seconds since the run's start."""
    phase_kwh: dict[str, float] = field(default_factory=dict)
    """kWh of each phase (PUE applied), summed over its repeats."""
    partial: str | None = None
    """The run's ``green.partial`` tag: why its energy covers only part of it."""

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> PageInfo:
        """The inverse of ``dataclasses.asdict`` (``None``: nothing known)."""
        data = data or {}
        return cls(
            run_name=data.get("run_name"),
            phases=[(str(n), float(a), float(b)) for n, a, b in data.get("phases", [])],
            phase_kwh={str(k): float(v) for k, v in data.get("phase_kwh", {}).items()},
            partial=data.get("partial"),
        )


def log_batches(client: Any, run_id: str, metrics: list, run_tags: list) -> None:
    """Log ``metrics`` and ``run_tags`` on ``run_id`` in one ``log_batch`` call (if any)."""
    # MLflow's log_batch splits what exceeds its per-request limits by itself.
    if metrics or run_tags:
        client.log_batch(run_id, metrics=metrics, params=[], tags=run_tags)


def log_artifacts(
    client: Any,
    run_id: str,
    report: EnergyReport,
    job: JobEnergy | None = None,
    info: PageInfo | None = None,
    chart: bool = True,
    artifact_uri: str | None = None,
) -> None:
    """Write the report's artifacts (and ``nodes.json`` for a job) and log them under
    ``green/`` (of ``artifact_uri`` when known); ``chart=False`` leaves ``power.png`` to
    the caller."""
    with tempfile.TemporaryDirectory(prefix="mlflow-green-") as folder:
        write_artifacts(report, folder, info, job, chart)
        repo = artifact_repo(client, artifact_uri)
        if repo is not None:
            repo.log_artifacts(folder, "green")
        else:
            client.log_artifacts(run_id, folder, "green")


def artifact_repo(client: Any, artifact_uri: str | None) -> Any:
    """The run's artifact repository from its known ``artifact_uri`` (None: unknown), so
    that logging does not first ask the store for the run (a request: ~5 ms on SQLite)."""
    if not artifact_uri:
        return None
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
    from mlflow.utils.uri import add_databricks_profile_info_to_artifact_uri

    uri = add_databricks_profile_info_to_artifact_uri(artifact_uri, client.tracking_uri)
    return get_artifact_repository(uri, tracking_uri=client.tracking_uri)


def write_artifacts(
    report: EnergyReport,
    folder: str,
    info: PageInfo | None = None,
    job: JobEnergy | None = None,
    chart: bool = True,
) -> list[str]:
    """Write ``report.json``, ``timeline.csv``, ``report.html`` (and ``nodes.json`` for a
    job, ``power.png`` if ``chart``) into ``folder``; return their paths."""
    from mlflow_green.runs.page import PhaseSpan, render_run_page

    info = info or PageInfo()
    paths = [os.path.join(folder, n) for n in ("report.json", "timeline.csv", "report.html")]
    with open(paths[0], "w", encoding="utf-8") as f:
        f.write(report.to_json(indent=2))
    write_timeline_csv(report, paths[1])
    job_data = job.to_dict() if job is not None else None
    try:
        page = render_run_page(
            report,
            run_name=info.run_name,
            phases=[PhaseSpan(n, a, b) for n, a, b in info.phases],
            phase_kwh=info.phase_kwh,
            job=job_data,
            partial=info.partial,
        )
    except Exception as exc:  # a page bug costs the page (and a warning), not the figures
        warn(f"mlflow-green: could not write green/report.html: {exc!r}", RuntimeWarning)
        paths.pop()
    else:
        with open(paths[2], "w", encoding="utf-8") as f:
            f.write(page)
    if job_data is not None:
        paths.append(os.path.join(folder, "nodes.json"))
        with open(paths[-1], "w", encoding="utf-8") as f:
            json.dump(job_data, f, indent=2)
    if chart:
        paths.append(os.path.join(folder, "power.png"))
        plot_power(report, info, paths[-1])
    return paths


def log_chart(client: Any, run_id: str, report: EnergyReport, info: PageInfo, path: str) -> None:
    """Draw ``power.png`` at ``path`` and log it under ``green/``."""
    plot_power(report, info, path)
    upload_chart(client, run_id, path)


def upload_chart(client: Any, run_id: str, path: str, artifact_uri: str | None = None) -> None:
    """Log the drawn chart at ``path`` under ``green/`` (of ``artifact_uri`` when known)."""
    repo = artifact_repo(client, artifact_uri)
    if repo is not None:
        repo.log_artifact(path, "green")
    else:
        client.log_artifact(run_id, path, "green")


def metered(report: EnergyReport) -> list[str]:
    """The domains that have a meter (the others are absent from the files, not zeros)."""
    return [d for d in DOMAINS if report.methods.get(d, "none") != "none"]


def write_timeline_csv(report: EnergyReport, path: str) -> None:
    """``t_s`` (ms resolution) and ``<domain>_w`` (4 significant digits) per timeline point."""
    domains = metered(report)
    with open(path, "w", encoding="utf-8", newline="") as f:
        out = csv.writer(f)
        out.writerow(["t_s", *(f"{d}_w" for d in domains)])
        for p in report.timeline:
            out.writerow([f"{p.t_s:.3f}", *(f"{p.power_w.get(d, 0.0):.4g}" for d in domains)])


def plot_power(report: EnergyReport, info: PageInfo, path: str) -> None:
    """``power.png``: power per metered domain over the run, its phases shaded."""
    # No pyplot and no matplotlib.use(): the program's own backend and figures are left
    # alone, and drawing from the rendering thread touches no global state.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    # Fixed margins: tight_layout would cost as much as the drawing itself.
    fig.subplots_adjust(left=0.08, right=0.98, top=0.88, bottom=0.14)
    ax = fig.add_subplot()
    times = [0.0, *(p.t_s for p in report.timeline)]
    top = 0.0
    for domain in metered(report) if report.timeline else []:
        # Each point is the average over the interval that ends at it: draw it from
        # the previous point (from 0 for the first).
        watts = [p.power_w.get(domain, 0.0) for p in report.timeline]
        top = max(top, *watts)
        label = f"{domain} ({report.methods[domain]})"
        ax.step(times, [watts[0], *watts], where="pre", label=label, color=_COLOURS.get(domain))
    for name, start_s, end_s in info.phases:
        ax.axvspan(start_s, end_s, color="0.5", alpha=0.12, lw=0)
        ax.annotate(name, (start_s, 1.0), xycoords=("data", "axes fraction"), va="top",
                    fontsize="small", xytext=(2, -2), textcoords="offset points")  # fmt: skip
    # From 0 with headroom: a nearly constant estimate reads flat, not as spikes.
    ax.set_ylim(0, top * 1.15 if top > 0 else 1.0)
    ax.set_xlim(0, max(report.duration_s, times[-1]) or 1.0)
    ax.set_xlabel("seconds since the run's start")
    ax.set_ylabel("power (W)")
    co2eq = report.co2eq_kg
    ax.set_title(
        f"{info.run_name or report.name}: {report.energy_kwh * 1000:.3g} Wh, "
        f"{or_unknown(None if co2eq is None else co2eq * 1000, '.3g')} g CO2eq",
        fontsize="medium",
    )
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize="small")
    fig.savefig(path)
