"""Energy and carbon budgets on the MLflow model registry: checked by clients, enforced by servers.

A budget is a registered-model tag: ``green.budget_kwh`` (energy) and/or
``green.budget_co2eq_kg`` (emissions), a plain decimal number. A model version's
energy is that of the run that produced its artifacts (see
:mod:`mlflow_green.registry.lineage`: not simply the ``run_id`` the version claims): the
largest ``green/energy_kwh`` and ``green/co2eq_kg`` ever logged to that run, as
mlflow-green's run hooks log them (cumulative totals).

Rules, shared by the client check and the server gate (one function,
:func:`evaluate`, decides both; one lineage, :func:`mlflow_green.registry.lineage.evidence`):

* a model with no budget tag passes; a model with one is gated, whatever its
  other tags say;
* a version whose energy (or emissions) is unknown does **not** pass a budget
  of that kind (fail closed): no run that can be trusted to have produced it,
  run deleted or not found, metric missing, or any logged value that is not a
  measurement (NaN, negative, infinite);
* a measured value equal to the budget passes; above it fails;
* a budget tag that is not a plain non-negative decimal number refuses every
  promotion, with a message naming the tag and its value.

Client side: :func:`set_budget`, :func:`remove_budget`, :func:`check_budget`,
:func:`promote` (advisory: anyone can still call the REST API).

Server side: :class:`GreenRegistryStore` (:mod:`mlflow_green.registry.store`),
registered for ``green+<inner-uri>`` through the ``mlflow.model_registry_store``
entry point::

    mlflow server --backend-store-uri sqlite:///mlflow.db \\
                  --registry-store-uri green+sqlite:///mlflow.db
"""

from __future__ import annotations

from typing import Any

from mlflow_green.registry import _copy_refusal
from mlflow_green.registry.lineage import ClientReader, evidence
from mlflow_green.registry.rule import (
    BUDGET_CO2EQ_TAG,
    BUDGET_KWH_TAG,
    BudgetCheck,
    EnergyBudgetExceeded,
    budget_tag_value,
    evaluate,
    validate_budget_value,
)

__all__ = [
    "BUDGET_CO2EQ_TAG",
    "BUDGET_KWH_TAG",
    "BudgetCheck",
    "EnergyBudgetExceeded",
    "check_budget",
    "get_budget",
    "promote",
    "remove_budget",
    "set_budget",
    "validate_budget_value",
]

# A refused copy keeps its PERMISSION_DENIED in this process (MLflow's client drops it).
_copy_refusal.install()


def _client(client: Any = None) -> Any:
    if client is not None:
        return client
    from mlflow import MlflowClient

    return MlflowClient()


def set_budget(
    model_name: str,
    max_kwh: float | None = None,
    max_co2eq_kg: float | None = None,
    *,
    client: Any = None,
) -> None:
    """Set the energy (kWh) and/or emissions (kg CO2eq) budget of a registered model.

    A budget given as ``None`` is left as it is (use :func:`remove_budget` to
    remove one), so setting one kind of budget never drops the other by
    accident. At least one must be given; each must be a non-negative finite
    number (``ValueError`` otherwise, before anything is written). The tag is
    written as a plain decimal that reads back as exactly the number given
    (``1e-05`` is written ``0.00001``).

    Args:
        model_name: an existing registered model.
        max_kwh: the most energy a version's run may have used.
        max_co2eq_kg: the most CO2eq a version's run may have emitted.
        client: an ``MlflowClient``; by default one for the current tracking URI.
    """
    if max_kwh is None and max_co2eq_kg is None:
        raise ValueError("give max_kwh and/or max_co2eq_kg (remove_budget removes budgets)")
    tags = {}
    if max_kwh is not None:
        tags[BUDGET_KWH_TAG] = budget_tag_value(validate_budget_value(max_kwh, "max_kwh"))
    if max_co2eq_kg is not None:
        tags[BUDGET_CO2EQ_TAG] = budget_tag_value(
            validate_budget_value(max_co2eq_kg, "max_co2eq_kg")
        )
    c = _client(client)
    for key, value in tags.items():
        c.set_registered_model_tag(model_name, key, value)


def remove_budget(
    model_name: str, *, kwh: bool = True, co2eq_kg: bool = True, client: Any = None
) -> None:
    """Remove the energy and/or emissions budget of a registered model (absent budgets are fine)."""
    c = _client(client)
    tags = c.get_registered_model(model_name).tags
    for key, wanted in ((BUDGET_KWH_TAG, kwh), (BUDGET_CO2EQ_TAG, co2eq_kg)):
        if wanted and key in tags:
            c.delete_registered_model_tag(model_name, key)


def get_budget(model_name: str, *, client: Any = None) -> dict[str, str]:
    """The budget tags of a registered model, as stored (raw strings; empty when none)."""
    tags = _client(client).get_registered_model(model_name).tags
    return {k: tags[k] for k in (BUDGET_KWH_TAG, BUDGET_CO2EQ_TAG) if k in tags}


def check_budget(model_name: str, version: str | int, *, client: Any = None) -> BudgetCheck:
    """Check a model version against its registered model's budgets.

    Passes when the model has no budget, or when every budget set is met by
    the run that produced the version's artifacts. Fails (with ``reason``) when
    a value is over its budget, unknown while a budget of that kind is set, or
    a budget tag is invalid. An unknown model or version raises MLflow's
    ``MlflowException``.
    """
    c = _client(client)
    model = c.get_registered_model(model_name)
    # ``RegisteredModel.tags`` hides MLflow's own tags; budgets are ours, so they are there.
    tags = dict(model.tags)
    mv = c.get_model_version(model_name, str(version))
    found = evidence(ClientReader(c), model_name, str(mv.version))
    return evaluate(model_name, mv.version, tags, found.run_id, found.metrics, found.why)


def promote(model_name: str, version: str | int, alias: str, *, client: Any = None) -> BudgetCheck:
    """Point ``alias`` at the version if it passes :func:`check_budget`; returns the check.

    Raises :class:`EnergyBudgetExceeded` (carrying the check) and leaves the
    alias as it was when the version does not pass.
    """
    c = _client(client)
    check = check_budget(model_name, version, client=c)
    if not check.passed:
        raise EnergyBudgetExceeded(check)
    c.set_registered_model_alias(model_name, alias, str(version))
    return check
