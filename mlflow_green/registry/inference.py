"""Inference energy of a model: Wh per 1,000 queries, J per output token, prefill and decode.

:func:`measure_inference` measures warm predictions of a logged model and records the
figures the ranking reads on its ``inference`` axis
(:func:`mlflow_green.registry.rank.rank_models`): model-version tags
:data:`INFERENCE_TAG`, :data:`INFERENCE_J_PER_TOKEN_TAG` and the run metrics
:data:`INFERENCE_METRIC`, :data:`INFERENCE_J_PER_TOKEN_METRIC`, with the settings and
hardware as JSON in :data:`INFERENCE_SETTINGS_TAG`. How models are driven and tokens
counted lives in :mod:`mlflow_green.registry._generation` and ``_tokens``.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlflow_green.registry._generation import (
    CounterDriver,
    Driver,
    GenerationDriver,
    Pass,
    count_queries,
    measure_pass,
    param_names,
    transformers_pipeline,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mlflow_green.measure.report import EnergyReport

#: Run metric holding the inference energy, Wh per 1,000 predictions (queries).
INFERENCE_METRIC = "green/inference_wh_per_1k"
#: Model-version tag holding it (wins over the run's metric: a run can hold several models).
INFERENCE_TAG = "green.inference_wh_per_1k"
#: Generative models: run metric and version tag holding joules per output token.
INFERENCE_J_PER_TOKEN_METRIC = "green/inference_j_per_token"
INFERENCE_J_PER_TOKEN_TAG = "green.inference_j_per_token"
#: Version tag and run tag: how the figures were measured (JSON, see ``settings()``).
INFERENCE_SETTINGS_TAG = "green.inference_settings"
#: New-token limit of a transformers model measured with ``max_new_tokens=None``.
DEFAULT_MAX_NEW_TOKENS = 64


@dataclass(frozen=True)
class Spread:
    """How a figure varied over the measured repeats."""

    min: float
    max: float
    sd: float
    """Sample standard deviation (0 for a single repeat)."""

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return cls(min(values), max(values), sd)


@dataclass(frozen=True)
class InferenceEnergy:
    """What :func:`measure_inference` measured and where it recorded it.

    kWh/Wh figures include the PUE; joule figures are device-level (no PUE), as
    everywhere in mlflow-green. Token counts are totals over the measured repeats.
    """

    wh_per_1k: float
    """Energy per 1,000 predictions (queries), Wh (PUE applied)."""
    predictions: int
    """Queries (rows, prompts) predicted while measuring: rows of ``data`` x ``repeats``."""
    report: EnergyReport
    """The measurement of the timed predictions (no warm-up)."""
    model_name: str | None
    """Registered model whose version got the tags, if the URI names one."""
    model_version: str | None
    run_id: str | None
    """Run that got the metrics, if the model has one."""
    repeats: int = 1
    warmup: int = 0
    batch_size: int | None = None
    """Queries per batch; ``None``: all rows in one ``predict`` call."""
    max_new_tokens: int | None = None
    """New-token limit of the measured generation (``None``: not a generative measurement)."""
    input_tokens: int | None = None
    """Prompt tokens read (padding excluded), when the model's tokenizer counted them."""
    output_tokens: int | None = None
    """Tokens generated, when counted (by the model's ``generate`` or a ``token_counter``)."""
    j_per_output_token: float | None = None
    """Device joules of the timed predictions per output token."""
    prefill_j_per_query: float | None = None
    """Device joules per query of generating the first token only (``max_new_tokens=1``)."""
    decode_j_per_token: float | None = None
    """Device joules per further token: (E(n tokens) - E(1 token)) / (n - 1), per query."""
    wh_per_1k_spread: Spread | None = None
    j_per_output_token_spread: Spread | None = None
    prefill_report: EnergyReport | None = None
    """The measurement of the ``max_new_tokens=1`` predictions, when made."""
    token_source: str | None = None
    """``transformers-generate`` (ids the model produced), ``token_counter`` or ``None``."""

    def __float__(self) -> float:
        return self.wh_per_1k

    @property
    def queries(self) -> int:
        """Queries in ``data`` (one repeat)."""
        return self.predictions // max(self.repeats, 1)

    def sci(self) -> dict[str, dict[str, Any]]:
        """SCI ``(E x I + M) / R`` of the timed predictions (gCO2eq): per 1,000 queries,
        and per output token when tokens were counted; see :mod:`mlflow_green.measure.sci`."""
        from mlflow_green.measure.sci import PER_1K_QUERIES, PER_TOKEN, sci

        co2, embodied = self.report.co2eq_kg, self.report.embodied_co2eq_kg
        out = {"per_1k_queries": sci(co2, embodied, self.predictions / 1000, PER_1K_QUERIES)}
        if self.output_tokens:
            out["per_output_token"] = sci(co2, embodied, self.output_tokens, PER_TOKEN)
        return {unit: score.to_dict() for unit, score in out.items()}

    def settings(self) -> dict[str, Any]:
        """Figures, settings, hardware and methods, as recorded in ``green.inference_settings``."""
        report = self.report
        out: dict[str, Any] = {
            "queries": self.queries,
            "repeats": self.repeats,
            "warmup": self.warmup,
            "batch_size": self.batch_size,
            "max_new_tokens": self.max_new_tokens,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "token_source": self.token_source,
            "wh_per_1k": self.wh_per_1k,
            "j_per_output_token": self.j_per_output_token,
            "prefill_j_per_query": self.prefill_j_per_query,
            "decode_j_per_token": self.decode_j_per_token,
            "duration_s": report.duration_s,
            "pue": report.pue,
            "scope": report.scope,
            "methods": dict(report.methods),
            "hardware": {d: h for d, h in report.hardware.items() if h},
            "sci": self.sci(),
        }
        for name, spread in (
            ("wh_per_1k", self.wh_per_1k_spread),
            ("j_per_output_token", self.j_per_output_token_spread),
        ):
            if spread is not None:
                out |= {f"{name}_min": spread.min, f"{name}_max": spread.max}
                out[f"{name}_sd"] = spread.sd
        return out


def _check_int(name: str, value: Any, minimum: int, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        accepted = f"an integer >= {minimum}" + (" or None" if optional else "")
        raise ValueError(f"{name} must be {accepted}, got {value!r} (argument {name})")


def measure_inference(
    model_uri: str,
    data: Any,
    repeats: int = 10,
    *,
    warmup: int = 1,
    max_new_tokens: int | None = None,
    batch_size: int | None = None,
    token_counter: Callable[[Any], int] | None = None,
    record: bool = True,
    **track_options: Any,
) -> InferenceEnergy:
    """Measure the energy of warm predictions (per 1,000 queries, per token) and record it.

    Loads ``model_uri`` with ``mlflow.pyfunc.load_model`` and predicts ``data`` (one row or
    prompt is one query: a string is one prompt; a list, tuple, array, DataFrame or Series
    has one query per row; a dict whose values are all columns of one length is columnar,
    one query per row; any other dict, e.g. ``{"messages": [...]}``, is one query and is
    never split) ``warmup`` times unmeasured (lazy initialisation, caches), then
    ``repeats`` times inside one :func:`mlflow_green.track` window: steady state, the
    window covers only the repeats. A reading after each repeat gives the spread.

    * **Row models** (any pyfunc): ``wh_per_1k = energy_Wh / (rows x repeats) x 1000``.
      ``batch_size`` splits ``data`` into ``predict`` calls of that many rows (``None``:
      one call). ``max_new_tokens`` is refused: there are no tokens.
    * **Text generation** (a ``transformers`` model whose pipeline is text-generation or
      text2text): each pass generates up to ``max_new_tokens`` (default
      :data:`DEFAULT_MAX_NEW_TOKENS`) with the pipeline batching ``batch_size`` prompts
      (default 1); input and output tokens are counted from the ids the model's own
      tokenizer and ``generate`` produced (padding excluded; output up to and including
      the end-of-text token). Adds ``j_per_output_token``; and, with
      ``max_new_tokens > 1``, a second window of the same passes at ``max_new_tokens=1``:
      ``prefill_j_per_query`` (the first token) and ``decode_j_per_token =
      (E(n) - E(1)) / (tokens(n) - tokens(1))``, per query.
    * **Any other generative pyfunc**: pass ``token_counter``, a callable given what one
      ``model.predict`` call returned and returning the number of output tokens in it
      (all its rows), as an ``int``; it is called after the window, and once on the first
      pass to fail early (with ``warmup=0`` that is the first repeat, in the window). With
      ``max_new_tokens`` the model is called with ``params={"max_new_tokens": n}`` (its
      signature must declare that param), which also enables prefill and decode figures.

    With ``record=True`` (in the current tracking URI) the figures go onto the model
    version when ``model_uri`` resolves to one (``models:/name/version``,
    ``models:/name@alias``, ``models:/name/latest``) as tags ``green.inference_wh_per_1k``,
    ``green.inference_j_per_token`` (generative) and ``green.inference_settings`` (JSON of
    :meth:`InferenceEnergy.settings`: batch size, new-token limit, repeats, warm-up,
    tokens, spread, prefill/decode, hardware and methods); and onto the model's run
    (registered versions, ``runs:/`` URIs, logged models ``models:/<model_id>``) as
    metrics ``green/inference_wh_per_1k``, ``green/inference_j_per_token`` and the run
    tag ``green.inference_settings``. ``track_options`` (``country``, ``pue``,
    ``scope``...) go to :func:`mlflow_green.track`.

    Raises ``ValueError`` for bad arguments (``repeats`` < 1, ``warmup`` < 0,
    ``max_new_tokens`` or ``batch_size`` < 1, ``max_new_tokens`` for a model that cannot
    take it, a ``token_counter`` that is not callable or does not return an int (after the
    first pass), ``data`` that is empty or not queries, e.g. ``None`` or a number) or
    track options, MLflow's exception if the model cannot be loaded, and
    ``RuntimeError`` when nothing was measured (nothing is recorded then).
    """
    _check_int("repeats", repeats, 1)
    _check_int("warmup", warmup, 0)
    _check_int("max_new_tokens", max_new_tokens, 1, optional=True)
    _check_int("batch_size", batch_size, 1, optional=True)
    if token_counter is not None and not callable(token_counter):
        raise ValueError(
            f"token_counter must be a callable (prediction -> output tokens) or None, "
            f"got {token_counter!r} (argument token_counter)"
        )
    queries = count_queries(data)
    if queries < 1:
        raise ValueError("data has no rows to predict (argument data)")

    import mlflow.pyfunc
    from mlflow import MlflowClient

    from mlflow_green.measure.tracker import track

    def tracker(name: str) -> Any:
        return track(name, **track_options)

    tracker("inference")  # bad track options fail here, before the model is loaded
    client = MlflowClient()
    # Resolve first: an unknown version fails before minutes of measuring.
    name, version, run_id = _resolve(client, model_uri) if record else (None, None, None)
    model = mlflow.pyfunc.load_model(model_uri)
    driver, max_new_tokens = _driver(model, data, max_new_tokens, batch_size, token_counter)
    with driver.active():
        main = measure_pass(driver, max_new_tokens, repeats, warmup, tracker("inference"))
        prefill = main if max_new_tokens == 1 else None
        if max_new_tokens is not None and max_new_tokens > 1:
            prefill = measure_pass(driver, 1, repeats, warmup, tracker("inference-prefill"))
    report = main.report
    if not report.energy_kwh > 0:
        failures = "; ".join(f"{d}: {r}" for d, r in report.failures.items()) or "no meter"
        raise RuntimeError(f"no energy was measured for {model_uri} ({failures})")
    result = _result(main, prefill, queries, repeats, warmup, driver, (name, version, run_id))
    if record:
        _record(client, result)
    return result


def _driver(
    model: Any,
    data: Any,
    max_new_tokens: int | None,
    batch_size: int | None,
    token_counter: Callable[[Any], int] | None,
) -> tuple[Driver, int | None]:
    """The driver for ``model`` and the new-token limit it will measure with."""
    if token_counter is not None:
        if max_new_tokens is not None and "max_new_tokens" not in param_names(model):
            raise ValueError(
                f"max_new_tokens={max_new_tokens} is passed to the model as a param, but its "
                f"signature declares no 'max_new_tokens' param (it declares "
                f"{sorted(param_names(model)) or 'none'}); log the model with a signature "
                "whose params include max_new_tokens, or pass max_new_tokens=None"
            )
        return CounterDriver(model, data, batch_size, token_counter), max_new_tokens
    pipeline = transformers_pipeline(model)
    if pipeline is not None:
        limit = DEFAULT_MAX_NEW_TOKENS if max_new_tokens is None else max_new_tokens
        return GenerationDriver(model, data, batch_size or 1, pipeline), limit
    if max_new_tokens is not None:
        raise ValueError(
            f"max_new_tokens={max_new_tokens} applies to text generation, but this model is "
            "neither a transformers text-generation/text2text pipeline nor measured with a "
            "token_counter; pass token_counter=<prediction -> output tokens> for a "
            "generative pyfunc, or max_new_tokens=None"
        )
    return Driver(model, data, batch_size), None


def _result(
    main: Pass,
    prefill: Pass | None,
    queries: int,
    repeats: int,
    warmup: int,
    driver: Driver,
    where: tuple[str | None, str | None, str | None],
) -> InferenceEnergy:
    report = main.report
    predictions = queries * repeats
    kwh_per_j = report.pue / 3.6e6
    per_repeat_wh_1k = [j * kwh_per_j * 1e6 / queries for j in main.repeat_energy_j]
    tokens = main.tokens
    j_per_token = spread_j = None
    if tokens is not None and tokens.output_tokens > 0:
        j_per_token = report.device_energy_j / tokens.output_tokens
        pairs = zip(main.repeat_energy_j, main.repeat_tokens or (), strict=False)
        per_repeat = [j / t.output_tokens for j, t in pairs if t.output_tokens > 0]
        spread_j = Spread.of(per_repeat) if per_repeat else None
    prefill_j = decode_j = None
    if prefill is not None:
        prefill_j = prefill.report.device_energy_j / predictions
        first = prefill.tokens
        if tokens is not None and first is not None and prefill is not main:
            extra_tokens = (tokens.output_tokens - first.output_tokens) / predictions
            if extra_tokens > 0:
                decode_j = (report.device_energy_j / predictions - prefill_j) / extra_tokens
    counted = tokens is not None and driver.token_source is not None
    inputs = tokens.input_tokens if counted and driver.counts_input else None  # type: ignore[union-attr]
    return InferenceEnergy(
        wh_per_1k=report.energy_kwh * 1000.0 / predictions * 1000.0,
        predictions=predictions,
        report=report,
        model_name=where[0],
        model_version=where[1],
        run_id=where[2],
        repeats=repeats,
        warmup=warmup,
        batch_size=driver.batch_size,
        max_new_tokens=main.max_new_tokens,
        input_tokens=inputs,
        output_tokens=tokens.output_tokens if counted else None,  # type: ignore[union-attr]
        j_per_output_token=j_per_token,
        prefill_j_per_query=prefill_j,
        decode_j_per_token=decode_j,
        wh_per_1k_spread=Spread.of(per_repeat_wh_1k),
        j_per_output_token_spread=spread_j,
        prefill_report=prefill.report if prefill is not None else None,
        token_source=driver.token_source if counted else None,
    )


def _record(client: MlflowClient, result: InferenceEnergy) -> None:
    settings = json.dumps(result.settings(), sort_keys=True)
    name, version, run_id = result.model_name, result.model_version, result.run_id
    if name is not None and version is not None:
        client.set_model_version_tag(name, version, INFERENCE_TAG, repr(result.wh_per_1k))
        if result.j_per_output_token is not None:
            value = repr(result.j_per_output_token)
            client.set_model_version_tag(name, version, INFERENCE_J_PER_TOKEN_TAG, value)
        client.set_model_version_tag(name, version, INFERENCE_SETTINGS_TAG, settings)
    if run_id:
        client.log_metric(run_id, INFERENCE_METRIC, result.wh_per_1k)
        if result.j_per_output_token is not None:
            client.log_metric(run_id, INFERENCE_J_PER_TOKEN_METRIC, result.j_per_output_token)
        client.set_tag(run_id, INFERENCE_SETTINGS_TAG, settings)


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
