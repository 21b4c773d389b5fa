"""The mlflow-green command: listings and errors (sync is exercised in test_autolog.py)."""

from __future__ import annotations

from click.testing import CliRunner

from mlflow_green.cli import main


def test_countries_lists_codes_with_intensity() -> None:
    result = CliRunner().invoke(main, ["countries"])
    assert result.exit_code == 0
    fra = next(line for line in result.output.splitlines() if line.startswith("FRA"))
    assert "56.0" in fra and "France" in fra


def test_regions_of_a_country() -> None:
    result = CliRunner().invoke(main, ["countries", "usa"])
    assert result.exit_code == 0 and "california" in result.output


def test_unknown_country_is_a_usage_error_naming_it() -> None:
    result = CliRunner().invoke(main, ["countries", "XYZ"])
    assert result.exit_code == 2 and "'XYZ'" in result.output


def test_sync_with_nothing_spooled(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_GREEN_SPOOL_DIR", str(tmp_path / "spool"))
    result = CliRunner().invoke(main, ["sync"])
    assert result.exit_code == 0 and "Nothing to upload" in result.output


def test_version() -> None:
    from mlflow_green import __version__

    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output
