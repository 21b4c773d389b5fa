"""Rank registered model versions: quality per unit of energy, and the Pareto front.

A version's training energy is the ``train`` phase of the run that produced it
(``green/phase/train_kwh``, from :func:`mlflow_green.phase`) where the run has one,
else the whole run's (``green/energy_kwh``, from :func:`mlflow_green.autolog`, which
includes logging and registering the model); column ``energy_source`` says which
(budgets keep the whole run's). Its inference energy is the Wh per 1,000 predictions
that :func:`~mlflow_green.registry.inference.measure_inference` recorded (version tag
``green.inference_wh_per_1k``, else the run metric ``green/inference_wh_per_1k``). The
lifecycle axis adds the two: training plus the inference energy of a given number of
queries; every frame says after how many queries serving has used as much energy as
training did (``break_even_queries``).

The registry and the runs are read in bulk (:mod:`mlflow_green.registry._search`):
the number of tracking-server requests grows with pages, never with versions.
Ranking only reads: nothing in the registry or the runs changes.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

from mlflow_green.registry import _search
from mlflow_green.registry._search import TRAIN_PHASE_METRIC, VERSIONS_PAGE_SIZE
from mlflow_green.registry.inference import INFERENCE_METRIC, INFERENCE_TAG
from mlflow_green.registry.pareto import pareto_front
from mlflow_green.registry.rule import ENERGY_METRIC

ENERGY_AXES = ("train", "inference", "lifecycle")

#: Wh per 1,000 predictions -> kWh per prediction (one query is one prediction).
WH_PER_1K_PER_KWH_PER_QUERY = 1_000_000.0


class RankingError(ValueError):
    """Bad input to the ranking, or a registry that cannot be read; the message says which."""


def _data_columns(metric: str) -> list[str]:
    """The columns read from the registry and the runs, in table order."""
    return [
        "model",
        "version",
        "aliases",
        "run_id",
        metric,
        "energy_kwh",
        "energy_source",
        "co2eq_kg",
        "cost",
        "currency",
        "inference_wh_per_1k",
    ]


def _energy_columns(energy: str) -> list[str]:
    """The columns derived from the two energies, in table order, after the data columns."""
    lifecycle = ["inference_kwh", "lifecycle_kwh"] if energy == "lifecycle" else []
    return [*lifecycle, "break_even_queries"]


def _checked_queries(energy: str, queries: Any) -> int | None:
    """``queries`` as an int for the lifecycle axis, ``None`` otherwise; bad values raise."""
    if energy != "lifecycle":
        if queries is not None:
            raise RankingError(
                f"queries={queries!r} applies only to energy='lifecycle' (training plus that "
                f"many queries); with energy={energy!r} leave it None"
            )
        return None
    if queries is None:
        raise RankingError(
            "energy='lifecycle' needs queries: the number of queries served, a positive "
            "integer (e.g. queries=1_000_000); got queries=None"
        )
    # bool is an Integral too, and True queries is surely a mistake.
    if isinstance(queries, bool) or not isinstance(queries, numbers.Integral) or queries < 1:
        raise RankingError(
            f"queries must be a positive integer (the number of queries served), got {queries!r}"
        )
    return int(queries)


def rank_models(
    metric: str = "accuracy",
    model_names: Sequence[str] | str | None = None,
    greater_is_better: bool = True,
    energy: str = "train",
    tracking_uri: str | None = None,
    *,
    queries: int | None = None,
    page_size: int = VERSIONS_PAGE_SIZE,
) -> pd.DataFrame:
    """Rank registered model versions by quality per unit of energy.

    One row per model version of ``model_names`` (default: every registered model),
    with the columns ``model``, ``version`` (int), ``aliases`` (comma-separated),
    ``run_id``, ``<metric>`` (the run's latest value), ``energy_kwh`` (the training
    energy, kWh with PUE), ``energy_source``, ``co2eq_kg`` (the emissions of
    ``energy_kwh``, kg CO2eq), ``cost`` and ``currency`` (what ``energy_kwh`` cost at the
    run's own ``price_per_kwh``: the run's ``green/cost`` in its ``green.currency``, or
    the train phase's share of it; NaN and ``""`` without a price), ``inference_wh_per_1k``
    (Wh per 1,000 predictions),
    ``break_even_queries``, the ratio column, ``pareto``, ``rank`` (1 = best;
    ``<NA>`` for unranked rows) and ``reason``.

    The training energy, on every axis, is ``energy_source``:

    * ``"phase:train"``: the run's ``green/phase/train_kwh`` (the ``train`` phase of
      :func:`mlflow_green.phase`, e.g. the fit alone), where the run has it (finite,
      > 0, and not a multi-node job, whose phases see rank 0's node only); its
      ``co2eq_kg`` is the run's ``green/co2eq_kg`` scaled by the phase's share of the
      run's energy (the run's intensity; NaN without the run's figures).
    * ``"run"``: otherwise the whole run's ``green/energy_kwh`` and ``green/co2eq_kg``,
      which include whatever else the run did (logging, registering the model).
    * ``""``: neither is known; the version is unranked on the train and lifecycle axes.

    Mixing both sources compares unlike quantities: give every run a ``train`` phase.
    A phase is only as honest as where it is placed (a client can log any value under
    its name): budgets and the gate always use the whole run's energy.

    The energy axis is ``energy_kwh`` with ``energy="train"``,
    ``inference_wh_per_1k`` with ``energy="inference"``, and ``lifecycle_kwh`` with
    ``energy="lifecycle"``; the ratio column is ``<metric>_per_kwh``,
    ``<metric>_per_wh_per_1k`` or ``<metric>_per_lifecycle_kwh`` respectively.

    ``energy="lifecycle"`` needs ``queries`` (a positive integer; refused on the other
    axes): the frame gains ``inference_kwh``, the energy of that many queries
    (``queries * inference_wh_per_1k / 1e6``; one query is one prediction), and
    ``lifecycle_kwh = energy_kwh + inference_kwh`` (training as above, plus serving);
    a version needs both its training and its inference energy to be ranked.

    ``break_even_queries`` (every axis) is the number of queries after which serving
    has used as much energy as training did: ``energy_kwh / (inference_wh_per_1k /
    1e6)``, a float (not rounded), NaN where either energy is unknown or 0.

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
    ``queries`` (``None`` off the lifecycle axis), ``energy_column`` and ``ratio_column``.

    ``tracking_uri`` defaults to MLflow's (``MLFLOW_TRACKING_URI``); the registry is
    read from the same URI. ``page_size`` is the number of model versions per
    ``search_model_versions`` request.

    Raises :class:`RankingError` (a ``ValueError``) naming the problem for an unknown
    model name, a metric that no version's run has, an unknown ``energy`` axis,
    ``queries`` missing or not a positive integer on the lifecycle axis (or given on
    another), or a tracking server that cannot be read.
    """
    if not isinstance(metric, str) or not metric.strip():
        raise RankingError(f"metric must be a metric name, got {metric!r}")
    if energy not in ENERGY_AXES:
        raise RankingError(f"energy must be one of {', '.join(ENERGY_AXES)}; got {energy!r}")
    queries = _checked_queries(energy, queries)
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
    with _reading(where):
        versions, aliases, runs = _search.read_all(client, names, page_size)
    if names is not None:
        missing = [n for n in names if n not in aliases]
        if missing:
            raise RankingError(
                "no registered model named " + ", ".join(repr(n) for n in missing) + f" at {where}"
            )

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

    frame = _frame(versions, aliases, runs, metric, energy, queries, greater_is_better)
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


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def axis_columns(metric: str, energy: str) -> tuple[str, str]:
    """``(energy_column, ratio_column)`` of a ranking on the ``energy`` axis."""
    if energy == "inference":
        return "inference_wh_per_1k", f"{metric}_per_wh_per_1k"
    if energy == "lifecycle":
        return "lifecycle_kwh", f"{metric}_per_lifecycle_kwh"
    return "energy_kwh", f"{metric}_per_kwh"


def _frame(
    versions: list[Any],
    aliases: dict[str, dict[str, list[str]]],
    runs: dict[str, Any],
    metric: str,
    energy: str,
    queries: int | None,
    greater_is_better: bool,
) -> pd.DataFrame:
    energy_col, ratio_col = axis_columns(metric, energy)
    # The energies the axis is made of: each must be known and positive to rank a version.
    needs = {"train": ["energy_kwh"], "inference": ["inference_wh_per_1k"]}.get(
        energy, ["energy_kwh", "inference_wh_per_1k"]
    )
    rows = []
    for v in versions:
        run = runs.get(v.run_id) if v.run_id else None
        metrics = run.data.metrics if run is not None else {}
        tags = v.tags or {}
        run_tags = run.data.tags if run is not None else {}
        train_kwh, co2eq_kg, source = _search.training_energy(metrics, run_tags)
        row = {
            "model": v.name,
            "version": int(v.version),
            "aliases": ",".join(sorted(aliases.get(v.name, {}).get(str(v.version), []))),
            "run_id": v.run_id or "",
            metric: _float(metrics.get(metric)),
            "energy_kwh": train_kwh,
            "energy_source": source,
            "co2eq_kg": co2eq_kg,
            **_search.training_cost(metrics, run_tags, train_kwh),
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
            if "energy_kwh" in needs and math.isnan(row["energy_kwh"]):
                reasons.append(
                    f"run has no {TRAIN_PHASE_METRIC} or {ENERGY_METRIC} "
                    "(not measured by mlflow-green)"
                )
        if "inference_wh_per_1k" in needs and math.isnan(row["inference_wh_per_1k"]):
            reasons.append("no inference energy (see mlflow_green.measure_inference)")
        for col in needs:
            if not math.isnan(row[col]) and row[col] <= 0:
                reasons.append(f"{col} is {row[col]:g} (nothing was measured)")
        row["reason"] = "; ".join(reasons)
        rows.append(row)
    columns = _data_columns(metric)
    frame = pd.DataFrame(rows, columns=[*columns, "reason"])
    frame["version"] = frame["version"].astype("int64")
    for col in columns[4:]:
        text = col in ("energy_source", "currency")
        frame[col] = frame[col].astype(object if text else "float64")
    _add_energy_columns(frame, queries)
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
        queries=queries,
        energy_column=energy_col,
        ratio_column=ratio_col,
    )
    return frame


def _add_energy_columns(frame: pd.DataFrame, queries: int | None) -> None:
    """``break_even_queries``, and with ``queries`` the lifecycle columns, from the energies."""
    train_kwh = frame["energy_kwh"]
    kwh_per_query = frame["inference_wh_per_1k"] / WH_PER_1K_PER_KWH_PER_QUERY
    if queries is not None:
        frame["inference_kwh"] = queries * kwh_per_query
        frame["lifecycle_kwh"] = train_kwh + frame["inference_kwh"]
    # NaN compares False: an unknown energy gives NaN, like an energy of 0 (nothing was
    # measured; and no query costs nothing, so 0 Wh would put the break-even at infinity).
    known = (train_kwh > 0) & (kwh_per_query > 0)
    frame["break_even_queries"] = np.where(known, train_kwh / kwh_per_query, np.nan)


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
        *_energy_columns(energy),
        ratio_col,
        "pareto",
        "rank",
        "reason",
    ]
    out = out[columns]
    out.attrs = dict(frame.attrs)
    return out
