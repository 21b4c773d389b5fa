"""``mlflow-green report``: an experiment's runs side by side in one self-contained HTML file.

The page itself is :mod:`mlflow_green.runs.experiment_page`; this module checks the
options (before connecting), reads the runs and writes the file. MLflow is imported
when the command runs, so that ``mlflow-green --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import click

from mlflow_green.cli._common import (
    BadInput,
    StoreURI,
    connect,
    require_text,
    tracking_uri_option,
)

DEFAULT_METRIC = "accuracy"
#: Experiment names an error lists at most.
_LISTED = 30


@click.command()
@click.option("--experiment", required=True, metavar="NAME", help="Experiment to report on.")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    metavar="FILE.html",
    help="Where to write the report (overwritten).",
)
@click.option(
    "--metric",
    default=None,
    metavar="M",
    help=f"Quality metric of the runs; default {DEFAULT_METRIC} when the runs have it.",
)
@click.option(
    "--lower-is-better", is_flag=True, help="The metric is an error (rmse, loss): lower wins."
)
@tracking_uri_option()
def report(
    experiment: str,
    output: str,
    metric: str | None,
    lower_is_better: bool,
    tracking_uri: str | None,
) -> None:
    """Write an experiment's runs side by side: quality against energy, with the Pareto front.

    Reads only. The chart's energy is each run's train phase where it has one, else the
    whole run's (as mlflow-green rank).
    """
    _check_options(experiment, output, metric)
    from mlflow_green.runs.experiment_page import metric_names, read_runs, render_experiment_page

    client, store = connect(tracking_uri, registry=False)
    uri = store.uri
    with _reading(store):
        found = client.get_experiment_by_name(experiment)
        if found is None:
            names = sorted(e.name for e in client.search_experiments())
            listed = ", ".join(repr(n) for n in names[:_LISTED]) or "no experiments"
            more = f" and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
            raise BadInput(
                f"--experiment {experiment!r}: no such experiment at {uri} ({store.source}); "
                f"it has: {listed}{more}"
            )
        runs = read_runs(client, found.experiment_id)
    available = metric_names(runs)
    if metric is None:
        if DEFAULT_METRIC not in available:
            raise BadInput(
                f"the runs of {experiment!r} have no {DEFAULT_METRIC!r} metric; choose one with "
                f"--metric: {', '.join(available) or 'they have no metrics'}"
            )
        metric = DEFAULT_METRIC
    elif metric not in available:
        raise BadInput(
            f"--metric {metric!r}: no run of {experiment!r} has it; they have: "
            f"{', '.join(available) or 'no metrics'}"
        )
    page = render_experiment_page(experiment, runs, metric, not lower_is_better, source=uri)
    try:
        with open(output, "w", encoding="utf-8") as f:
            f.write(page)
    except OSError as exc:
        raise BadInput(f"-o {output!r}: cannot write the report: {exc}") from None
    click.echo(f"Report on {len(runs)} run(s) of {experiment!r} written to {output}")


@contextlib.contextmanager
def _reading(store: StoreURI) -> Iterator[None]:
    """MLflow's failures while reading (a connection lost midway) as one ``Error:`` line."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        why = " ".join(str(exc.message).split())
        raise BadInput(f"cannot read {store.uri} ({store.source}): {why}") from None
    except OSError as exc:  # requests' errors are OSErrors too
        raise BadInput(f"cannot read {store.uri} ({store.source}): {exc}") from None


def _check_options(experiment: str, output: str, metric: str | None) -> None:
    """Bad options are reported before anything connects."""
    require_text(experiment, "--experiment", "the name of an experiment")
    if metric is not None:
        require_text(metric, "--metric", "the name of a metric the runs logged")
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        raise BadInput(f"-o {output!r}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise BadInput(f"-o {output!r}: the folder {folder} is not writable")
