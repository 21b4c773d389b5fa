"""The gated model-registry store: ``green+<inner-uri>`` refuses promotions over budget.

Registered for ``green+<inner-uri>`` through the ``mlflow.model_registry_store``
entry point (as ``mlflow_green.registry:GreenRegistryStore``)::

    mlflow server --backend-store-uri sqlite:///mlflow.db \\
                  --registry-store-uri green+sqlite:///mlflow.db

It wraps the store ``sqlite:///mlflow.db`` names and refuses, with HTTP 403
``PERMISSION_DENIED``, every call that promotes a version that does not pass
:func:`mlflow_green._budget.evaluate`: setting an alias (prompt aliases too),
a transition to Staging/Production, copying it into a model that has a budget.
Everything else is passed through to the inner store as is. Which run's energy
counts is decided by :mod:`mlflow_green._lineage`, as for the client check.
"""

from __future__ import annotations

import functools
import inspect
import os
import threading
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import PERMISSION_DENIED

from mlflow_green._budget import (
    BUDGET_CO2EQ_TAG,
    BUDGET_KWH_TAG,
    GATE_METRICS,
    evaluate,
    gate_value,
    has_budget,
)
from mlflow_green._lineage import (
    ClientReader,
    LoggedModelRecord,
    RunRecord,
    VersionRecord,
    evidence,
)

#: URI prefix that selects the gated registry store.
SCHEME_PREFIX = "green+"


def _in_server() -> bool:
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


def _sql(store: Any) -> Any:
    """The store's SQLAlchemy session maker, or ``None`` for a store that is not SQL."""
    return getattr(store, "ManagedSessionMaker", None)


_BUDGET_TAGS = (BUDGET_KWH_TAG, BUDGET_CO2EQ_TAG)


@functools.cache
def _statements() -> dict[str, Any]:
    """The gate's SQL reads, built once (SQLAlchemy then reuses their compiled form)."""
    import sqlalchemy as sa
    from mlflow.entities.model_registry.model_version_stages import STAGE_DELETED_INTERNAL
    from mlflow.store.model_registry.dbmodels.models import SqlModelVersion as V
    from mlflow.store.model_registry.dbmodels.models import SqlRegisteredModelTag as T
    from mlflow.store.tracking.dbmodels.models import SqlLoggedModel as L
    from mlflow.store.tracking.dbmodels.models import SqlMetric as M
    from mlflow.store.tracking.dbmodels.models import SqlRun as R

    arg = sa.bindparam
    # Over a run's whole history (index run_uuid, key, step): the largest value, the
    # smallest and the NaN count. NaN rows hold value 0; with any NaN the value is NaN anyway.
    nans = sa.func.count(sa.case((M.is_nan == sa.true(), 1)))
    return {
        "tags": sa.select(T.key, T.value).where(
            T.workspace == arg("workspace"), T.name == arg("name"), T.key.in_(_BUDGET_TAGS)
        ),
        "version": sa.select(V.source, V.storage_location, V.run_id)
        .where(
            V.workspace == arg("workspace"),
            V.name == arg("name"),
            V.version == arg("version"),
            V.current_stage != STAGE_DELETED_INTERNAL,
        )
        .limit(1),
        "run": sa.select(R.experiment_id, R.artifact_uri, R.lifecycle_stage)
        .where(R.run_uuid == arg("run_id"))
        .limit(1),
        "logged_model": sa.select(L.experiment_id, L.artifact_location, L.source_run_id)
        .where(L.model_id == arg("model_id"), L.lifecycle_stage != "deleted")
        .limit(1),
        "metrics": sa.select(M.key, sa.func.max(M.value), sa.func.min(M.value), nans)
        .where(M.run_uuid == arg("run_id"), M.key.in_(GATE_METRICS))
        .group_by(M.key),
    }


class _StoreReader(ClientReader):
    """:class:`mlflow_green._lineage.Reader` over the gated store's registry and tracking stores.

    One per check (it caches what it read). MLflow's public methods load whole
    entities (3-4 ms each on SQLite); the gate needs a few columns. For
    SqlAlchemy stores it reads them with column queries through the store's own
    session maker (the registry filtered on the store's active workspace, as the
    store itself does), in as few sessions as it can: a model's budget tags with
    the version to check; a run with its metric aggregates. Whenever a fast read
    finds nothing, the public method answers, so errors are MLflow's own.
    """

    def __init__(self, registry: Any, tracking: Any) -> None:
        super().__init__(tracking, registry)
        self._versions: dict[tuple[str, str], VersionRecord] = {}
        self._metrics: dict[str, dict[str, float]] = {}

    # -- registry ---------------------------------------------------------
    def _registry_sql(self) -> tuple[Any, Any]:
        workspace = getattr(self.registry, "_get_active_workspace", None)
        maker = _sql(self.registry)
        return (maker, workspace) if maker is not None and workspace is not None else (None, None)

    def budget_tags(self, name: str, then_version: tuple[str, str]) -> dict[str, str]:
        """The budget tags of model ``name`` (``{}`` when none or absent); with a budget,
        the version ``then_version`` is read in the same session."""
        maker, workspace = self._registry_sql()
        if maker is None:
            return self._public_budget_tags(name)
        with maker() as session:
            params = {"workspace": workspace(), "name": name}
            rows = session.execute(_statements()["tags"], params).all()
            # Exact keys: a case-insensitive collation (MySQL) also returns look-alike keys.
            tags = {key: value for key, value in rows if key in _BUDGET_TAGS}
            if has_budget(tags):
                self._sql_version(session, workspace(), *then_version)
        return tags

    def _public_budget_tags(self, name: str) -> dict[str, str]:
        try:
            model = self.registry.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return {}  # the inner store's own call says so, with its own error
            raise
        # ``RegisteredModel.tags`` hides the prompt tag; ``_tags`` holds every tag.
        tags = dict(getattr(model, "_tags", None) or model.tags)
        return {k: v for k, v in tags.items() if k in _BUDGET_TAGS}

    def _sql_version(self, session: Any, workspace: str, name: str, version: str) -> None:
        """Read a version's columns into the cache (nothing when absent or not a number)."""
        try:
            number = int(version)  # what MLflow's _validate_model_version does with it
        except (TypeError, ValueError):
            return
        params = {"workspace": workspace, "name": name, "version": number}
        row = session.execute(_statements()["version"], params).first()
        if row is not None:  # SQL registries keep no model_id (it lives in the source)
            self._versions[name, version] = VersionRecord(
                row[0], row[2] or None, None, row[1] or row[0]
            )

    def version(self, name: str, version: str) -> VersionRecord:
        if (name, version) not in self._versions:
            maker, workspace = self._registry_sql()
            if maker is not None:
                with maker() as session:
                    self._sql_version(session, workspace(), name, version)
        if (name, version) in self._versions:
            return self._versions[name, version]
        return super().version(name, version)

    # -- tracking ---------------------------------------------------------
    def run(self, run_id: str) -> RunRecord:
        maker = _sql(self.tracking)
        if maker is not None:
            with maker() as session:
                row = session.execute(_statements()["run"], {"run_id": run_id}).first()
                if row is not None:  # its metrics too, while the session is open
                    self._metrics[run_id] = self._sql_metrics(session, run_id)
            if row is not None:
                return RunRecord(run_id, str(row[0]), row[1], row[2])
        return super().run(run_id)

    def logged_model(self, model_id: str) -> LoggedModelRecord:
        maker = _sql(self.tracking)
        if maker is not None:
            with maker() as session:
                params = {"model_id": model_id}
                row = session.execute(_statements()["logged_model"], params).first()
            if row is not None:
                return LoggedModelRecord(model_id, str(row[0]), row[1], row[2])
        return super().logged_model(model_id)

    @staticmethod
    def _sql_metrics(session: Any, run_id: str) -> dict[str, float]:
        rows = session.execute(_statements()["metrics"], {"run_id": run_id}).all()
        return {
            key: gate_value(largest, smallest, int(nans)) for key, largest, smallest, nans in rows
        }

    def metrics(self, run_id: str) -> dict[str, float]:
        if run_id in self._metrics:
            return self._metrics[run_id]
        maker = _sql(self.tracking)
        if maker is not None:
            with maker() as session:
                return self._sql_metrics(session, run_id)
        return super().metrics(run_id)


class GreenRegistryStore:
    """A model-registry store that refuses to promote versions over their energy/carbon budget.

    Built by MLflow for a URI ``green+<inner-uri>`` (entry point group
    ``mlflow.model_registry_store``, one name per inner scheme); every method
    and attribute not defined here is the inner store's, unchanged (composition:
    the inner store keeps its own class, its own defaults and its own state).

    Refused with ``MlflowException(..., PERMISSION_DENIED)`` (HTTP 403 from the
    server; a 403 is not retried by clients, unlike a 500), when the version
    does not pass, for a model that has a budget tag (whatever its other tags:
    prompts with a budget are gated too):

    * ``set_registered_model_alias`` (and so ``set_prompt_alias``);
    * ``transition_model_version_stage`` to Staging or Production (any case);
    * ``copy_model_version`` and its REST form, ``create_model_version`` with a
      source ``models:/<name>/<version>`` (or an alias): the source version's
      energy against the *destination* model's budget.

    The runs and LoggedModels come from the tracking store: inside ``mlflow
    server`` the server's own (``--backend-store-uri``); in a client process,
    the store of the tracking URI MLflow passes the builder.
    """

    def __init__(self, store_uri: str, tracking_uri: str | None = None) -> None:
        if not store_uri.startswith(SCHEME_PREFIX):
            raise MlflowException.invalid_parameter_value(
                f"mlflow-green registry store URIs start with {SCHEME_PREFIX!r}, got {store_uri!r}"
            )
        inner_uri = store_uri[len(SCHEME_PREFIX) :]
        builder = _store_builder(inner_uri)
        if "tracking_uri" in inspect.signature(builder).parameters:
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

    # -- reads ------------------------------------------------------------
    def _tracking(self) -> Any:
        """The tracking store runs and LoggedModels are read from (built once)."""
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

    def _check(
        self, budget_model: str, src_name: str, src_version: str, label: str | None = None
    ) -> None:
        """Raise PERMISSION_DENIED unless version ``src_version`` of ``src_name`` meets
        the budgets of ``budget_model`` (the same model, or a copy's destination)."""
        src_version = str(src_version)
        reader = _StoreReader(self._inner, None)
        tags = reader.budget_tags(budget_model, (src_name, src_version))
        if not has_budget(tags):
            return  # cheapest path first: most models have no budget
        reader.tracking = self._tracking()
        found = evidence(reader, src_name, src_version)
        check = evaluate(
            budget_model, label or src_version, tags, found.run_id, found.metrics, found.why
        )
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
        """Gated: the version must pass its model's budgets."""
        self._check(name, name, str(version))
        return self._inner.set_registered_model_alias(name, alias, version)

    def set_prompt_alias(self, name: str, alias: str, version: str | int) -> None:
        """Through the gated alias path, as MLflow's default does."""
        return self.set_registered_model_alias(name, alias, str(version))

    def transition_model_version_stage(
        self, name: str, version: str, stage: str, archive_existing_versions: bool
    ) -> Any:
        """Gated for Staging and Production (read as MLflow reads the stage); demotions pass."""
        from mlflow.entities.model_registry.model_version_stages import (
            STAGE_PRODUCTION,
            STAGE_STAGING,
            get_canonical_stage,
        )

        try:
            canonical = get_canonical_stage(stage)
        except Exception:
            canonical = None  # not a stage: the inner store refuses it with its own error
        if canonical in (STAGE_STAGING, STAGE_PRODUCTION):
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
        source the server has normalised to ``models:/<name>/<version>``; the
        name in it is taken as written, never percent-decoded.
        """
        src = self._copy_source(source)
        if src is not None:
            self._check_copy(src[0], src[1], name)
        return self._inner.create_model_version(name, source, *args, **kwargs)

    def _copy_source(self, source: Any) -> tuple[str, str] | None:
        """(name, version) a ``models:/`` source copies; ``None`` when it is not a copy.

        Read by MLflow's own parser, as the inner store reads it; an alias, stage
        or ``latest`` is resolved to the version it names now. A source MLflow
        cannot read is left to the inner store, which refuses it.
        """
        import urllib.parse

        from mlflow.store.artifact.utils.models import (
            _parse_model_uri,
            get_model_name_and_version,
        )

        try:  # the inner store's own test (urlparse strips leading blanks and controls)
            is_models = isinstance(source, str) and urllib.parse.urlparse(source).scheme == "models"
        except ValueError:
            is_models = False
        if not is_models:
            return None
        try:
            parsed = _parse_model_uri(source)
        except (MlflowException, ValueError):
            return None
        if parsed.model_id is not None:
            return None  # a LoggedModel registered: a new version, not a copy
        if parsed.version is not None:
            return parsed.name, parsed.version
        name, version = get_model_name_and_version(self._inner, source)
        return name, str(version)
