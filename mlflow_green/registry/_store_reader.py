"""The gated store's reads: a SQL fast path (column queries) over the registry and tracking stores.

:class:`StoreReader` is the :class:`~mlflow_green.registry.lineage.Reader` that
:class:`~mlflow_green.registry.store.GreenRegistryStore` checks a promotion with: the
few columns the gate needs, read with SQLAlchemy through the stores' own sessions,
falling back to MLflow's public store methods for stores that are not SQL.
"""

from __future__ import annotations

import functools
from typing import Any

from mlflow.exceptions import MlflowException

from mlflow_green.registry.lineage import (
    ClientReader,
    LoggedModelRecord,
    RunRecord,
    VersionRecord,
)
from mlflow_green.registry.rule import (
    BUDGET_CO2EQ_TAG,
    BUDGET_KWH_TAG,
    GATE_METRICS,
    gate_value,
    has_budget,
)


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


class StoreReader(ClientReader):
    """:class:`~.lineage.Reader` over the gated store's registry and tracking stores.

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
