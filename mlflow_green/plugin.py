"""Zero-code mode: ``MLFLOW_GREEN_AUTOLOG=true python train.py`` measures every run.

MLflow loads this run-context provider (entry point ``mlflow.run_context_provider``)
while ``import mlflow`` is still in progress, so nothing here may import MLflow
or the rest of mlflow-green at module level: that import cycle makes MLflow
drop the provider silently. The hooks are installed on the provider's first
use instead, which ``start_run`` makes before it creates the run.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from mlflow_green._warnings import warn

_log = logging.getLogger(__name__)
_ENV = "MLFLOW_GREEN_AUTOLOG"
_done = False
_armed: tuple | None = None  # (TrackingServiceClient, original create_run, trampoline)


def _wanted() -> bool:
    from mlflow_green._env import parse_bool

    try:
        return parse_bool(os.environ.get(_ENV, ""), _ENV)
    except ValueError:  # not a boolean: stay off, as for any value that is not "true"
        return False


def install_from_env() -> None:
    """Call ``autolog()`` once if ``MLFLOW_GREEN_AUTOLOG`` is true; warn (never raise) on error."""
    global _done
    if _done or not _wanted():
        return
    _done = True
    _disarm()
    try:
        from mlflow_green.hooks import autolog, is_enabled

        if not is_enabled():  # an explicit autolog() call keeps its own arguments
            autolog()
    except Exception as exc:  # bad MLFLOW_GREEN_* values must not stop the user's script
        warn(
            f"mlflow-green: {_ENV} is set but tracking could not start: {exc}",
            RuntimeWarning,
            stacklevel=2,
        )


_CLIENT_MODULE = "mlflow.tracking._tracking_service.client"


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs ``callback`` once, right after module ``name`` has been executed."""

    def __init__(self, name: str, callback: Callable[[], None]) -> None:
        self.name, self.callback = name, callback

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)  # one shot
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        loader = getattr(spec, "loader", None)
        if loader is not None and hasattr(loader, "exec_module"):
            exec_module = loader.exec_module

            def run_then_call(module: Any) -> None:
                exec_module(module)
                try:
                    self.callback()
                except Exception as exc:
                    _log.debug("mlflow-green: zero-code hook: %s", exc)

            loader.exec_module = run_then_call
        return spec


def _arm() -> None:
    """Install autolog on the first ``create_run``, whoever calls it.

    MLflow builds this provider while ``mlflow.tracking.fluent`` is half imported,
    too early for ``autolog()``; but ``TrackingServiceClient`` is already loaded
    (fluent imports the client first), so a one-shot trampoline on its
    ``create_run`` also catches scripts that never call ``mlflow.start_run``.
    """
    global _armed
    module = sys.modules.get(_CLIENT_MODULE)
    if module is None or _armed is not None:
        return
    cls = module.TrackingServiceClient
    original = cls.__dict__["create_run"]

    def create_run(self: object, *args: object, **kwargs: object) -> object:
        install_from_env()  # disarms first, then autolog wraps the real create_run
        return cls.create_run(self, *args, **kwargs)

    cls.create_run = create_run
    _armed = (cls, original, create_run)


def _disarm() -> None:
    global _armed
    if _armed is not None:
        cls, original, trampoline = _armed
        if cls.__dict__.get("create_run") is trampoline:
            cls.create_run = original
        _armed = None


class GreenRunContextProvider:
    """Adds no tags; its only job is to switch autolog on from the environment."""

    def __init__(self) -> None:
        if _wanted():
            if _CLIENT_MODULE in sys.modules:
                _arm()
            else:  # the usual case: providers load before the tracking client
                sys.meta_path.insert(0, _AfterImport(_CLIENT_MODULE, _arm))

    def in_context(self) -> bool:
        install_from_env()
        return False

    def tags(self) -> dict[str, str]:
        return {}
