"""The periodic flush: a measured run's cumulative energy, timeline and tags while it runs.

One flusher thread per process wakes every ``flush_interval_s`` (or on
:func:`flush`, or when a SIGTERM handler asks) and logs each run's values so
far in one batch, so that a run that dies keeps what was measured.
"""

from __future__ import annotations

import threading
from typing import Any

from mlflow_green import distributed
from mlflow_green._tracking import probe
from mlflow_green.measure.report import J_PER_KWH, EnergyReport
from mlflow_green.runs import artifacts
from mlflow_green.runs.names import final_metrics, tags, timeline_metrics
from mlflow_green.runs.tracked import State, Tracked, current


def ensure_flusher(state: State) -> None:
    """Start the flusher thread of ``state`` unless it runs."""
    if state.flusher is None or not state.flusher.is_alive():
        state.flusher = threading.Thread(
            target=_flush_loop, args=(state,), name="mlflow-green-flusher", daemon=True
        )
        state.flusher.start()


def _flush_loop(state: State) -> None:
    while current() is state:
        state.wake.wait(state.config.flush_interval_s)
        state.wake.clear()
        if current() is not state:
            return
        flush_all(state)


def flush(wait_charts_s: float = 0.0) -> None:
    """Write the cumulative energy of every measured run now (the flusher does it
    periodically). ``wait_charts_s`` > 0 also waits up to that long for the
    ``green/power.png`` charts of ended runs, drawn in the background."""
    from mlflow_green.runs import rendering

    state = current()
    if state is not None:
        flush_all(state)
    if wait_charts_s > 0:
        rendering.wait(wait_charts_s)


def flush_all(state: State, known: dict[str, str | None] | None = None) -> None:
    """Flush every run of ``state``; ``known`` caches the probe's answers by tracking URI."""
    known = {} if known is None else known  # one probe per server per round
    with state.lock:
        runs = list(state.runs.values())
    for tracked in runs:
        _flush(state, tracked, known)


def _flush(state: State, tracked: Tracked, known: dict[str, str | None] | None = None) -> None:
    with tracked.lock:
        if tracked.window.closed:
            return
        try:
            _, metrics, run_tags, now_tags, until_s, step = live_values(state, tracked)
            down = probe(tracked.client, known)
            if down is not None:  # MLflow would retry for minutes, holding this run's lock
                raise ConnectionError(down)
            artifacts.log_batches(tracked.client, tracked.run_id, metrics, run_tags)
            tracked.timeline_logged_s, tracked.tags_logged = until_s, now_tags
            tracked.flushed_step = step
            tracked.started_logged = True
        except Exception as exc:
            if not tracked.flush_failed:
                tracked.flush_failed = True
                state.warn(f"periodic flush to run {tracked.run_id} failed: {exc!r}")


def live_values(state: State, tracked: Tracked, in_handler: bool = False) -> tuple:
    """What a flush of a running run logs: (report, metrics, tags to send, all tags, until_s,
    step). No I/O but the distributed job's live reports, which a signal handler
    (``in_handler``) skips, as it skips waiting for the GPU: either may block."""
    from mlflow.entities import Metric, RunTag

    measurement = tracked.window.snapshot(sync=not in_handler)
    report = EnergyReport.from_measurement(measurement, state.config.measure)
    ts = int((report.start_time_s + report.duration_s) * 1000)
    step = tracked.step_offset + int(report.duration_s)
    cumulative = final_metrics(report)
    coordinator = None if in_handler else distributed.current()
    if coordinator is not None and tracked.job_key is not None:
        job = coordinator.live(tracked.job_key, report)
        if job is not None:  # the whole job so far, from the ranks' live reports
            everything = job.metrics()
            cumulative = {k: everything[k] for k in cumulative if k in everything}
    values = tracked.totals({**cumulative, **phase_metrics(tracked, report.pue)})
    zeros = start_points(tracked, report, values)
    step = max(step, 1) if zeros else step
    metrics = zeros + [Metric(k, v, ts, step) for k, v in values.items()]
    # The newest point ends at "now", not at a sample: leave it to the next flush.
    until_s = report.timeline[-2].t_s if len(report.timeline) > 1 else float("-inf")
    until_s = max(until_s, tracked.timeline_logged_s)
    metrics += timeline_rows(tracked, report, tracked.timeline_logged_s, until_s)
    now_tags = tags(report)
    run_tags = [RunTag(k, v) for k, v in now_tags.items() if tracked.tags_logged.get(k) != v]
    return report, metrics, run_tags, now_tags, until_s, step


def start_points(
    tracked: Tracked, report: EnergyReport, values: dict[str, float], max_ms: int | None = None
) -> list[Any]:
    """Each figure's 0 at a new run's start (step 0), sent with its first values: a history
    of one point charts as a lone dot in MLflow's UI, one that starts at 0 as a line. (A
    resumed run's history starts at its first session.) The caller steps its values >= 1."""
    from mlflow.entities import Metric

    if tracked.started_logged or tracked.step_offset:
        return []
    start_ms = int(report.start_time_s * 1000)
    if max_ms is not None:  # a run ended "before" it was measured (backdated by its creator)
        start_ms = min(start_ms, max_ms)
    return [Metric(k, 0.0, start_ms, 0) for k in values]


def timeline_rows(
    tracked: Tracked,
    report: EnergyReport,
    after_s: float,
    until_s: float,
    max_ms: int | None = None,
) -> list[Any]:
    """The ``green/power/*`` metrics of the timeline points in ``(after_s, until_s]``, stepped
    after the run's earlier sessions, with timestamps no later than ``max_ms``."""
    from mlflow.entities import Metric

    return [
        Metric(k, v, t if max_ms is None else min(t, max_ms), tracked.step_offset + s)
        for k, v, s, t in timeline_metrics(report, after_s, until_s)
    ]


def phase_metrics(tracked: Tracked, pue: float) -> dict[str, float]:
    """``green/phase/<name>_kwh`` of every phase measured in the run so far."""
    return {f"green/phase/{n}_kwh": j * pue / J_PER_KWH for n, j in tracked.phases_j.items()}
