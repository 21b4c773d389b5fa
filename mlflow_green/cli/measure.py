"""``mlflow-green countries``: the carbon intensities mlflow-green knows, by country and region."""

from __future__ import annotations

import click

from mlflow_green.cli._common import BadInput


@click.command()
@click.argument("country", required=False)
def countries(country: str | None) -> None:
    """List valid country codes, or the regions of COUNTRY, with their gCO2eq/kWh."""
    from mlflow_green.measure import carbon

    if country is None:
        for code, name in carbon.available_countries().items():
            value = carbon.resolve_intensity(country=code).g_per_kwh
            click.echo(f"{code}  {value:8.1f}  {name}")
        return
    code = country.strip().upper()
    if code not in carbon.available_countries():
        hint = carbon.did_you_mean_country(country)
        raise BadInput(
            f"COUNTRY {country!r} is not a known country code.{hint} Expected an ISO 3166-1 "
            "alpha-3 code, e.g. FRA; `mlflow-green countries` lists all "
            f"{len(carbon.available_countries())}."
        )
    regions = carbon.available_regions(code)
    if not regions:
        click.echo(f"{code} has no regional data; its value applies everywhere.")
    for region in regions:
        value = carbon.resolve_intensity(country=code, region=region).g_per_kwh
        click.echo(f"{region:28s} {value:8.1f}")
