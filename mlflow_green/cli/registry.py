"""``mlflow-green budget``, ``gate`` and ``promote``: energy budgets on the model registry.

Added to the ``mlflow-green`` group by :mod:`mlflow_green.cli`. Every command
talks to the registry of ``--tracking-uri`` (default ``MLFLOW_TRACKING_URI``;
``MLFLOW_REGISTRY_URI`` is honoured as MLflow does).

Exit codes: 0 success / within budget; 1 refused (over budget, energy unknown,
invalid budget tag); 2 error (unknown model or version, server unreachable,
bad arguments).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from mlflow_green.cli._common import EXIT_ERROR, EXIT_OK, EXIT_REFUSED

_TRACKING_URI = click.option(
    "--tracking-uri",
    envvar="MLFLOW_TRACKING_URI",
    default=None,
    help="MLflow tracking server or store (default: MLFLOW_TRACKING_URI).",
)


def _client(tracking_uri: str | None) -> Any:
    """A client of the registry, after checking that its server answers at all (see _error)."""
    import mlflow

    from mlflow_green._tracking import unreachable_message

    message = unreachable_message(tracking_uri or mlflow.get_tracking_uri())
    if message is not None:  # MLflow itself would retry for minutes before giving up
        raise ConnectionError(message)
    return mlflow.MlflowClient(tracking_uri=tracking_uri)


def _error(exc: Exception) -> None:
    """Print an error and exit 2: the question could not be answered, which is not a refusal."""
    from mlflow.exceptions import MlflowException

    message = exc.message if isinstance(exc, MlflowException) else f"{type(exc).__name__}: {exc}"
    click.echo(f"ERROR: {message}", err=True)
    sys.exit(EXIT_ERROR)


def _is_refusal(exc: Exception) -> bool:
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException) and exc.error_code == "PERMISSION_DENIED"


@click.group()
def budget() -> None:
    """Energy and carbon budgets of registered models (green.budget_* tags)."""


@budget.command("set")
@click.argument("name")
@click.option("--max-kwh", type=float, default=None, help="Energy budget of a version's run, kWh.")
@click.option(
    "--max-co2eq-kg",
    type=float,
    default=None,
    help="Emissions budget of a version's run, kg CO2eq.",
)
@_TRACKING_URI
def budget_set(
    name: str, max_kwh: float | None, max_co2eq_kg: float | None, tracking_uri: str | None
) -> None:
    """Set the budget of registered model NAME (a budget not given is left as it is)."""
    from mlflow_green.registry.budgets import set_budget
    from mlflow_green.registry.rule import budget_tag_value

    if max_kwh is None and max_co2eq_kg is None:
        raise click.UsageError("give --max-kwh and/or --max-co2eq-kg")
    try:
        set_budget(name, max_kwh=max_kwh, max_co2eq_kg=max_co2eq_kg, client=_client(tracking_uri))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    except Exception as exc:
        _error(exc)
    given = ((max_kwh, "kWh"), (max_co2eq_kg, "kg CO2eq"))
    # As written to the tag: a plain decimal (1e-05 is 0.00001).
    parts = [f"{budget_tag_value(value)} {unit}" for value, unit in given if value is not None]
    click.echo(f"budget of '{name}': {', '.join(parts)}")


@budget.command("show")
@click.argument("name")
@_TRACKING_URI
def budget_show(name: str, tracking_uri: str | None) -> None:
    """Print the budget tags of registered model NAME."""
    from mlflow_green.registry.budgets import get_budget

    try:
        tags = get_budget(name, client=_client(tracking_uri))
    except Exception as exc:
        _error(exc)
    if not tags:
        click.echo(f"'{name}' has no budget")
    for key, value in tags.items():
        click.echo(f"{key}={value}")


@budget.command("remove")
@click.argument("name")
@click.option("--kwh", "kwh", is_flag=True, help="Remove the energy budget only.")
@click.option("--co2eq-kg", "co2eq_kg", is_flag=True, help="Remove the emissions budget only.")
@_TRACKING_URI
def budget_remove(name: str, kwh: bool, co2eq_kg: bool, tracking_uri: str | None) -> None:
    """Remove the budgets of registered model NAME (both unless one is named)."""
    from mlflow_green.registry.budgets import remove_budget

    both = not kwh and not co2eq_kg
    try:
        remove_budget(
            name, kwh=kwh or both, co2eq_kg=co2eq_kg or both, client=_client(tracking_uri)
        )
    except Exception as exc:
        _error(exc)
    click.echo(f"budget of '{name}' removed")


@click.command()
@click.argument("name")
@click.argument("version")
@_TRACKING_URI
def gate(name: str, version: str, tracking_uri: str | None) -> None:
    """Check version VERSION of model NAME against its budget.

    Exit 0 within budget, 1 over budget or energy unknown, 2 on error.
    """
    from mlflow_green.registry.budgets import check_budget

    try:
        check = check_budget(name, version, client=_client(tracking_uri))
    except Exception as exc:
        _error(exc)
    click.echo(f"{'PASS' if check.passed else 'FAIL'}: {check.reason}")
    sys.exit(EXIT_OK if check.passed else EXIT_REFUSED)


@click.command()
@click.argument("name")
@click.argument("version")
@click.option("--alias", required=True, help="Alias to point at the version, e.g. champion.")
@_TRACKING_URI
def promote(name: str, version: str, alias: str, tracking_uri: str | None) -> None:
    """Point ALIAS at version VERSION of model NAME if it is within budget (exit 1 if refused)."""
    from mlflow_green.registry.budgets import EnergyBudgetExceeded
    from mlflow_green.registry.budgets import promote as promote_version

    try:
        check = promote_version(name, version, alias, client=_client(tracking_uri))
    except EnergyBudgetExceeded as exc:
        click.echo(f"REFUSED: {exc.check.reason}", err=True)
        sys.exit(EXIT_REFUSED)
    except Exception as exc:
        if _is_refusal(exc):  # the gated server said no (its budget changed since our check)
            click.echo(f"REFUSED: {exc.message}", err=True)
            sys.exit(EXIT_REFUSED)
        _error(exc)
    click.echo(f"{name}@{alias} -> version {version} ({check.reason})")
