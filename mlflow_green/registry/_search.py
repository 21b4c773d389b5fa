"""Paged, bulk reads of the registry and the runs through MLflow's search APIs (for the ranking).

Paged ``search_registered_models`` (aliases), paged ``search_model_versions``,
paged ``search_experiments`` (``search_runs`` needs experiment ids), then
``search_runs`` over ``attributes.run_id IN (...)`` batches: the number of
tracking-server requests grows with pages, never with versions. Only reads.
:func:`training_energy` reads a run's training energy from the metrics it holds, and
:func:`training_cost` what that energy cost.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from mlflow_green.registry.rule import CO2EQ_METRIC, ENERGY_METRIC

if TYPE_CHECKING:
    from mlflow import MlflowClient

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
#: Model names per ``name IN (...)`` filter: ``search_model_versions`` is a GET.
NAMES_PER_FILTER = 100
#: Requests in flight at once (each is still one request; see :func:`read_all`).
FETCH_THREADS = 3

#: The training phase's energy (kWh, PUE applied), preferred to the whole run's.
TRAIN_PHASE_METRIC = "green/phase/train_kwh"
#: The run's electricity cost (``price_per_kwh`` x its kWh) and the currency it is in.
COST_METRIC, CURRENCY_TAG = "green/cost", "green.currency"
#: ``energy_source`` values: the run's ``train`` phase, the whole run, or neither known.
SOURCE_PHASE, SOURCE_RUN, SOURCE_NONE = "phase:train", "run", ""


def _finite(value: Any) -> float:
    """``value`` as a float, NaN unless finite (MLflow's SQLite store keeps inf as 1.8e308)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = float(value)
        return value if math.isfinite(value) and abs(value) < 1e308 else math.nan
    return math.nan


def train_phase_kwh(metrics: dict[str, float], tags: dict[str, str] | None = None) -> float | None:
    """The run's ``train`` phase energy when it stands for the run's training, else None.

    Not when it is missing, not finite or not > 0 (a fit shorter than a counter's update
    step reads 0: the run's figure is better than nothing), and not in a multi-node job
    (``green/node/*`` metrics, ``green.nodes`` > 1): a phase measures rank 0's process and
    node only, while the run holds every node's energy.
    """
    kwh = _finite(metrics.get(TRAIN_PHASE_METRIC))
    if math.isnan(kwh) or kwh <= 0:
        return None
    if any(k.startswith("green/node/") for k in metrics):
        return None
    if (tags or {}).get("green.nodes", "1") not in ("", "1"):
        return None
    return kwh


def training_energy(
    metrics: dict[str, float], tags: dict[str, str] | None = None
) -> tuple[float, float, str]:
    """``(kWh, kg CO2eq, energy_source)`` of a run's training: its train phase where
    :func:`train_phase_kwh` accepts it, else the whole run.

    The phase's CO2eq is its share of the run's (one intensity per run); NaN for an
    unknown figure.
    """
    run_kwh, run_co2eq_kg = _finite(metrics.get(ENERGY_METRIC)), _finite(metrics.get(CO2EQ_METRIC))
    phase_kwh = train_phase_kwh(metrics, tags)
    if phase_kwh is not None:
        share_co2eq_kg = run_co2eq_kg * (phase_kwh / run_kwh) if run_kwh > 0 else math.nan
        return phase_kwh, share_co2eq_kg, SOURCE_PHASE
    return run_kwh, run_co2eq_kg, SOURCE_NONE if math.isnan(run_kwh) else SOURCE_RUN


def training_cost(
    metrics: dict[str, float], tags: dict[str, str] | None, train_kwh: float
) -> dict[str, Any]:
    """``{"cost": ..., "currency": ...}`` of ``train_kwh`` at the run's own price (its
    ``green/cost`` over its ``green/energy_kwh``): the whole run's cost, or the train
    phase's share of it. NaN and ``""`` where the run recorded no cost (no price set)."""
    run_cost, run_kwh = _finite(metrics.get(COST_METRIC)), _finite(metrics.get(ENERGY_METRIC))
    cost = run_cost * (train_kwh / run_kwh) if run_kwh > 0 else math.nan
    currency = (tags or {}).get(CURRENCY_TAG, "") if not math.isnan(cost) else ""
    return {"cost": cost, "currency": currency}


def read_all(
    client: MlflowClient, names: list[str] | None, page_size: int
) -> tuple[list[Any], dict[str, dict[str, list[str]]], dict[str, Any]]:
    """``(model versions, aliases, runs by id)`` of ``names`` (``None``: every model).

    Requests overlap: runs are fetched for each page of versions while the next page
    is read, and this process decodes one response while the server prepares the
    next. The number of requests is the same as one at a time. The first request of
    each store (tracking, then registry) is made alone: a SQL store creates its
    tables on first use, which must not race.
    """
    with ThreadPoolExecutor(FETCH_THREADS) as pool:
        ids = experiment_ids(client)
        aliases_f: Future[dict[str, dict[str, list[str]]]] | None = None
        versions: list[Any] = []
        batches: list[Future[list[Any]]] = []
        seen: set[str] = set()
        for page in model_version_pages(client, names, page_size):
            if aliases_f is None:
                aliases_f = pool.submit(aliases, client, names)
            versions += page
            new = [v.run_id for v in page if v.run_id and v.run_id not in seen]
            seen.update(new)
            for batch in chunks(list(dict.fromkeys(new)), RUN_ID_BATCH):
                batches.append(pool.submit(search_runs, client, ids, batch))
        by_version = aliases_f.result() if aliases_f is not None else aliases(client, names)
        runs = {run.info.run_id: run for f in batches for run in f.result()}
    return versions, by_version, runs


def _quoted(values: Iterable[str]) -> str:
    # MLflow's filter grammar (sqlparse) takes SQL string literals: '' escapes a quote.
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    """Consecutive slices of ``items``, ``size`` long (the last one shorter)."""
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


def _name_filters(names: list[str] | None) -> list[str | None]:
    """The ``filter_string`` values that select the models ``names`` (``None``: every model)."""
    if names is None:
        return [None]
    return [f"name IN ({_quoted(c)})" for c in chunks(names, NAMES_PER_FILTER)]


def aliases(client: MlflowClient, names: list[str] | None) -> dict[str, dict[str, list[str]]]:
    """Registered model name -> version -> aliases (``search_model_versions`` has none)."""
    out: dict[str, dict[str, list[str]]] = {}
    for flt in _name_filters(names):
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


def model_version_pages(
    client: MlflowClient, names: list[str] | None, page_size: int
) -> Iterator[list[Any]]:
    """Pages of model versions (of ``names``, or all), one request each."""
    for flt in _name_filters(names):
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


def experiment_ids(client: MlflowClient) -> list[str]:
    """Every experiment id, deleted ones included: a version's run may be in any of them."""
    from mlflow.entities import ViewType

    return [
        e.experiment_id
        for e in _pages(
            client.search_experiments, view_type=ViewType.ALL, max_results=EXPERIMENTS_PAGE_SIZE
        )
    ]


def search_runs(
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
