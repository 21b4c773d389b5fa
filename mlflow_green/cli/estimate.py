"""``mlflow-green estimate``: a planned job's energy, CO2eq and cost, by location, against a budget.

The figures are :func:`mlflow_green.measure.planning.estimate`'s; this module adds
the comparison of one job across several locations (``--country`` repeated: one
row each, in the order given, with each row's CO2eq as a multiple of the lowest),
the accelerator table (``--list-accelerators``) and the check of the planned job
against a registered model's budget (``--against MODEL``: its ``green.budget_kwh``
and ``green.budget_co2eq_kg`` tags, read as ``mlflow-green gate`` reads them).

Every argument is checked, and every row computed, before any store is opened.

Exit codes: 0 estimated (with ``--against``: every row fits every budget, or the
model has none); 1 a row over a budget, its CO2eq unknown under a CO2eq budget, or a
budget tag that is not a plain decimal; 2 bad input, unknown model, missing or
unusable store, server unreachable, as ``Error: ...``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Any

import click

from mlflow_green.cli._common import (
    EXIT_OK,
    EXIT_REFUSED,
    BadInput,
    require_text,
    tracking_uri_option,
)

#: The option of each argument of ``estimate()``: ``hours`` -> ``--hours``.
_OPTION = {
    name: "--" + name.replace("_", "-")
    for name in (
        "accelerator",
        "count",
        "hours",
        "accelerator_hours",
        "power_w",
        "utilisation",
        "pue",
        "country",
        "carbon_intensity",
        "price_per_kwh",
        "currency",
    )
}


@click.command()
@click.option(
    "--accelerator",
    metavar="NAME",
    help="Accelerator from --list-accelerators; "
    "its TDP x --utilisation is the power of each, unless --power-w is given.",
)
@click.option(
    "--count",
    type=int,
    default=None,
    metavar="N",
    help="Number of accelerators (default 1), with --hours.",
)
@click.option("--hours", type=float, default=None, metavar="H", help="Wall-clock hours of the job.")
@click.option(
    "--accelerator-hours",
    type=float,
    default=None,
    metavar="H",
    help="Accelerators x hours, instead of --count and --hours.",
)
@click.option(
    "--power-w",
    type=float,
    default=None,
    metavar="W",
    help="Average power of one accelerator, W (e.g. measured on a short run).",
)
@click.option(
    "--utilisation",
    type=float,
    default=None,
    metavar="SHARE",
    help="Share of the TDP drawn on average, above 0 and at most 1 (default 1.0).",
)
@click.option(
    "--pue",
    type=float,
    default=None,
    metavar="PUE",
    help="Power usage effectiveness of the data centre, 1.0-3.0 (default 1.0).",
)
@click.option(
    "--country",
    "countries",
    multiple=True,
    metavar="CODE",
    help="ISO alpha-3 code of where the job runs (default: the world average); "
    "repeat it to compare locations, one row each.",
)
@click.option(
    "--carbon-intensity",
    type=float,
    default=None,
    metavar="G_PER_KWH",
    help="Grid carbon intensity, gCO2eq/kWh, instead of the country's.",
)
@click.option(
    "--price-per-kwh",
    type=float,
    default=None,
    metavar="PRICE",
    help="Electricity price per kWh, for the cost.",
)
@click.option(
    "--currency", default=None, metavar="CODE", help="ISO 4217 code of --price-per-kwh, e.g. EUR."
)
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@click.option(
    "--list-accelerators",
    is_flag=True,
    help="Print the accelerators' power figures with their sources, and exit.",
)
@click.option(
    "--against",
    "model",
    default=None,
    metavar="MODEL",
    help="Check the planned job against registered model MODEL's budget "
    "(exit 1 if it does not fit).",
)
@tracking_uri_option(
    "With --against: the MLflow tracking server or store whose registry holds MODEL "
    "(default: MLFLOW_TRACKING_URI, else MLflow's default sqlite:///mlflow.db in the "
    "current folder)."
)
def estimate(
    fmt: str,
    list_accelerators: bool,
    model: str | None,
    tracking_uri: str | None,
    countries: tuple[str, ...],
    **given: Any,
) -> None:
    """Energy, CO2eq and cost of a planned job, before it runs.

    \b
    mlflow-green estimate --accelerator h100-sxm --count 64 --hours 72 --pue 1.1 \\
        --country FRA --country DEU --country USA --utilisation 0.7
    mlflow-green estimate --power-w 300 --accelerator-hours 5000 --against my-model

    Exit 0, or with --against: 0 fits the budget (or none is set), 1 over budget, 2 error.
    """
    if list_accelerators:
        named = [_OPTION[k] for k, v in given.items() if v is not None]
        named += ["--country"] * bool(countries) + ["--against"] * (model is not None)
        if named:
            raise BadInput(f"--list-accelerators takes no job options (got {', '.join(named)})")
        _print_accelerators(fmt)
        return
    if tracking_uri is not None and model is None:
        raise BadInput("--tracking-uri is only read with --against MODEL (the budget's registry)")
    if model is not None:
        require_text(model, "--against", "the name of a registered model")
    rows = _estimates(given, countries)
    verdict = None
    if model is not None:
        budgets = _read_budgets(model, tracking_uri)
        verdict = _verdict(model, budgets, rows)
    if fmt == "json":
        payload: dict[str, Any] = {"estimates": [row.to_dict() for row in rows]}
        if verdict is not None:
            payload["against"] = verdict
        click.echo(json.dumps(payload, indent=2))
    else:
        click.echo(_table(rows))
        if verdict is not None:
            for line in verdict["lines"]:
                click.echo(line)
    if verdict is not None:
        sys.exit(EXIT_OK if verdict["fits"] else EXIT_REFUSED)


def _estimates(given: dict[str, Any], countries: tuple[str, ...]) -> list[Any]:
    """One estimate per location (one row without ``--country``); bad input is :class:`BadInput`."""
    from mlflow_green.measure.planning import estimate_labelled

    if len(countries) > 1 and given.get("carbon_intensity") is not None:
        raise BadInput(
            "--carbon-intensity replaces the location's intensity, so every --country row "
            f"would be the same: give it with at most one --country (got {len(countries)})"
        )
    rows = []
    seen = set()
    for country in countries or (None,):
        try:
            row = estimate_labelled({**given, "country": country}, _OPTION)
        except ValueError as exc:
            raise BadInput(str(exc)) from None
        if row.country not in seen or row.country is None:  # --country fra --country FRA: once
            seen.add(row.country)
            rows.append(row)
    return rows


def _read_budgets(model: str, tracking_uri: str | None) -> dict[str, str]:
    """The budget tags of ``model`` as stored (raw strings), read from its registry."""
    from mlflow_green.cli.registry import _connect, _plainly

    client, where = _connect(tracking_uri)
    from mlflow_green.registry.budgets import get_budget

    with _plainly(client, where, model):
        return get_budget(model, client=client)


def _verdict(model: str, tags: dict[str, str], rows: list[Any]) -> dict[str, Any]:
    """Whether each row fits ``model``'s budgets (``tags``), judged by the rule of ``gate``
    (:func:`mlflow_green.registry.rule.judge`): a value equal to its budget fits; an unknown
    CO2eq does not fit a CO2eq budget; a tag that is not a plain decimal refuses. The job
    fits when every row does."""
    from mlflow_green.measure.planning import format_figure as fmt
    from mlflow_green.registry.rule import (
        BUDGET_CO2EQ_TAG,
        BUDGET_KWH_TAG,
        CO2EQ_METRIC,
        ENERGY_METRIC,
        judge,
    )

    judged = [judge(tags, {ENERGY_METRIC: r.energy_kwh, CO2EQ_METRIC: r.co2eq_kg}) for r in rows]
    budgets = {j.tag: j.budget for j in judged[0]} if judged else {}
    out: dict[str, Any] = {
        "model": model,
        "budget_kwh": budgets.get(BUDGET_KWH_TAG),
        "budget_co2eq_kg": budgets.get(BUDGET_CO2EQ_TAG),
        "rows": [],
    }
    if not tags:
        out["fits"] = True
        out["lines"] = [
            f"model '{model}' has no energy or carbon budget ({BUDGET_KWH_TAG}, "
            f"{BUDGET_CO2EQ_TAG}): nothing to check"
        ]
        return out
    lines = []
    for row, judgements in zip(rows, judged, strict=True):
        invalid = [
            f"the budget tag {j.tag}={tags[j.tag]!r} of model '{model}' is invalid "
            f"({j.invalid}); it must be a plain non-negative decimal number of {j.unit}, "
            "such as 0.5"
            for j in judgements
            if j.invalid is not None
        ]
        failures, within = list(invalid), []
        for j in (j for j in judgements if j.invalid is None):
            what = "energy" if j.metric == ENERGY_METRIC else "CO2eq"
            budget = f"{fmt(j.budget or 0.0)} {j.unit} ({j.tag})"
            if j.value is None:
                failures.append(f"{what} unknown, so it cannot pass the budget ({j.tag})")
            elif not j.passed:
                failures.append(
                    f"planned {what} {fmt(j.value)} {j.unit} exceeds the budget of {budget}"
                )
            else:
                within.append(
                    f"planned {what} {fmt(j.value)} {j.unit} within the budget of {budget}"
                )
        fits = not failures
        where = f" {row.country}" if len(rows) > 1 else ""
        reason = f"model '{model}': " + "; ".join(failures or within)
        lines.append(f"{'PASS' if fits else 'FAIL'}{where}: {reason}")
        out["rows"].append({"country": row.country, "fits": fits, "reason": reason})
    out["fits"] = all(r["fits"] for r in out["rows"])
    out["lines"] = lines
    return out


def _table(rows: list[Any]) -> str:
    """The estimate as text: energy and cost with their methods, then CO2eq (one line per
    location when there are several, each as a multiple of the lowest)."""
    from mlflow_green.measure.planning import format_figure as num

    first = rows[0]
    lines = [f"energy  {num(first.energy_kwh)} kWh", f"        {first.energy_method}"]
    if first.cost is not None:
        lines += [f"cost    {num(first.cost)} {first.currency or ''}".rstrip()]
        lines += [f"        {first.cost_method}"]
    if len(rows) == 1:
        co2 = "unknown" if first.co2eq_kg is None else f"{num(first.co2eq_kg)} kg"
        lines += [f"CO2eq   {co2}", f"        {first.co2eq_method}"]
        return "\n".join(lines)
    from mlflow_green.measure.carbon import available_countries

    names = available_countries()
    known = [r.co2eq_kg for r in rows if r.co2eq_kg is not None]
    lowest = min(known) if known else None
    lines.append("CO2eq by location (same energy; the grid's intensity differs):")
    lines.append(f"  {'country':30s}{'gCO2eq/kWh':>12s}{'CO2eq kg':>14s}{'x lowest':>10s}")
    for row in rows:
        name = names.get(row.country or "", "")[:20]
        g = "unknown" if row.g_per_kwh is None else f"{row.g_per_kwh:.1f}"
        co2 = "unknown" if row.co2eq_kg is None else num(row.co2eq_kg)
        ratio = "-"
        if row.co2eq_kg is not None and lowest:
            ratio = f"{row.co2eq_kg / lowest:.1f}"
        lines.append(f"  {row.country or '-':8s}{name:22s}{g:>12s}{co2:>14s}{ratio:>10s}")
    lines.append(f"  intensities: {rows[0].intensity_source}")
    return "\n".join(lines)


def _print_accelerators(fmt: str) -> None:
    from mlflow_green.measure.accelerators import ACCELERATORS

    if fmt == "json":
        click.echo(json.dumps([asdict(acc) for acc in ACCELERATORS], indent=2))
        return
    for acc in ACCELERATORS:
        note = f" [{acc.note}]" if acc.note else ""
        click.echo(f"{acc.name:26s}{acc.power_w:6.0f} W  {acc.basis}{note}")
        click.echo(f"{'':26s}source: {acc.source}")
