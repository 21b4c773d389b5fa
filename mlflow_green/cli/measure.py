"""``mlflow-green countries``: the carbon intensities mlflow-green knows, by country and region."""

from __future__ import annotations

import click


@click.command()
@click.argument("country", required=False)
def countries(country: str | None) -> None:
    """List valid country codes, or the regions of COUNTRY, with their gCO2eq/kWh."""
    from mlflow_green.measure import carbon

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
