"""Run hooks behind ``autolog()``: every MLflow run, however it starts and ends, records its energy.

MLflow has no end-of-run hook for plugins, so the run lifecycle is caught
where every path meets: ``TrackingServiceClient.create_run``,
``set_terminated`` and ``update_run`` (fluent ``start_run``/``end_run``,
``with`` blocks, nested runs, ``MlflowClient`` runs, framework autologging,
runs ended at exit), plus fluent ``start_run`` for resumed runs. Plain
wrappers, not ``safe_patch``: a fault here must not disable MLflow's own
autologging. Every fault becomes one warning; the user's run, code and
exceptions are untouched.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

from mlflow_green import distributed, plugin, spool
from mlflow_green._tracking import unreachable_message
from mlflow_green._warnings import warn
from mlflow_green.config import AutologConfig, resolve_disable
from mlflow_green.monitor import Window, get_monitor
from mlflow_green.report import (
    J_PER_KWH,
    EnergyReport,
    cumulative_metrics,
    final_metrics,
    tags,
    timeline_metrics,
    write_artifacts,
)

_log = logging.getLogger(__name__)
_TERMINAL = {"FINISHED", "FAILED", "KILLED"}
# Metrics that add up over a resumed run's sessions (power is an average, not additive).
_ADDITIVE = ("green/energy_kwh", "green/co2eq_kg", "green/duration_s")
_ADDITIVE_PREFIXES = ("green/energy/", "green/phase/", "green/node/")
# How long a run's end waits for a periodic flush of the same run still talking to the server.
_FINAL_WAIT_S = 10.0
# How long the probe waits for a server to answer: at a run's end or a flush (a slow server
# still counts as up), and at interpreter exit or on SIGTERM (the process is leaving).
_PROBE_TIMEOUT_S = 10.0
_LEAVING_PROBE_TIMEOUT_S = 3.0
# What ``silent=True`` hides: every warning of this package starts so.
_WARNING_PREFIX = "mlflow-green:"


@dataclass
class _Tracked:
    """One run being measured (one session of it, for a resumed run)."""

    run_id: str
    window: Window
    client: Any  # the TrackingServiceClient that created the run: it knows the tracking URI
    # Re-entrant: the SIGTERM handler runs in the main thread, maybe while it holds the lock.
    lock: threading.RLock = field(default_factory=threading.RLock)
    # Time (s since the run's start) of the last timeline point logged.
    timeline_logged_s: float = float("-inf")
    # The green.* tags the run already holds (set with create_run): only changes are logged.
    tags_logged: dict[str, str] = field(default_factory=dict)
    # LoggedModels of the run (seen through log_outputs): they get the summary metrics too.
    model_ids: set[str] = field(default_factory=set)
    flush_failed: bool = False
    # Step of the last successful flush: the final values get a later one, so that a run's
    # history never holds two totals at one step.
    flushed_step: int = -1
    phases_j: dict[str, float] = field(default_factory=dict)
    # A resumed run: the additive values its earlier sessions logged, and the first step
    # after them, so that this session's totals are the run's latest values.
    base: dict[str, float] = field(default_factory=dict)
    step_offset: int = 0
    # Distributed job: rank 0's key for this run in the job's store (the other ranks
    # measure it too); a run on another rank holds that rank's own share instead.
    job_key: str | None = None

    def totals(self, values: dict[str, float], all_keys: bool = False) -> dict[str, float]:
        """``values`` plus the earlier sessions' (and their other additive keys if ``all_keys``)."""
        out = dict(values)
        for key, value in self.base.items():
            if key in out or all_keys:
                out[key] = out.get(key, 0.0) + value
        return out


class _State:
    def __init__(self, config: AutologConfig) -> None:
        self.config = config
        self.runs: dict[str, _Tracked] = {}
        self.lock = threading.RLock()  # re-entrant for the same reason as _Tracked.lock
        self.wake = threading.Event()
        self.flusher: threading.Thread | None = None
        # Runs whose end waits for the other ranks of a distributed job: a SIGTERM in that
        # wait must still end them (MLflow has already let go of them).
        self.ending: dict[str, tuple[_Tracked, Any, EnergyReport, int | None]] = {}
        # Runs spooled just before a program's SIGTERM handler ran (see _spool_provisional).
        self.provisional: dict[str, Any] = {}

    def warn(self, message: str) -> None:
        if self.config.silent:
            _log.debug("%s %s", _WARNING_PREFIX, message)
        else:
            warn(f"{_WARNING_PREFIX} {message}", RuntimeWarning, stacklevel=2)


_STATE: _State | None = None
_ORIGINALS: dict[tuple[Any, str], Any] = {}
_NO_HANDLER = object()  # SIGTERM handler not installed (``None`` is a valid previous handler)
_PREVIOUS_SIGTERM: Any = _NO_HANDLER


def autolog(
    country: str | None = None,
    carbon_intensity: float | None = None,
    pue: float | None = None,
    scope: str | None = None,
    sample_interval_s: float | None = None,
    flush_interval_s: float | None = None,
    log_artifacts: bool | None = None,
    disable: bool | None = None,
    silent: bool | None = None,
    *,
    region: str | None = None,
    cloud_provider: str | None = None,
    cloud_region: str | None = None,
) -> None:
    """Record the energy and emissions of every MLflow run from now on.

    Args:
        country: ISO 3166-1 alpha-3 code of the grid (e.g. ``"FRA"``); refine with
            ``region=`` (US state, Canadian province, ...), or give
            ``cloud_provider=``/``cloud_region=`` instead.
        carbon_intensity: gCO2eq/kWh; overrides the location's value.
        pue: data-centre power usage effectiveness, >= 1.
        scope: ``"machine"`` (default) or ``"process"`` (CPU/RAM scaled to this process tree).
        sample_interval_s: power timeline resolution in seconds.
        flush_interval_s: cumulative energy and emissions are written to the run this often.
        log_artifacts: write ``green/report.json``, ``timeline.csv`` and ``power.png``.
        disable: remove every hook; runs already measured stop being measured.
        silent: no warnings from mlflow-green (they go to the debug log).

    Every argument also reads ``MLFLOW_GREEN_<NAME>`` when not given. Calling
    ``autolog`` again reconfigures. Invalid values raise ``ValueError`` here.

    A resumed run (``mlflow.start_run(run_id=...)``, ``MlflowClient().update_run(id,
    "RUNNING")``) is measured from the resume; its totals add the earlier sessions'.
    """
    plugin.explicit_call()  # the program's own choice: MLFLOW_GREEN_AUTOLOG no longer applies
    if resolve_disable(disable):
        _uninstall()
        return
    _enable(
        AutologConfig.build(
            country=country,
            region=region,
            cloud_provider=cloud_provider,
            cloud_region=cloud_region,
            carbon_intensity=carbon_intensity,
            pue=pue,
            scope=scope,
            sample_interval_s=sample_interval_s,
            flush_interval_s=flush_interval_s,
            log_artifacts=log_artifacts,
            silent=silent,
        )
    )


def autolog_from_env() -> None:
    """Zero-code mode (``MLFLOW_GREEN_AUTOLOG=true``): ``autolog()`` from the environment alone.

    Energy does not depend on the location: a location setting that is not valid
    leaves the carbon intensity unknown (CO2eq is not logged; the run's
    ``green.carbon_intensity_source`` tag says why) instead of measuring nothing.
    Any other bad setting raises, and the plugin turns that into one warning.
    """
    if is_enabled():  # an explicit autolog() call keeps its own arguments
        return
    config = AutologConfig.build(unknown_location_ok=True)
    _enable(config)
    if config.warnings and _STATE is not None:
        _STATE.warn("; ".join(config.warnings))


def _enable(config: AutologConfig) -> None:
    global _STATE
    _set_silent(config.silent)
    if _STATE is None:
        _STATE = _State(config)
        try:
            _install()
        except Exception as exc:  # an MLflow whose internals moved: measure nothing, say so
            state = _STATE
            _uninstall()
            state.warn(f"autolog could not hook into MLflow ({exc!r}); runs are not measured")
    else:
        _STATE.config = config  # runs already open keep measuring, with the new settings
        _STATE.wake.set()
    _join_job()


def _join_job() -> None:
    # Every rank of a torchrun/srun job follows rank 0's runs (a no-op when single-process).
    if _STATE is None:
        return
    try:
        distributed.start(lambda: _STATE.config if _STATE is not None else None, _warn)
    except Exception as exc:
        _warn(f"could not join the distributed job ({exc!r}); this rank measures alone")


def _warn(message: str) -> None:
    state = _STATE
    if state is not None:
        state.warn(message)


def is_enabled() -> bool:
    """Whether ``autolog`` hooks are installed."""
    return _STATE is not None


def _set_silent(silent: bool) -> None:
    # The monitor and meters warn directly (from any thread): silence them by message.
    if silent:
        warnings.filterwarnings("ignore", message=_WARNING_PREFIX)
        return
    kept = [
        f
        for f in warnings.filters
        if not (f[0] == "ignore" and getattr(f[1], "pattern", None) == _WARNING_PREFIX)
    ]
    if len(kept) != len(warnings.filters):
        warnings.filters[:] = kept
        mutated = getattr(warnings, "_filters_mutated", None)  # drops cached decisions
        if callable(mutated):
            mutated()


# -- hooks -----------------------------------------------------------------------------------


def _patch(owner: Any, name: str, make: Any) -> None:
    original = getattr(owner, name)
    _ORIGINALS[(owner, name)] = original
    wrapper = functools.wraps(original)(make(original))
    wrapper.__mlflow_green_wrapped__ = True
    setattr(owner, name, wrapper)


def _install() -> None:
    import mlflow
    from mlflow.tracking import fluent
    from mlflow.tracking._tracking_service.client import TrackingServiceClient

    def create_run(original: Any) -> Any:
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            # The green.* tags are known before the run exists: sending them with
            # create_run costs no request at the end of the run.
            ours = _start_tags()
            backdated_s = _backdated_s(args, kwargs)
            if ours and backdated_s > 1.0:
                # e.g. MLflow's autologging creates GridSearchCV child runs after the search,
                # with the start time of each fit: their energy is in the parent run.
                ours["green.partial"] = (
                    f"the run was created {backdated_s:.1f} s after its start time; its energy "
                    "covers only the time since creation"
                )
            if ours:
                args, kwargs = _with_tags(ours, args, kwargs)
            run = original(self, *args, **kwargs)
            _on_start(self, run.info.run_id, tags_logged=ours)
            return run

        return wrapper

    def log_outputs(original: Any) -> Any:
        def wrapper(self: Any, run_id: str, models: Any, *args: Any, **kwargs: Any) -> Any:
            result = original(self, run_id, models, *args, **kwargs)
            _on_model_outputs(run_id, models)
            return result

        return wrapper

    def set_terminated(original: Any) -> Any:
        def wrapper(self: Any, run_id: str, *args: Any, **kwargs: Any) -> Any:
            # Final values land before the run is marked terminated, and no later than the
            # end time a caller gives (MLflow's autologging client ends runs after the fact).
            end_time = kwargs.get("end_time", args[1] if len(args) > 1 else None)
            _on_end(self, run_id, end_time)
            return original(self, run_id, *args, **kwargs)

        return wrapper

    def update_run(original: Any) -> Any:
        def wrapper(self: Any, run_id: str, status: Any = None, *args: Any, **kwargs: Any) -> Any:
            if status in _TERMINAL:
                _on_end(self, run_id)
            result = original(self, run_id, status, *args, **kwargs)
            if status == "RUNNING":
                _on_start(self, run_id, resumed=True)  # MlflowClient().update_run(id, "RUNNING")
            return result

        return wrapper

    def start_run(original: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            active = original(*args, **kwargs)
            # A resumed run (run_id=..., MLFLOW_RUN_ID) bypasses create_run: measure from here.
            state = _STATE
            if state is not None and active.info.run_id not in state.runs:
                _on_start(None, active.info.run_id, run=active, resumed=True)
            return active

        return wrapper

    _patch(TrackingServiceClient, "create_run", create_run)
    _patch(TrackingServiceClient, "set_terminated", set_terminated)
    _patch(TrackingServiceClient, "update_run", update_run)
    _patch(TrackingServiceClient, "log_outputs", log_outputs)
    if not getattr(fluent.start_run, "__mlflow_green_wrapped__", False):
        _patch(fluent, "start_run", start_run)
        if getattr(mlflow, "start_run", None) is _ORIGINALS[(fluent, "start_run")]:
            mlflow.start_run = fluent.start_run
    _install_sigterm()


def _uninstall() -> None:
    global _STATE
    for (owner, name), original in list(_ORIGINALS.items()):
        if owner.__dict__.get(name) is not original:
            setattr(owner, name, original)
        if name == "start_run":
            import mlflow

            if getattr(mlflow, "start_run", None) is not original:
                mlflow.start_run = original
    _ORIGINALS.clear()
    state, _STATE = _STATE, None
    distributed.stop()
    if state is not None:
        with state.lock:
            runs, state.runs = list(state.runs.values()), {}
        for tracked in runs:
            tracked.window.close()
        state.wake.set()
    _uninstall_sigterm()
    _set_silent(False)


def _safely(func: Any) -> Any:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            state = _STATE
            if state is not None:
                what = "starting" if func.__name__ == "_on_start" else "ending"
                state.warn(
                    f"measuring a run failed while {what} ({exc!r}); the run is not affected"
                )
            else:
                _log.debug("%s %s failed: %r", _WARNING_PREFIX, func.__name__, exc)
            return None

    return wrapper


def _start_tags() -> dict[str, str]:
    """The green.* tags a new run gets at creation ({} if that fails: they come at the end)."""
    state = _STATE
    if state is None:
        return {}
    try:
        from mlflow_green.monitor import Measurement

        monitor = get_monitor()
        cfg = state.config.measure
        empty = Measurement("", 0.0, 0.0, {}, monitor.methods, monitor.hardware, cfg.scope)
        return tags(EnergyReport.from_measurement(empty, cfg))
    except Exception as exc:
        _log.debug("%s start tags: %r", _WARNING_PREFIX, exc)
        return {}


def _backdated_s(args: tuple, kwargs: dict) -> float:
    """How far in the past a create_run call's ``start_time`` (ms) lies, in seconds."""
    start_ms = args[1] if len(args) >= 2 else kwargs.get("start_time")
    if not isinstance(start_ms, (int, float)) or isinstance(start_ms, bool):
        return 0.0
    return max(time.time() - start_ms / 1000.0, 0.0)


def _with_tags(ours: dict[str, str], args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    # TrackingServiceClient.create_run(experiment_id, start_time=None, tags=None, run_name=None);
    # the user's own tags win over ours.
    if len(args) >= 3:
        given = args[2]
        if given is None or isinstance(given, dict):
            args = (*args[:2], {**ours, **(given or {})}, *args[3:])
    else:
        given = kwargs.get("tags")
        if given is None or isinstance(given, dict):
            kwargs = {**kwargs, "tags": {**ours, **(given or {})}}
    return args, kwargs


@_safely
def _on_model_outputs(run_id: str, models: Any) -> None:
    state = _STATE
    tracked = state.runs.get(run_id) if state is not None else None
    if tracked is not None:
        tracked.model_ids.update(m.model_id for m in models or [] if getattr(m, "model_id", None))


@_safely
def _on_start(
    client: Any,
    run_id: str,
    run: Any = None,
    resumed: bool = False,
    tags_logged: dict[str, str] | None = None,
) -> None:
    state = _STATE
    if state is None or run_id in state.runs:
        return
    if client is None:
        client = _tracking_client()
    base, offset = _earlier_sessions(client, run_id, run) if resumed else ({}, 0)
    cfg = state.config.measure
    window = get_monitor().open(f"run {run_id}", cfg.scope, cfg.sample_interval_s)
    with state.lock:
        if run_id in state.runs:  # lost a race with another thread: keep the first window
            window.close()
            return
        tracked = _Tracked(
            run_id, window, client, base=base, step_offset=offset, tags_logged=tags_logged or {}
        )
        state.runs[run_id] = tracked
        _ensure_flusher(state)
    job = distributed.current()
    if job is not None:
        if job.info.rank == 0:
            tracked.job_key = job.announce(run_id)
        else:
            job.own_run_started()


def _earlier_sessions(client: Any, run_id: str, run: Any) -> tuple[dict[str, float], int]:
    """What a resumed run already holds: its additive green totals and the next free step."""
    run = run if run is not None else client.get_run(run_id)
    base = {
        k: v
        for k, v in run.data.metrics.items()
        if k in _ADDITIVE or k.startswith(_ADDITIVE_PREFIXES)
    }
    if not base:
        return {}, 0
    history = client.get_metric_history(run_id, "green/energy_kwh")
    return base, max((m.step for m in history), default=-1) + 1


def _tracking_client() -> Any:
    from mlflow.tracking._tracking_service.client import TrackingServiceClient
    from mlflow.tracking._tracking_service.utils import get_tracking_uri

    return TrackingServiceClient(get_tracking_uri())


@_safely
def _on_end(
    client: Any,
    run_id: str,
    end_time_ms: int | None = None,
    known: dict[str, str | None] | None = None,
) -> None:
    state = _STATE
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
    down = _unreachable(client, known)
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
        _log_final(state, tracked, client, report, end_time_ms, job, job_tags, down)
    finally:
        if locked:
            tracked.lock.release()
        _drop_provisional([run_id])


def _unreachable(
    client: Any, known: dict[str, str | None] | None = None, timeout_s: float = _PROBE_TIMEOUT_S
) -> str | None:
    """Why the HTTP tracking server of ``client`` (or URI) does not answer, or None.

    MLflow retries a request to a server that is gone for minutes; this probe
    (:func:`unreachable_message`) answers within ``timeout_s`` (local stores are
    never probed). ``known`` caches answers by URI.
    """
    uri = client if isinstance(client, str) else getattr(client, "tracking_uri", None)
    if not isinstance(uri, str):
        return None
    if known is not None and uri in known:
        return known[uri]
    try:
        reason = unreachable_message(uri, timeout_s=timeout_s)
    except Exception as exc:  # a URI the probe cannot parse: let MLflow try
        _log.debug("%s probing %s: %r", _WARNING_PREFIX, uri, exc)
        reason = None
    if known is not None:
        known[uri] = reason
    return reason


def _log_final(
    state: _State,
    tracked: _Tracked,
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
        if "green/co2eq_kg" not in job_metrics:  # a node's intensity is unknown: so is the job's
            summary.pop("green/co2eq_kg", None)
        summary.update(job_metrics)
        job_tags = {**(job_tags or {}), **job.tags()}
    values = tracked.totals({**summary, **_phase_metrics(tracked, report.pue)}, all_keys=True)
    if "green/co2eq_kg" not in summary:  # unknown now: earlier sessions' CO2 is not the total
        values.pop("green/co2eq_kg", None)
    metrics = [Metric(k, v, now_ms, step) for k, v in values.items()]
    metrics += _timeline_rows(tracked, report, tracked.timeline_logged_s, float("inf"), now_ms)
    all_tags = {**tags(report), **(job_tags or {})}
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
        _log_batches(client, tracked.run_id, metrics, run_tags)
        if state.config.log_artifacts:
            _log_artifacts(client, tracked.run_id, report, job)
    except Exception as exc:
        _spool(state, client, tracked.run_id, report, metrics, run_tags, exc)


def _spool(
    state: _State,
    client: Any,
    run_id: str,
    report: EnergyReport,
    metrics: list,
    run_tags: list,
    error: Exception,
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
        )
    except Exception as exc:
        state.warn(
            f"could not log energy to run {run_id} ({error!r}) nor save it in the spool folder "
            f"{spool.spool_dir()} ({exc!r}); this run's energy report is lost"
        )
        return
    state.warn(
        f"could not log energy to run {run_id} ({error!r}); the report was saved to {path}; "
        "upload it later with `mlflow-green sync` (or mlflow_green.spool.sync())"
    )


def _log_batches(client: Any, run_id: str, metrics: list, run_tags: list) -> None:
    # MLflow's log_batch splits what exceeds its per-request limits by itself.
    if metrics or run_tags:
        client.log_batch(run_id, metrics=metrics, params=[], tags=run_tags)


def _log_artifacts(
    client: Any, run_id: str, report: EnergyReport, job: distributed.JobEnergy | None = None
) -> None:
    import json
    import tempfile

    with tempfile.TemporaryDirectory(prefix="mlflow-green-") as folder:
        write_artifacts(report, folder)
        if job is not None:
            with open(os.path.join(folder, "nodes.json"), "w", encoding="utf-8") as f:
                json.dump(job.to_dict(), f, indent=2)
        client.log_artifacts(run_id, folder, "green")


def _timeline_rows(
    tracked: _Tracked,
    report: EnergyReport,
    after_s: float,
    until_s: float,
    max_ms: int | None = None,
) -> list:
    from mlflow.entities import Metric

    return [
        Metric(k, v, t if max_ms is None else min(t, max_ms), tracked.step_offset + s)
        for k, v, s, t in timeline_metrics(report, after_s, until_s)
    ]


def _phase_metrics(tracked: _Tracked, pue: float) -> dict[str, float]:
    return {f"green/phase/{n}_kwh": j * pue / J_PER_KWH for n, j in tracked.phases_j.items()}


# -- periodic flush --------------------------------------------------------------------------


def _ensure_flusher(state: _State) -> None:
    if state.flusher is None or not state.flusher.is_alive():
        state.flusher = threading.Thread(
            target=_flush_loop, args=(state,), name="mlflow-green-flusher", daemon=True
        )
        state.flusher.start()


def _flush_loop(state: _State) -> None:
    while _STATE is state:
        state.wake.wait(state.config.flush_interval_s)
        state.wake.clear()
        if _STATE is not state:
            return
        _flush_all(state)


def flush() -> None:
    """Write the cumulative energy of every measured run now (the flusher does it periodically)."""
    state = _STATE
    if state is not None:
        _flush_all(state)


def _flush_all(state: _State, known: dict[str, str | None] | None = None) -> None:
    known = {} if known is None else known  # one probe per server per round
    with state.lock:
        runs = list(state.runs.values())
    for tracked in runs:
        _flush(state, tracked, known)


def _flush(state: _State, tracked: _Tracked, known: dict[str, str | None] | None = None) -> None:
    with tracked.lock:
        if tracked.window.closed:
            return
        try:
            _, metrics, run_tags, current, until_s, step = _live_values(state, tracked)
            down = _unreachable(tracked.client, known)
            if down is not None:  # MLflow would retry for minutes, holding this run's lock
                raise ConnectionError(down)
            _log_batches(tracked.client, tracked.run_id, metrics, run_tags)
            tracked.timeline_logged_s, tracked.tags_logged = until_s, current
            tracked.flushed_step = step
        except Exception as exc:
            if not tracked.flush_failed:
                tracked.flush_failed = True
                state.warn(f"periodic flush to run {tracked.run_id} failed: {exc!r}")


def _live_values(state: _State, tracked: _Tracked, in_handler: bool = False) -> tuple:
    """What a flush of a running run logs: (report, metrics, tags to send, all tags, until_s,
    step). No I/O but the distributed job's live reports, which a signal handler
    (``in_handler``) skips, as it skips waiting for the GPU: either may block."""
    from mlflow.entities import Metric, RunTag

    measurement = tracked.window.snapshot(sync=not in_handler)
    report = EnergyReport.from_measurement(measurement, state.config.measure)
    ts = int((report.start_time_s + report.duration_s) * 1000)
    step = tracked.step_offset + int(report.duration_s)
    cumulative = cumulative_metrics(report)
    coordinator = None if in_handler else distributed.current()
    if coordinator is not None and tracked.job_key is not None:
        job = coordinator.live(tracked.job_key, report)
        if job is not None:  # the whole job so far, from the ranks' live reports
            everything = job.metrics()
            cumulative = {k: everything[k] for k in cumulative if k in everything}
    values = tracked.totals({**cumulative, **_phase_metrics(tracked, report.pue)})
    metrics = [Metric(k, v, ts, step) for k, v in values.items()]
    # The newest point ends at "now", not at a sample: leave it to the next flush.
    until_s = report.timeline[-2].t_s if len(report.timeline) > 1 else float("-inf")
    until_s = max(until_s, tracked.timeline_logged_s)
    metrics += _timeline_rows(tracked, report, tracked.timeline_logged_s, until_s)
    current = tags(report)
    run_tags = [RunTag(k, v) for k, v in current.items() if tracked.tags_logged.get(k) != v]
    return report, metrics, run_tags, current, until_s, step


# -- phases ----------------------------------------------------------------------------------


def add_phase_energy(run_id: str, name: str, energy_j: float) -> float | None:
    """Add a phase's joules to a measured run; return the phase's running total, or None."""
    state = _STATE
    tracked = state.runs.get(run_id) if state is not None else None
    if tracked is None:
        return None
    with tracked.lock:
        tracked.phases_j[name] = tracked.phases_j.get(name, 0.0) + energy_j
        return tracked.phases_j[name]


# -- SIGTERM and exit ------------------------------------------------------------------------


def _install_sigterm() -> None:
    global _PREVIOUS_SIGTERM
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread
    try:
        previous = signal.getsignal(signal.SIGTERM)
        if getattr(previous, "__mlflow_green_wrapped__", False) or previous is signal.SIG_IGN:
            # An ignored SIGTERM never takes the process down, and stays ignored across
            # exec in its children: a handler of ours would change both.
            return
        signal.signal(signal.SIGTERM, _on_sigterm)
        _PREVIOUS_SIGTERM = previous
    except (ValueError, OSError) as exc:
        _log.debug("%s SIGTERM handler not installed: %s", _WARNING_PREFIX, exc)


def _uninstall_sigterm() -> None:
    global _PREVIOUS_SIGTERM
    if _PREVIOUS_SIGTERM is _NO_HANDLER:
        return
    if threading.current_thread() is not threading.main_thread():
        return  # keep chaining: the handler only hands the signal on while disabled
    if signal.getsignal(signal.SIGTERM) is _on_sigterm:
        previous = _PREVIOUS_SIGTERM
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    _PREVIOUS_SIGTERM = _NO_HANDLER


def _on_sigterm(signum: int, frame: Any) -> None:
    """End every measured run KILLED if SIGTERM takes the process down; else leave them be.

    With the default action the process goes down: runs end ``KILLED`` with their
    energy, then the process dies of the signal. A handler of the program's decides
    for itself: if it exits (``SystemExit``) the runs end ``KILLED`` as it unwinds;
    if it returns, or raises something the program may catch and go on from, the
    runs stay open and untouched. Should it end the process without returning
    (``os._exit``, re-raising the signal), the runs' energy so far waits in the spool.
    """
    previous = _PREVIOUS_SIGTERM
    if callable(previous):
        provisional = _spool_provisional()
        try:
            try:
                previous(signum, frame)
            finally:  # the handler returned or raised: the process is still ours
                _drop_provisional(provisional)
        except SystemExit:
            if _STATE is not None:
                _end_all_killed()
            raise
        _wake_flusher()
        return
    if previous is signal.SIG_IGN:  # set to ignore after autolog(): nothing goes down
        _wake_flusher()
        return
    # Default action (SIG_DFL, or a handler not set from Python): die of the signal, as the
    # process would have without us. A second SIGTERM meanwhile kills at once.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if _STATE is not None:
        _end_all_killed()
    os.kill(os.getpid(), signal.SIGTERM)


_on_sigterm.__mlflow_green_wrapped__ = True  # type: ignore[attr-defined]


def _spool_provisional() -> list[str]:
    """Spool every open run's energy so far (local files, no network) before a handler of
    the program's runs: a handler that never returns cannot take it with it. Returns
    the runs spooled; a run that ends meanwhile drops its file (``_on_end``)."""
    state, run_ids = _STATE, []
    if state is None:
        return run_ids
    with state.lock:
        runs = list(state.runs.values())
    for tracked in runs:
        try:
            report, metrics, run_tags, *_ = _live_values(state, tracked, in_handler=True)
            path = spool.write(
                tracked.client.tracking_uri,
                tracked.run_id,
                report,
                metrics,
                run_tags,
                log_artifacts=state.config.log_artifacts,
                error="SIGTERM: the process ended inside its own signal handler",
            )
        except Exception as exc:
            _log.debug("%s provisional spool of %s: %r", _WARNING_PREFIX, tracked.run_id, exc)
            continue
        state.provisional[tracked.run_id] = path
        run_ids.append(tracked.run_id)
    return run_ids


def _drop_provisional(run_ids: list[str]) -> None:
    """Delete the provisional spool files of ``run_ids``: each run ended (its values are
    logged or spooled for good) or the handler came back, so none may be uploaded later."""
    state = _STATE
    if state is None:
        return
    for run_id in run_ids:
        path = state.provisional.pop(run_id, None)
        if path is not None:
            with contextlib.suppress(OSError):
                path.unlink()


def _wake_flusher() -> None:
    # No I/O inside the handler: the interrupted code may hold a lock that I/O needs.
    state = _STATE
    if state is not None:
        state.wake.set()


def _end_all_killed() -> None:
    errors: list[Exception] = []
    _finish_job_runs()
    _end_runs_waiting_for_ranks(errors)
    state = _STATE
    if state is None:
        return
    try:
        # A server that does not answer gets nothing (MLflow would retry for minutes while
        # the process is asked to stop): its runs' reports go to the spool, and we go.
        down: dict[str, str | None] = {}
        _spool_runs_of_silent_servers(state, down)
        import mlflow

        uri = mlflow.get_tracking_uri()
        if _unreachable(uri, down, _LEAVING_PROBE_TIMEOUT_S) is None:
            for _ in range(1000):  # fluent runs of this thread: pops MLflow's run stack too
                if mlflow.active_run() is None:
                    break
                try:
                    mlflow.end_run("KILLED")  # pops the run before ending it: no endless loop
                except Exception as exc:
                    errors.append(exc)
        with state.lock:
            rest = list(state.runs.values())
        for tracked in rest:  # client-created runs and other threads' runs
            try:
                if _unreachable(tracked.client, down) is None:
                    tracked.client.set_terminated(tracked.run_id, "KILLED")
            except Exception as exc:
                errors.append(exc)
    except Exception as exc:
        errors.append(exc)
    if errors and _STATE is not None:
        _STATE.warn(f"could not end {len(errors)} run(s) on SIGTERM: {errors[0]!r}")


@atexit.register
def _flush_at_exit() -> None:
    # Runs MLflow will not end (client-created, left open): keep their latest totals.
    # Fluent runs still open are ended by MLflow's own atexit handler. A server that does
    # not answer gets nothing: every run on it is final now, so its report is spooled.
    state = _STATE
    if state is None:
        return
    down: dict[str, str | None] = {}
    _spool_runs_of_silent_servers(state, down)
    _flush_all(state, down)


def _spool_runs_of_silent_servers(state: _State, down: dict[str, str | None]) -> None:
    """End the measurement of every run whose server does not answer, spooling its report.
    ``down`` caches the probe's answers by URI."""
    with state.lock:
        runs = list(state.runs.values())
    for tracked in runs:
        if _unreachable(tracked.client, down, _LEAVING_PROBE_TIMEOUT_S) is not None:
            _on_end(tracked.client, tracked.run_id, known=down)


def _end_runs_waiting_for_ranks(errors: list) -> None:
    # SIGTERM arrived while rank 0 waited for the other ranks at a run's end: stop waiting,
    # log what arrived, and end the run KILLED here, since the interrupted end never resumes.
    state, coordinator = _STATE, distributed.current()
    if state is None or coordinator is None or not state.ending:
        return
    from mlflow.tracking._tracking_service.client import TrackingServiceClient

    coordinator.abort()
    set_terminated = _ORIGINALS.get((TrackingServiceClient, "set_terminated"))
    for run_id in list(state.ending):
        entry = state.ending.pop(run_id, None)
        if entry is None:
            continue
        tracked, client, report, end_time_ms = entry
        try:
            job = coordinator.result(tracked.job_key, 10.0)
            _log_final(state, tracked, client, report, end_time_ms, job)
            if set_terminated is not None:
                set_terminated(client, run_id, "KILLED")
        except Exception as exc:
            errors.append(exc)


def _finish_job_runs() -> None:
    # A rank other than 0 that ends before rank 0's run does: its energy so far goes now.
    coordinator = distributed.current()
    if coordinator is not None:
        try:
            coordinator.finish()
        except Exception as exc:
            _log.debug("%s finishing job runs: %r", _WARNING_PREFIX, exc)


def _forget_runs_after_fork() -> None:
    # A forked child (DataLoader worker, multiprocessing) inherits the parent's runs but
    # measures none of them: it must not flush into them at its exit. Its own runs are
    # still measured; locks are new since another thread may have held them at the fork.
    state = _STATE
    if state is not None:
        state.runs = {}
        state.lock = threading.RLock()
        state.wake = threading.Event()
        state.flusher = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_runs_after_fork)
