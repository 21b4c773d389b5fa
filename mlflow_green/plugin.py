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
import threading
from collections.abc import Callable
from typing import Any

from mlflow_green._warnings import warn

_log = logging.getLogger(__name__)
_ENV = "MLFLOW_GREEN_AUTOLOG"
_done = False  # the environment's choice was applied, or the program chose itself
_bad_value_warned = False
_armed: tuple | None = None  # (TrackingServiceClient, original create_run, trampoline)
# Set while this thread is inside the trampoline: a call that comes back into it (through a
# wrapper that autolog() put around it) goes straight to MLflow, never round again.
_local = threading.local()
_install_lock = threading.RLock()


def _wanted() -> bool:
    """Whether ``MLFLOW_GREEN_AUTOLOG`` asks for tracking; one warning if it is not a boolean."""
    global _bad_value_warned
    from mlflow_green._env import env_bool

    try:
        return env_bool(_ENV)
    except ValueError as exc:  # "ture": the user meant something; say what we understood
        if not _bad_value_warned:
            _bad_value_warned = True
            warn(f"mlflow-green: {exc}; zero-code tracking is off", RuntimeWarning, stacklevel=3)
        return False


def explicit_call() -> None:
    """``autolog()`` was called by the program: its choice (even ``disable=True``) stands.

    The environment variable then never switches tracking on (or back on) by itself,
    and MLflow's ``create_run`` gets back the function the trampoline replaced.
    """
    global _done
    with _install_lock:
        _done = True
        _disarm()


def install_from_env() -> None:
    """Call ``autolog()`` once if ``MLFLOW_GREEN_AUTOLOG`` is true; warn (never raise) on error.

    Every thread that creates a run meanwhile waits here until the hooks are in: the
    first runs of a program that starts many threads at once are all measured.
    """
    global _done
    if _done:
        return
    with _install_lock:
        if _done or not _wanted():
            return
        try:
            from mlflow_green.hooks import autolog_from_env

            # The hooks wrap whatever create_run is now (maybe the trampoline, which then
            # only forwards): nothing is unpatched before they are in.
            autolog_from_env()
        except Exception as exc:  # bad MLFLOW_GREEN_* values must not stop the user's script
            warn(
                f"mlflow-green: {_ENV} is set but tracking could not start: {exc}",
                RuntimeWarning,
                stacklevel=2,
            )
        finally:
            _done = True
            _disarm()


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

    The trampoline only ever calls forward: the ``create_run`` it replaced, or, on
    the call that installs autolog, autolog's wrapper around that same function.
    ``autolog()`` may already have wrapped the trampoline itself (it was called
    before the first run), or wrapped it and been disabled again, or MLflow may
    build its providers anew: in every order a call reaches MLflow exactly once.
    """
    global _armed
    module = sys.modules.get(_CLIENT_MODULE)
    if module is None or _armed is not None or _done:
        return
    cls = module.TrackingServiceClient
    original = cls.__dict__["create_run"]

    def create_run(self: object, *args: object, **kwargs: object) -> object:
        if getattr(_local, "inside", False) or cls.__dict__.get("create_run") is not create_run:
            return original(self, *args, **kwargs)  # reached through a wrapper around us
        _local.inside = True
        try:
            install_from_env()  # autolog wraps this trampoline, or ``original`` once disarmed
            now = cls.__dict__.get("create_run")
            target = original if now is None or now is create_run else now
            return target(self, *args, **kwargs)
        finally:
            _local.inside = False

    cls.create_run = create_run
    _armed = (cls, original, create_run)


def _disarm() -> None:
    global _armed
    if _armed is not None:
        cls, original, trampoline = _armed
        if cls.__dict__.get("create_run") is trampoline:
            cls.create_run = original
        _armed = None


_ABSTRACT_REGISTRY_STORE = "mlflow.store.model_registry.abstract_store"


def _keep_copy_refusals() -> None:
    """Every client with mlflow-green installed sees a gate's refused copy as PERMISSION_DENIED
    (MLflow's ``copy_model_version`` turns it into INTERNAL_ERROR; see ``_copy_refusal``)."""
    from mlflow_green import _copy_refusal

    _when_imported(_ABSTRACT_REGISTRY_STORE, _copy_refusal.install)


def _when_imported(name: str, callback: Callable[[], None]) -> None:
    """``callback()`` now if module ``name`` is loaded, else once right after it is.

    Providers load while ``import mlflow`` is still running, usually before the
    modules we patch; a provider built again adds no second hook.
    """
    if name in sys.modules:
        callback()
    elif not any(isinstance(f, _AfterImport) and f.name == name for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport(name, callback))


def _new_lock_after_fork() -> None:
    # A child forked while another thread installed the hooks would wait for good on a
    # lock that no thread of it holds.
    global _install_lock
    _install_lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_after_fork)


class GreenRunContextProvider:
    """Adds no tags; its only job is to switch autolog on from the environment."""

    def __init__(self) -> None:
        _keep_copy_refusals()
        if not _done and _wanted():
            _when_imported(_CLIENT_MODULE, _arm)

    def in_context(self) -> bool:
        install_from_env()
        return False

    def tags(self) -> dict[str, str]:
        return {}
