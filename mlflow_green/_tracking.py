"""Fail fast on a tracking server that cannot be reached, or that does not answer.

MLflow retries a refused connection with back-off for minutes, and waits up to
120 s for each answer; a command-line check, a ranking, a run's end, interpreter
exit and SIGTERM should instead know at once, naming the server.
"""

from __future__ import annotations

import logging
import os
from typing import Any

_log = logging.getLogger(__name__)
#: How long a probe waits for a server to answer at a run's end or a flush (a slow server
#: still counts as up), and at interpreter exit or on SIGTERM (the process is leaving).
PROBE_TIMEOUT_S = 10.0
LEAVING_PROBE_TIMEOUT_S = 3.0


def unreachable_reason(uri: str, timeout_s: float = 5.0) -> str | None:
    """Why an HTTP(S) tracking server at ``uri`` does not answer, or None if it does.

    One ``GET <uri>/health`` with no retries and no redirects: a connect and an
    answer each within ``timeout_s``. Any answer counts (401, a redirect to a
    login page, 404 from a reverse proxy, a TLS alert asking for a client
    certificate): the question is whether the server talks, not what it says.
    The request goes out as MLflow's do: through ``requests``, so the same
    proxies (``NO_PROXY`` ranges too), credentials in the URI and TLS settings
    (``MLFLOW_TRACKING_INSECURE_TLS``, ``MLFLOW_TRACKING_SERVER_CERT_PATH``,
    ``MLFLOW_TRACKING_CLIENT_CERT_PATH``) apply. Non-HTTP URIs (local stores)
    are not probed (None).
    """
    import urllib.parse

    import requests

    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return None
    try:
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
    except ValueError:  # a port that is not a number: MLflow will say so itself
        return None
    insecure = os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").strip().lower() == "true"
    verify = False if insecure else os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or True
    cert = os.environ.get("MLFLOW_TRACKING_CLIENT_CERT_PATH") or None
    url = f"{uri.rstrip('/')}/health"
    try:
        answer = requests.get(
            url, timeout=timeout_s, allow_redirects=False, verify=verify, cert=cert
        )
        answer.close()
    except requests.exceptions.SSLError:
        return None  # it answered, at the TLS level: MLflow reports TLS problems itself
    except (requests.exceptions.ConnectTimeout, requests.exceptions.ReadTimeout):
        return f"no answer from {parsed.hostname}:{port} within {timeout_s:g} s"
    except requests.exceptions.ConnectionError as exc:
        return f"cannot connect to {parsed.hostname}:{port} ({_root_cause(exc)})"
    except (requests.exceptions.RequestException, OSError, ValueError) as exc:
        return f"no answer from {parsed.hostname}:{port} ({exc!r})"
    return None


def unreachable_message(uri: str, timeout_s: float = 5.0) -> str | None:
    """``"tracking server <uri> is unreachable: <why>"``, or None when it answers
    (see :func:`unreachable_reason`)."""
    reason = unreachable_reason(uri, timeout_s)
    return None if reason is None else f"tracking server {uri} is unreachable: {reason}"


def probe(
    client: Any, known: dict[str, str | None] | None = None, timeout_s: float = PROBE_TIMEOUT_S
) -> str | None:
    """Why the HTTP tracking server of ``client`` (or URI) does not answer, or None.

    MLflow retries a request to a server that is gone for minutes; this probe
    (:func:`unreachable_message`) answers within ``timeout_s`` (local stores are
    never probed). ``known`` caches answers by URI.
    """
    uri = client if isinstance(client, str) else getattr(client, "tracking_uri", None)
    if not isinstance(uri, str):
        return None
    if known is not None and uri in known:
        return known[uri]
    try:
        reason = unreachable_message(uri, timeout_s=timeout_s)
    except Exception as exc:  # a URI the probe cannot parse: let MLflow try
        _log.debug("mlflow-green: probing %s: %r", uri, exc)
        reason = None
    if known is not None:
        known[uri] = reason
    return reason


def local_store_path(uri: str) -> tuple[str, str] | None:
    """``(kind, absolute path)`` of the local store ``uri`` names, or None when it names none.

    ``kind`` is ``"SQLite database"`` (``sqlite:///relative.db``, ``sqlite:////abs.db``,
    any ``sqlite+driver``; the path is percent-decoded as SQLAlchemy does) or ``"MLflow
    file store"`` (``file:///path`` or a plain path). In-memory SQLite (``sqlite://``,
    ``sqlite:///:memory:``), SQLite URI filenames (``?uri=true``), servers and other
    databases name no local file (None). Pure: nothing is opened or created.
    """
    import urllib.parse

    scheme, sep, rest = uri.partition("://")
    scheme = scheme.lower()
    if sep and (scheme == "sqlite" or scheme.startswith("sqlite+")):
        if not rest.startswith("/"):
            return None  # in memory ("sqlite://"), or a host SQLAlchemy itself refuses
        database, _, query = rest[1:].partition("?")
        if not database or database == ":memory:" or "uri=true" in query.lower():
            return None
        return "SQLite database", os.path.abspath(urllib.parse.unquote(database))
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost"):
        return "MLflow file store", os.path.abspath(urllib.parse.unquote(parsed.path))
    if not parsed.scheme and uri.strip() and uri not in ("databricks", "databricks-uc", "uc"):
        return "MLflow file store", os.path.abspath(uri)
    return None


def _root_cause(exc: BaseException) -> str:
    """The innermost reason of a requests error ("[Errno 111] Connection refused")."""
    seen: set[int] = set()
    while exc.__cause__ is not None or exc.__context__ is not None:
        if id(exc) in seen:
            break
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    text = str(exc)
    # urllib3 wraps the OS error: "<...NewConnectionError...>: Failed to establish a new
    # connection: [Errno 111] Connection refused"; keep the last clause.
    return text.rsplit(": ", 1)[-1] if "[Errno" in text else text
