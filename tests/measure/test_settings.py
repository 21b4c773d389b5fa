"""Every setting of ``track()``/``autolog()`` has a documented range and refuses the rest.

Refused at the call, with the value, the accepted range, and where the value came
from: the argument (``pue=5``) or the variable (``MLFLOW_GREEN_PUE='5'``). Numbers
are ``int``/``float`` or plain ASCII decimals; booleans are ``bool`` or the words.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import mlflow_green
from mlflow_green.measure import config
from mlflow_green.measure._env import parse_bool

pytestmark = pytest.mark.usefixtures("no_green_environment")


def autolog_config(**kwargs: Any) -> Any:
    """``AutologConfig.build`` (what ``autolog()`` resolves its arguments with)."""
    from mlflow_green.measure.config import AutologConfig

    return AutologConfig.build(**kwargs)


def track(**kwargs: Any) -> Any:
    return mlflow_green.track(**kwargs)


# Setting -> (the call that validates it, lowest, highest, words of the range message).
RANGES: dict[str, tuple[Callable[..., Any], float, float, str]] = {
    "sample_interval_s": (track, 0.05, 3600.0, "seconds between 0.05 and 3600"),
    "pue": (track, 1.0, 3.0, "between 1 and 3"),
    "carbon_intensity": (track, 0.0, 2000.0, "gCO2eq/kWh between 0 and 2000"),
    "flush_interval_s": (autolog_config, 1.0, 86400.0, "seconds between 1 and 86400"),
}


@pytest.mark.parametrize("name", sorted(RANGES))
def test_every_number_setting_has_an_inclusive_range_and_refuses_values_outside(name: str) -> None:
    call, low, high, words = RANGES[name]
    call(**{name: low})  # the bounds themselves are accepted
    call(**{name: high})
    outside = [high * 1.0001, high * 1e6, 1e10]
    outside += [low - 0.01] if low > 0 else [-1e-300, -0.5]
    outside += [1e-300] if low > 0 else []
    for value in outside:
        with pytest.raises(ValueError) as info:
            call(**{name: value})
        message = str(info.value)
        assert message.startswith(f"{name}={value!r} is out of range"), message
        assert words in message


def test_the_issues_sampler_killers_are_refused_at_track() -> None:
    # 1e10 s overflowed threading.Event.wait in the sampler thread; 1e-300 s spun a core.
    for value in (1e10, 1e-300):
        with pytest.raises(ValueError, match=r"out of range: expected seconds between 0\.05"):
            mlflow_green.track(sample_interval_s=value)


NOT_NUMBERS: list[Any] = [
    True,
    False,
    b"1",
    bytearray(b"2"),
    "１２",  # full-width digits: float() takes them
    "٣",  # Arabic-Indic digit three
    "1_0",  # float() takes digit separators
    "nan",
    "-inf",
    "Infinity",
    float("nan"),
    float("inf"),
    "0x10",
    "",
    "1.5 kWh",
    [1.5],
]


@pytest.mark.parametrize("name", sorted(RANGES))
def test_numbers_are_ints_floats_or_plain_ascii_decimals_only(name: str) -> None:
    call, low, high, _ = RANGES[name]
    accepted = []
    for value in NOT_NUMBERS:
        try:
            call(**{name: value})
        except ValueError as exc:
            assert str(exc).startswith(f"{name}={value!r} is "), str(exc)
            assert f"between {low:g} and {high:g}" in str(exc)
        else:
            accepted.append(value)
    assert accepted == []
    # Plain decimals, as an argument or from the environment, are numbers.
    for text in (f"{high:g}", f" {low:g} ", f"{(low + high) / 2:.3e}", f"+{high:.1f}"):
        call(**{name: text})


# Variable -> (its bad value, the call, extra arguments, what the message must also say).
FROM_ENVIRONMENT: dict[str, tuple[str, Callable[..., Any], dict[str, Any], str]] = {
    "SAMPLE_INTERVAL_S": ("1e10", track, {}, "expected seconds between 0.05 and 3600"),
    "PUE": ("0.5", track, {}, "between 1 and 3"),
    "CARBON_INTENSITY": ("lots", track, {}, "gCO2eq/kWh"),
    "SCOPE": ("galaxy", track, {}, "machine, process"),
    "COUNTRY": ("FRQ", track, {}, "ISO 3166-1 alpha-3"),
    "REGION": ("atlantis", track, {"country": "USA"}, "california"),
    "CLOUD_REGION": ("mars-1", track, {"cloud_provider": "gcp"}, "europe-west1"),
    "FLUSH_INTERVAL_S": ("0", autolog_config, {}, "seconds between 1 and 86400"),
    "LOG_ARTIFACTS": ("maybe", autolog_config, {}, "true/false"),
    "SILENT": ("ture", autolog_config, {}, "true/false"),
    "DISABLE": ("ture", lambda: config.resolve_disable(), {}, "true/false"),
}


@pytest.mark.parametrize("variable", sorted(FROM_ENVIRONMENT))
def test_an_error_from_the_environment_names_the_variable(
    variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad, call, kwargs, words = FROM_ENVIRONMENT[variable]
    monkeypatch.setenv(f"MLFLOW_GREEN_{variable}", bad)
    with pytest.raises(ValueError) as info:
        call(**kwargs)
    message = str(info.value)
    assert message.startswith(f"MLFLOW_GREEN_{variable}={bad!r} "), message
    assert words in message


def test_an_error_in_an_argument_names_the_argument_even_with_the_variable_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_GREEN_SAMPLE_INTERVAL_S", "2")
    with pytest.raises(ValueError) as info:
        mlflow_green.track(sample_interval_s=1e10)
    assert str(info.value).startswith("sample_interval_s=10000000000.0 is out of range")
    assert "MLFLOW_GREEN_" not in str(info.value)
    # The issue's example, word for word.
    monkeypatch.setenv("MLFLOW_GREEN_SAMPLE_INTERVAL_S", "1e10")
    with pytest.raises(ValueError) as info:
        mlflow_green.track()
    assert str(info.value) == (
        "MLFLOW_GREEN_SAMPLE_INTERVAL_S='1e10' is out of range: "
        "expected seconds between 0.05 and 3600"
    )


def test_booleans_are_bools_or_the_words_only() -> None:
    for word, expected in [("TRUE", True), (" yes ", True), ("On", True), ("1", True)]:
        assert parse_bool(word, "silent") is expected
    for word in ("false", "No", "OFF", "0"):
        assert parse_bool(word, "silent") is False
    for value in ("ture", "", "2", 1, 0, 1.0, b"true", None):
        with pytest.raises(ValueError) as info:
            parse_bool(value, "log_artifacts")
        assert str(info.value).startswith(f"log_artifacts={value!r} is not a boolean")
    with pytest.raises(ValueError, match=r"^silent=1 is not a boolean"):
        autolog_config(silent=1)


def test_env_bool_tells_off_from_not_a_boolean(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the zero-code plugin needs: ``MLFLOW_GREEN_AUTOLOG=ture`` is an error, not "off"."""
    from mlflow_green.measure._env import env_bool

    variable = "MLFLOW_GREEN_AUTOLOG"
    assert env_bool(variable) is False  # unset
    monkeypatch.setenv(variable, "  ")
    assert env_bool(variable) is False and env_bool(variable, default=True) is True
    monkeypatch.setenv(variable, "True")
    assert env_bool(variable) is True
    monkeypatch.setenv(variable, "off")
    assert env_bool(variable) is False
    monkeypatch.setenv(variable, "ture")
    with pytest.raises(ValueError) as info:
        env_bool(variable)
    assert str(info.value).startswith("MLFLOW_GREEN_AUTOLOG='ture' is not a boolean: expected")


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"country": b"FRA"}, "country=b'FRA' is not a string"),
        ({"country": 250}, "country=250 is not a string"),
        ({"country": "USA", "region": 6}, "region=6 is not a string"),
        ({"cloud_provider": b"gcp", "cloud_region": "europe-west1"}, "cloud_provider=b'gcp'"),
    ],
)
def test_locations_are_strings(kwargs: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError) as info:
        mlflow_green.track(**kwargs)
    assert str(info.value).startswith(named)


def test_autolog_config_resolves_arguments_then_variables_then_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    defaults = autolog_config()
    assert defaults.flush_interval_s == 30.0
    assert (defaults.log_artifacts, defaults.silent) == (True, False)
    assert (defaults.measure.pue, defaults.measure.sample_interval_s) == (1.0, 1.0)
    assert defaults.warnings == ()
    monkeypatch.setenv("MLFLOW_GREEN_FLUSH_INTERVAL_S", "60")
    monkeypatch.setenv("MLFLOW_GREEN_LOG_ARTIFACTS", "no")
    monkeypatch.setenv("MLFLOW_GREEN_COUNTRY", "DEU")
    monkeypatch.setenv("MLFLOW_GREEN_PUE", "1.2")
    built = autolog_config(silent=True, pue=1.5)
    assert (built.flush_interval_s, built.log_artifacts, built.silent) == (60.0, False, True)
    assert (built.measure.pue, built.measure.intensity.country) == (1.5, "DEU")
    assert config.resolve_disable() is False and config.resolve_disable(True) is True
    monkeypatch.setenv("MLFLOW_GREEN_DISABLE", "yes")
    assert config.resolve_disable() is True
