"""One measured run's lifecycle: its measurement window opens at its start and closes at its end.

At the end the final values (totals, domains, phases, the rest of the timeline,
tags, artifacts, the LoggedModels' summary) go to the run in one batch; when
the tracking server does not answer, to the spool instead. A resumed run adds
its earlier sessions' totals; in a distributed job rank 0's run holds every
rank's energy.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from mlflow_green import distributed
from mlflow_green._tracking import probe
from mlflow_green.measure.monitor import get_monitor
from mlflow_green.measure.report import EnergyReport
from mlflow_green.runs import artifacts, rendering, spool
from mlflow_green.runs.artifacts import PageInfo
from mlflow_green.runs.flushing import ensure_flusher, phase_metrics, start_points, timeline_rows
from mlflow_green.runs.names import FOOTPRINT_METRICS, final_metrics, tags
from mlflow_green.runs.tracked import State, Tracked, current, safely

# Metrics that add up over a resumed run's sessions (power is an average, not additive).
_ADDITIVE = ("green/energy_kwh", "green/co2eq_kg", "green/duration_s", *FOOTPRINT_METRICS.values())
_ADDITIVE_PREFIXES = ("green/energy/", "green/phase/", "green/node/")
# How long a run's end waits for a periodic flush of the same run still talking to the server.
_FINAL_WAIT_S = 10.0


@safely
def on_start(
    client: Any,
    run_id: str,
    run: Any = None,
    resumed: bool = False,
    tags_logged: dict[str, str] | None = None,
    run_name: str | None = None,
    artifact_uri: str | None = None,
) -> None:
    """Start measuring run ``run_id`` (created through ``client``, or resumed)."""
    state = current()
    if state is None or run_id in state.runs:
        return
    if client is None:
        client = _tracking_client()
    cfg = state.config.measure
    base, offset, unknown = (
        _earlier_sessions(client, run_id, run, cfg.footprint) if resumed else ({}, 0, frozenset())
    )
    window = get_monitor().open(f"run {run_id}", cfg.scope, cfg.sample_interval_s)
    with state.lock:
        if run_id in state.runs:  # lost a race with another thread: keep the first window
            window.close()
            return
        tracked = Tracked(
            run_id,
            window,
            client,
            base=base,
            step_offset=offset,
            unknown=unknown,
            tags_logged=tags_logged or {},
        )
        tracked.run_name = run_name or _run_name(run)
        info = getattr(run, "info", None)
        tracked.artifact_uri = artifact_uri or getattr(info, "artifact_uri", None)
        state.runs[run_id] = tracked
        ensure_flusher(state)
    job = distributed.current()
    if job is not None:
        if job.info.rank == 0:
            tracked.job_key = job.announce(run_id)
        else:
            job.own_run_started()


def _run_name(run: Any) -> str | None:
    try:
        return run.info.run_name if run is not None else None
    except AttributeError:
        return None


def _earlier_sessions(
    client: Any, run_id: str, run: Any, footprint: Any
) -> tuple[dict[str, float], int, frozenset[str]]:
    """What a resumed run already holds: its additive green totals, the next free step, and
    the footprint figures that cannot go on adding up under ``footprint`` (:func:`_unsummable`;
    they are left out of the totals)."""
    run = run if run is not None else client.get_run(run_id)
    base = {
        k: v
        for k, v in run.data.metrics.items()
        if k in _ADDITIVE or k.startswith(_ADDITIVE_PREFIXES)
    }
    if not base:
        return {}, 0, frozenset()
    unknown = _unsummable(base, footprint, run.data.tags.get("green.currency"))
    history = client.get_metric_history(run_id, "green/energy_kwh")
    step = max((m.step for m in history), default=-1) + 1
    return {k: v for k, v in base.items() if k not in unknown}, step, unknown


def _unsummable(base: dict[str, float], footprint: Any, currency: str | None) -> frozenset[str]:
    """The footprint figures a resumed run cannot add up: given in its earlier sessions and
    not in this one or the reverse, or a cost in another currency."""
    now = {
        "green/cost": footprint.price_per_kwh is not None,
        "green/water_l": footprint.wue_l_per_kwh is not None,
        "green/embodied_co2eq_kg": footprint.embodied_co2eq_kg is not None,
    }
    out = {key for key, given in now.items() if (key in base) != given}
    if "green/cost" in base and currency != footprint.currency:
        out.add("green/cost")
    return frozenset(out)


def _tracking_client() -> Any:
    from mlflow.tracking._tracking_service.client import TrackingServiceClient
    from mlflow.tracking._tracking_service.utils import get_tracking_uri

    return TrackingServiceClient(get_tracking_uri())


@safely
def on_end(
    client: Any,
    run_id: str,
    end_time_ms: int | None = None,
    known: dict[str, str | None] | None = None,
) -> None:
    """Stop measuring run ``run_id`` and log (or spool) its final values."""
    state = current()
    if state is None:
        return
    with state.lock:
        tracked = state.runs.pop(run_id, None)
    if tracked is None:
        return
    # The run's energy ends with the run: close the window before any I/O, so that
    # no wait on the server (below, or in MLflow's retries) is counted in it.
    measurement = tracked.window.close()
    client = client or tracked.client
    down = probe(client, known)
    # A periodic flush of this run may be under way: wait for it (boundedly) only when the
    # server answers; a server that does not gets nothing, so there is nothing to wait for.
    locked = down is None and tracked.lock.acquire(timeout=_FINAL_WAIT_S)
    try:
        report = EnergyReport.from_measurement(measurement, state.config.measure)
        job, job_tags = None, {}
        coordinator = distributed.current()
        if coordinator is not None and tracked.job_key is not None:
            state.ending[run_id] = (tracked, client, report, end_time_ms)
            job = coordinator.collect(tracked.job_key, report)
            if state.ending.pop(run_id, None) is None:
                return  # a SIGTERM during the wait ended the run already
        elif coordinator is not None:  # a run of its own on a rank other than 0
            report = coordinator.own_share(report)
            job_tags = coordinator.own_tags()
        log_final(state, tracked, client, report, end_time_ms, job, job_tags, down)
    finally:
        if locked:
            tracked.lock.release()
        state.drop_provisional([run_id])


def log_final(
    state: State,
    tracked: Tracked,
    client: Any,
    report: EnergyReport,
    end_time_ms: int | None = None,
    job: distributed.JobEnergy | None = None,
    job_tags: dict[str, str] | None = None,
    unreachable: str | None = None,
) -> None:
    """Log a run's final values and artifacts, or spool them when the server is unreachable."""
    from mlflow.entities import Metric, RunTag

    now_ms = int(time.time() * 1000)
    if end_time_ms:
        now_ms = min(now_ms, int(end_time_ms))
    step = max(tracked.step_offset + int(report.duration_s), tracked.flushed_step + 1)
    summary = final_metrics(report)
    if job is not None:  # the whole job's energy, node by node
        job_metrics = job.metrics()
        for key in ("green/co2eq_kg", *FOOTPRINT_METRICS.values()):
            if key not in job_metrics:  # unknown on a node (intensity, settings): so for the job
                summary.pop(key, None)
        summary.update(job_metrics)
        for domain, method in report.methods.items():  # no meter on any node: no metric
            key = f"green/energy/{domain}_kwh"
            if method == "none" and summary.get(key) == 0:
                del summary[key]
        job_tags = {**(job_tags or {}), **job.tags()}
    values = tracked.totals({**summary, **phase_metrics(tracked, report.pue)}, all_keys=True)
    for key in ("green/co2eq_kg", *FOOTPRINT_METRICS.values()):
        if key not in summary and key not in tracked.unknown:  # unknown now: no total
            values.pop(key, None)
    zeros = start_points(tracked, report, values, now_ms)
    step = max(step, 1) if zeros else step
    metrics = zeros + [Metric(k, v, now_ms, step) for k, v in values.items()]
    metrics += timeline_rows(tracked, report, tracked.timeline_logged_s, float("inf"), now_ms)
    all_tags = {**tags(report), **(job_tags or {})}
    info = page_info(tracked, report, values)
    run_tags = [RunTag(k, v) for k, v in all_tags.items() if tracked.tags_logged.get(k) != v]
    # The summary attached to the run's LoggedModels makes them searchable by energy.
    metrics += [
        Metric(k, values[k], now_ms, step, model_id=mid, run_id=tracked.run_id)
        for mid in sorted(tracked.model_ids)
        for k in summary
    ]
    try:
        if unreachable is not None:
            raise ConnectionError(unreachable)
        # One request for every value: a store that cannot be reached fails here, once,
        # and the report goes to the spool before anything else is tried.
        artifacts.log_batches(client, tracked.run_id, metrics, run_tags)
        if state.config.log_artifacts:
            artifacts.log_artifacts(
                client, tracked.run_id, report, job, info, False, tracked.artifact_uri
            )
    except Exception as exc:
        _spool(state, client, tracked.run_id, report, metrics, run_tags, exc, info)
        return
    if state.config.log_artifacts:
        rendering.submit(client, tracked.run_id, report, info, state.warn, tracked.artifact_uri)


def page_info(tracked: Tracked, report: EnergyReport, values: dict[str, float]) -> PageInfo:
    """What the run's page and chart show beside ``report``: its name and phases."""
    t0, prefix = report.start_time_s, "green/phase/"
    return PageInfo(
        run_name=tracked.run_name,
        phases=[(n, a - t0, b - t0) for n, a, b in tracked.phase_spans if b > t0],
        phase_kwh={k[len(prefix) : -4]: v for k, v in values.items() if k.startswith(prefix)},
        partial=tracked.tags_logged.get("green.partial"),
    )


def _spool(
    state: State,
    client: Any,
    run_id: str,
    report: EnergyReport,
    metrics: list,
    run_tags: list,
    error: Exception,
    info: PageInfo | None = None,
) -> None:
    try:
        path = spool.write(
            client.tracking_uri,
            run_id,
            report,
            metrics,
            run_tags,
            log_artifacts=state.config.log_artifacts,
            error=error,
            page=asdict(info) if info is not None else None,
        )
    except Exception as exc:
        state.warn(
            f"could not log energy to run {run_id} ({error!r}) nor save it in the spool folder "
            f"{spool.spool_dir()} ({exc!r}); this run's energy report is lost"
        )
        return
    state.warn(
        f"could not log energy to run {run_id} ({error!r}); the report was saved to {path}; "
        "upload it later with `mlflow-green sync`"
    )
