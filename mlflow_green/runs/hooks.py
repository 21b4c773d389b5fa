"""The patch points on MLflow: where every run, however it starts and ends, is caught.

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

import functools
import logging
import time
from typing import Any

from mlflow_green.measure.monitor import Measurement, get_monitor
from mlflow_green.measure.report import EnergyReport
from mlflow_green.runs import rendering
from mlflow_green.runs.lifecycle import on_end, on_start
from mlflow_green.runs.names import tags
from mlflow_green.runs.tracked import WARNING_PREFIX, current, safely

_log = logging.getLogger(__name__)
_TERMINAL = {"FINISHED", "FAILED", "KILLED"}
_ORIGINALS: dict[tuple[Any, str], Any] = {}


def original(owner: Any, name: str) -> Any:
    """MLflow's own ``owner.name`` that a hook replaced, or None when it is not hooked."""
    return _ORIGINALS.get((owner, name))


def _patch(owner: Any, name: str, make: Any) -> None:
    func = getattr(owner, name)
    _ORIGINALS[(owner, name)] = func
    wrapper = functools.wraps(func)(make(func))
    wrapper.__mlflow_green_wrapped__ = True
    setattr(owner, name, wrapper)


def install() -> None:
    """Wrap MLflow's run creation, termination and resumption (and ``log_outputs``)."""
    import mlflow
    from mlflow.tracking import fluent
    from mlflow.tracking._tracking_service.client import TrackingServiceClient

    def create_run(func: Any) -> Any:
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
            run = func(self, *args, **kwargs)
            on_start(
                self,
                run.info.run_id,
                tags_logged=ours,
                run_name=run.info.run_name,
                artifact_uri=run.info.artifact_uri,
            )
            return run

        return wrapper

    def log_outputs(func: Any) -> Any:
        def wrapper(self: Any, run_id: str, models: Any, *args: Any, **kwargs: Any) -> Any:
            result = func(self, run_id, models, *args, **kwargs)
            _on_model_outputs(run_id, models)
            return result

        return wrapper

    def set_terminated(func: Any) -> Any:
        def wrapper(self: Any, run_id: str, *args: Any, **kwargs: Any) -> Any:
            # Final values land before the run is marked terminated, and no later than the
            # end time a caller gives (MLflow's autologging client ends runs after the fact).
            end_time = kwargs.get("end_time", args[1] if len(args) > 1 else None)
            with rendering.held():  # the chart is drawn once the run has ended
                on_end(self, run_id, end_time)
                return func(self, run_id, *args, **kwargs)

        return wrapper

    def update_run(func: Any) -> Any:
        def wrapper(self: Any, run_id: str, status: Any = None, *args: Any, **kwargs: Any) -> Any:
            if status in _TERMINAL:
                on_end(self, run_id)
            result = func(self, run_id, status, *args, **kwargs)
            if status == "RUNNING":
                on_start(self, run_id, resumed=True)  # MlflowClient().update_run(id, "RUNNING")
            return result

        return wrapper

    def start_run(func: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            active = func(*args, **kwargs)
            # A resumed run (run_id=..., MLFLOW_RUN_ID) bypasses create_run: measure from here.
            state = current()
            if state is not None and active.info.run_id not in state.runs:
                on_start(None, active.info.run_id, run=active, resumed=True)
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


def uninstall() -> None:
    """Put MLflow's own functions back."""
    for (owner, name), func in list(_ORIGINALS.items()):
        if owner.__dict__.get(name) is not func:
            setattr(owner, name, func)
        if name == "start_run":
            import mlflow

            if getattr(mlflow, "start_run", None) is not func:
                mlflow.start_run = func
    _ORIGINALS.clear()


def _start_tags() -> dict[str, str]:
    """The green.* tags a new run gets at creation ({} if that fails: they come at the end)."""
    state = current()
    if state is None:
        return {}
    try:
        monitor = get_monitor()
        cfg = state.config.measure
        now = time.time()  # an hourly intensity's value at the run's start
        empty = Measurement("", now, 0.0, {}, monitor.methods, monitor.hardware, cfg.scope)
        return tags(EnergyReport.from_measurement(empty, cfg))
    except Exception as exc:
        _log.debug("%s start tags: %r", WARNING_PREFIX, exc)
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


@safely
def _on_model_outputs(run_id: str, models: Any) -> None:
    state = current()
    tracked = state.runs.get(run_id) if state is not None else None
    if tracked is not None:
        tracked.model_ids.update(m.model_id for m in models or [] if getattr(m, "model_id", None))
