"""``mlflow-green rank``: the ranking of registered model versions as a table, CSV, JSON, plot.

The ranking itself is :func:`mlflow_green.registry.rank.rank_models`; this module
renders it. pandas, numpy and matplotlib are imported when a command runs, so that
``mlflow-green --help`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from mlflow_green.cli._common import (
    BadInput,
    StoreURI,
    existing_store,
    open_client,
    registry_store,
    require_text,
    tracking_uri_option,
)

if TYPE_CHECKING:
    import pandas as pd


@click.command()
@click.option("--metric", default="accuracy", show_default=True, help="Quality metric of the runs.")
@click.option(
    "--model",
    "models",
    multiple=True,
    metavar="NAME",
    help="Registered model to include (repeatable); default: every model.",
)
@click.option(
    "--lower-is-better",
    is_flag=True,
    help="The metric is an error (rmse, loss): rank by it, then by energy.",
)
@click.option(
    "--energy",
    type=click.Choice(["train", "inference", "lifecycle"]),
    default="train",
    show_default=True,
    help="Training kWh of the run, inference Wh per 1,000 predictions, or training plus "
    "--queries queries (kWh).",
)
@click.option(
    "--queries",
    type=int,
    default=None,
    metavar="N",
    help="With --energy lifecycle (and only then): the number of queries served.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    metavar="FILE.png",
    help="Also write the quality/energy Pareto plot here.",
)
@tracking_uri_option(
    "Tracking server (and registry) to read (default: MLFLOW_TRACKING_URI, else MLflow's "
    "default sqlite:///mlflow.db in the current folder)."
)
def rank(
    metric: str,
    models: tuple[str, ...],
    lower_is_better: bool,
    energy: str,
    queries: int | None,
    fmt: str,
    plot: str | None,
    tracking_uri: str | None,
) -> None:
    """Rank registered model versions by quality per kWh, with the Pareto front.

    Versions lacking the metric or the energy come last with a reason. Reads only.
    break_even_queries: queries after which serving has used as much energy as training.
    """
    # Checked here, before any store is opened, to name the options rather than
    # rank_models' arguments.
    require_text(metric, "--metric", "the name of a metric of the runs, e.g. accuracy")
    for name in models:
        require_text(name, "--model", "the name of a registered model")
    if energy == "lifecycle" and queries is None:
        raise BadInput("--energy lifecycle needs --queries N (a positive integer)")
    if energy != "lifecycle" and queries is not None:
        raise BadInput(
            f"--queries {queries} applies only to --energy lifecycle; got --energy {energy}"
        )
    if queries is not None and queries < 1:
        raise BadInput(f"--queries must be a positive integer, got {queries}")
    if plot:
        _check_plot_path(plot)
    # rank_models reads the registry at the tracking URI it is given (else MLflow's own).
    store = existing_store(tracking_uri, follows_tracking=True)
    _open(store, registry_store(store, follows_tracking=True))

    from mlflow_green.registry.rank import RankingError, rank_models

    try:
        frame = rank_models(
            metric=metric,
            model_names=list(models) or None,
            greater_is_better=not lower_is_better,
            energy=energy,
            tracking_uri=store.given,
            queries=queries,
        )
    except RankingError as exc:
        raise BadInput(_option_named(str(exc), metric, models)) from None
    if fmt == "json":
        click.echo(to_json(frame))
    elif fmt == "csv":
        click.echo(frame.to_csv(index=False), nl=False)
    elif frame.empty:
        click.echo("No registered model versions.")
    else:
        click.echo(to_table(frame))
    if plot:
        try:
            plot_pareto(frame, plot)
        except OSError as exc:
            raise BadInput(f"cannot write the plot to {plot!r}: {exc}") from None
        click.echo(f"Pareto plot written to {plot}", err=True)


def _open(store: StoreURI, registry: StoreURI) -> None:
    """Refuse, as rank_models would say it, a server that does not answer; then let
    :func:`open_client` refuse a store MLflow cannot open (rank_models would raise
    MLflow's own exception there)."""
    from mlflow_green._tracking import unreachable_reason

    for uri in dict.fromkeys([store.uri, registry.uri]):
        reason = unreachable_reason(uri)
        if reason is not None:
            raise BadInput(f"cannot read the model registry at {uri}: {reason}")
    open_client(store, registry)


def _option_named(message: str, metric: str, models: tuple[str, ...]) -> str:
    """rank_models' message about an unknown model or metric, led by the option that named it
    (and in one line: a database's error can span several)."""
    message = " ".join(message.split())
    missing = [name for name in models if repr(name) in message]
    if missing and message.startswith("no registered model"):
        return " ".join(f"--model {name!r}" for name in missing) + f": {message}"
    if f"metric {metric!r}" in message:
        return f"--metric {metric!r}: {message}"
    return message


def _check_plot_path(plot: str) -> None:
    """:class:`BadInput` unless ``--plot`` names a file in a folder that exists."""
    import os

    folder = os.path.dirname(os.path.abspath(plot))
    if not os.path.isdir(folder):
        raise BadInput(f"--plot {plot!r}: the folder {folder} does not exist")


def to_json(frame: pd.DataFrame) -> str:
    """The ranking as a JSON list of row objects; NaN/NA are ``null``, floats keep all digits."""
    import json

    records = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    return json.dumps(records, indent=2)


def to_table(frame: pd.DataFrame) -> str:
    """The ranking as a terminal table: rank first, no run ids, ``*`` marks the Pareto front."""
    import numpy as np
    import pandas as pd

    attrs = frame.attrs
    metric, energy_col, ratio_col = attrs["metric"], attrs["energy_column"], attrs["ratio_column"]
    columns = ["rank", "model", "version", "aliases", metric]
    energy_columns = {
        "train": ["energy_kwh", "co2eq_kg"],
        "inference": ["inference_wh_per_1k"],
        "lifecycle": ["energy_kwh", "inference_wh_per_1k", "inference_kwh", energy_col],
    }[attrs["energy"]]
    if "energy_source" in frame.columns and "energy_kwh" in energy_columns:
        # Where the training energy comes from ("phase:train" or "run"), beside it.
        at = energy_columns.index("energy_kwh") + 1
        energy_columns.insert(at, "energy_source")
    if "cost" in frame.columns and frame["cost"].notna().any() and "energy_kwh" in energy_columns:
        # The training energy's cost, where runs recorded one (autolog's price_per_kwh).
        after = [c for c in ("energy_kwh", "energy_source", "co2eq_kg") if c in energy_columns]
        at = energy_columns.index(after[-1]) + 1
        energy_columns[at:at] = ["cost", "currency"]
    columns += energy_columns
    if attrs["greater_is_better"]:
        columns.append(ratio_col)
    columns.append("break_even_queries")
    view = frame[columns].copy()
    view["rank"] = [str(r) if pd.notna(r) else "-" for r in frame["rank"]]
    # A count of queries reads best whole and grouped (80,000 rather than 8e+04).
    view["break_even_queries"] = [
        "-" if pd.isna(q) else f"{q:,.0f}" if q >= 100 else f"{q:.3g}"
        for q in frame["break_even_queries"]
    ]
    view["pareto"] = np.where(frame["pareto"], "*", "")
    view["reason"] = frame["reason"]
    return view.to_string(index=False, na_rep="-", float_format=lambda x: f"{x:.4g}")


def plot_pareto(frame: pd.DataFrame, path: str) -> None:
    """Write the quality/energy plot of a :func:`~mlflow_green.registry.rank.rank_models` frame.

    Quality on the y axis, energy (kWh; Wh per 1,000 predictions; or kWh of training
    plus the frame's ``queries``) on a log x axis;
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
    unit = {
        "inference": "Wh per 1,000 predictions",
        "lifecycle": f"kWh, training + {attrs.get('queries') or 0:,} queries",
    }.get(attrs["energy"], "kWh")
    ax.set_xlabel(f"{energy_col} ({unit}, log scale)")
    better = "higher" if attrs["greater_is_better"] else "lower"
    ax.set_ylabel(f"{metric} ({better} is better)")
    ax.set_title(f"{metric} vs energy: {len(front)} of {len(data)} versions on the Pareto front")
    ax.grid(alpha=0.3, which="both")
    if len(data):
        ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, format="png")
