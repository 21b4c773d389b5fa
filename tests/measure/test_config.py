"""Configuration: explicit arguments win over MLFLOW_GREEN_* variables; bad values fail early."""

from __future__ import annotations

import pytest

from mlflow_green.measure.config import MeasureConfig, parse_bool


def test_defaults() -> None:
    config = MeasureConfig.build()
    assert (config.pue, config.scope, config.sample_interval_s) == (1.0, "machine", 1.0)


def test_environment_fills_unset_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_GREEN_COUNTRY", "DEU")
    monkeypatch.setenv("MLFLOW_GREEN_PUE", "1.4")
    monkeypatch.setenv("MLFLOW_GREEN_SCOPE", "Process")
    monkeypatch.setenv("MLFLOW_GREEN_SAMPLE_INTERVAL_S", "0.5")
    config = MeasureConfig.build()
    assert config.intensity.country == "DEU"
    assert (config.pue, config.scope, config.sample_interval_s) == (1.4, "process", 0.5)
    # An explicit argument beats the environment.
    assert MeasureConfig.build(country="FRA", pue=1.1).intensity.country == "FRA"


def test_bad_environment_value_names_the_variable_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_GREEN_PUE", "high")
    with pytest.raises(ValueError, match=r"^MLFLOW_GREEN_PUE='high' is not a number"):
        MeasureConfig.build()


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"pue": 0.9}, r"pue=0\.9 .*between 1 and 3"),
        ({"scope": "cluster"}, r"scope='cluster' .*machine, process"),
        ({"sample_interval_s": 0}, r"sample_interval_s=0 .*between 0\.05 and 3600"),
        ({"sample_interval_s": -1.0}, r"sample_interval_s=-1\.0"),
        ({"sample_interval_s": float("nan")}, r"sample_interval_s=nan"),
    ],
)
def test_bad_values(kwargs: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        MeasureConfig.build(**kwargs)


def test_parse_bool() -> None:
    assert parse_bool("TRUE", "x") is True and parse_bool("0", "x") is False
    with pytest.raises(ValueError, match=r"autolog='maybe'"):
        parse_bool("maybe", "autolog")
