"""The serving run: one MLflow run per served model version per serving session.

It lives in experiment ``mlflow-green-serving`` (or ``MLFLOW_GREEN_SERVING_EXPERIMENT``),
is tagged ``green.serving_model`` / ``green.serving_version``, and receives
cumulative values at each flush; the registered version gets
``green.serving_wh_per_1k``. The run is created and reopened through the
tracking store itself, not ``create_run``/``update_run``, so that zero-code
autolog in the same worker never takes it for a training run to measure.
"""

from __future__ import annotations

import time
from typing import Any

from mlflow_green.serving.settings import ServingSettings, safe_name

SERVING_MODEL_TAG = "green.serving_model"
SERVING_VERSION_TAG = "green.serving_version"
VERSION_WH_TAG = "green.serving_wh_per_1k"
SESSION_TAG = "green.serving_session"
_MODELS_SCHEME = "models:/"


def registered_version(client: Any, model_uri: str) -> tuple[str, str]:
    """``(name, version)`` named by a ``models:/`` URI; ``(model_uri, "")`` for any other URI.

    ``models:/NAME/3`` names version 3; ``models:/NAME@alias`` and ``models:/NAME/latest``
    are resolved through the registry now, once per serving session.
    """
    if not model_uri.startswith(_MODELS_SCHEME):
        return model_uri, ""
    rest = model_uri[len(_MODELS_SCHEME) :].strip("/")
    if "@" in rest:
        name, _, alias = rest.partition("@")
        return name, str(client.get_model_version_by_alias(name, alias).version)
    name, _, version = rest.rpartition("/")
    if not name:
        return model_uri, ""
    if version.isdigit():
        return name, version
    if version.lower() == "latest":
        versions = client.search_model_versions(f"name = '{name}'")
        return name, str(max((int(v.version) for v in versions), default=0) or "")
    return name, ""  # a stage name: no single version to tag


class ServingRun:
    """The serving run of this session, through an ``MlflowClient``."""

    def __init__(self, client: Any, run_id: str, name: str, version: str) -> None:
        self.client, self.run_id, self.name, self.version = client, run_id, name, version

    @classmethod
    def continue_or_create(
        cls, settings: ServingSettings, state: dict[str, Any] | None, tags: dict[str, str]
    ) -> ServingRun:
        """The session's run from ``state`` (reopened if a holder had ended it), else a new one."""
        from mlflow import MlflowClient
        from mlflow.entities import RunStatus, RunTag

        client = MlflowClient()
        store = client._tracking_client.store
        if state and state.get("run_id"):
            run_id = str(state["run_id"])
            experiment_id = _experiment_id(client, settings.experiment)
            if not is_serving_run(client, run_id, experiment_id, settings.session):
                raise ValueError(
                    f"the serving state names run {run_id!r}, which is not this session's "
                    f"serving run (tag {SESSION_TAG}, experiment {settings.experiment!r})"
                )
            run = cls(client, run_id, str(state.get("name", "")), str(state.get("version", "")))
            if state.get("ended"):  # the holder exited but this session still serves
                store.update_run_info(run.run_id, RunStatus.RUNNING, None, None)
            return run
        name, version = registered_version(client, settings.model_uri)
        experiment_id = _experiment_id(client, settings.experiment)
        run_name = f"serve {name} v{version}" if version else f"serve {name}"
        all_tags = {
            **tags,
            SERVING_MODEL_TAG: name,
            SERVING_VERSION_TAG: version,
            "green.serving_model_uri": settings.model_uri,
            SESSION_TAG: settings.session,
            "mlflow.runName": run_name,
        }
        info = store.create_run(
            experiment_id=experiment_id,
            user_id="mlflow-green",
            start_time=int(time.time() * 1000),
            tags=[RunTag(k, v) for k, v in all_tags.items()],
            run_name=run_name,
        ).info
        return cls(client, info.run_id, name, version)

    def log(self, metrics: dict[str, float], step: int, tags: dict[str, str]) -> None:
        """Log cumulative ``metrics`` at ``step`` and ``tags`` in one request."""
        from mlflow.entities import Metric, RunTag

        now_ms = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id,
            metrics=[Metric(k, v, now_ms, step) for k, v in metrics.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )

    def tag_version(self, wh_per_1k: float) -> None:
        """Set the registered version's ``green.serving_wh_per_1k`` (when the URI names one)."""
        if self.version:
            self.client.set_model_version_tag(
                self.name, self.version, VERSION_WH_TAG, f"{wh_per_1k:.6g}"
            )

    def end(self, status: str = "FINISHED") -> None:
        """Mark the run terminated."""
        self.client.set_terminated(self.run_id, status)


def is_serving_run(client: Any, run_id: str, experiment_id: str, session: str) -> bool:
    """Whether ``run_id`` is the serving run of ``session`` in the serving experiment.

    A state file names the run to reopen or end; it is only trusted for a run that
    carries the session's ``green.serving_session`` tag (compared as the session's
    folder name) in the serving experiment, so a stray or planted file cannot make
    the meter end or write to another run.
    """
    run = client.get_run(run_id)
    tag = run.data.tags.get(SESSION_TAG)
    return (
        run.info.experiment_id == experiment_id
        and tag is not None
        and safe_name(tag) == safe_name(session)
    )


def end_stale(
    run_id: str, end_time_ms: int | None, experiment: str, session_folder_name: str
) -> bool:
    """End a serving run of an earlier session that nobody ended (its server was killed);
    only a run of that session in the serving experiment (see :func:`is_serving_run`)."""
    from mlflow import MlflowClient

    client = MlflowClient()
    experiment_id = _experiment_id(client, experiment)
    if not is_serving_run(client, run_id, experiment_id, session_folder_name):
        return False
    if client.get_run(run_id).info.status == "RUNNING":
        client.set_terminated(run_id, "KILLED", end_time=end_time_ms)
    return True


def _experiment_id(client: Any, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:  # another host created it meanwhile
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id
