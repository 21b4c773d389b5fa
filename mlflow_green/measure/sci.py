"""Software Carbon Intensity (ISO/IEC 21031:2024): ``SCI = ((E x I) + M) per R``.

``E`` is the energy (kWh, PUE included), ``I`` the grid's carbon intensity
(gCO2eq/kWh), ``M`` the embodied emissions of the hardware's share used, and ``R`` the
functional unit: one training run; 1,000 queries or one output token for inference
(the Green Software Foundation's SCI for AI, 2025, names these consumer and provider
units). The figures are derived here from mlflow-green's own measurements, never copied
from the specification's worked examples (REFERENCE.md: they contain unit slips).

``M`` unknown (no ``embodied_co2eq_kg``/``lifetime_years`` given) makes the SCI
unknown, not ``E x I`` alone: a score without its embodied term would read lower than
the standard's. The operational part ``E x I`` per unit is still given beside it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

#: Functional units: a training run; inference per 1,000 queries and per output token.
PER_RUN, PER_1K_QUERIES, PER_TOKEN = "run", "1,000 queries", "output token"


@dataclass(frozen=True)
class SCIScore:
    """SCI per one functional unit, in grams of CO2eq, with its two terms."""

    unit: str
    """The functional unit R: :data:`PER_RUN`, :data:`PER_1K_QUERIES` or :data:`PER_TOKEN`."""
    sci_g: float | None
    """``(E x I + M) / R``, gCO2eq per unit; None when either term is unknown."""
    operational_g: float | None
    """``E x I / R``, gCO2eq per unit; None when the carbon intensity is unknown."""
    embodied_g: float | None
    """``M / R``, gCO2eq per unit; None when no embodied figure was given."""
    method: str
    """How it was obtained, or why it is unknown."""

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready."""
        return asdict(self)


def sci(
    co2eq_kg: float | None, embodied_co2eq_kg: float | None, units: float, unit: str
) -> SCIScore:
    """The SCI of ``units`` functional units (``unit``) that emitted ``co2eq_kg`` (E x I,
    kg) and used ``embodied_co2eq_kg`` (M, kg) of the hardware's manufacturing emissions.

    Raises ``ValueError`` unless ``units`` is a positive count.
    """
    if not units > 0:
        raise ValueError(f"units={units!r}: expected a positive number of {unit}s")
    per = 1000.0 / units  # kg -> g, per unit
    operational = None if co2eq_kg is None else co2eq_kg * per
    embodied = None if embodied_co2eq_kg is None else embodied_co2eq_kg * per
    missing = [
        why
        for why, value in (
            ("the carbon intensity is unknown", operational),
            ("no embodied emissions given (embodied_co2eq_kg, lifetime_years)", embodied),
        )
        if value is None
    ]
    if missing:
        return SCIScore(unit, None, operational, embodied, "unknown: " + "; ".join(missing))
    assert operational is not None and embodied is not None
    count = f"{units:,.0f}" if units == int(units) else f"{units:g}"
    method = f"(E x I + M) / R: ({operational / per:.6g} + {embodied / per:.6g}) kg / {count}"
    return SCIScore(unit, operational + embodied, operational, embodied, method)
