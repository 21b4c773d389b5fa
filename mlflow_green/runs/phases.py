"""``phase(name)``: the energy of one lifecycle phase (data preparation, training, ...) of a run."""

from __future__ import annotations

import re
import threading
from types import TracebackType

from mlflow_green._warnings import warn
from mlflow_green.measure.config import MeasureConfig
from mlflow_green.measure.report import J_PER_KWH
from mlflow_green.measure.tracker import Tracker
from mlflow_green.runs.tracked import current

# MLflow metric names allow these characters; "/" would split the UI section.
_NAME = re.compile(r"^[A-Za-z0-9_.\- ]+$")
# Joules of each (run, phase) of runs autolog does not measure, summed over repeats.
_UNTRACKED_J: dict[tuple[str, str], float] = {}
_UNTRACKED_LOCK = threading.Lock()


class Phase(Tracker):
    """A :class:`~mlflow_green.measure.tracker.Tracker` whose energy is added to the active run."""

    def __init__(self, name: str, config: MeasureConfig, run_id: str | None) -> None:
        super().__init__(name, config)
        self.run_id = run_id

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        report = self.stop()
        if self._window is None or self.run_id is None:  # nothing measured, or no run
            return
        try:
            # A run autolog measures logs its phases with its other values, in one batch
            # (periodic flush, run end); any other run gets this phase logged now.
            span = (report.start_time_s, report.start_time_s + report.duration_s)
            if add_phase_energy(self.run_id, self.name, report.device_energy_j, span) is None:
                from mlflow.tracking import MlflowClient

                # Repeats are summed here too (in this process), as the docstring promises.
                key = (self.run_id, self.name)
                with _UNTRACKED_LOCK:
                    _UNTRACKED_J[key] = _UNTRACKED_J.get(key, 0.0) + report.device_energy_j
                    total_j = _UNTRACKED_J[key]
                MlflowClient().log_metric(
                    self.run_id, f"green/phase/{self.name}_kwh", total_j * report.pue / J_PER_KWH
                )
        except Exception as exc:  # never break the user's job
            warn(f"mlflow-green: could not log phase {self.name!r}: {exc!r}", stacklevel=2)


def phase(name: str, run_id: str | None = None) -> Phase:
    """Measure a lifecycle phase of a run as ``green/phase/<name>_kwh``.

    >>> with mlflow.start_run():
    ...     with mlflow_green.phase("preprocess"):
    ...         prepare()
    ...     with mlflow_green.phase("train"):
    ...         fit()

    The run is ``run_id`` when given, else the active MLflow run, else the only
    run autolog measures in this process (a run created through ``MlflowClient``,
    as Lightning's ``MLFlowLogger`` does inside ``fit()``). A phase that repeats is
    summed; phases may nest (an outer phase includes the inner one). The value is
    facility energy (PUE applied), like ``green/energy_kwh``. With no run to log
    to it measures but logs nothing, with a warning. Raises ``ValueError`` for a
    name MLflow cannot use as a metric, or a ``run_id`` that is not a string.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"phase name {name!r} is invalid: use letters, digits, '_', '-', '.' or spaces "
            "(it becomes the metric green/phase/<name>_kwh)"
        )
    if run_id is not None and (not isinstance(run_id, str) or not run_id.strip()):
        raise ValueError(f"phase run_id {run_id!r} is invalid: give an MLflow run id (a string)")
    state = current()
    config = state.config.measure if state is not None else MeasureConfig.build()
    run_id = run_id or target_run_id()
    if run_id is None:
        warn(
            f"mlflow-green: phase {name!r} has no MLflow run (no active run, and autolog "
            "measures none in this process): measured, not logged; pass run_id=",
            stacklevel=2,
        )
    return Phase(name, config, run_id)


def target_run_id() -> str | None:
    """The run a phase or a training callback is for when none is named: the active MLflow
    run of this thread, else the only run autolog measures in this process, else None
    (two or more measured runs are ambiguous)."""
    try:
        import mlflow

        active = mlflow.active_run()
        if active is not None:
            return active.info.run_id
    except Exception:
        pass
    state = current()
    if state is None:
        return None
    with state.lock:
        open_runs = [r for r, t in state.runs.items() if not t.window.closed]
    return open_runs[0] if len(open_runs) == 1 else None


def add_phase_energy(
    run_id: str, name: str, energy_j: float, span: tuple[float, float] | None = None
) -> float | None:
    """Add a phase's joules (and its ``(start, end)`` in seconds since the epoch) to a run
    autolog measures; return the phase's running total, or None when autolog does not
    measure that run."""
    state = current()
    tracked = state.runs.get(run_id) if state is not None else None
    if tracked is None:
        return None
    with tracked.lock:
        tracked.phases_j[name] = tracked.phases_j.get(name, 0.0) + energy_j
        if span is not None:
            tracked.phase_spans.append((name, *span))
        return tracked.phases_j[name]
