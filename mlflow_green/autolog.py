"""``autolog()``: every MLflow run, however it starts and ends, records its energy.

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
import functools
import logging
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

from mlflow_green import spool
from mlflow_green.config import MeasureConfig, parse_bool, positive_seconds, resolve
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


@dataclass(frozen=True)
class AutologConfig:
    """``autolog`` arguments after resolution against ``MLFLOW_GREEN_*`` variables."""

    measure: MeasureConfig
    flush_interval_s: float = 30.0
    log_artifacts: bool = True
    silent: bool = False


@dataclass
class _Tracked:
    """One run being measured."""

    run_id: str
    window: Window
    client: Any  # the TrackingServiceClient that created the run: it knows the tracking URI
    lock: threading.Lock = field(default_factory=threading.Lock)
    timeline_logged: int = 0
    tags_logged: bool = False
    flush_failed: bool = False
    phases_j: dict[str, float] = field(default_factory=dict)


class _State:
    def __init__(self, config: AutologConfig) -> None:
        self.config = config
        self.runs: dict[str, _Tracked] = {}
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.flusher: threading.Thread | None = None

    def warn(self, message: str) -> None:
        if self.config.silent:
            _log.debug(message)
        else:
            warnings.warn(f"mlflow-green: {message}", RuntimeWarning, stacklevel=3)


_STATE: _State | None = None
_ORIGINALS: dict[tuple[Any, str], Any] = {}
_PREVIOUS_SIGTERM: Any = None


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
    """
    global _STATE
    if resolve("disable", disable, False, lambda v: parse_bool(v, "disable")):
        _uninstall()
        return
    config = AutologConfig(
        measure=MeasureConfig.build(
            country=country,
            region=region,
            cloud_provider=cloud_provider,
            cloud_region=cloud_region,
            carbon_intensity=carbon_intensity,
            pue=pue,
            scope=scope,
            sample_interval_s=sample_interval_s,
        ),
        flush_interval_s=resolve(
            "flush_interval_s", flush_interval_s, 30.0, positive_seconds("flush_interval_s")
        ),
        log_artifacts=resolve(
            "log_artifacts", log_artifacts, True, lambda v: parse_bool(v, "log_artifacts")
        ),
        silent=resolve("silent", silent, False, lambda v: parse_bool(v, "silent")),
    )
    if _STATE is None:
        _STATE = _State(config)
        _install()
    else:
        _STATE.config = config  # runs already open keep measuring, with the new settings
        _STATE.wake.set()


def is_enabled() -> bool:
    """Whether ``autolog`` hooks are installed."""
    return _STATE is not None


# -- hooks -----------------------------------------------------------------------------------


def _patch(owner: Any, name: str, make: Any) -> None:
    original = getattr(owner, name)
    _ORIGINALS[(owner, name)] = original
    wrapper = functools.wraps(original)(make(original))
    wrapper.__mlflow_green_wrapped__ = True
    setattr(owner, name, wrapper)


def _install() -> None:
    from mlflow.tracking import fluent
    from mlflow.tracking._tracking_service.client import TrackingServiceClient

    def create_run(original: Any) -> Any:
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            run = original(self, *args, **kwargs)
            _on_start(self, run.info.run_id)
            return run

        return wrapper

    def set_terminated(original: Any) -> Any:
        def wrapper(self: Any, run_id: str, *args: Any, **kwargs: Any) -> Any:
            _on_end(self, run_id)  # final values land before the run is marked terminated
            return original(self, run_id, *args, **kwargs)

        return wrapper

    def update_run(original: Any) -> Any:
        def wrapper(self: Any, run_id: str, status: Any = None, *args: Any, **kwargs: Any) -> Any:
            if status in _TERMINAL:
                _on_end(self, run_id)
            result = original(self, run_id, status, *args, **kwargs)
            if status == "RUNNING":
                _on_start(self, run_id)  # MlflowClient().update_run(id, "RUNNING") resumes
            return result

        return wrapper

    def start_run(original: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            active = original(*args, **kwargs)
            # A resumed run (run_id=..., MLFLOW_RUN_ID) bypasses create_run: measure from here.
            _on_start(None, active.info.run_id)
            return active

        return wrapper

    _patch(TrackingServiceClient, "create_run", create_run)
    _patch(TrackingServiceClient, "set_terminated", set_terminated)
    _patch(TrackingServiceClient, "update_run", update_run)
    import mlflow

    if getattr(fluent.start_run, "__mlflow_green_wrapped__", False) is False:
        _patch(fluent, "start_run", start_run)
        if getattr(mlflow, "start_run", None) is _ORIGINALS[(fluent, "start_run")]:
            mlflow.start_run = fluent.start_run
    _install_sigterm()


def _uninstall() -> None:
    global _STATE
    import mlflow

    for (owner, name), original in list(_ORIGINALS.items()):
        if owner.__dict__.get(name) is not original:
            setattr(owner, name, original)
        if name == "start_run" and getattr(mlflow, "start_run", None) is not original:
            mlflow.start_run = original
    _ORIGINALS.clear()
    state, _STATE = _STATE, None
    if state is not None:
        with state.lock:
            runs, state.runs = list(state.runs.values()), {}
        for tracked in runs:
            tracked.window.close()
        state.wake.set()
    _uninstall_sigterm()


def _safely(func: Any) -> Any:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            state = _STATE
            if state is not None:
                state.warn(f"{func.__name__[1:]} failed: {exc!r}; the run is not affected")
            return None

    return wrapper


@_safely
def _on_start(client: Any, run_id: str) -> None:
    state = _STATE
    if state is None or run_id in state.runs:
        return
    if client is None:
        client = _tracking_client()
    cfg = state.config.measure
    window = get_monitor().open(f"run {run_id}", cfg.scope, cfg.sample_interval_s)
    with state.lock:
        if run_id in state.runs:  # lost a race with another thread: keep the first window
            window.close()
            return
        state.runs[run_id] = _Tracked(run_id, window, client)
        _ensure_flusher(state)


def _tracking_client() -> Any:
    from mlflow.tracking._tracking_service.client import TrackingServiceClient
    from mlflow.tracking._tracking_service.utils import get_tracking_uri

    return TrackingServiceClient(get_tracking_uri())


@_safely
def _on_end(client: Any, run_id: str) -> None:
    state = _STATE
    if state is None:
        return
    with state.lock:
        tracked = state.runs.pop(run_id, None)
    if tracked is None:
        return
    with tracked.lock:
        report = EnergyReport.from_measurement(tracked.window.close(), state.config.measure)
        _log_final(state, tracked, client or tracked.client, report)


def _log_final(state: _State, tracked: _Tracked, client: Any, report: EnergyReport) -> None:
    from mlflow.entities import Metric, RunTag

    now_ms = int(time.time() * 1000)
    step = int(report.duration_s)
    values = {**final_metrics(report), **_phase_metrics(tracked, report.pue)}
    metrics = [Metric(k, v, now_ms, step) for k, v in values.items()]
    metrics += [
        Metric(k, v, t, s) for k, v, s, t in timeline_metrics(report, tracked.timeline_logged)
    ]
    run_tags = [RunTag(k, v) for k, v in tags(report).items()]
    try:
        try:
            run = client.get_run(tracked.run_id)
            model_ids = {o.model_id for o in (run.outputs.model_outputs if run.outputs else [])}
        except Exception:
            model_ids = set()
        # Attaching the summary to the run's LoggedModels makes them searchable by energy.
        metrics += [
            Metric(k, v, now_ms, step, model_id=mid, run_id=tracked.run_id)
            for mid in sorted(model_ids)
            for k, v in final_metrics(report).items()
        ]
        _log_batches(client, tracked.run_id, metrics, run_tags)
        if state.config.log_artifacts:
            _log_artifacts(client, tracked.run_id, report)
    except Exception as exc:
        path = spool.write(client.tracking_uri, tracked.run_id, report, metrics, run_tags)
        state.warn(
            f"could not log energy to run {tracked.run_id} ({exc!r}); the report was saved to "
            f"{path}; upload it later with `mlflow-green sync`"
        )


def _log_batches(client: Any, run_id: str, metrics: list, run_tags: list) -> None:
    for i in range(0, max(len(metrics), 1), 1000):  # MLflow's per-request limits
        chunk_tags = run_tags if i == 0 else []
        client.log_batch(run_id, metrics=metrics[i : i + 1000], params=[], tags=chunk_tags[:100])


def _log_artifacts(client: Any, run_id: str, report: EnergyReport) -> None:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="mlflow-green-") as folder:
        write_artifacts(report, folder)
        client.log_artifacts(run_id, folder, "green")


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
        with state.lock:
            runs = list(state.runs.values())
        for tracked in runs:
            _flush(state, tracked)


def flush() -> None:
    """Write the cumulative energy of every measured run now (the flusher does it periodically)."""
    state = _STATE
    if state is not None:
        with state.lock:
            runs = list(state.runs.values())
        for tracked in runs:
            _flush(state, tracked)


def _flush(state: _State, tracked: _Tracked) -> None:
    from mlflow.entities import Metric, RunTag

    with tracked.lock:
        if tracked.window.closed:
            return
        try:
            report = EnergyReport.from_measurement(tracked.window.snapshot(), state.config.measure)
            ts = int((report.start_time + report.duration_s) * 1000)
            step = int(report.duration_s)
            metrics = [Metric(k, v, ts, step) for k, v in cumulative_metrics(report).items()]
            # The newest point ends at "now", not at a sample: leave it to the next flush.
            points = max(len(report.timeline) - 1, tracked.timeline_logged)
            metrics += [
                Metric(k, v, t, s)
                for k, v, s, t in timeline_metrics(report, tracked.timeline_logged, points)
            ]
            run_tags = (
                [] if tracked.tags_logged else [RunTag(k, v) for k, v in tags(report).items()]
            )
            _log_batches(tracked.client, tracked.run_id, metrics, run_tags)
            tracked.timeline_logged, tracked.tags_logged = points, True
        except Exception as exc:
            if not tracked.flush_failed:
                tracked.flush_failed = True
                state.warn(f"periodic flush to run {tracked.run_id} failed: {exc!r}")


# -- phases ----------------------------------------------------------------------------------


def add_phase_energy(run_id: str, name: str, energy_j: float) -> float | None:
    """Add a phase's joules to a measured run; return the phase's running total, or None."""
    state = _STATE
    tracked = state.runs.get(run_id) if state is not None else None
    if tracked is None:
        return None
    tracked.phases_j[name] = tracked.phases_j.get(name, 0.0) + energy_j
    return tracked.phases_j[name]


# -- SIGTERM and exit ------------------------------------------------------------------------


def _install_sigterm() -> None:
    global _PREVIOUS_SIGTERM
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread
    try:
        previous = signal.getsignal(signal.SIGTERM)
        if getattr(previous, "__mlflow_green_wrapped__", False):
            return
        signal.signal(signal.SIGTERM, _on_sigterm)
        _PREVIOUS_SIGTERM = previous
    except (ValueError, OSError) as exc:
        _log.debug("mlflow-green: SIGTERM handler not installed: %s", exc)


def _uninstall_sigterm() -> None:
    global _PREVIOUS_SIGTERM
    if _PREVIOUS_SIGTERM is None or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is _on_sigterm:
        signal.signal(signal.SIGTERM, _PREVIOUS_SIGTERM)
    _PREVIOUS_SIGTERM = None


def _on_sigterm(signum: int, frame: Any) -> None:
    """Flush every measured run and end it KILLED, then hand the signal on."""
    try:
        import mlflow

        while mlflow.active_run() is not None:  # fluent runs: pops MLflow's run stack too
            mlflow.end_run("KILLED")
        state = _STATE
        if state is not None:
            with state.lock:
                rest = list(state.runs.values())
            for tracked in rest:
                tracked.client.set_terminated(tracked.run_id, "KILLED")
    except Exception as exc:
        _log.warning("mlflow-green: could not end runs on SIGTERM: %r", exc)
    previous = _PREVIOUS_SIGTERM
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_IGN:
        return
    else:  # default action: die of the signal, as the process would have without us
        import os

        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


_on_sigterm.__mlflow_green_wrapped__ = True  # type: ignore[attr-defined]


@atexit.register
def _flush_at_exit() -> None:
    # Runs MLflow will not end (client-created, left open): keep their latest totals.
    # Fluent runs still open are ended by MLflow's own atexit handler afterwards.
    if _STATE is not None:
        flush()
