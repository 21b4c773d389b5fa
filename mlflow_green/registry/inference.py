"""Inference energy of a model: measure warm predictions, record Wh per 1,000 on its version/run.

:func:`measure_inference` writes the figure the ranking reads on its ``inference``
axis (:func:`mlflow_green.registry.rank.rank_models`): the model-version tag
:data:`INFERENCE_TAG`, and the run metric :data:`INFERENCE_METRIC`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mlflow_green.measure.report import EnergyReport

#: Run metric holding the inference energy, Wh per 1,000 predictions.
INFERENCE_METRIC = "green/inference_wh_per_1k"
#: Model-version tag holding it (wins over the run's metric: a run can hold several models).
INFERENCE_TAG = "green.inference_wh_per_1k"


@dataclass(frozen=True)
class InferenceEnergy:
    """What :func:`measure_inference` measured and where it recorded it."""

    wh_per_1k: float
    """Energy per 1,000 predictions, Wh (PUE applied)."""
    predictions: int
    """Rows predicted while measuring: rows of ``data`` x ``repeats``."""
    report: EnergyReport
    """The measurement of the timed predictions (no warm-up)."""
    model_name: str | None
    """Registered model whose version got the tag, if the URI names one."""
    model_version: str | None
    run_id: str | None
    """Run that got the metric, if the model has one."""

    def __float__(self) -> float:
        return self.wh_per_1k


def measure_inference(
    model_uri: str,
    data: Any,
    repeats: int = 10,
    *,
    warmup: int = 1,
    record: bool = True,
    **track_options: Any,
) -> InferenceEnergy:
    """Measure the energy of warm predictions, in Wh per 1,000 predictions, and record it.

    Loads ``model_uri`` with ``mlflow.pyfunc.load_model``, calls ``predict(data)``
    ``warmup`` times unmeasured (lazy initialisation, caches), then ``repeats`` times
    inside :func:`mlflow_green.track`. A prediction is one row of ``data``, so the
    figure is ``energy_Wh / (rows x repeats) x 1000`` (PUE applied).

    With ``record=True`` the figure goes, as ``green.inference_wh_per_1k``, onto the
    model version when ``model_uri`` resolves to one (``models:/name/version``,
    ``models:/name@alias``, ``models:/name/latest``), and as the metric
    ``green/inference_wh_per_1k`` onto the model's run (registered versions, ``runs:/``
    URIs and logged models ``models:/<model_id>``), in the current tracking URI.
    ``track_options`` (``country``, ``pue``, ``scope``...) go to :func:`mlflow_green.track`.

    Raises ``ValueError`` for bad ``repeats``/``warmup`` or empty ``data``, MLflow's
    exception if the model cannot be loaded, and ``RuntimeError`` when nothing was
    measured (nothing is recorded then).
    """
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be a non-negative integer, got {warmup!r}")
    rows = _rows(data)
    if rows < 1:
        raise ValueError("data has no rows to predict")

    import mlflow.pyfunc
    from mlflow import MlflowClient

    from mlflow_green.measure.tracker import track

    client = MlflowClient()
    # Resolve first: an unknown version fails before minutes of measuring.
    name, version, run_id = _resolve(client, model_uri) if record else (None, None, None)
    model = mlflow.pyfunc.load_model(model_uri)
    for _ in range(warmup):
        model.predict(data)
    with track("inference", **track_options) as tracker:
        for _ in range(repeats):
            model.predict(data)
    report = tracker.report
    predictions = rows * repeats
    if not report.energy_kwh > 0:
        failures = "; ".join(f"{d}: {r}" for d, r in report.failures.items()) or "no meter"
        raise RuntimeError(f"no energy was measured for {model_uri} ({failures})")
    wh_per_1k = report.energy_kwh * 1000.0 / predictions * 1000.0
    if record:
        if name is not None and version is not None:
            client.set_model_version_tag(name, version, INFERENCE_TAG, repr(wh_per_1k))
        if run_id:
            client.log_metric(run_id, INFERENCE_METRIC, wh_per_1k)
    return InferenceEnergy(wh_per_1k, predictions, report, name, version, run_id)


def _rows(data: Any) -> int:
    shape = getattr(data, "shape", None)
    if shape is not None and len(shape) > 0:
        return int(shape[0])
    if isinstance(data, dict):  # column name -> values
        return len(next(iter(data.values()), []))
    return len(data)


def _resolve(client: MlflowClient, model_uri: str) -> tuple[str | None, str | None, str | None]:
    """``(model name, version, run id)`` that ``model_uri`` designates, as far as known."""
    if model_uri.startswith("runs:/"):
        return None, None, model_uri[len("runs:/") :].split("/", 1)[0] or None
    if not model_uri.startswith("models:/"):
        return None, None, None
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    resolved = get_model_name_and_version(client, model_uri)
    if len(resolved) == 1:  # models:/<model_id>, a LoggedModel
        return None, None, client.get_logged_model(resolved[0]).source_run_id
    name, version = resolved
    return name, str(version), client.get_model_version(name, version).run_id or None
