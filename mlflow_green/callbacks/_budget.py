"""The budgets a training is held to: given to its callback, or read from the registered model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlflow_green.registry.rule import (
    BUDGET_CO2EQ_TAG,
    BUDGET_KWH_TAG,
    parse_budget_tag,
    validate_budget_value,
)

#: What each kind of budget limits: (noun, unit, tag on the registered model).
KINDS = {"energy": ("energy", "kWh", BUDGET_KWH_TAG), "co2eq": ("CO2eq", "kg", BUDGET_CO2EQ_TAG)}


@dataclass(frozen=True)
class Limit:
    """One budget: ``value`` in kWh (energy) or kg CO2eq (co2eq), and where it comes from."""

    kind: str
    value: float
    source: str
    """``max_kwh``, ``max_co2eq_kg``, or ``registered model 'NAME' (green.budget_kwh)``."""


def given_limits(max_kwh: Any, max_co2eq_kg: Any) -> dict[str, Limit]:
    """The budgets passed to a callback; ``ValueError`` naming the argument for a bad one."""
    limits = {}
    for kind, value, argument in (
        ("energy", max_kwh, "max_kwh"),
        ("co2eq", max_co2eq_kg, "max_co2eq_kg"),
    ):
        if value is not None:
            number = validate_budget_value(value, argument)
            limits[kind] = Limit(kind, number, argument)
    return limits


def check_model_name(name: Any) -> str | None:
    """``registered_model_name`` as given, or ``ValueError`` unless it is a non-empty string."""
    if name is None:
        return None
    if not isinstance(name, str) or not name.strip():
        raise ValueError(
            f"registered_model_name must be the name of a registered model (a non-empty "
            f"string), got {name!r}"
        )
    return name


def registry_limits(client: Any, name: str) -> tuple[dict[str, Limit], list[str]]:
    """The budgets tagged on registered model ``name`` and the problems met reading them
    (each a sentence for a warning). A missing model or a tag that is not a number is a
    problem, not an exception: a training is never stopped by a failure to read."""
    try:
        tags = dict(client.get_registered_model(name).tags)
    except Exception as exc:
        return {}, [f"could not read the budget of registered model {name!r}: {_short(exc)}"]
    limits, problems = {}, []
    for kind, (_, _, tag) in KINDS.items():
        if tag not in tags:
            continue
        try:
            value = parse_budget_tag(tags[tag])
        except ValueError as exc:
            problems.append(
                f"registered model {name!r} has tag {tag}={tags[tag]!r}, {exc}: ignored here "
                "(the gate refuses every promotion of this model until it is fixed)"
            )
            continue
        limits[kind] = Limit(kind, value, f"registered model {name!r} ({tag})")
    if not limits and not problems:
        problems.append(f"registered model {name!r} has no budget: the training is not limited")
    return limits, problems


def read_registry_limits(
    tracking_uri: str | None, name: str, timeout_s: float
) -> tuple[dict[str, Limit], list[str]]:
    """:func:`registry_limits` of ``name`` in the registry beside ``tracking_uri`` (the
    training run's store; MLflow resolves the registry from it, ``MLFLOW_REGISTRY_URI`` or
    ``mlflow.set_registry_uri``). Both servers are probed first, so that a registry that is
    down costs ``timeout_s``, never MLflow's minutes of retries inside the training."""
    from mlflow import MlflowClient

    from mlflow_green._tracking import probe

    client = MlflowClient(tracking_uri=tracking_uri)
    uris = [client.tracking_uri, getattr(client, "_registry_uri", None)]
    for uri in dict.fromkeys(u for u in uris if isinstance(u, str)):
        down = probe(uri, timeout_s=timeout_s)
        if down is not None:
            return {}, [f"could not read the budget of registered model {name!r}: {down}"]
    return registry_limits(client, name)


def tightest(*groups: dict[str, Limit]) -> dict[str, Limit]:
    """The smallest budget of each kind over ``groups`` (a budget given and the registry's)."""
    out: dict[str, Limit] = {}
    for group in groups:
        for kind, limit in group.items():
            if kind not in out or limit.value < out[kind].value:
                out[kind] = limit
    return out


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else repr(exc)
