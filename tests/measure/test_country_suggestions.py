"""A mistyped country or region gets a "did you mean", in ``track()``, ``autolog()`` and from
``MLFLOW_GREEN_COUNTRY``; the rest of the message (the value, where it came from, what is
accepted) is unchanged."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import mlflow_green
from mlflow_green.measure import carbon
from mlflow_green.measure.config import AutologConfig

pytestmark = pytest.mark.usefixtures("no_green_environment")

#: What ``autolog()`` resolves its arguments with, before anything is switched on.
CALLS: dict[str, Callable[..., Any]] = {"track": mlflow_green.track, "autolog": AutologConfig.build}


@pytest.mark.parametrize("call", sorted(CALLS))
@pytest.mark.parametrize(
    ("country", "suggestion"),
    [
        ("Frnace", "FRA (France)"),  # a misspelt name
        ("France", "FRA (France)"),  # the name itself
        ("germany", "DEU (Germany)"),
        ("FRN", "FRA (France)"),  # a code one letter off
        ("DE", "DEU (Germany)"),  # a two-letter code
        ("UK", "GBR (United Kingdom)"),
    ],
)
def test_a_mistyped_country_gets_a_suggestion(call: str, country: str, suggestion: str) -> None:
    with pytest.raises(ValueError) as info:
        CALLS[call](country=country)
    message = str(info.value)
    assert message.startswith(f"country={country!r} is not a known country code. Did you mean ")
    assert suggestion in message.split("?")[0], message
    assert "ISO 3166-1 alpha-3" in message and "mlflow-green countries" in message


def test_the_suggestion_names_the_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_GREEN_COUNTRY", "Frnace")
    with pytest.raises(ValueError) as info:
        mlflow_green.track()
    message = str(info.value)
    assert message.startswith("MLFLOW_GREEN_COUNTRY='Frnace' is not a known country code.")
    assert "Did you mean FRA (France)?" in message


def test_nothing_close_means_no_suggestion() -> None:
    with pytest.raises(ValueError) as info:
        mlflow_green.track(country="XYZ")
    assert "Did you mean" not in str(info.value)
    assert carbon.country_suggestions("XYZ") == []


def test_suggestions_are_known_codes_best_first() -> None:
    known = carbon.available_countries()
    for value in ("FRN", "FR", "frnace", "Untied States", "IRN2"):
        found = carbon.country_suggestions(value)
        assert found and set(found) <= set(known), (value, found)
    assert carbon.country_suggestions("FRN")[0] == "FRA"
    assert carbon.country_suggestions("Untied States") == ["USA"]


def test_a_mistyped_region_gets_a_suggestion() -> None:
    with pytest.raises(ValueError) as info:
        mlflow_green.track(country="USA", region="califronia")
    message = str(info.value)
    assert message.startswith("region='califronia' is not a region of USA. Did you mean ")
    assert "'california'?" in message and "Expected one of alabama" in message
