"""Zero-code mode: ``MLFLOW_GREEN_AUTOLOG=true python train.py`` measures every run.

MLflow loads this run-context provider (entry point ``mlflow.run_context_provider``)
while ``import mlflow`` is still in progress, so nothing here may import MLflow
or the rest of mlflow-green at module level: that import cycle makes MLflow drop
the provider silently. The hooks are installed on the provider's first use
instead, which ``start_run`` makes before it creates the run; in a worker of
``mlflow models serve``, the scoring server is metered once it is imported. This module is
also what every ``import mlflow`` pays for: without ``MLFLOW_GREEN_AUTOLOG``
nothing more of mlflow-green is imported but the registry's copy-refusal fix.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

_log = logging.getLogger(__name__)
_ENV = "MLFLOW_GREEN_AUTOLOG"
_bad_value_warned = False


def _set() -> bool:
    """Whether ``MLFLOW_GREEN_AUTOLOG`` holds anything (unset or blank means off)."""
    return bool(os.environ.get(_ENV, "").strip())


def _wanted() -> bool:
    """Whether ``MLFLOW_GREEN_AUTOLOG`` asks for tracking; one warning if it is not a boolean."""
    global _bad_value_warned
    if not _set():
        return False
    from mlflow_green._warnings import warn
    from mlflow_green.measure._env import env_bool

    try:
        return env_bool(_ENV)
    except ValueError as exc:  # "ture": the user meant something; say what we understood
        if not _bad_value_warned:
            _bad_value_warned = True
            warn(f"mlflow-green: {exc}; zero-code tracking is off", RuntimeWarning, stacklevel=3)
        return False


def install_from_env() -> None:
    """Call ``autolog()`` once if ``MLFLOW_GREEN_AUTOLOG`` is true; warn (never raise) on error.

    Every thread that creates a run meanwhile waits here until the hooks are in: the
    first runs of a program that starts many threads at once are all measured.
    """
    if not _set():
        return  # nothing to do, and nothing to import
    from mlflow_green.runs import _trampoline

    if _trampoline.done:
        return
    with _trampoline.install_lock:
        if _trampoline.done or not _wanted():
            return
        try:
            from mlflow_green.runs.autologging import autolog_from_env

            # The hooks wrap whatever create_run is now (maybe the trampoline, which then
            # only forwards): nothing is unpatched before they are in.
            autolog_from_env()
        except Exception as exc:  # bad MLFLOW_GREEN_* values must not stop the user's script
            from mlflow_green._warnings import warn

            warn(
                f"mlflow-green: {_ENV} is set but tracking could not start: {exc}",
                RuntimeWarning,
                stacklevel=2,
            )
        finally:
            _trampoline.settle()


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


_ABSTRACT_REGISTRY_STORE = "mlflow.store.model_registry.abstract_store"


def _keep_copy_refusals() -> None:
    """Every client with mlflow-green installed sees a gate's refused copy as PERMISSION_DENIED
    (MLflow's ``copy_model_version`` turns it into INTERNAL_ERROR; see ``_copy_refusal``)."""
    from mlflow_green.registry import _copy_refusal

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


_SCORING_SERVER = "mlflow.pyfunc.scoring_server"


def _meter_serving() -> None:
    """A model served by ``mlflow models serve`` meters itself (see ``mlflow_green.serving``)."""
    try:
        from mlflow_green.serving.hook import install

        install()
    except Exception as exc:  # never break serving: say so once, serve unmetered
        from mlflow_green._warnings import warn

        warn(f"mlflow-green: the served model is not metered: {exc!r}", RuntimeWarning)


def _arm() -> None:
    from mlflow_green.runs import _trampoline

    _trampoline.arm(install_from_env)


class GreenRunContextProvider:
    """Adds no tags; its only job is to switch autolog on from the environment."""

    def __init__(self) -> None:
        _keep_copy_refusals()
        if _set():
            from mlflow_green.runs import _trampoline

            if not _trampoline.done and _wanted():
                _when_imported(_trampoline.CLIENT_MODULE, _arm)
                _when_imported(_SCORING_SERVER, _meter_serving)

    def in_context(self) -> bool:
        install_from_env()
        return False

    def tags(self) -> dict[str, str]:
        return {}
