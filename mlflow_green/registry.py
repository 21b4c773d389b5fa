"""Energy and carbon budgets on the MLflow model registry: checked by clients, enforced by servers.

A budget is a registered-model tag: ``green.budget_kwh`` (energy) and/or
``green.budget_co2eq_kg`` (emissions). A model version's energy is that of the
run that produced it (``version.run_id``): its latest ``green/energy_kwh`` and
``green/co2eq_kg`` metrics, as mlflow-green's run hooks log them.

Rules, shared by the client check and the server gate (one function,
:func:`evaluate`, decides both):

* a model with no budget tag passes;
* a version whose energy (or emissions) is unknown does **not** pass a budget
  of that kind (fail closed): no run, run not found, metric missing or NaN;
* a measured value equal to the budget passes; above it fails;
* a budget tag that is not a non-negative finite number refuses every
  promotion, with a message naming the tag.

Client side: :func:`set_budget`, :func:`remove_budget`, :func:`check_budget`,
:func:`promote` (advisory: anyone can still call the REST API).

Server side: :class:`GreenRegistryStore`, registered for ``green+<inner-uri>``
through the ``mlflow.model_registry_store`` entry point::

    mlflow server --backend-store-uri sqlite:///mlflow.db \\
                  --registry-store-uri green+sqlite:///mlflow.db

wraps the store ``sqlite:///mlflow.db`` names and refuses, with HTTP 403
``PERMISSION_DENIED``, every call that promotes a version that does not pass:
setting an alias, a transition to Staging/Production, copying it into a model
that has a budget. Everything else is passed through to the inner store as is.
"""

from __future__ import annotations

import math
import re
import threading
import urllib.parse
from dataclasses import dataclass
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import PERMISSION_DENIED

#: Registered-model tag holding the energy budget, kWh.
BUDGET_KWH_TAG = "green.budget_kwh"
#: Registered-model tag holding the emissions budget, kg CO2eq.
BUDGET_CO2EQ_TAG = "green.budget_co2eq_kg"
#: Run metrics a version's energy and emissions are read from.
ENERGY_METRIC = "green/energy_kwh"
CO2EQ_METRIC = "green/co2eq_kg"
#: Registered models carrying this tag (value "true") are prompts: never gated.
PROMPT_TAG = "mlflow.prompt.is_prompt"
#: URI prefix that selects the gated registry store.
SCHEME_PREFIX = "green+"

# (tag, metric, unit, what) for each kind of budget.
_KINDS = (
    (BUDGET_KWH_TAG, ENERGY_METRIC, "kWh", "energy"),
    (BUDGET_CO2EQ_TAG, CO2EQ_METRIC, "kg CO2eq", "emissions"),
)
# Stages whose transition is a promotion; "None" and "Archived" demote.
_PROMOTING_STAGES = {"staging", "production"}
# ``models:/<name>/<version>``: the source the server gives a copied version.
_MODELS_VERSION_SOURCE = re.compile(r"^models:/(?P<name>.+)/(?P<version>\d+)$")


@dataclass(frozen=True)
class BudgetCheck:
    """The outcome of checking one model version against its registered model's budgets.

    ``energy_kwh`` / ``co2eq_kg`` are the values measured for the version's run
    (``None`` when unknown); ``budget_kwh`` / ``budget_co2eq_kg`` the budgets
    (``None`` when not set or not a valid number). ``reason`` says why, in words.
    """

    model_name: str
    version: str
    passed: bool
    energy_kwh: float | None
    co2eq_kg: float | None
    budget_kwh: float | None
    budget_co2eq_kg: float | None
    reason: str
    run_id: str | None = None

    def __bool__(self) -> bool:
        return self.passed


class EnergyBudgetExceeded(MlflowException):
    """Promotion refused: the version is over budget, its energy is unknown, or a budget is invalid.

    ``check`` holds the :class:`BudgetCheck`. A subclass of ``MlflowException``
    with ``PERMISSION_DENIED``, the error the gated server answers, so one
    ``except`` handles a refusal from either side.
    """

    def __init__(self, check: BudgetCheck) -> None:
        super().__init__(f"Promotion refused: {check.reason}", error_code=PERMISSION_DENIED)
        self.check = check


# ---------------------------------------------------------------------------
# The rule (pure functions: no I/O)
# ---------------------------------------------------------------------------


def validate_budget_value(value: Any, what: str) -> float:
    """``value`` as a float, or ``ValueError`` unless it is a non-negative finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{what} must be a non-negative finite number, got {value!r}")
    return number


def _parse_budget_tag(value: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError("not a number") from None
    if not math.isfinite(number):
        raise ValueError("not a finite number")
    if number < 0:
        raise ValueError("negative")
    return number


def _fmt(value: float) -> str:
    # Enough digits to tell a version just over its budget from one on it.
    return f"{value:.6g}"


def _measured(metrics: dict[str, float] | None, key: str) -> float | None:
    if metrics is None or key not in metrics:
        return None
    value = metrics[key]
    # NaN is "not measured": it must not slip past a comparison (NaN > x is False).
    return float(value) if value is not None and math.isfinite(float(value)) else None


def has_budget(model_tags: dict[str, str]) -> bool:
    """Whether a registered model with these tags carries any budget tag."""
    return BUDGET_KWH_TAG in model_tags or BUDGET_CO2EQ_TAG in model_tags


def evaluate(
    model_name: str,
    version: str | int,
    model_tags: dict[str, str],
    run_id: str | None,
    metrics: dict[str, float] | None,
    unknown_why: str | None = None,
) -> BudgetCheck:
    """Apply the budget rule to already-fetched data (shared by client and server).

    Args:
        model_name: the registered model whose budgets apply.
        version: the version being checked (of ``model_name``, or copied into it).
        model_tags: the registered model's tags (budgets are read from them).
        run_id: the run that produced the version, if any.
        metrics: that run's latest metrics; ``None`` when the run could not be read.
        unknown_why: why ``metrics`` is ``None`` (for the message).
    """
    version = str(version)
    energy = _measured(metrics, ENERGY_METRIC)
    co2eq = _measured(metrics, CO2EQ_METRIC)
    budgets: dict[str, float | None] = {}
    failures: list[str] = []
    within: list[str] = []
    head = f"model '{model_name}' version {version}"
    for tag, metric, unit, what in _KINDS:
        raw = model_tags.get(tag)
        budgets[tag] = None
        if raw is None:
            continue
        try:
            budget = _parse_budget_tag(raw)
        except ValueError as exc:
            failures.append(
                f"the budget tag {tag}={raw!r} is invalid ({exc}); it must be a "
                f"non-negative finite number of {unit}"
            )
            continue
        budgets[tag] = budget
        value = energy if metric == ENERGY_METRIC else co2eq
        if value is None:
            if run_id is None:
                why = "it has no source run"
            elif metrics is None:
                why = f"its run {run_id} could not be read" + (
                    f": {unknown_why}" if unknown_why else ""
                )
            else:
                why = f"its run {run_id} has no {metric} metric"
            failures.append(
                f"{what} unknown ({why}), so it cannot pass the {what} budget of "
                f"{_fmt(budget)} {unit} ({tag})"
            )
        elif value > budget:
            failures.append(
                f"{what} {_fmt(value)} {unit} exceeds the budget of {_fmt(budget)} {unit} ({tag})"
            )
        else:
            within.append(f"{what} {_fmt(value)} {unit} within the budget of {_fmt(budget)} {unit}")
    if failures:
        reason = f"{head}: " + "; ".join(failures)
    elif within:
        reason = f"{head}: " + "; ".join(within)
    else:
        reason = f"{head}: model '{model_name}' has no energy or carbon budget"
    return BudgetCheck(
        model_name=model_name,
        version=version,
        passed=not failures,
        energy_kwh=energy,
        co2eq_kg=co2eq,
        budget_kwh=budgets[BUDGET_KWH_TAG],
        budget_co2eq_kg=budgets[BUDGET_CO2EQ_TAG],
        reason=reason,
        run_id=run_id,
    )


# ---------------------------------------------------------------------------
# Client-side API (advisory)
# ---------------------------------------------------------------------------


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
    number (``ValueError`` otherwise, before anything is written).

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
        tags[BUDGET_KWH_TAG] = repr(validate_budget_value(max_kwh, "max_kwh"))
    if max_co2eq_kg is not None:
        tags[BUDGET_CO2EQ_TAG] = repr(validate_budget_value(max_co2eq_kg, "max_co2eq_kg"))
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


def _run_metrics(read_run: Any, run_id: str | None) -> tuple[dict[str, float] | None, str | None]:
    """(latest metrics of the run, None) or (None, why they could not be read)."""
    if not run_id:
        return None, None
    try:
        return dict(read_run(run_id).data.metrics), None
    except MlflowException as exc:
        # Run deleted for good, or never there: unknown energy, which fails closed.
        return None, exc.message


def check_budget(model_name: str, version: str | int, *, client: Any = None) -> BudgetCheck:
    """Check a model version against its registered model's budgets.

    Passes when the model has no budget, or when every budget set is met by
    the version's run. Fails (with ``reason``) when a value is over its budget,
    unknown while a budget of that kind is set, or a budget tag is invalid.
    An unknown model or version raises MLflow's ``MlflowException``.
    """
    c = _client(client)
    model = c.get_registered_model(model_name)
    mv = c.get_model_version(model_name, str(version))
    metrics, why = _run_metrics(c.get_run, mv.run_id)
    return evaluate(model_name, mv.version, model.tags, mv.run_id or None, metrics, why)


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


# ---------------------------------------------------------------------------
# Server side: the gated registry store
# ---------------------------------------------------------------------------


def _in_server() -> bool:
    import os

    from mlflow.server.constants import BACKEND_STORE_URI_ENV_VAR

    return bool(os.environ.get(BACKEND_STORE_URI_ENV_VAR))


def _store_builder(inner_uri: str) -> Any:
    """The builder MLflow would use for ``inner_uri``: the server's registry inside a server."""
    if _in_server():
        # Inside ``mlflow server`` the server's own builders apply (workspaces, read replica).
        from mlflow.server.handlers import _model_registry_store_registry as registry
    else:
        from mlflow.tracking._model_registry.utils import _get_store_registry

        registry = _get_store_registry()
    return registry.get_store_builder(inner_uri)


class GreenRegistryStore:
    """A model-registry store that refuses to promote versions over their energy/carbon budget.

    Built by MLflow for a URI ``green+<inner-uri>`` (entry point group
    ``mlflow.model_registry_store``, one name per inner scheme); every method
    and attribute not defined here is the inner store's, unchanged (composition:
    the inner store keeps its own class, its own defaults and its own state).

    Refused with ``MlflowException(..., PERMISSION_DENIED)`` (HTTP 403 from the
    server; a 403 is not retried by clients, unlike a 500), when the version
    does not pass :func:`evaluate`:

    * ``set_registered_model_alias`` (and so ``set_prompt_alias``; prompts,
      models tagged ``mlflow.prompt.is_prompt=true``, are never gated);
    * ``transition_model_version_stage`` to Staging or Production;
    * ``copy_model_version`` and its REST form, ``create_model_version`` with a
      source ``models:/<name>/<version>``: the source version's run against the
      *destination* model's budget (a destination without budget accepts it).

    The run metrics come from the tracking store: inside ``mlflow server`` the
    server's own (``--backend-store-uri``, via ``mlflow.server.handlers``); in
    a client process, the store of the tracking URI MLflow passes the builder.
    """

    def __init__(self, store_uri: str, tracking_uri: str | None = None) -> None:
        if not store_uri.startswith(SCHEME_PREFIX):
            raise MlflowException.invalid_parameter_value(
                f"mlflow-green registry store URIs start with {SCHEME_PREFIX!r}, got {store_uri!r}"
            )
        inner_uri = store_uri[len(SCHEME_PREFIX) :]
        builder = _store_builder(inner_uri)
        import inspect

        params = inspect.signature(builder).parameters
        if "tracking_uri" in params:
            inner = builder(store_uri=inner_uri, tracking_uri=tracking_uri)
        else:
            inner = builder(store_uri=inner_uri)
        # Set through __dict__: __getattr__ must never see these missing.
        self.__dict__.update(
            _inner=inner,
            _inner_uri=inner_uri,
            _tracking_uri=tracking_uri,
            _tracking_store=None,
            _lock=threading.Lock(),
        )

    # -- delegation -------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        # Only called for names not found on this object: the inner store's.
        try:
            inner = self.__dict__["_inner"]
        except KeyError:  # half-built (copy, pickle): behave like a plain object
            raise AttributeError(name) from None
        return getattr(inner, name)

    def __repr__(self) -> str:
        return f"GreenRegistryStore({SCHEME_PREFIX}{self._inner_uri!r} -> {self._inner!r})"

    @property
    def inner(self) -> Any:
        """The wrapped registry store."""
        return self._inner

    # -- run metrics ------------------------------------------------------
    def _tracking(self) -> Any:
        store = self._tracking_store
        if store is not None:
            return store
        with self._lock:
            if self._tracking_store is None:
                if _in_server():
                    from mlflow.server.handlers import _get_tracking_store

                    store = _get_tracking_store()
                else:
                    from mlflow.tracking._tracking_service.utils import _get_store

                    store = _get_store(self._tracking_uri)
                self.__dict__["_tracking_store"] = store
            return self._tracking_store

    # -- reads (a fast SQL path for SQL stores, MLflow's public methods otherwise) --
    #
    # MLflow's get_registered_model / get_model_version / get_run load whole
    # entities (3-4 ms each on SQLite); the gate needs a few columns. For a
    # SqlAlchemy store (workspace-aware or not) it reads them with column
    # queries through the store's own session maker, filtered on the store's
    # active workspace as the store itself does. Whenever a fast read finds
    # nothing, the slow path answers, so errors and reasons are MLflow's own.

    def _model_tags(self, name: str) -> dict[str, str]:
        """All tags of registered model ``name`` (prompt tag included); ``{}`` when it is absent."""
        maker = getattr(self._inner, "ManagedSessionMaker", None)
        workspace = getattr(self._inner, "_get_active_workspace", None)
        if maker is not None and workspace is not None:
            from mlflow.store.model_registry.dbmodels.models import SqlRegisteredModelTag as T

            with maker() as session:
                rows = (
                    session.query(T.key, T.value)
                    .filter(T.workspace == workspace(), T.name == name)
                    .all()
                )
            return {key: value for key, value in rows}
        try:
            model = self._inner.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return {}
            raise
        # ``RegisteredModel.tags`` hides the prompt tag; ``_tags`` holds every tag.
        return dict(getattr(model, "_tags", None) or model.tags)

    def _version_run_id(self, name: str, version: str) -> str | None:
        """The run that produced the version; MLflow's error when the version does not exist."""
        maker = getattr(self._inner, "ManagedSessionMaker", None)
        workspace = getattr(self._inner, "_get_active_workspace", None)
        if maker is not None and workspace is not None and str(version).isdigit():
            from mlflow.entities.model_registry.model_version_stages import (
                STAGE_DELETED_INTERNAL,
            )
            from mlflow.store.model_registry.dbmodels.models import SqlModelVersion as V

            with maker() as session:
                row = (
                    session.query(V.run_id)
                    .filter(
                        V.workspace == workspace(),
                        V.name == name,
                        V.version == int(version),
                        V.current_stage != STAGE_DELETED_INTERNAL,
                    )
                    .first()
                )
            if row is not None:
                return row[0] or None
        return self._inner.get_model_version(name, version).run_id or None

    def _run_metrics(self, run_id: str | None) -> tuple[dict[str, float] | None, str | None]:
        tracking = self._tracking()
        maker = getattr(tracking, "ManagedSessionMaker", None)
        if run_id and maker is not None:
            from mlflow.store.tracking.dbmodels.models import SqlLatestMetric as M

            with maker() as session:
                rows = (
                    session.query(M.key, M.value, M.is_nan)
                    .filter(M.run_uuid == run_id, M.key.in_((ENERGY_METRIC, CO2EQ_METRIC)))
                    .all()
                )
            if len(rows) == 2:  # both known; otherwise let get_run say what is missing
                return {key: math.nan if is_nan else value for key, value, is_nan in rows}, None
        return _run_metrics(tracking.get_run, run_id)

    def _check(
        self, budget_model: str, src_name: str, src_version: str, label: str | None = None
    ) -> None:
        """Raise PERMISSION_DENIED unless version ``src_version`` of ``src_name`` meets
        the budgets of ``budget_model`` (the same model, or a copy's destination)."""
        tags = self._model_tags(budget_model)
        if str(tags.get(PROMPT_TAG, "false")).lower() == "true" or not has_budget(tags):
            return  # cheapest path first: most models have no budget; prompts are never gated
        run_id = self._version_run_id(src_name, src_version)
        metrics, why = self._run_metrics(run_id)
        check = evaluate(budget_model, label or src_version, tags, run_id, metrics, why)
        if not check.passed:
            raise MlflowException(
                f"mlflow-green refused the promotion: {check.reason}",
                error_code=PERMISSION_DENIED,
            )

    def _check_copy(self, src_name: str, src_version: str, dst_name: str) -> None:
        """A version copied into ``dst_name`` must meet ``dst_name``'s budget, if it has one."""
        self._check(dst_name, src_name, src_version, f"{src_version} of '{src_name}'")

    # -- gated write paths ------------------------------------------------
    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
        """Gated: the version must pass its model's budgets (prompts are not gated)."""
        self._check(name, name, str(version))
        return self._inner.set_registered_model_alias(name, alias, version)

    def set_prompt_alias(self, name: str, alias: str, version: str | int) -> None:
        """Through the gated alias path, as MLflow's default does (prompts pass)."""
        return self.set_registered_model_alias(name, alias, str(version))

    def transition_model_version_stage(
        self, name: str, version: str, stage: str, archive_existing_versions: bool
    ) -> Any:
        """Gated for Staging and Production; None and Archived (demotions) pass."""
        if isinstance(stage, str) and stage.lower() in _PROMOTING_STAGES:
            self._check(name, name, str(version))
        return self._inner.transition_model_version_stage(
            name, version, stage, archive_existing_versions
        )

    def copy_model_version(self, src_mv: Any, dst_name: str) -> Any:
        """Gated when the destination has a budget: the source version's run must meet it."""
        self._check_copy(src_mv.name, str(src_mv.version), dst_name)
        # The inner default copies through its own create_model_version; checked already.
        return self._inner.copy_model_version(src_mv, dst_name)

    def create_model_version(self, name: str, source: str, *args: Any, **kwargs: Any) -> Any:
        """New versions pass, except copies (source ``models:/<name>/<version>``) over budget.

        Over REST, ``copy_model_version`` is a ``create_model_version`` whose
        source the server has normalised to ``models:/<name>/<version>``.
        """
        match = _MODELS_VERSION_SOURCE.match(source) if isinstance(source, str) else None
        if match:
            src_name = urllib.parse.unquote(match["name"])
            self._check_copy(src_name, match["version"], name)
        return self._inner.create_model_version(name, source, *args, **kwargs)
