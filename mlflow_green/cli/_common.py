"""What the ``mlflow-green`` commands share: exit codes, the bad-input error, and the store URI.

Every command checks its arguments, then that the store it reads exists, and only then
creates an MLflow client: refused input connects to nothing and creates no database.
Errors all read ``Error: ...`` (click's style) and exit 2.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_ERROR = 2

#: Where a URI came from when nothing named one: MLflow's own default.
DEFAULT_SOURCE = "MLflow's default"
#: MLflow's default tracking URI (``mlflow.store.tracking.DEFAULT_TRACKING_URI``), relative
#: to the current folder; ``./mlruns`` instead when that folder already holds experiments.
MLFLOW_DEFAULT_URI = "sqlite:///mlflow.db"
_MLRUNS = "mlruns"
_EXAMPLES = "e.g. sqlite:////absolute/path/mlflow.db or http://127.0.0.1:5000"

_F = TypeVar("_F", bound=Callable[..., Any])


class BadInput(click.ClickException):
    """A message and exit code 2, like a usage error, without the usage line."""

    exit_code = EXIT_ERROR


@dataclass(frozen=True)
class StoreURI:
    """A tracking (or registry) URI, and where it came from, for messages that name both."""

    uri: str
    """The URI MLflow will use (its default spelled out as an absolute path)."""
    source: str
    """``--tracking-uri``, ``MLFLOW_TRACKING_URI``, ``MLFLOW_REGISTRY_URI``,
    ``mlflow.set_tracking_uri()`` or :data:`DEFAULT_SOURCE`."""
    given: str | None
    """The URI to hand to MLflow; None when MLflow should resolve its own default."""


def tracking_uri_option(help_text: str | None = None) -> Callable[[_F], _F]:
    """The ``--tracking-uri URI`` option (parameter ``tracking_uri``); resolve its value with
    :func:`resolve_tracking_uri`, which also reads ``MLFLOW_TRACKING_URI``."""
    return click.option(
        "--tracking-uri",
        "tracking_uri",
        default=None,
        metavar="URI",
        help=help_text
        or "Tracking server or store to read (default: MLFLOW_TRACKING_URI, else MLflow's "
        f"default {MLFLOW_DEFAULT_URI} in the current folder).",
    )


def resolve_tracking_uri(option: str | None) -> StoreURI:
    """The tracking URI a command uses, given ``--tracking-uri``'s value, and its source.

    The option, then ``MLFLOW_TRACKING_URI`` (both handed to MLflow explicitly), then
    what MLflow resolves itself: ``mlflow.set_tracking_uri()`` in this process (looked
    at only when MLflow is already imported: nothing is imported here), else MLflow's
    default. An empty option is bad input.
    """
    if option is not None:
        if not option.strip():
            raise BadInput(f"--tracking-uri '': expected a tracking URI ({_EXAMPLES})")
        return StoreURI(option, "--tracking-uri", option)
    env = os.environ.get("MLFLOW_TRACKING_URI", "")
    if env:
        return StoreURI(env, "MLFLOW_TRACKING_URI", env)
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None and mlflow.tracking.is_tracking_uri_set():
        current = mlflow.get_tracking_uri()
        return StoreURI(current, "mlflow.set_tracking_uri()", current)
    return StoreURI(_default_uri(), DEFAULT_SOURCE, None)


def resolve_registry_uri(tracking: StoreURI) -> StoreURI:
    """The registry URI an ``MlflowClient(tracking_uri=tracking.given)`` uses, and its source:
    ``MLFLOW_REGISTRY_URI`` when set, else the tracking URI."""
    env = os.environ.get("MLFLOW_REGISTRY_URI", "")
    return StoreURI(env, "MLFLOW_REGISTRY_URI", env) if env else tracking


def require_existing_store(uri: str, source: str) -> None:
    """Raise :class:`BadInput` when ``uri`` names a local store (a SQLite file, an MLflow
    file store) that does not exist, naming the URI, its ``source`` and what to do.

    MLflow would create an empty store there (and ``./mlruns``), and every command
    would answer about nothing. Servers, other databases and in-memory SQLite
    (``sqlite://``) pass: there is no file to look for.
    """
    from mlflow_green._tracking import local_store_path

    found = local_store_path(uri)
    if found is None:
        return
    kind, path = found
    if os.path.isfile(path) if kind == "SQLite database" else os.path.isdir(path):
        return
    role = "registry" if source == "MLFLOW_REGISTRY_URI" else "tracking"
    if source == DEFAULT_SOURCE:
        raise BadInput(
            f"no MLflow store here: with neither --tracking-uri nor MLFLOW_TRACKING_URI set, "
            f"the {role} URI is {DEFAULT_SOURCE} {MLFLOW_DEFAULT_URI}, and there is no "
            f"{path}. mlflow-green creates no store: run it in the folder that holds "
            f"mlflow.db, or point --tracking-uri (or MLFLOW_TRACKING_URI) at your store "
            f"({_EXAMPLES})."
        )
    relative = ""
    if kind == "SQLite database" and not uri.partition("://")[2].startswith("//"):
        relative = (
            f"; {uri} is relative to the current folder {os.getcwd()}, "
            "sqlite:////absolute/path.db is absolute"
        )
    what = "file" if kind == "SQLite database" else "folder"
    raise BadInput(
        f"no {kind} at {path}: {source} is {uri}, which names no existing {what}. "
        f"mlflow-green creates no store: point {source} at an existing store or a tracking "
        f"server ({_EXAMPLES}{relative})."
    )


def existing_store(option: str | None, *, registry: bool = True) -> StoreURI:
    """The resolved tracking URI (:func:`resolve_tracking_uri`) after checking that its
    store, and with ``registry`` the registry's (:func:`resolve_registry_uri`), exist
    (:func:`require_existing_store`). For commands that only read, or that change
    what must already be there (a registered model): they never create a store."""
    tracking = resolve_tracking_uri(option)
    require_existing_store(tracking.uri, tracking.source)
    if registry:
        reg = resolve_registry_uri(tracking)
        if reg is not tracking:
            require_existing_store(reg.uri, reg.source)
    return tracking


def connect(option: str | None, *, registry: bool = True) -> tuple[Any, StoreURI]:
    """``(MlflowClient, tracking StoreURI)`` on the store of ``--tracking-uri``/the environment.

    The store must exist (:func:`existing_store`; with ``registry``, the registry's
    too) and an HTTP server must answer (:func:`mlflow_green._tracking.unreachable_message`,
    at once rather than after MLflow's minutes of retries); :class:`BadInput` otherwise.
    MLflow is imported only then.
    """
    from mlflow_green._tracking import unreachable_message

    store = existing_store(option, registry=registry)
    uris = [store.uri, resolve_registry_uri(store).uri] if registry else [store.uri]
    for uri in dict.fromkeys(uris):
        message = unreachable_message(uri)
        if message is not None:
            raise BadInput(message)
    import mlflow

    return mlflow.MlflowClient(tracking_uri=store.given), store


def require_text(value: str, name: str, expected: str) -> str:
    """``value`` when it is not blank; else :class:`BadInput` naming the option or argument."""
    if not value.strip():
        raise BadInput(f"{name} {value!r}: expected {expected}")
    return value


def _default_uri() -> str:
    """MLflow's default tracking URI, as ``mlflow.get_tracking_uri()`` spells it, without
    importing MLflow: ``./mlruns`` when it holds an experiment, else ``./mlflow.db``."""
    import pathlib
    import urllib.request

    try:
        with os.scandir(_MLRUNS) as entries:
            for entry in entries:
                meta = os.path.join(entry.path, "meta.yaml")
                if entry.is_dir() and entry.name.isdigit() and os.path.lexists(meta):
                    return pathlib.Path(_MLRUNS).absolute().as_uri()
    except OSError:
        pass
    return "sqlite:///" + urllib.request.pathname2url(os.path.abspath("mlflow.db"))
