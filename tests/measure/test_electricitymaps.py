"""The Electricity Maps provider against a fake server on 127.0.0.1: history, auth, failures.

The fake answers ``GET /v3/carbon-intensity/history`` as the real API does, records each
request's path and headers, and can refuse the token, fail, send garbage, or never answer
(its handler waits on an event that the fixture releases at teardown: no sleeps).
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pytest

from mlflow_green.measure import electricitymaps as em
from mlflow_green.measure.electricitymaps import (
    ProviderError,
    fetch_history,
    parse_provider_setting,
    resolve_provider_intensity,
)

TOKEN = "test-token-123"
NOON = datetime(2024, 3, 1, 12, tzinfo=timezone.utc).timestamp()
MIX = "codecarbon energy mix"
#: Generous: the fake answers at once, but the machine may be busy.
PATIENT_S = 30.0


def history(*values: Any, start: str = "2024-03-01T12", zone: str = "FR") -> dict:
    """The API's answer: hourly rows from ``start``:00 UTC, shaped as the real one."""
    hour = int(start[-2:])
    return {
        "zone": zone,
        "history": [
            {
                "zone": zone,
                "carbonIntensity": v,
                "datetime": f"{start[:-2]}{hour + k:02d}:00:00.000Z",
                "updatedAt": "2024-03-01T16:05:12.345Z",
                "emissionFactorType": "lifecycle",
                "isEstimated": False,
                "estimationMethod": None,
            }
            for k, v in enumerate(values)
        ],
    }


@dataclass
class FakeElectricityMaps:
    url: str
    status: int = 200
    body: bytes = b""
    hang: bool = False
    requests: list[dict[str, Any]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def answer(self, data: Any, status: int = 200) -> None:
        self.status = status
        self.body = data if isinstance(data, bytes) else json.dumps(data).encode()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        fake: FakeElectricityMaps = self.server.fake  # type: ignore[attr-defined]
        headers = {k.lower(): v for k, v in self.headers.items()}  # names are case-blind
        fake.requests.append({"path": self.path, "headers": headers})
        if fake.hang:
            fake.release.wait()  # never answers while the test runs
            return
        self.send_response(fake.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(fake.body)))
        self.end_headers()
        self.wfile.write(fake.body)

    def log_message(self, *args: Any) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins every handler: nothing outlives the test


@pytest.fixture(autouse=True)
def no_proxy_no_settings(monkeypatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("ALL_PROXY", raising=False)
    monkeypatch.delenv(em.TOKEN_ENV, raising=False)
    monkeypatch.delenv(em.URL_ENV, raising=False)


@pytest.fixture
def fake() -> Iterator[FakeElectricityMaps]:
    server = _Server(("127.0.0.1", 0), _Handler)
    state = FakeElectricityMaps(url=f"http://127.0.0.1:{server.server_address[1]}")
    server.fake = state  # type: ignore[attr-defined]
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-electricitymaps"
    )
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join()


def test_history_is_fetched_with_the_token_and_weighted_by_the_runs_energy(fake) -> None:
    fake.answer(history(100, 400, 250))
    series = fetch_history("fr", TOKEN, base_url=fake.url, timeout_s=PATIENT_S)
    assert series.source == "electricitymaps FR"
    assert (series.start_s, series.step_s) == ((NOON, NOON + 3600, NOON + 7200), 3600.0)
    assert series.g_per_kwh == (100.0, 400.0, 250.0)
    (request,) = fake.requests
    assert request["path"] == "/v3/carbon-intensity/history?zone=FR"
    assert request["headers"]["auth-token"] == TOKEN

    # 12:30-13:30 at 100 W then 300 W: the exact integral, not the average of the hours.
    timeline = [(1800.0, {"gpu": 100.0}), (3600.0, {"gpu": 300.0})]
    g, source = resolve_provider_intensity(
        "FR", TOKEN, NOON + 1800, timeline, 56.0, MIX, base_url=fake.url, timeout_s=PATIENT_S
    )
    assert g == pytest.approx((180_000 * 100 + 540_000 * 400) / 720_000, rel=1e-12) == 325.0
    assert g != (100 + 400) / 2
    assert source == "hourly series electricitymaps FR (100% of the energy)"


def test_token_and_url_come_from_the_environment(fake, monkeypatch) -> None:
    fake.answer(history(80, 90))
    monkeypatch.setenv(em.TOKEN_ENV, "env-token")
    monkeypatch.setenv(em.URL_ENV, fake.url + "/")
    setting = parse_provider_setting("electricitymaps:de", "carbon_intensity", timeout_s=PATIENT_S)
    assert (setting.zone, setting.token, setting.base_url) == ("DE", "env-token", fake.url)
    assert "env-token" not in repr(setting)
    series = fetch_history(setting.zone, timeout_s=PATIENT_S)
    assert series.g_per_kwh == (80.0, 90.0)
    assert fake.requests[0]["headers"]["auth-token"] == "env-token"
    assert fake.requests[0]["path"].endswith("?zone=DE")


def test_hours_outside_the_history_or_without_a_value_use_the_yearly_figure(fake) -> None:
    fake.answer(history(100, None, 300))
    # 11:00-14:00 at a constant 100 W: 11-12 before the history, 13-14 has no value.
    g, source = resolve_provider_intensity(
        "FR", TOKEN, NOON - 3600, [(10800.0, {"cpu": 100.0})], 56.0, MIX, base_url=fake.url
    )
    assert g == pytest.approx((56 + 100 + 56) / 3, rel=1e-12)
    assert source == (
        "hourly series electricitymaps FR (33% of the energy; the rest codecarbon energy mix "
        "56 g/kWh)"
    )


def test_a_refused_token_is_a_provider_error_and_the_run_falls_back(fake) -> None:
    fake.answer({"message": "Invalid auth-token"}, status=401)
    with pytest.raises(ProviderError) as info:
        fetch_history("FR", "wrong", base_url=fake.url, timeout_s=PATIENT_S)
    assert info.value.reason.startswith("token refused (HTTP 401: 'Invalid auth-token')")
    assert em.TOKEN_ENV in str(info.value) and "wrong" not in str(info.value)
    errors: list[ProviderError] = []
    g, source = resolve_provider_intensity(
        "FR",
        "wrong",
        NOON,
        [(60.0, {"gpu": 1.0})],
        56.0,
        MIX,
        base_url=fake.url,
        on_error=errors.append,
    )
    assert g == 56.0 and len(errors) == 1
    assert source.startswith("electricitymaps FR unavailable (token refused (HTTP 401")
    assert source.endswith("; codecarbon energy mix 56 g/kWh used")


def test_a_server_that_never_answers_times_out_and_the_run_falls_back(fake) -> None:
    fake.hang = True
    began = time.monotonic()
    with pytest.raises(ProviderError, match=r"timed out after 0\.5 s"):
        fetch_history("FR", TOKEN, base_url=fake.url, timeout_s=0.5)
    assert time.monotonic() - began < 0.5 + PATIENT_S  # bounded, not the 5 s default x many
    errors: list[ProviderError] = []
    g, source = resolve_provider_intensity(
        "FR",
        TOKEN,
        NOON,
        [(60.0, {"gpu": 1.0})],
        56.0,
        MIX,
        base_url=fake.url,
        timeout_s=0.5,
        on_error=errors.append,
    )
    assert (g, source) == (
        56.0,
        "electricitymaps FR unavailable (timed out after 0.5 s); codecarbon energy mix 56 g/kWh "
        "used",
    )
    assert [e.reason for e in errors] == ["timed out after 0.5 s"]
    assert len(fake.requests) == 2


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (200, b"<html>not json", "malformed answer (not JSON"),
        (200, b'{"zone": "FR"}', "malformed answer (no 'history' list)"),
        (200, b'{"zone": "FR", "history": []}', "empty history"),
        (200, history(None, None), "no hour of the history has a value"),
        (200, history(100, -5), "history[1].carbonIntensity=-5"),
        (200, history(100, "high"), "history[1].carbonIntensity='high'"),
        (200, history(100, 3000), "between 0 and 2000"),
        (500, b'{"error": "boom"}', "HTTP 500 Internal Server Error: 'boom'"),
        (404, b"", "HTTP 404 Not Found"),
    ],
)
def test_a_bad_answer_is_one_provider_error(fake, status, body, reason) -> None:
    fake.answer(body, status=status)
    with pytest.raises(ProviderError) as info:
        fetch_history("FR", TOKEN, base_url=fake.url, timeout_s=PATIENT_S)
    assert reason in info.value.reason
    assert str(info.value).startswith("Electricity Maps zone FR: ")


def test_an_unsorted_or_gapped_history_is_a_provider_error(fake) -> None:
    data = history(100, 200, 300)
    data["history"].reverse()
    fake.answer(data)
    with pytest.raises(ProviderError, match="unsorted timestamps"):
        fetch_history("FR", TOKEN, base_url=fake.url, timeout_s=PATIENT_S)
    data = history(100, 200, 300)
    del data["history"][1]
    data["history"].append(history(1, start="2024-03-01T15")["history"][0])
    fake.answer(data)
    with pytest.raises(ProviderError, match="a gap or irregular spacing"):
        fetch_history("FR", TOKEN, base_url=fake.url, timeout_s=PATIENT_S)


def test_nobody_listening_is_a_provider_error() -> None:
    with socket.socket() as s:  # a port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ProviderError, match="cannot connect"):
        fetch_history("FR", TOKEN, base_url=f"http://127.0.0.1:{port}", timeout_s=PATIENT_S)


def test_a_failure_with_an_unknown_yearly_figure_leaves_the_intensity_unknown(fake) -> None:
    fake.answer(b"", status=503)
    g, source = resolve_provider_intensity(
        "FR", TOKEN, NOON, [], None, "unknown: country='FRN' is not known", base_url=fake.url
    )
    assert g is None
    assert source == (
        "unknown: electricitymaps FR unavailable (HTTP 503 Service Unavailable), and no yearly "
        "figure (country='FRN' is not known)"
    )


# --- settings: errors at the call ---------------------------------------------------------------


def test_the_setting_names_the_zone_token_url_and_timeout_errors(monkeypatch) -> None:
    setting = parse_provider_setting(" ElectricityMaps:us-cal-ciso ", "carbon_intensity", TOKEN)
    assert (setting.zone, setting.label) == ("US-CAL-CISO", "electricitymaps US-CAL-CISO")
    assert (setting.base_url, setting.timeout_s) == (em.DEFAULT_BASE_URL, 5.0)
    assert em.is_provider_setting("electricitymaps:FR") and not em.is_provider_setting("56")

    label = "MLFLOW_GREEN_CARBON_INTENSITY"
    for value, part in [
        ("electricitymaps:", "has an invalid zone ''"),
        ("electricitymaps:FR;rm", "has an invalid zone 'FR;rm'"),
        ("electricitymaps:FR-", "has an invalid zone 'FR-'"),
        ("watttime:CAISO", "is not a provider setting"),
        (56, "is not a provider setting"),
    ]:
        with pytest.raises(ValueError) as info:
            parse_provider_setting(value, label, TOKEN)
        assert str(info.value).startswith(f"{label}={value!r} {part}")
        assert "'electricitymaps:<ZONE>'" in str(info.value)

    with pytest.raises(ValueError) as info:
        parse_provider_setting("electricitymaps:FR", "carbon_intensity")
    assert str(info.value).startswith(
        "carbon_intensity='electricitymaps:FR' needs an Electricity Maps API token: set "
        f"{em.TOKEN_ENV}"
    )
    with pytest.raises(ValueError, match="token is not a valid token"):
        parse_provider_setting("electricitymaps:FR", "carbon_intensity", "a\r\nX-Evil: 1")
    with pytest.raises(ValueError, match=r"timeout_s=0 is out of range: expected seconds"):
        parse_provider_setting("electricitymaps:FR", "carbon_intensity", TOKEN, timeout_s=0)
    with pytest.raises(ValueError, match=r"timeout_s=600 is out of range"):
        fetch_history("FR", TOKEN, timeout_s=600)  # refused before any network call
    monkeypatch.setenv(em.URL_ENV, "ftp://example.org")
    with pytest.raises(ValueError, match=rf"{em.URL_ENV}='ftp://example.org' is not a URL"):
        parse_provider_setting("electricitymaps:FR", "carbon_intensity", TOKEN)
