"""The gated model-registry store: ``green+<inner-uri>`` refuses promotions over budget.

Registered for ``green+<inner-uri>`` through the ``mlflow.model_registry_store``
entry point (as ``mlflow_green.registry.store:GreenRegistryStore``)::

    mlflow server --backend-store-uri sqlite:///mlflow.db \\
                  --registry-store-uri green+sqlite:///mlflow.db

It wraps the store ``sqlite:///mlflow.db`` names and refuses, with HTTP 403
``PERMISSION_DENIED``, every call that promotes a version that does not pass
:func:`mlflow_green.registry.rule.evaluate`: setting an alias (prompt aliases too),
a transition to Staging/Production, copying it into a model that has a budget.
Everything else is passed through to the inner store as is. Which run's energy
counts is decided by :mod:`mlflow_green.registry.lineage`, as for the client check; the
reads go through :mod:`mlflow_green.registry._store_reader`.
"""

from __future__ import annotations

import inspect
import os
import threading
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import PERMISSION_DENIED

from mlflow_green.registry._store_reader import StoreReader
from mlflow_green.registry.lineage import evidence
from mlflow_green.registry.rule import evaluate, has_budget

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
        reader = StoreReader(self._inner, None)
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
