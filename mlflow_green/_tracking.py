"""Fail fast on a tracking server that cannot be reached, or that does not answer.

MLflow retries a refused connection with back-off for minutes, and waits up to
120 s for each answer; a command-line check, a ranking, a run's end, interpreter
exit and SIGTERM should instead know at once, naming the server.
"""

from __future__ import annotations


def unreachable_reason(uri: str, timeout_s: float = 5.0) -> str | None:
    """Why an HTTP(S) tracking server at ``uri`` does not answer, or None if it does.

    One ``GET <uri>/health`` with no retries: a connect and an answer each within
    ``timeout_s``. Any HTTP answer counts (401, 404 from a reverse proxy...): the
    question is whether the server talks, not what it says. The environment's
    proxies apply, as they do to MLflow's own requests; the certificate is not
    checked (nothing is sent, and MLflow reports a TLS problem itself).
    Non-HTTP URIs (local stores) are not probed (None).
    """
    import http.client
    import ssl
    import urllib.error
    import urllib.parse
    import urllib.request

    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return None
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    url = f"{parsed.scheme}://{parsed.netloc}{parsed.path.rstrip('/')}/health"
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(urllib.request.Request(url, method="GET"), timeout=timeout_s):
            return None
    except urllib.error.HTTPError as exc:
        exc.close()
        return None  # it answered
    except urllib.error.URLError as exc:
        return f"cannot connect to {parsed.hostname}:{port} ({exc.reason})"
    except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, garbage
        return f"no answer from {parsed.hostname}:{port} within {timeout_s:g} s ({exc!r})"
