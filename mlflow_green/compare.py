"""Compare registered model versions: quality per unit of energy, and the Pareto front.

A version's training energy is that of the run that produced it (``green/energy_kwh``,
logged by :func:`mlflow_green.autolog`); its inference energy is the Wh per 1,000
predictions that :func:`measure_inference` recorded (model-version tag
``green.inference_wh_per_1k``, else the run metric ``green/inference_wh_per_1k``).

Reading is bulk: paged ``search_registered_models`` (aliases), paged
``search_model_versions``, paged ``search_experiments`` (``search_runs`` needs
experiment ids), then ``search_runs`` over ``attributes.run_id IN (...)`` batches.
The number of tracking-server requests grows with pages, never with versions.
Ranking only reads: nothing in the registry or the runs changes.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mlflow_green.report import EnergyReport

ENERGY_METRIC = "green/energy_kwh"
CO2EQ_METRIC = "green/co2eq_kg"
INFERENCE_METRIC = "green/inference_wh_per_1k"
INFERENCE_TAG = "green.inference_wh_per_1k"
ENERGY_AXES = ("train", "inference")

#: Model versions per ``search_model_versions`` page. Smaller than MLflow's default
#: (10,000) so that fetching the runs of one page overlaps reading the next.
VERSIONS_PAGE_SIZE = 2_000
#: Registered models per ``search_registered_models`` page (MLflow's maximum).
MODELS_PAGE_SIZE = 1_000
#: Experiments per ``search_experiments`` page.
EXPERIMENTS_PAGE_SIZE = 1_000
#: Run ids per ``search_runs`` request: a POST, so the list is not bound by URL length;
#: SQLite binds each id as one parameter (limit 32,766), other databases allow more.
RUN_ID_BATCH = 1_000
#: Requests in flight at once (each is still one request; see :func:`rank_models`).
FETCH_THREADS = 3
#: Model names per ``name IN (...)`` filter: ``search_model_versions`` is a GET.
NAMES_PER_FILTER = 100


class RankingError(ValueError):
    """Bad input to the ranking, or a registry that cannot be read; the message says which."""


# -- ranking -----------------------------------------------------------------------------------


def _data_columns(metric: str) -> list[str]:
    """The columns read from the registry and the runs, in table order."""
    return [
        "model",
        "version",
        "aliases",
        "run_id",
        metric,
        "energy_kwh",
        "co2eq_kg",
        "inference_wh_per_1k",
    ]


def rank_models(
    metric: str = "accuracy",
    model_names: Sequence[str] | str | None = None,
    greater_is_better: bool = True,
    energy: str = "train",
    tracking_uri: str | None = None,
    *,
    page_size: int = VERSIONS_PAGE_SIZE,
) -> pd.DataFrame:
    """Rank registered model versions by quality per unit of energy.

    One row per model version of ``model_names`` (default: every registered model),
    with the columns ``model``, ``version`` (int), ``aliases`` (comma-separated),
    ``run_id``, ``<metric>`` (the run's latest value), ``energy_kwh`` and ``co2eq_kg``
    (the run's training energy, kWh with PUE, and emissions, kg CO2eq),
    ``inference_wh_per_1k`` (Wh per 1,000 predictions), the ratio column, ``pareto``,
    ``rank`` (1 = best; ``<NA>`` for unranked rows) and ``reason``.

    The energy axis is ``energy_kwh`` with ``energy="train"`` and
    ``inference_wh_per_1k`` with ``energy="inference"``; the ratio column is
    ``<metric>_per_kwh`` or ``<metric>_per_wh_per_1k`` respectively.

    Ordering:

    * ``greater_is_better=True`` (accuracy, F1, AUC): by the ratio (metric per unit of
      energy) descending; ties by the metric descending, then energy ascending.
    * ``greater_is_better=False`` (rmse, log loss): "per kWh" is meaningless (a smaller
      error per kWh would reward using *more* energy), so the ratio column is NaN and
      rows are ranked by the metric ascending, ties by energy ascending.
    * Versions lacking the metric, the energy (or whose energy is 0, i.e. nothing was
      measured), or a run, are never dropped: they come last, unranked, ordered by
      model and version, with ``reason`` saying what is missing (empty for ranked rows).

    ``pareto`` is True for a ranked version that no other ranked version matches or
    beats on both quality and energy while beating it on one: the best trade-offs.
    ``DataFrame.attrs`` holds ``metric``, ``greater_is_better``, ``energy``,
    ``energy_column`` and ``ratio_column``.

    ``tracking_uri`` defaults to MLflow's (``MLFLOW_TRACKING_URI``); the registry is
    read from the same URI. ``page_size`` is the number of model versions per
    ``search_model_versions`` request.

    Raises :class:`RankingError` (a ``ValueError``) naming the problem for an unknown
    model name, a metric that no version's run has, an unknown ``energy`` axis, or a
    tracking server that cannot be read.
    """
    if not isinstance(metric, str) or not metric.strip():
        raise RankingError(f"metric must be a metric name, got {metric!r}")
    if energy not in ENERGY_AXES:
        raise RankingError(f"energy must be one of {', '.join(ENERGY_AXES)}; got {energy!r}")
    if isinstance(model_names, str):
        model_names = [model_names]
    names = list(dict.fromkeys(model_names)) if model_names is not None else None
    if names is not None and not names:
        raise RankingError("model_names is empty: give at least one name, or None for all")
    if not isinstance(page_size, int) or page_size < 1:
        raise RankingError(f"page_size must be a positive integer, got {page_size!r}")

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    where = tracking_uri or _current_uri()
    _check_reachable(where)
    with _reading(where), ThreadPoolExecutor(FETCH_THREADS) as pool:
        # Requests overlap: runs are fetched for each page of versions while the next
        # page is read, and this process decodes one response while the server
        # prepares the next. The number of requests is the same as one at a time.
        # The first request of each store (tracking, then registry) is made alone:
        # a SQL store creates its tables on first use, which must not race.
        experiment_ids = _experiment_ids(client)
        aliases_f: Future[dict[str, dict[str, list[str]]]] | None = None
        versions: list[Any] = []
        batches: list[Future[list[Any]]] = []
        seen: set[str] = set()
        for page in _model_version_pages(client, names, page_size):
            if aliases_f is None:
                aliases_f = pool.submit(_aliases, client, names)
            versions += page
            new = [v.run_id for v in page if v.run_id and v.run_id not in seen]
            seen.update(new)
            for batch in _chunks(list(dict.fromkeys(new)), RUN_ID_BATCH):
                batches.append(pool.submit(_search_runs, client, experiment_ids, batch))
        aliases = aliases_f.result() if aliases_f is not None else _aliases(client, names)
        if names is not None:
            missing = [n for n in names if n not in aliases]
            if missing:
                raise RankingError(
                    "no registered model named "
                    + ", ".join(repr(n) for n in missing)
                    + f" at {where}"
                )
        runs = {run.info.run_id: run for f in batches for run in f.result()}

    if versions and not any(metric in r.data.metrics for r in runs.values()):
        found = sorted(
            {
                k
                for r in runs.values()
                for k in r.data.metrics
                if not k.startswith(("green/", "system/"))
            }
        )
        hint = f"; metrics found: {', '.join(found[:20])}" if found else ""
        raise RankingError(f"no model version's run has the metric {metric!r}{hint}")

    frame = _frame(versions, aliases, runs, metric, energy, greater_is_better)
    return _order(frame, metric, energy, greater_is_better)


def _current_uri() -> str:
    import mlflow

    return mlflow.get_tracking_uri()


def _check_reachable(uri: str) -> None:
    """Fail at once, naming ``uri``, when an HTTP tracking server cannot be connected to."""
    from mlflow_green._tracking import unreachable_reason

    reason = unreachable_reason(uri)
    if reason is not None:
        raise RankingError(f"cannot read the model registry at {uri}: {reason}")


@contextlib.contextmanager
def _reading(where: str) -> Iterator[None]:
    """Turn MLflow and network failures into one :class:`RankingError` naming the URI."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except RankingError:
        raise
    except MlflowException as exc:
        raise RankingError(f"cannot read the model registry at {where}: {exc.message}") from exc
    except OSError as exc:  # requests' errors are OSErrors too
        raise RankingError(f"cannot read the model registry at {where}: {exc}") from exc


def _quoted(values: Iterable[str]) -> str:
    # MLflow's filter grammar (sqlparse) takes SQL string literals: '' escapes a quote.
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _pages(search: Any, **kwargs: Any) -> Iterator[Any]:
    """Every item of a paged MLflow search, one request per page."""
    token = None
    while True:
        page = search(page_token=token, **kwargs)
        yield from page
        token = page.token
        if not token:
            return


def _aliases(client: MlflowClient, names: list[str] | None) -> dict[str, dict[str, list[str]]]:
    """Registered model name -> version -> aliases (``search_model_versions`` has none)."""
    filters: list[str | None] = (
        [None]
        if names is None
        else [f"name IN ({_quoted(c)})" for c in _chunks(names, NAMES_PER_FILTER)]
    )
    out: dict[str, dict[str, list[str]]] = {}
    for flt in filters:
        for model in _pages(
            client.search_registered_models, filter_string=flt, max_results=MODELS_PAGE_SIZE
        ):
            by_version: dict[str, list[str]] = {}
            for alias in model.aliases or []:
                # RegisteredModel.aliases is a dict {alias: version} from the client;
                # some stores give RegisteredModelAlias entities.
                if isinstance(model.aliases, dict):
                    alias_name, version = alias, model.aliases[alias]
                else:
                    alias_name, version = alias.alias, alias.version
                by_version.setdefault(str(version), []).append(alias_name)
            out[model.name] = by_version
    return out


def _model_version_pages(
    client: MlflowClient, names: list[str] | None, page_size: int
) -> Iterator[list[Any]]:
    """Pages of model versions (of ``names``, or all), one request each."""
    filters: list[str | None] = (
        [None]
        if names is None
        else [f"name IN ({_quoted(c)})" for c in _chunks(names, NAMES_PER_FILTER)]
    )
    for flt in filters:
        token = None
        while True:
            # A total order, so that offset-based pages neither skip nor repeat versions.
            page = client.search_model_versions(
                filter_string=flt,
                max_results=page_size,
                order_by=["name ASC", "version_number ASC"],
                page_token=token,
            )
            yield list(page)
            token = page.token
            if not token:
                break


def _experiment_ids(client: MlflowClient) -> list[str]:
    """Every experiment id, deleted ones included: a version's run may be in any of them."""
    from mlflow.entities import ViewType

    return [
        e.experiment_id
        for e in _pages(
            client.search_experiments, view_type=ViewType.ALL, max_results=EXPERIMENTS_PAGE_SIZE
        )
    ]


def _search_runs(
    client: MlflowClient, experiment_ids: list[str], run_ids: Sequence[str]
) -> list[Any]:
    """The runs among ``run_ids`` that exist, deleted ones included (one request a page)."""
    from mlflow.entities import ViewType

    return list(
        _pages(
            client.search_runs,
            # search_runs needs experiment ids: a version's run may be in any experiment.
            experiment_ids=experiment_ids,
            filter_string=f"attributes.run_id IN ({_quoted(run_ids)})",
            run_view_type=ViewType.ALL,
            max_results=len(run_ids),
        )
    )


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def axis_columns(metric: str, energy: str) -> tuple[str, str]:
    """``(energy_column, ratio_column)`` of a ranking on the ``energy`` axis."""
    if energy == "inference":
        return "inference_wh_per_1k", f"{metric}_per_wh_per_1k"
    return "energy_kwh", f"{metric}_per_kwh"


def _frame(
    versions: list[Any],
    aliases: dict[str, dict[str, list[str]]],
    runs: dict[str, Any],
    metric: str,
    energy: str,
    greater_is_better: bool,
) -> pd.DataFrame:
    energy_col, ratio_col = axis_columns(metric, energy)
    rows = []
    for v in versions:
        run = runs.get(v.run_id) if v.run_id else None
        metrics = run.data.metrics if run is not None else {}
        tags = v.tags or {}
        row = {
            "model": v.name,
            "version": int(v.version),
            "aliases": ",".join(sorted(aliases.get(v.name, {}).get(str(v.version), []))),
            "run_id": v.run_id or "",
            metric: _float(metrics.get(metric)),
            "energy_kwh": _float(metrics.get(ENERGY_METRIC)),
            "co2eq_kg": _float(metrics.get(CO2EQ_METRIC)),
            # The version's own tag wins: a run can hold several registered models.
            "inference_wh_per_1k": _float(tags.get(INFERENCE_TAG, metrics.get(INFERENCE_METRIC))),
        }
        reasons = []
        if run is None:
            reasons.append(f"run {v.run_id} not found" if v.run_id else "version has no source run")
        else:
            if metric not in metrics:
                reasons.append(f"run has no metric '{metric}'")
            elif math.isnan(row[metric]):
                reasons.append(f"metric '{metric}' is NaN")
            if energy == "train" and ENERGY_METRIC not in metrics:
                reasons.append(f"run has no {ENERGY_METRIC} (not measured by mlflow-green)")
        if energy == "inference" and math.isnan(row[energy_col]):
            reasons.append("no inference energy (see mlflow_green.measure_inference)")
        if not math.isnan(row[energy_col]) and row[energy_col] <= 0:
            reasons.append(f"{energy_col} is {row[energy_col]:g} (nothing was measured)")
        row["reason"] = "; ".join(reasons)
        rows.append(row)
    columns = _data_columns(metric)
    frame = pd.DataFrame(rows, columns=[*columns, "reason"])
    frame["version"] = frame["version"].astype("int64")
    for col in columns[4:]:
        frame[col] = frame[col].astype("float64")
    ok = frame["reason"] == ""
    if greater_is_better:
        frame[ratio_col] = np.where(ok, frame[metric] / frame[energy_col], np.nan)
    else:
        frame[ratio_col] = np.nan  # "lower error per kWh" would reward spending energy
    frame["pareto"] = False
    if ok.any():
        quality = frame.loc[ok, metric].to_numpy()
        frame.loc[ok, "pareto"] = pareto_front(
            quality if greater_is_better else -quality, frame.loc[ok, energy_col].to_numpy()
        )
    frame["pareto"] = frame["pareto"].astype(bool)
    frame.attrs.update(
        metric=metric,
        greater_is_better=greater_is_better,
        energy=energy,
        energy_column=energy_col,
        ratio_column=ratio_col,
    )
    return frame


def _order(frame: pd.DataFrame, metric: str, energy: str, greater: bool) -> pd.DataFrame:
    energy_col, ratio_col = axis_columns(metric, energy)
    ok = frame["reason"] == ""
    if greater:
        keys, ascending = [ratio_col, metric, energy_col], [False, False, True]
    else:
        keys, ascending = [metric, energy_col], [True, True]
    ranked = frame[ok].sort_values(
        [*keys, "model", "version"], ascending=[*ascending, True, True], kind="stable"
    )
    rest = frame[~ok].sort_values(["model", "version"], kind="stable")
    out = pd.concat([ranked, rest], ignore_index=True) if len(rest) else ranked
    out = out.reset_index(drop=True)
    out["rank"] = pd.array(
        list(range(1, len(ranked) + 1)) + [pd.NA] * (len(out) - len(ranked)), dtype="Int64"
    )
    columns = [
        *_data_columns(metric),
        ratio_col,
        "pareto",
        "rank",
        "reason",
    ]
    out = out[columns]
    out.attrs = dict(frame.attrs)
    return out


def pareto_front(quality: np.ndarray, energy: np.ndarray) -> np.ndarray:
    """Boolean mask of the points no other point dominates (higher quality, lower energy).

    A point is dominated when another is at least as good on both axes and strictly
    better on one; equal points are all on the front. O(n log n).
    """
    quality = np.asarray(quality, dtype=float)
    energy = np.asarray(energy, dtype=float)
    n = len(quality)
    front = np.zeros(n, dtype=bool)
    order = np.lexsort((-quality, energy))  # energy ascending, then quality descending
    best_before = -math.inf  # best quality among strictly lower energies
    i = 0
    while i < n:
        j = i
        while j < n and energy[order[j]] == energy[order[i]]:
            j += 1
        group = order[i:j]
        top = quality[group[0]]
        if top > best_before:
            front[group[quality[group] == top]] = True
        best_before = max(best_before, top)
        i = j
    return front


# -- inference energy ----------------------------------------------------------------------------


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

    from mlflow_green.measure import track

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


# -- rendering -----------------------------------------------------------------------------------


def to_json(frame: pd.DataFrame) -> str:
    """The ranking as a JSON list of row objects; NaN/NA are ``null``, floats keep all digits."""
    import json

    records = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    return json.dumps(records, indent=2)


def to_table(frame: pd.DataFrame) -> str:
    """The ranking as a terminal table: rank first, no run ids, ``*`` marks the Pareto front."""
    attrs = frame.attrs
    metric, energy_col, ratio_col = attrs["metric"], attrs["energy_column"], attrs["ratio_column"]
    columns = ["rank", "model", "version", "aliases", metric, energy_col]
    if attrs["energy"] == "train":
        columns.append("co2eq_kg")
    if attrs["greater_is_better"]:
        columns.append(ratio_col)
    view = frame[columns].copy()
    view["rank"] = [str(r) if pd.notna(r) else "-" for r in frame["rank"]]
    view["pareto"] = np.where(frame["pareto"], "*", "")
    view["reason"] = frame["reason"]
    return view.to_string(index=False, na_rep="-", float_format=lambda x: f"{x:.4g}")


def plot_pareto(frame: pd.DataFrame, path: str) -> None:
    """Write the quality/energy plot of a :func:`rank_models` frame as a PNG.

    Quality on the y axis, energy (kWh, or Wh per 1,000 predictions) on a log x axis;
    the Pareto front is a highlighted step line. Points are labelled ``name:version``
    (only the front's when there are more than 40 points, to stay legible).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # no pyplot: no global state

    attrs = frame.attrs
    metric, energy_col = attrs["metric"], attrs["energy_column"]
    data = frame[frame["reason"] == ""]
    fig = Figure(figsize=(8, 5.5), dpi=100)
    ax = fig.add_subplot()
    rest, front = data[~data["pareto"]], data[data["pareto"]].sort_values(energy_col)
    ax.scatter(rest[energy_col], rest[metric], s=18, color="0.6", label="dominated", zorder=2)
    ax.scatter(
        front[energy_col], front[metric], s=36, color="tab:green", label="Pareto front", zorder=3
    )
    if len(front):
        # The front as a staircase: at each energy, the best quality reachable with at most
        # that much energy (the front sorted by energy improves monotonically).
        ax.step(front[energy_col], front[metric], where="post", color="tab:green", lw=1.5)
    labelled = data if len(data) <= 40 else front
    for model, version, x, y in zip(
        labelled["model"], labelled["version"], labelled[energy_col], labelled[metric], strict=True
    ):
        ax.annotate(
            f"{model}:{version}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7
        )
    if len(data):
        ax.set_xscale("log")
    else:
        ax.text(
            0.5,
            0.5,
            "no version has both the metric and energy",
            ha="center",
            transform=ax.transAxes,
        )
    unit = "Wh per 1,000 predictions" if attrs["energy"] == "inference" else "kWh"
    ax.set_xlabel(f"{energy_col} ({unit}, log scale)")
    better = "higher" if attrs["greater_is_better"] else "lower"
    ax.set_ylabel(f"{metric} ({better} is better)")
    ax.set_title(f"{metric} vs energy: {len(front)} of {len(data)} versions on the Pareto front")
    ax.grid(alpha=0.3, which="both")
    if len(data):
        ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, format="png")
