"""Electricity Maps as a live carbon-intensity provider: the package's only network call.

It is made only when the user configures it, with ``carbon_intensity="electricitymaps:<ZONE>"``
and a token (``MLFLOW_GREEN_ELECTRICITYMAPS_TOKEN``), once per run, when the run's
report is made: ``GET {base_url}/v3/carbon-intensity/history?zone=<ZONE>`` with the token in
the ``auth-token`` header answers the zone's hourly intensity over the past 24 hours as
``{"zone": "FR", "history": [{"carbonIntensity": 56, "datetime": "2024-03-01T13:00:00.000Z",
...}, ...]}``. The hours a run spans are weighted by its energy
(:func:`~mlflow_green.measure.intensity_series.weighted_intensity`); time outside those
24 hours, or an hour without a value, uses the location's yearly figure, and so does the
whole run when the call fails (timeout, HTTP error, refused token, malformed answer),
labelled as such.

``MLFLOW_GREEN_ELECTRICITYMAPS_URL`` replaces the base URL (``https://api.electricitymap.org``),
for a proxy or a test server. Standard library only (``urllib``); no MLflow.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mlflow_green import _version
from mlflow_green.measure._env import bounded_number, shown
from mlflow_green.measure.carbon import (
    CARBON_INTENSITY_BOUNDS_G_PER_KWH,
    UNKNOWN_SOURCE_PREFIX,
)
from mlflow_green.measure.intensity_series import (
    IntensitySeries,
    Timeline,
    build_series,
    epoch_us,
    parse_timestamp,
    weighted_intensity,
)

PREFIX = "electricitymaps:"
DEFAULT_BASE_URL = "https://api.electricitymap.org"
URL_ENV = "MLFLOW_GREEN_ELECTRICITYMAPS_URL"
TOKEN_ENV = "MLFLOW_GREEN_ELECTRICITYMAPS_TOKEN"
HISTORY_PATH = "/v3/carbon-intensity/history"
#: Seconds to wait for the whole answer. The call is made once, at the end of a run, in the
#: user's process: at least 0.1 s (a local proxy), at most a minute.
TIMEOUT_BOUNDS_S = (0.1, 60.0)
DEFAULT_TIMEOUT_S = 5.0
#: The history endpoint's granularity, used only when it answers a single hour.
HISTORY_STEP_S = 3600.0
#: A day of hourly rows is ~5 KB; anything near this is not the history endpoint's answer.
MAX_RESPONSE_BYTES = 2_000_000
_ZONE = re.compile(r"[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*")
_ACCEPTED = (
    "'electricitymaps:<ZONE>', an Electricity Maps zone of letters, digits and '-' "
    "(e.g. electricitymaps:FR, electricitymaps:US-CAL-CISO)"
)
parse_timeout_s = bounded_number(*TIMEOUT_BOUNDS_S, "seconds")


class ProviderError(Exception):
    """The provider gave no usable intensity (timeout, HTTP error, refused token, malformed
    or empty answer). ``str()`` is one sentence for one warning; ``reason`` its short cause."""

    def __init__(self, zone: str, reason: str) -> None:
        super().__init__(f"Electricity Maps zone {zone}: {reason}")
        self.zone = zone
        self.reason = reason


@dataclass(frozen=True)
class ElectricityMapsSetting:
    """A validated ``carbon_intensity="electricitymaps:<ZONE>"`` with its token and URL."""

    zone: str
    token: str = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def label(self) -> str:
        """``electricitymaps FR``: the series' source in reports and tags."""
        return f"electricitymaps {self.zone}"


def is_provider_setting(value: Any) -> bool:
    """Whether a ``carbon_intensity`` value asks for a provider (``electricitymaps:...``)."""
    return isinstance(value, str) and value.strip().lower().startswith(PREFIX)


def parse_zone(value: Any, label: str) -> str:
    """The zone of ``"electricitymaps:<ZONE>"``, upper-cased; ``ValueError`` naming ``label``."""
    text = value.strip() if isinstance(value, str) else None
    if text is None or not text.lower().startswith(PREFIX):
        raise ValueError(f"{label}={shown(value)} is not a provider setting: expected {_ACCEPTED}")
    zone = text[len(PREFIX) :].strip()
    if not _valid_zone(zone):
        raise ValueError(
            f"{label}={shown(value)} has an invalid zone {zone!r}: expected {_ACCEPTED}"
        )
    return zone.upper()


def _valid_zone(zone: Any) -> bool:
    return isinstance(zone, str) and len(zone) <= 40 and _ZONE.fullmatch(zone) is not None


def resolve_token(token: Any, zone: str, label: str) -> str:
    """``token``, else ``MLFLOW_GREEN_ELECTRICITYMAPS_TOKEN``; ``ValueError`` when neither."""
    source = "token"
    if token is None:
        token, source = os.environ.get(TOKEN_ENV), TOKEN_ENV
    if token is None or (isinstance(token, str) and not token.strip()):
        raise ValueError(
            f"{label}='{PREFIX}{zone}' needs an Electricity Maps API token: set {TOKEN_ENV} "
            "(from the Electricity Maps API portal), or give a number of gCO2eq/kWh or a CSV "
            "file instead"
        )
    if not isinstance(token, str) or not token.strip().isprintable():  # no header injection
        raise ValueError(f"{source} is not a valid token: expected printable text on one line")
    return token.strip()


def resolve_base_url(base_url: Any = None) -> str:
    """``base_url``, else ``MLFLOW_GREEN_ELECTRICITYMAPS_URL``, else the public API; an
    ``http(s)://host[:port][/path]`` URL without query, else ``ValueError`` naming it."""
    label = "base_url"
    if base_url is None:
        base_url, label = os.environ.get(URL_ENV) or None, URL_ENV
    if base_url is None:
        return DEFAULT_BASE_URL
    parts = urllib.parse.urlsplit(base_url) if isinstance(base_url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"{label}={shown(base_url)} is not a URL: expected http(s)://host[:port], "
            f"e.g. {DEFAULT_BASE_URL}"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"{label}={shown(base_url)} has a query or fragment: expected none")
    return base_url.strip().rstrip("/")


def parse_provider_setting(
    value: Any,
    label: str,
    token: str | None = None,
    *,
    base_url: str | None = None,
    timeout_s: Any = DEFAULT_TIMEOUT_S,
) -> ElectricityMapsSetting:
    """Validate ``carbon_intensity="electricitymaps:<ZONE>"`` when the user calls
    ``autolog``/``track``: the zone, the token (``token``, else
    ``MLFLOW_GREEN_ELECTRICITYMAPS_TOKEN``), the base URL and the timeout. ``label`` is
    ``carbon_intensity`` or ``MLFLOW_GREEN_CARBON_INTENSITY``. Makes no network call; raises
    ``ValueError`` naming the bad value (never the token's) and what is accepted."""
    zone = parse_zone(value, label)
    return ElectricityMapsSetting(
        zone=zone,
        token=resolve_token(token, zone, label),
        base_url=resolve_base_url(base_url),
        timeout_s=parse_timeout_s(timeout_s, "timeout_s"),
    )


def fetch_history(
    zone: str,
    token: str | None = None,
    *,
    base_url: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> IntensitySeries:
    """The zone's hourly intensity over the past 24 hours, from Electricity Maps.

    ``token`` defaults to ``MLFLOW_GREEN_ELECTRICITYMAPS_TOKEN``, ``base_url`` to
    ``MLFLOW_GREEN_ELECTRICITYMAPS_URL`` or the public API (``http(s)_proxy`` variables are
    honoured, as ``urllib`` does). ``timeout_s`` (0.1 to 60) bounds each wait on the
    network (connecting, each read), and an answer still arriving after twice that is
    abandoned. Bad arguments raise ``ValueError``; every failure of the call itself raises
    :class:`ProviderError`. Hours without a value (``null``) are NaN rows of the series:
    not covered.
    """
    if not _valid_zone(zone):
        raise ValueError(f"zone={shown(zone)} is invalid: expected {_ACCEPTED.split(', ', 1)[1]}")
    zone = zone.upper()
    token = resolve_token(token, zone, "carbon_intensity")
    timeout_s = parse_timeout_s(timeout_s, "timeout_s")
    query = urllib.parse.urlencode({"zone": zone})
    request = urllib.request.Request(
        f"{resolve_base_url(base_url)}{HISTORY_PATH}?{query}",
        headers={
            "auth-token": token,
            "Accept": "application/json",
            "User-Agent": f"mlflow-green/{_version.__version__}",
        },
    )
    try:
        body = _bounded_get(request, zone, timeout_s)
    except ProviderError as exc:  # a server's text may echo the request: never the token
        if token in exc.reason:
            raise ProviderError(zone, exc.reason.replace(token, "<token>")) from None
        raise
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProviderError(zone, f"malformed answer (not JSON: {exc})") from None
    return _series(zone, data)


def _bounded_get(request: urllib.request.Request, zone: str, timeout_s: float) -> bytes:
    """:func:`_get` given at most twice ``timeout_s`` in all: a server that trickles its
    headers or body a byte at a time meets every socket timeout and would hold the caller
    (a run's start or end) for minutes. The request goes on in a daemon thread, whose
    socket timeouts end it soon after."""
    outcome: list[Any] = []

    def fetch() -> None:
        try:
            outcome.append(_get(request, zone, timeout_s))
        except BaseException as exc:  # handed to the caller below
            outcome.append(exc)

    worker = threading.Thread(target=fetch, name="mlflow-green-electricitymaps", daemon=True)
    worker.start()
    worker.join(2 * timeout_s)
    if not outcome:
        raise ProviderError(zone, f"timed out after {timeout_s:g} s")
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def _get(request: urllib.request.Request, zone: str, timeout_s: float) -> bytes:
    timed_out = f"timed out after {timeout_s:g} s"
    deadline = time.monotonic() + 2 * timeout_s  # for an answer that trickles in
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            chunks: list[bytes] = []
            size = 0
            while chunk := response.read(65536):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    raise ProviderError(zone, f"answer larger than {MAX_RESPONSE_BYTES} bytes")
                if time.monotonic() > deadline:
                    raise ProviderError(zone, timed_out)
            return b"".join(chunks)
    except urllib.error.HTTPError as exc:
        detail = _error_detail(exc)
        if exc.code in (401, 403):
            raise ProviderError(
                zone, f"token refused (HTTP {exc.code}{detail}); check {TOKEN_ENV}"
            ) from None
        raise ProviderError(zone, f"HTTP {exc.code} {exc.reason}{detail}") from None
    except TimeoutError:
        raise ProviderError(zone, timed_out) from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise ProviderError(zone, timed_out) from None
        raise ProviderError(zone, f"cannot connect ({exc.reason})") from None
    except (OSError, ValueError, http.client.HTTPException) as exc:  # reset, broken answer
        raise ProviderError(zone, f"failed ({type(exc).__name__}: {exc})") from None


def _error_detail(exc: urllib.error.HTTPError) -> str:
    try:
        answer = json.loads(exc.read(2000).decode("utf-8", "replace"))
        message = answer.get("message") or answer.get("error")
    except Exception:
        return ""
    return f": {shown(str(message))}" if message else ""


def _series(zone: str, data: Any) -> IntensitySeries:
    history = data.get("history") if isinstance(data, dict) else None
    if not isinstance(history, list):
        raise ProviderError(zone, "malformed answer (no 'history' list)")
    if not history:
        raise ProviderError(zone, "empty history (no hours in the answer)")
    times: list[int] = []
    values: list[float] = []
    where: list[str] = []
    low, high = CARBON_INTENSITY_BOUNDS_G_PER_KWH
    for i, row in enumerate(history):
        stamp = row.get("datetime") if isinstance(row, dict) else None
        value = row.get("carbonIntensity") if isinstance(row, dict) else None
        t_us = None
        if isinstance(stamp, str):
            with contextlib.suppress(ValueError):
                t_us = epoch_us(parse_timestamp(stamp))
        if t_us is None:
            raise ProviderError(zone, f"malformed answer (history[{i}].datetime={shown(stamp)})")
        times.append(t_us)
        if value is None:
            values.append(math.nan)  # an hour without data: not covered
        elif (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value)
            and low <= value <= high
        ):
            values.append(float(value))
        else:
            raise ProviderError(
                zone,
                f"malformed answer (history[{i}].carbonIntensity={shown(value)}; expected "
                f"gCO2eq/kWh between {low:g} and {high:g})",
            )
        where.append(f"history[{i}] (datetime={shown(stamp)})")
    if all(math.isnan(v) for v in values):
        raise ProviderError(zone, "no hour of the history has a value")
    try:
        return build_series(f"electricitymaps {zone}", times, values, where, HISTORY_STEP_S)
    except ValueError as exc:
        raise ProviderError(zone, f"malformed answer ({exc})") from None


def resolve_provider_intensity(
    zone: str,
    token: str | None,
    start_time_s: float,
    timeline: Timeline,
    fallback_g: float | None,
    fallback_source: str,
    *,
    base_url: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    on_error: Callable[[ProviderError], None] | None = None,
    history: Callable[..., IntensitySeries] | None = None,
) -> tuple[float | None, str]:
    """The run's intensity from Electricity Maps, or the yearly figure when that fails.

    Fetches the zone's history and weights it by the run's energy
    (:func:`weighted_intensity`); hours outside it use ``fallback_g`` (the location's
    yearly figure, labelled ``fallback_source``). On a :class:`ProviderError` the whole run
    uses the fallback, ``on_error`` (if given) receives the error, e.g. to warn once, and
    the source says why: ``electricitymaps FR unavailable (timed out after 5 s);
    codecarbon energy mix 56 g/kWh used``. Returns ``(g_per_kwh, source)``; ``g_per_kwh``
    is ``None`` only when the fallback is needed and unknown.
    """
    try:
        try:
            fetch = history or fetch_history  # e.g. a cached fetch (measure/hourly.py)
            series = fetch(zone, token, base_url=base_url, timeout_s=timeout_s)
        except ValueError as exc:  # a setting gone bad since it was checked (token unset)
            raise ProviderError(str(zone), str(exc)) from None
    except ProviderError as exc:
        if on_error is not None:
            on_error(exc)
        gone = f"electricitymaps {exc.zone} unavailable ({exc.reason})"
        if fallback_g is None:
            reason = fallback_source.removeprefix(UNKNOWN_SOURCE_PREFIX)
            return None, f"{UNKNOWN_SOURCE_PREFIX}{gone}, and no yearly figure ({reason})"
        return fallback_g, f"{gone}; {fallback_source} {fallback_g:.4g} g/kWh used"
    g, source, _ = weighted_intensity(series, start_time_s, timeline, fallback_g, fallback_source)
    return g, source
