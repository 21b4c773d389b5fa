"""What the ``mlflow-green`` commands share: exit codes, the bad-input error, and the store URI.

Every command checks its arguments, then the store URI (a store MLflow accepts, that
exists, and, for a local SQLite file, that already is an MLflow database), and only
then creates an MLflow client (:func:`open_client`): refused input connects to
nothing and creates or changes no database. Errors all read ``Error: ...`` (click's
style) and exit 2.
"""

from __future__ import annotations

import os
import sys
import urllib.parse
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
#: The two kinds of store a URI can name, as :func:`check_store` and :func:`open_client` say.
TRACKING = "tracking store"
REGISTRY = "model registry store"

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


def registry_store(tracking: StoreURI, *, follows_tracking: bool = False) -> StoreURI:
    """The registry read beside ``tracking``: :func:`resolve_registry_uri`'s; with
    ``follows_tracking`` (as ``rank_models``) ``tracking`` itself, when one was given."""
    if follows_tracking and tracking.given is not None:
        return tracking
    return resolve_registry_uri(tracking)


def existing_store(
    option: str | None, *, registry: bool = True, follows_tracking: bool = False
) -> StoreURI:
    """The resolved tracking URI (:func:`resolve_tracking_uri`) after :func:`check_store`
    on it and, with ``registry``, on the registry's (:func:`registry_store`). For commands
    that read, or change what must already be there: they never create a store."""
    tracking = resolve_tracking_uri(option)
    check_store(tracking, TRACKING)
    if registry:
        reg = registry_store(tracking, follows_tracking=follows_tracking)
        if reg is tracking:
            _check_scheme(reg, REGISTRY)
        else:
            check_store(reg, REGISTRY)
    return tracking


def check_store(store: StoreURI, kind: str = TRACKING) -> None:
    """:class:`BadInput` naming ``store``'s URI and source unless MLflow can use it as a
    ``kind`` (:data:`TRACKING` or :data:`REGISTRY`) that is already there, told without
    connecting: the local store exists (:func:`require_existing_store`) and is not an
    in-memory SQLite database (empty in each command), MLflow has a store for its scheme
    (:func:`_check_scheme`), and a local one is MLflow's (:func:`_not_mlflow_store`).
    """
    require_existing_store(store.uri, store.source)
    scheme, _, rest = store.uri.partition("://")
    database, _, query = rest.partition("?")
    if scheme.lower().partition("+")[0] == "sqlite" and (
        database in ("", "/", "/:memory:") or "mode=memory" in query.lower()
    ):
        raise BadInput(
            f"{_named(store, kind)}, an in-memory SQLite database: new and empty in each "
            f"command, it holds nothing to read or change. Point {_where_to_set(store)} at "
            f"your MLflow store or tracking server ({_EXAMPLES})."
        )
    _check_scheme(store, kind)
    from mlflow_green._tracking import local_store_path

    found = local_store_path(store.uri)
    problem = _not_mlflow_store(*found) if found is not None else None
    if problem is not None:
        raise BadInput(
            f"{_named(store, kind)}, and {problem}: not an MLflow store. mlflow-green leaves "
            f"it as it is (MLflow would add its own tables or folders to it): point "
            f"{_where_to_set(store)} at your MLflow store or tracking server ({_EXAMPLES})."
        )


def connect(option: str | None, *, registry: bool = True) -> tuple[Any, StoreURI]:
    """``(MlflowClient, tracking StoreURI)`` on the store of ``--tracking-uri``/the environment.

    The store must pass :func:`existing_store` (with ``registry``, the registry's
    too), an HTTP server must answer (:func:`mlflow_green._tracking.unreachable_message`,
    at once rather than after MLflow's minutes of retries), and MLflow must then open
    it (:func:`open_client`); :class:`BadInput` otherwise. MLflow is imported only then.
    """
    from mlflow_green._tracking import unreachable_message

    store = existing_store(option, registry=registry)
    reg = registry_store(store) if registry else None
    for uri in dict.fromkeys([store.uri, *([reg.uri] if reg is not None else [])]):
        message = unreachable_message(uri)
        if message is not None:
            raise BadInput(message)
    return open_client(store, reg), store


def open_client(tracking: StoreURI, registry: StoreURI | None) -> Any:
    """An ``MlflowClient`` on ``tracking`` (and ``registry``), once one request to each
    has been answered; whatever MLflow raises until then (a database driver that is not
    installed, a server that is not MLflow, a schema to migrate) is :class:`BadInput`
    naming the URI and its source. Call it after :func:`check_store`, and once an HTTP
    server is known to answer (MLflow retries a dead one for minutes)."""
    import mlflow

    try:
        client = mlflow.MlflowClient(
            tracking_uri=tracking.given, registry_uri=registry.given if registry else None
        )
        client.search_experiments(max_results=1)
    except Exception as exc:
        raise BadInput(_cannot_open(tracking, TRACKING, exc)) from None
    if registry is not None:
        try:
            client.search_registered_models(max_results=1)
        except Exception as exc:
            raise BadInput(_cannot_open(registry, REGISTRY, exc)) from None
    return client


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


def _named(store: StoreURI, kind: str) -> str:
    """``--tracking-uri is URI``, or for MLflow's default, the URI and that it is the default."""
    if store.source == DEFAULT_SOURCE:
        role = "registry" if kind == REGISTRY else "tracking"
        return f"the {role} URI is {DEFAULT_SOURCE} {store.uri}"
    return f"{store.source} is {store.uri}"


def _where_to_set(store: StoreURI) -> str:
    """The option or variable that sets ``store``'s URI, for "point ... at"."""
    if store.source == DEFAULT_SOURCE:
        return "--tracking-uri (or MLFLOW_TRACKING_URI)"
    return store.source


def _check_scheme(store: StoreURI, kind: str) -> None:
    """:class:`BadInput` unless MLflow has a ``kind`` store for ``store``'s scheme, asked
    of MLflow's own store registries (which list the plugins' schemes too), and unless a
    ``file:`` URI names this machine. Nothing is opened."""
    parsed = urllib.parse.urlparse(store.uri)
    if parsed.scheme.lower() == "file" and parsed.netloc.lower() not in ("", "localhost"):
        raise BadInput(
            f"{_named(store, kind)}, a folder on the host {parsed.netloc!r}: MLflow opens "
            "file stores on this machine only (file:///absolute/path, "
            "file://localhost/absolute/path or a plain path); for another machine's store, "
            f"point {_where_to_set(store)} at its tracking server ({_EXAMPLES})"
        )
    stores = _store_registry(kind)
    if stores is None:  # an MLflow that keeps them elsewhere: open_client still answers
        return
    try:
        stores.get_store_builder(store.uri)
        return
    except Exception:  # MLflow's UnsupportedModelRegistryStoreURIException, for both kinds
        pass
    import difflib

    schemes = [s for s in getattr(stores, "_registry", {}) if isinstance(s, str)]
    scheme = parsed.scheme or store.uri.partition(":")[0]
    close = difflib.get_close_matches(scheme.lower(), [s for s in schemes if s], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise BadInput(
        f"{_named(store, kind)}: MLflow has no {kind} for the scheme {scheme!r}{hint}. "
        f"It accepts {_accepted(schemes)} ({_EXAMPLES})."
    )


def _store_registry(kind: str) -> Any:
    """MLflow's registry of ``kind`` stores by URI scheme; None where MLflow has none."""
    try:
        if kind == REGISTRY:
            from mlflow.tracking._model_registry.utils import _get_store_registry

            return _get_store_registry()
        from mlflow.tracking._tracking_service.utils import _tracking_store_registry

        return _tracking_store_registry
    except (ImportError, AttributeError):
        return None


def _accepted(schemes: list[str]) -> str:
    """``schemes`` for a message, a plugin's prefixed ones (``green+sqlite``...) as one."""
    named = [s for s in schemes if s and "+" not in s]
    families = dict.fromkeys(f"{s.partition('+')[0]}+<uri>" for s in schemes if "+" in s)
    listed = ", ".join([*named, *families]) or "no scheme"
    return f"the schemes {listed}" + (", or a plain path" if "" in schemes else "")


def _cannot_open(store: StoreURI, kind: str, exc: Exception) -> str:
    """The message of :func:`open_client` when MLflow fails on ``store``."""
    if isinstance(exc, ModuleNotFoundError):
        why = f"the Python driver it needs is not installed (no module named {exc.name!r})"
    else:
        text = getattr(exc, "message", None)
        why = text if isinstance(text, str) and text else f"{type(exc).__name__}: {exc}"
        why = " ".join(why.split())
        if len(why) > 1000:
            why = why[:1000] + "..."
    return (
        f"{_named(store, kind)}, which MLflow cannot open as a {kind}: {why}. Point "
        f"{_where_to_set(store)} at an MLflow store or tracking server ({_EXAMPLES})"
    )


_SQLITE_HEADER = b"SQLite format 3\x00"
#: Tables listed at most when a SQLite file is not an MLflow database.
_TABLES_LISTED = 8


def _not_mlflow_store(kind: str, path: str) -> str | None:
    """Why the existing local store at ``path`` is not an MLflow one; None when it is
    (or cannot be told: MLflow then answers for itself).

    A SQLite database must have MLflow's ``experiments`` table, read with ``sqlite3``
    read-only (``immutable`` for a WAL database without a ``-wal`` file: nothing is
    created). A file store folder must hold ``.trash`` or an experiment's or a
    registered model's ``meta.yaml``.
    """
    if kind != "SQLite database":
        import glob

        marks = (".trash", "[0-9]*/meta.yaml", "models/*/meta.yaml")
        if any(glob.glob(os.path.join(glob.escape(path), mark)) for mark in marks):
            return None
        return f"{path} is a folder without MLflow experiments or registered models"
    try:
        with open(path, "rb") as f:
            header = f.read(100)
    except OSError as exc:
        return f"{path} cannot be read ({exc.strerror or exc})"
    if not header:
        return f"{path} is an empty file (0 bytes)"
    if not header.startswith(_SQLITE_HEADER):
        return f"{path} is not a SQLite database"
    import sqlite3
    import urllib.request

    wal = header[18:20] == b"\x02\x02"
    mode = "immutable=1" if wal and not os.path.exists(path + "-wal") else "mode=ro"
    try:
        db = sqlite3.connect(f"file:{urllib.request.pathname2url(path)}?{mode}", uri=True)
        try:
            rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        if isinstance(exc, sqlite3.OperationalError):  # locked, busy: cannot tell
            return None
        return f"{path} is not a readable SQLite database ({exc})"
    tables = sorted(str(name) for (name,) in rows)
    if "experiments" in tables:
        return None
    listed = ", ".join(tables[:_TABLES_LISTED]) + (", ..." if len(tables) > _TABLES_LISTED else "")
    has = f"its tables: {listed}" if tables else "it has no tables"
    return f"{path} is a SQLite database without MLflow's experiments table ({has})"
