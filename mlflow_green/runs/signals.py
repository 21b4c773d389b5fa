"""SIGTERM and interpreter exit: measured runs end with their energy, the process as it would.

On SIGTERM with the default action the runs end ``KILLED`` and the process
dies of the signal; a program's own handler decides for itself (see
:func:`_on_sigterm`). At exit, runs MLflow will not end keep their latest
totals. A tracking server that does not answer gets nothing: its runs' reports
go to the spool, and the process leaves without waiting on it.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
from typing import Any

from mlflow_green import distributed
from mlflow_green._tracking import LEAVING_PROBE_TIMEOUT_S, probe
from mlflow_green.runs import _sigterm_watch, hooks, rendering, spool
from mlflow_green.runs.flushing import flush_all, live_values
from mlflow_green.runs.lifecycle import log_final, on_end
from mlflow_green.runs.tracked import WARNING_PREFIX, State, current

_log = logging.getLogger(__name__)
_NO_HANDLER = object()  # SIGTERM handler not installed (``None`` is a valid previous handler)
_PREVIOUS_SIGTERM: Any = _NO_HANDLER


def install_sigterm() -> None:
    """Put :func:`_on_sigterm` in front of the SIGTERM handler (main thread only)."""
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
        if not callable(previous):  # standing in for the default action: see _sigterm_watch
            _sigterm_watch.start(_stands_in_for_default)
    except (ValueError, OSError) as exc:
        _log.debug("%s SIGTERM handler not installed: %s", WARNING_PREFIX, exc)


def uninstall_sigterm() -> None:
    """Give SIGTERM back to the handler :func:`install_sigterm` found."""
    global _PREVIOUS_SIGTERM
    if _PREVIOUS_SIGTERM is _NO_HANDLER:
        return
    if threading.current_thread() is not threading.main_thread():
        return  # keep chaining: the handler only hands the signal on while disabled
    if signal.getsignal(signal.SIGTERM) is _on_sigterm:
        previous = _PREVIOUS_SIGTERM
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    _PREVIOUS_SIGTERM = _NO_HANDLER
    _sigterm_watch.stop()


def _stands_in_for_default() -> bool:
    """Whether SIGTERM's handler is ours, over the default action (no handler of Python's)."""
    previous = _PREVIOUS_SIGTERM
    return (
        signal.getsignal(signal.SIGTERM) is _on_sigterm
        and previous is not _NO_HANDLER
        and not callable(previous)
        and previous is not signal.SIG_IGN
    )


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
    state = current()
    if state is not None and state.pid != os.getpid():
        # A child forked a moment ago, before its at-fork handlers ran: the runs and locks
        # here are still its parent's, so the signal acts as if we were not installed.
        _as_without_us(previous, signum, frame)
        return
    if callable(previous):
        provisional = _spool_provisional()
        try:
            try:
                previous(signum, frame)
            finally:  # the handler returned or raised: the process is still ours
                state = current()
                if state is not None:
                    state.drop_provisional(provisional)
        except SystemExit:
            if current() is not None:
                _end_all_killed()
            raise
        _wake_flusher()
        return
    if previous is signal.SIG_IGN:  # set to ignore after autolog(): nothing goes down
        _wake_flusher()
        return
    # Default action (SIG_DFL, or a handler not set from Python): die of the signal, as the
    # process would have without us. A second SIGTERM meanwhile kills at once.
    _sigterm_watch.begin()
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if current() is not None:
            _end_all_killed()
        _finish_charts(LEAVING_PROBE_TIMEOUT_S)
        os.kill(os.getpid(), signal.SIGTERM)
    finally:  # still here (an exception on the way): the thread's signal mask as it was
        _sigterm_watch.leave()


_on_sigterm.__mlflow_green_wrapped__ = True  # type: ignore[attr-defined]


def _as_without_us(previous: Any, signum: int, frame: Any) -> None:
    if callable(previous):
        previous(signum, frame)
    elif previous is not signal.SIG_IGN:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


def _spool_provisional() -> list[str]:
    """Spool every open run's energy so far (local files, no network) before a handler of
    the program's runs: a handler that never returns cannot take it with it. Returns
    the runs spooled; a run that ends meanwhile drops its file (``on_end``)."""
    state, run_ids = current(), []
    if state is None:
        return run_ids
    with state.lock:
        runs = list(state.runs.values())
    for tracked in runs:
        try:
            report, metrics, run_tags, *_ = live_values(state, tracked, in_handler=True)
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
            _log.debug("%s provisional spool of %s: %r", WARNING_PREFIX, tracked.run_id, exc)
            continue
        state.provisional[tracked.run_id] = path
        run_ids.append(tracked.run_id)
    return run_ids


def _wake_flusher() -> None:
    # No I/O inside the handler: the interrupted code may hold a lock that I/O needs.
    state = current()
    if state is not None:
        state.wake.set()


def _end_all_killed() -> None:
    errors: list[Exception] = []
    _finish_job_runs()
    _end_runs_waiting_for_ranks(errors)
    state = current()
    if state is None:
        return
    try:
        # A server that does not answer gets nothing (MLflow would retry for minutes while
        # the process is asked to stop): its runs' reports go to the spool, and we go.
        down: dict[str, str | None] = {}
        _spool_runs_of_silent_servers(state, down)
        import mlflow

        uri = mlflow.get_tracking_uri()
        # A forked child (a DataLoader or Pool worker) leaves the fluent runs alone: they
        # are its parent's, which goes on with them.
        if not state.forked and probe(uri, down, LEAVING_PROBE_TIMEOUT_S) is None:
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
                if probe(tracked.client, down) is None:
                    tracked.client.set_terminated(tracked.run_id, "KILLED")
            except Exception as exc:
                errors.append(exc)
    except Exception as exc:
        errors.append(exc)
    state = current()
    if errors and state is not None:
        state.warn(f"could not end {len(errors)} run(s) on SIGTERM: {errors[0]!r}")


@atexit.register
def _flush_at_exit() -> None:
    # Runs MLflow will not end (client-created, left open): keep their latest totals.
    # Fluent runs still open are ended by MLflow's own atexit handler. A server that does
    # not answer gets nothing: every run on it is final now, so its report is spooled.
    state = current()
    if state is not None:
        down: dict[str, str | None] = {}
        _spool_runs_of_silent_servers(state, down)
        flush_all(state, down)
    _finish_charts(rendering.EXIT_WAIT_S)


def _finish_charts(timeout_s: float) -> None:
    # Charts still being drawn get a bounded wait; the rest go to the spool. MLflow ends the
    # fluent runs left open after this handler: their charts are then drawn at once.
    try:
        rendering.finish(timeout_s)
    except Exception as exc:
        _log.debug("%s finishing the charts: %r", WARNING_PREFIX, exc)


def _spool_runs_of_silent_servers(state: State, down: dict[str, str | None]) -> None:
    """End the measurement of every run whose server does not answer, spooling its report.
    ``down`` caches the probe's answers by URI."""
    with state.lock:
        runs = list(state.runs.values())
    for tracked in runs:
        if probe(tracked.client, down, LEAVING_PROBE_TIMEOUT_S) is not None:
            on_end(tracked.client, tracked.run_id, known=down)


def _end_runs_waiting_for_ranks(errors: list) -> None:
    # SIGTERM arrived while rank 0 waited for the other ranks at a run's end: stop waiting,
    # log what arrived, and end the run KILLED here, since the interrupted end never resumes.
    state, coordinator = current(), distributed.current()
    if state is None or coordinator is None or not state.ending:
        return
    from mlflow.tracking._tracking_service.client import TrackingServiceClient

    coordinator.abort()
    set_terminated = hooks.original(TrackingServiceClient, "set_terminated")
    for run_id in list(state.ending):
        entry = state.ending.pop(run_id, None)
        if entry is None:
            continue
        tracked, client, report, end_time_ms = entry
        try:
            job = coordinator.result(tracked.job_key, 10.0)
            log_final(state, tracked, client, report, end_time_ms, job)
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
            _log.debug("%s finishing job runs: %r", WARNING_PREFIX, exc)
