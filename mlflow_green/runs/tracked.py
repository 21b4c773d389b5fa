"""The runs autolog measures in this process: one ``Tracked`` per run, and the autolog state.

:func:`current` is the state while autolog is on (None while it is off): its
settings, the runs being measured, the flusher's wake-up event, and the runs a
SIGTERM must still end. Every module of ``runs/`` reads it here; only
``runs.autolog`` sets it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from mlflow_green._warnings import warn
from mlflow_green.measure.config import AutologConfig
from mlflow_green.measure.monitor import Window
from mlflow_green.measure.report import EnergyReport

_log = logging.getLogger(__name__)
#: What ``silent=True`` hides: every warning of this package starts so.
WARNING_PREFIX = "mlflow-green:"


@dataclass
class Tracked:
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
    # Whether the figures' zero at step 0 reached the run (see flushing.start_points).
    started_logged: bool = False
    phases_j: dict[str, float] = field(default_factory=dict)
    # Each ``phase()`` block: (name, start, end), seconds since the epoch; shaded in the charts.
    phase_spans: list[tuple[str, float, float]] = field(default_factory=list)
    run_name: str | None = None
    artifact_uri: str | None = None  # known at creation: logging then asks the store nothing
    # A resumed run: the additive values its earlier sessions logged, and the first step
    # after them, so that this session's totals are the run's latest values.
    base: dict[str, float] = field(default_factory=dict)
    step_offset: int = 0
    # Figures of a resumed run that cannot be added up (a price in one session only, or in
    # two currencies): logged as NaN, unknown, rather than as a part passing for the whole.
    unknown: frozenset[str] = frozenset()
    # Distributed job: rank 0's key for this run in the job's store (the other ranks
    # measure it too); a run on another rank holds that rank's own share instead.
    job_key: str | None = None

    def totals(self, values: dict[str, float], all_keys: bool = False) -> dict[str, float]:
        """``values`` plus the earlier sessions' (and their other additive keys if ``all_keys``)."""
        out = dict(values)
        for key, value in self.base.items():
            if key in out or all_keys:
                out[key] = out.get(key, 0.0) + value
        for key in self.unknown:
            if key in out or all_keys:
                out[key] = math.nan
        return out


class State:
    """Autolog's settings and the runs it measures, while autolog is on."""

    def __init__(self, config: AutologConfig) -> None:
        self.config = config
        self.runs: dict[str, Tracked] = {}
        self.lock = threading.RLock()  # re-entrant for the same reason as Tracked.lock
        self.wake = threading.Event()
        self.flusher: threading.Thread | None = None
        # Runs whose end waits for the other ranks of a distributed job: a SIGTERM in that
        # wait must still end them (MLflow has already let go of them).
        self.ending: dict[str, tuple[Tracked, Any, EnergyReport, int | None]] = {}
        # Runs spooled just before a program's SIGTERM handler ran (runs.signals).
        self.provisional: dict[str, Any] = {}
        # A forked child: MLflow's stack of fluent runs is the parent's, not its own. ``pid``
        # differs from the process's own until the child's at-fork handler has run.
        self.forked = False
        self.pid = os.getpid()

    def warn(self, message: str) -> None:
        """One warning (a debug log line when ``silent``), never an exception."""
        if self.config.silent:
            _log.debug("%s %s", WARNING_PREFIX, message)
        else:
            warn(f"{WARNING_PREFIX} {message}", RuntimeWarning, stacklevel=2)

    def drop_provisional(self, run_ids: list[str]) -> None:
        """Delete the provisional spool files of ``run_ids``: each run ended (its values are
        logged or spooled for good) or the handler came back, so none may be uploaded later."""
        for run_id in run_ids:
            path = self.provisional.pop(run_id, None)
            if path is not None:
                with contextlib.suppress(OSError):
                    path.unlink()


_STATE: State | None = None


def current() -> State | None:
    """Autolog's state, or None while autolog is off."""
    return _STATE


def set_current(state: State | None) -> State | None:
    """Make ``state`` autolog's state (None: off); return the previous one."""
    global _STATE
    previous, _STATE = _STATE, state
    return previous


def warn_current(message: str) -> None:
    """Warn through autolog's state (honouring ``silent``); nothing while autolog is off."""
    state = _STATE
    if state is not None:
        state.warn(message)


def safely(func: Any) -> Any:
    """Run ``func``; any exception becomes one warning and a None result."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            state = _STATE
            if state is not None:
                what = "starting" if func.__name__ == "on_start" else "ending"
                state.warn(
                    f"measuring a run failed while {what} ({exc!r}); the run is not affected"
                )
            else:
                _log.debug("%s %s failed: %r", WARNING_PREFIX, func.__name__, exc)
            return None

    return wrapper


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
        state.forked, state.pid = True, os.getpid()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_runs_after_fork)
