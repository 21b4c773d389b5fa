"""The ``mlflow-green`` command."""

from __future__ import annotations

import sys

import click

from mlflow_green._version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mlflow-green")
def main() -> None:
    """Energy and carbon of machine learning in MLflow."""


@main.command()
@click.argument("country", required=False)
def countries(country: str | None) -> None:
    """List valid country codes, or the regions of COUNTRY, with their gCO2eq/kWh."""
    from mlflow_green import carbon

    try:
        if country is None:
            for code, name in carbon.available_countries().items():
                value = carbon.resolve_intensity(country=code).g_per_kwh
                click.echo(f"{code}  {value:8.1f}  {name}")
            return
        code = carbon.resolve_intensity(country=country).country or country
        regions = carbon.available_regions(code)
        if not regions:
            click.echo(f"{code} has no regional data; its value applies everywhere.")
        for region in regions:
            value = carbon.resolve_intensity(country=code, region=region).g_per_kwh
            click.echo(f"{region:28s} {value:8.1f}")
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


@main.command()
@click.option(
    "--tracking-uri",
    envvar="MLFLOW_TRACKING_URI",
    default=None,
    help="Upload here instead of the URI saved with each report.",
)
@click.option("--no-artifacts", is_flag=True, help="Upload metrics and tags only.")
def sync(tracking_uri: str | None, no_artifacts: bool) -> None:
    """Upload reports spooled while the tracking server was unreachable."""
    from mlflow_green import spool

    if not spool.pending():
        click.echo(f"Nothing to upload in {spool.spool_dir()}.")
        return
    failed = 0
    for result in spool.sync(tracking_uri=tracking_uri, log_artifacts=not no_artifacts):
        if result.ok:
            click.echo(f"uploaded run {result.run_id}")
        else:
            failed += 1
            click.echo(f"failed run {result.run_id}: {result.error} (kept {result.path})", err=True)
    sys.exit(1 if failed else 0)


class _BadInput(click.ClickException):
    """A message and exit code 2, like a usage error, without the usage line."""

    exit_code = 2


@main.command()
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
    type=click.Choice(["train", "inference"]),
    default="train",
    show_default=True,
    help="Training kWh of the run, or inference Wh per 1,000 predictions.",
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
@click.option(
    "--tracking-uri",
    envvar="MLFLOW_TRACKING_URI",
    default=None,
    help="Tracking server (and registry) to read; default MLFLOW_TRACKING_URI.",
)
def rank(
    metric: str,
    models: tuple[str, ...],
    lower_is_better: bool,
    energy: str,
    fmt: str,
    plot: str | None,
    tracking_uri: str | None,
) -> None:
    """Rank registered model versions by quality per kWh, with the Pareto front.

    Versions lacking the metric or the energy come last with a reason. Reads only.
    """
    from mlflow_green import compare

    try:
        frame = compare.rank_models(
            metric=metric,
            model_names=list(models) or None,
            greater_is_better=not lower_is_better,
            energy=energy,
            tracking_uri=tracking_uri,
        )
    except compare.RankingError as exc:
        raise _BadInput(str(exc)) from None
    if fmt == "json":
        click.echo(compare.to_json(frame))
    elif fmt == "csv":
        click.echo(frame.to_csv(index=False), nl=False)
    elif frame.empty:
        click.echo("No registered model versions.")
    else:
        click.echo(compare.to_table(frame))
    if plot:
        try:
            compare.plot_pareto(frame, plot)
        except OSError as exc:
            raise _BadInput(f"cannot write the plot to {plot!r}: {exc}") from None
        click.echo(f"Pareto plot written to {plot}", err=True)


# The registry commands live with the registry code.
from mlflow_green.cli_registry import budget, gate, promote  # noqa: E402

main.add_command(budget)
main.add_command(gate)
main.add_command(promote)

if __name__ == "__main__":
    main()
