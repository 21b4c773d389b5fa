"""``mlflow-green budget``, ``gate`` and ``promote``: energy budgets on the model registry.

Added to the ``mlflow-green`` group by :mod:`mlflow_green.cli`. Every command
talks to the registry of ``--tracking-uri`` (default ``MLFLOW_TRACKING_URI``;
``MLFLOW_REGISTRY_URI`` is honoured as MLflow does). Arguments are checked, and the
store must be one MLflow accepts and already an MLflow store (none is ever created,
nor MLflow's tables added to another database), before any client is made.

Exit codes: 0 success / within budget; 1 refused (over budget, energy unknown,
invalid budget tag); 2 error (unknown model or version, missing or unusable store,
server unreachable, bad arguments), as ``Error: ...``.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator
from typing import Any

import click

from mlflow_green.cli._common import (
    EXIT_OK,
    EXIT_REFUSED,
    BadInput,
    connect,
    require_text,
    resolve_registry_uri,
    tracking_uri_option,
)

_TRACKING_URI = tracking_uri_option(
    "MLflow tracking server or store (default: MLFLOW_TRACKING_URI, else MLflow's "
    "default sqlite:///mlflow.db in the current folder)."
)
#: MLflow's rules for an alias (``mlflow.utils.validation``), checked before connecting.
_ALIAS = re.compile(r"[\w\-]{1,255}")
_VERSION_ALIAS = re.compile(r"[vV]\d+")
#: Versions listed in full in "has no version" (more are shortened).
_VERSIONS_SHOWN = 12


def _check_name(name: str) -> None:
    require_text(name, "NAME", "the name of a registered model")


def _check_version(version: str) -> str:
    """VERSION as MLflow spells it ("7"); :class:`BadInput` unless it is a version number."""
    text = version.strip()
    if not re.fullmatch(r"[0-9]+", text) or int(text) < 1:
        raise BadInput(f"VERSION {version!r}: expected a version number of the model (1, 2, ...)")
    return str(int(text))


def _check_alias(alias: str) -> None:
    if not _ALIAS.fullmatch(alias):
        raise BadInput(
            f"--alias {alias!r}: expected 1 to 255 letters, digits, underscores (_) or dashes (-)"
        )
    if alias.lower() == "latest" or _VERSION_ALIAS.fullmatch(alias):
        raise BadInput(
            f"--alias {alias!r} is reserved by MLflow ('latest' and v<number> name versions); "
            "choose another, e.g. champion"
        )


def _connect(tracking_uri: str | None) -> tuple[Any, str]:
    """``(client, registry URI)`` once the stores exist and their servers answer."""
    client, store = connect(tracking_uri)
    return client, resolve_registry_uri(store).uri


@contextlib.contextmanager
def _plainly(client: Any, where: str, name: str, version: str | None = None) -> Iterator[None]:
    """Turn the registry's failures into one ``Error:`` line (exit 2) in plain words."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        missing = None
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            missing = _what_is_missing(client, where, name, version)
        raise BadInput(missing or f"the model registry at {where}: {exc.message}") from None
    except Exception as exc:  # a connection lost midway, a store that cannot be read
        raise BadInput(f"the model registry at {where}: {type(exc).__name__}: {exc}") from None


def _what_is_missing(client: Any, where: str, name: str, version: str | None) -> str | None:
    """``no registered model 'x' at URI`` or ``model 'x' has no version 7 (versions: 1, 2)``;
    None when both exist (something else is missing, e.g. the version's run)."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return f"no registered model {name!r} at {where}"
        return None
    if version is None:
        return None
    versions = _versions(client, name)
    if versions is None:
        return f"model {name!r} has no version {version} at {where}"
    if int(version) in versions:
        return None
    if not versions:
        return f"model {name!r} has no version {version} (it has no versions yet)"
    shown = [str(v) for v in versions]
    count = "versions"
    if len(shown) > _VERSIONS_SHOWN:
        shown, count = [*shown[:3], "...", *shown[-3:]], f"{len(shown)} versions"
    return f"model {name!r} has no version {version} ({count}: {', '.join(shown)})"


def _versions(client: Any, name: str) -> list[int] | None:
    """The version numbers of model ``name``, sorted; None when they cannot be listed."""
    quote = "'" if "'" not in name else '"' if '"' not in name else None
    if quote is None:
        return None
    try:
        found = client.search_model_versions(filter_string=f"name = {quote}{name}{quote}")
    except Exception:  # only for a better message: the error is reported anyway
        return None
    return sorted(int(v.version) for v in found if v.name == name)


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
    from mlflow_green.registry.rule import budget_tag_value, validate_budget_value

    _check_name(name)
    if max_kwh is None and max_co2eq_kg is None:
        raise BadInput("give --max-kwh and/or --max-co2eq-kg")
    given = ((max_kwh, "--max-kwh", "kWh"), (max_co2eq_kg, "--max-co2eq-kg", "kg CO2eq"))
    for value, option, unit in given:
        if value is not None:
            try:  # the API's rule, under the option's name
                validate_budget_value(value, option)
            except ValueError:
                raise BadInput(
                    f"{option} must be a non-negative finite number ({unit}), got {value:g}"
                ) from None
    client, where = _connect(tracking_uri)
    from mlflow_green.registry.budgets import set_budget

    with _plainly(client, where, name):
        set_budget(name, max_kwh=max_kwh, max_co2eq_kg=max_co2eq_kg, client=client)
    # As written to the tag: a plain decimal (1e-05 is 0.00001).
    parts = [f"{budget_tag_value(value)} {unit}" for value, _, unit in given if value is not None]
    click.echo(f"budget of '{name}': {', '.join(parts)}")


@budget.command("show")
@click.argument("name")
@_TRACKING_URI
def budget_show(name: str, tracking_uri: str | None) -> None:
    """Print the budget tags of registered model NAME."""
    _check_name(name)
    client, where = _connect(tracking_uri)
    from mlflow_green.registry.budgets import get_budget

    with _plainly(client, where, name):
        tags = get_budget(name, client=client)
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
    _check_name(name)
    both = not kwh and not co2eq_kg
    client, where = _connect(tracking_uri)
    from mlflow_green.registry.budgets import remove_budget

    with _plainly(client, where, name):
        remove_budget(name, kwh=kwh or both, co2eq_kg=co2eq_kg or both, client=client)
    click.echo(f"budget of '{name}' removed")


@click.command()
@click.argument("name")
@click.argument("version")
@_TRACKING_URI
def gate(name: str, version: str, tracking_uri: str | None) -> None:
    """Check version VERSION of model NAME against its budget.

    Exit 0 within budget, 1 over budget or energy unknown, 2 on error.
    """
    _check_name(name)
    version = _check_version(version)
    client, where = _connect(tracking_uri)
    from mlflow_green.registry.budgets import check_budget

    with _plainly(client, where, name, version):
        check = check_budget(name, version, client=client)
    click.echo(f"{'PASS' if check.passed else 'FAIL'}: {check.reason}")
    sys.exit(EXIT_OK if check.passed else EXIT_REFUSED)


@click.command()
@click.argument("name")
@click.argument("version")
@click.option("--alias", required=True, help="Alias to point at the version, e.g. champion.")
@_TRACKING_URI
def promote(name: str, version: str, alias: str, tracking_uri: str | None) -> None:
    """Point ALIAS at version VERSION of model NAME if it is within budget (exit 1 if refused)."""
    _check_name(name)
    version = _check_version(version)
    _check_alias(alias)
    client, where = _connect(tracking_uri)
    from mlflow_green.registry.budgets import EnergyBudgetExceeded
    from mlflow_green.registry.budgets import promote as promote_version

    with _plainly(client, where, name, version):
        try:
            check = promote_version(name, version, alias, client=client)
        except EnergyBudgetExceeded as exc:
            click.echo(f"REFUSED: {exc.check.reason}", err=True)
            sys.exit(EXIT_REFUSED)
        except Exception as exc:
            if _is_refusal(exc):  # the gated server said no (its budget changed since our check)
                click.echo(f"REFUSED: {exc.message}", err=True)  # type: ignore[attr-defined]
                sys.exit(EXIT_REFUSED)
            raise
    click.echo(f"{name}@{alias} -> version {version} ({check.reason})")
