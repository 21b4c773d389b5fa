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


if __name__ == "__main__":
    main()
