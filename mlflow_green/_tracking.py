"""Fail fast on a tracking server that cannot be reached.

MLflow retries a refused connection with back-off for minutes; a command-line
check or a ranking should tell the user at once, naming the server.
"""

from __future__ import annotations


def unreachable_reason(uri: str, timeout_s: float = 5.0) -> str | None:
    """Why an HTTP(S) tracking server at ``uri`` cannot be connected to, or None if it can.

    One TCP connect, no retries, ``timeout_s`` (default 5 s). Non-HTTP URIs (local stores) and
    servers behind an HTTP proxy are not probed (None).
    """
    import socket
    import urllib.parse
    import urllib.request

    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return None
    if parsed.scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(
        parsed.hostname
    ):
        return None
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=timeout_s).close()
    except OSError as exc:
        return f"cannot connect to {parsed.hostname}:{port} ({exc})"
    return None
