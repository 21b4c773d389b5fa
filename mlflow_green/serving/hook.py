"""The patch points on MLflow's scoring server (``mlflow.pyfunc.scoring_server``).

* ``get_cmd`` (in the ``mlflow models serve`` process): the workers' environment
  gets the model URI as the user gave it (``models:/NAME/1``: the workers only see
  a local copy), the port, and a new session id, so that every start of the
  command is one serving session with its own serving run.
* ``init`` (in each worker): the app's shutdown writes the last values and ends the
  serving run (the host meter's worker) before uvicorn ends the process.
* ``invocations`` (in each worker): every request to ``/invocations`` is counted
  after MLflow has built its response; ``predictions_to_json`` and
  ``unwrapped_predictions_to_json`` hand over the raw predictions. The
  original functions run unchanged, their exceptions and status codes pass
  through, and a failure in counting never touches the response.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import uuid
from typing import Any

from mlflow_green.serving import settings as serving_settings

_log = logging.getLogger(__name__)
SCORING_SERVER = "mlflow.pyfunc.scoring_server"
_local = threading.local()  # .raw: the predictions of the request this thread answers
_NOTHING = object()
_agent: Any = None


def install() -> None:
    """Patch the scoring server (imported now); start metering if this is a serving worker."""
    import sys

    module = sys.modules[SCORING_SERVER]
    if getattr(module.get_cmd, "__mlflow_green_wrapped__", False):
        return
    _wrap(module, "get_cmd", _get_cmd)
    if serving_settings.MODEL_PATH_ENV not in os.environ:
        return  # not a worker (the serve command itself, or `mlflow models predict`)
    settings = serving_settings.from_env()
    if settings is None:
        return
    from mlflow_green.serving.host import Agent

    global _agent
    _agent = Agent(settings)
    _wrap(module, "predictions_to_json", _keep_predictions)
    _wrap(module, "unwrapped_predictions_to_json", _keep_predictions)
    _wrap(module, "invocations", _invocations)
    _wrap(module, "init", _init)
    _agent.start()


def _wrap(module: Any, name: str, make: Any) -> None:
    func = getattr(module, name)
    wrapper = functools.wraps(func)(make(func))
    wrapper.__mlflow_green_wrapped__ = True
    setattr(module, name, wrapper)


def _get_cmd(func: Any) -> Any:
    def get_cmd(*args: Any, **kwargs: Any) -> Any:
        command, env = func(*args, **kwargs)
        try:
            env.update(_session_env(kwargs.get("port", args[1] if len(args) > 1 else None)))
        except Exception as exc:  # the workers fall back to the local path as the model
            _log.debug("mlflow-green: serving session environment: %r", exc)
        return command, env

    return get_cmd


def _session_env(port: Any) -> dict[str, str]:
    env = {serving_settings.SESSION_ENV: uuid.uuid4().hex, serving_settings.PORT_ENV: str(port)}
    try:
        import click

        context = click.get_current_context(silent=True)
    except ImportError:
        context = None
    model_uri = context.params.get("model_uri") if context is not None else None
    if model_uri:  # as the user gave it: `models:/NAME/1`, not the downloaded copy
        env[serving_settings.MODEL_URI_ENV] = str(model_uri)
    return env


def _init(func: Any) -> Any:
    def init(*args: Any, **kwargs: Any) -> Any:
        app = func(*args, **kwargs)
        try:
            # The app's shutdown is the worker's last moment: uvicorn then re-raises SIGTERM,
            # so no atexit handler runs. FastAPI's router runs its on_shutdown handlers.
            app.router.on_shutdown.append(_agent.shutdown)
        except Exception as exc:  # atexit remains, for servers that exit normally
            _log.debug("mlflow-green: no shutdown handler on the scoring app: %r", exc)
        return app

    return init


def _keep_predictions(func: Any) -> Any:
    def keep(raw_predictions: Any, *args: Any, **kwargs: Any) -> Any:
        _local.raw = raw_predictions
        return func(raw_predictions, *args, **kwargs)

    return keep


def _invocations(func: Any) -> Any:
    def invocations(data: Any, content_type: Any, model: Any, *args: Any, **kwargs: Any) -> Any:
        _local.raw = _NOTHING
        try:
            result = func(data, content_type, model, *args, **kwargs)
        except BaseException:
            _count(None, _NOTHING, None)
            raise
        ok = getattr(result, "status", 200) == 200
        _count(model, _local.raw if ok else _NOTHING, data)
        return result

    return invocations


def _count(model: Any, raw: Any, request: Any) -> None:
    try:
        counts = _agent.counts
        if raw is _NOTHING:
            counts.failed()
        else:  # the request too: its prompts are not counted as generated tokens
            counts.answered(model, raw, request)
    except Exception as exc:  # counting must never change a response
        _log.debug("mlflow-green: counting a request: %r", exc)
    _local.raw = _NOTHING  # the thread's next request starts clean; no reference kept
