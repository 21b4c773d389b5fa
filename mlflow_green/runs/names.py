"""The contract's names for a report: the ``green/*`` metrics and ``green.*`` tags a run gets.

The mapping of an :class:`~mlflow_green.measure.report.EnergyReport` onto the
metric and tag names of DESIGN.md's public contract, in one place.
"""

from __future__ import annotations

from mlflow_green.measure.footprint import FOOTPRINT_FIGURES, Figure
from mlflow_green.measure.meters import DOMAINS
from mlflow_green.measure.report import EnergyReport, or_unknown


def final_metrics(report: EnergyReport) -> dict[str, float]:
    """The run's summary metrics: ``green/energy_kwh``, ``green/co2eq_kg`` (not when the
    intensity is unknown: no value is better than a made-up one), ``green/duration_s`` and
    ``green/energy/<domain>_kwh`` of each domain that has a meter (a machine without a GPU
    gets no ``gpu_kwh``: a charted 0 would read as a measurement). Logged at every flush
    too, so that each figure's history is a line, not a lone point."""
    out = cumulative_metrics(report)
    out["green/duration_s"] = report.duration_s
    for domain, kwh in report.energy_kwh_by_domain.items():
        if report.methods.get(domain, "none") != "none":
            out[f"green/energy/{domain}_kwh"] = kwh
    return out


def cumulative_metrics(report: EnergyReport) -> dict[str, float]:
    """What a periodic flush logs, so a run that dies keeps what was measured:
    ``green/energy_kwh`` and, when the intensity is known, ``green/co2eq_kg``; and the
    footprint figures whose settings were given (:data:`FOOTPRINT_METRICS`)."""
    out = {"green/energy_kwh": report.energy_kwh}
    co2eq = report.co2eq_kg
    if co2eq is not None:
        out["green/co2eq_kg"] = co2eq
    out.update(footprint_metrics(report))
    return out


#: Metric of each footprint figure (:attr:`EnergyReport.footprint_figures`).
FOOTPRINT_METRICS = {name: f"green/{name}" for name in FOOTPRINT_FIGURES}


def footprint_metrics(report: EnergyReport) -> dict[str, float]:
    """``green/cost``, ``green/water_l``, ``green/embodied_co2eq_kg``: each only when its
    settings were given (an unknown figure is no metric, never 0)."""
    return figure_metrics(report.footprint_figures)


def figure_metrics(figures: dict[str, Figure]) -> dict[str, float]:
    """The metric of each footprint figure (``Footprint.figures``) that is known."""
    return {
        FOOTPRINT_METRICS[name]: figure.value
        for name, figure in figures.items()
        if figure.value is not None
    }


def timeline_metrics(
    report: EnergyReport, after_s: float = float("-inf"), until_s: float = float("inf")
) -> list[tuple[str, float, int, int]]:
    """``(key, watts, step, timestamp_ms)`` for timeline points with ``after_s < t_s <= until_s``.

    Step is whole seconds since the run started; the timestamp keeps points of
    sub-second timelines apart. Watts keep three significant digits: what the meters
    resolve, and a constant estimate then charts flat instead of auto-scaled µW jitter.
    """
    rows = []
    for point in (p for p in report.timeline if after_s < p.t_s <= until_s):
        ts = int((report.start_time_s + point.t_s) * 1000)
        for domain, watts in point.power_w.items():
            if report.methods.get(domain, "none") != "none":
                rows.append((f"green/power/{domain}_w", significant(watts), int(point.t_s), ts))
    return rows


def significant(value: float, digits: int = 3) -> float:
    """``value`` rounded to ``digits`` significant digits."""
    return float(f"{value:.{digits}g}")


def tags(report: EnergyReport) -> dict[str, str]:
    """The ``green.*`` tags: location, intensity, PUE, meters, hardware, scope, version;
    ``green.currency`` when a currency was given.

    An unknown intensity is tagged ``"unknown"``; its source tag says why.
    """
    out = {
        "green.country": report.country or "unknown",
        "green.carbon_intensity_g_per_kwh": or_unknown(report.carbon_intensity_g_per_kwh),
        "green.carbon_intensity_source": report.intensity_source,
        "green.pue": f"{report.pue:g}",
        "green.scope": report.scope,
        "green.version": report.version,
        "green.hardware": " | ".join(h for h in report.hardware.values() if h) or "unknown",
    }
    for domain in DOMAINS:
        out[f"green.{domain}_meter"] = report.methods.get(domain, "none")
    if report.region:
        out["green.region"] = report.region
    if report.cloud_provider:
        out["green.cloud"] = f"{report.cloud_provider}:{report.cloud_region}"
    if report.footprint.currency:
        out["green.currency"] = report.footprint.currency
    if report.failures:
        out["green.meter_failures"] = "; ".join(f"{d}: {r}" for d, r in report.failures.items())
    # MLflow caps tag values at 8000 characters.
    return {k: v[:8000] for k, v in out.items()}
