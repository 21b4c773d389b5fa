"""Why a spooled report cannot reach its run: a deleted or gone run, or a failed connection.

Both tell ``sync`` what to do with a failure: an undeliverable report is kept
until discarded, a transport failure marks its server down for the other files.
"""

from __future__ import annotations

from typing import Any


def undeliverable_reason(client: Any, uri: str, run_id: str) -> str | None:
    """Why ``run_id`` can never take its report (deleted or gone), or None if it can.

    Raises on any other failure (server error, permissions): those are retried.
    """
    from mlflow.entities import LifecycleStage
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        # Only the store's own answer carries this code: a 404 from a proxy or a wrong URL
        # path is ENDPOINT_NOT_FOUND, a failure like any other (test_spool checks it).
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return f"run {run_id} does not exist on {uri} (deleted for good, or never there)"
        raise
    if run.info.lifecycle_stage == LifecycleStage.DELETED:
        return (
            f"run {run_id} is deleted on {uri} "
            f"(`mlflow runs restore --run-id {run_id}` would let it be uploaded)"
        )
    experiment_id = run.info.experiment_id
    if client.get_experiment(experiment_id).lifecycle_stage == LifecycleStage.DELETED:
        return f"experiment {experiment_id} of run {run_id} is deleted on {uri}"
    return None


def is_transport_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a connection failure rather than a server answer."""
    import requests

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, (requests.exceptions.RequestException, ConnectionError)):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
