"""Estimating a planned job before it runs: its energy, CO2eq and cost, and how each was obtained.

The arithmetic of the ML CO2 Impact and Green Algorithms calculators and of
Patterson et al. 2021 ("Carbon Emissions and Large Neural Network Training"),
with every input validated and every figure labelled::

    accelerator_hours = count x hours                  (or given directly)
    power_w           = average W per accelerator      (given), else
                        TDP x utilisation              (the table in accelerators.py)
    energy_kwh        = power_w x accelerator_hours x pue / 1000
    co2eq_kg          = energy_kwh x g_per_kwh / 1000  (carbon.py: country, or world average)
    cost              = energy_kwh x price_per_kwh

Energy includes the facility overhead (PUE), as every kWh figure of mlflow-green
does, so it is the electricity the grid delivers: what emits and what is billed.
No MLflow here; :mod:`mlflow_green.cli.estimate` adds the registry budget check.
"""

from __future__ import annotations

import inspect
import math
import numbers
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from mlflow_green.measure import accelerators
from mlflow_green.measure._env import shown
from mlflow_green.measure.carbon import (
    CarbonIntensity,
    available_countries,
    co2eq_kg,
    resolve_intensity,
)
from mlflow_green.measure.config import parse_pue

#: Most watts one accelerator is taken to draw: the largest boards sold draw ~1-2.7 kW
#: (a GB200 superchip); more is a unit slip (mW, a whole node) rather than a device.
MAX_POWER_W = 10_000.0
_CURRENCY = re.compile(r"[A-Z]{3}")


@dataclass(frozen=True)
class JobEstimate:
    """Energy, emissions and cost of a planned job, how each was obtained, and the inputs used."""

    energy_kwh: float
    """Electricity drawn from the grid, kWh, facility overhead (PUE) included."""
    co2eq_kg: float | None
    """Emissions, kg CO2eq; None only when the carbon intensity is unknown."""
    cost: float | None
    """``energy_kwh x price_per_kwh`` in :attr:`currency`; None without a price."""
    currency: str | None
    """ISO 4217 code of :attr:`cost` (``"EUR"``), None when not given."""
    energy_method: str
    """How :attr:`energy_kwh` was obtained, e.g. ``"208 W average per accelerator (given)
    x 32,640 accelerator-hours x PUE 1.10"``."""
    co2eq_method: str
    """How :attr:`co2eq_kg` was obtained: the intensity and its source."""
    cost_method: str
    """How :attr:`cost` was obtained, or that no price was given."""
    accelerator: str | None
    """The table's name of the accelerator (or the name given beside ``power_w``)."""
    count: int
    """Accelerators (1 when ``accelerator_hours`` was given)."""
    hours: float | None
    """Wall-clock hours of the job; None when ``accelerator_hours`` was given."""
    accelerator_hours: float
    """Accelerator-hours: ``count x hours``, or as given."""
    power_w: float
    """Average W of one accelerator used: as given, or ``tdp_w x utilisation``."""
    power_basis: str
    """``"given"``, or what the table's figure is (``"TDP"``, ``"measured maximum"``)."""
    power_source: str
    """Where :attr:`power_w` comes from: ``"given"`` or the table's source document."""
    tdp_w: float | None
    """The table's figure for :attr:`accelerator` (W), None when ``power_w`` was given."""
    utilisation: float | None
    """Share of ``tdp_w`` drawn on average (0-1]; None when ``power_w`` was given."""
    pue: float
    """Power usage effectiveness of the facility (1.0-3.0)."""
    g_per_kwh: float | None
    """Grid carbon intensity used, gCO2eq/kWh."""
    intensity_source: str
    """Where :attr:`g_per_kwh` comes from (``"codecarbon energy mix"``, ``"user-supplied"``,
    ``"codecarbon world average (no location given)"``)."""
    country: str | None
    """ISO 3166-1 alpha-3 code of the location, when given."""
    price_per_kwh: float | None
    """Electricity price per kWh in :attr:`currency`, when given."""

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready."""
        return asdict(self)


def estimate(
    accelerator: str | None = None,
    count: int = 1,
    hours: float | None = None,
    accelerator_hours: float | None = None,
    power_w: float | None = None,
    utilisation: float | None = None,
    pue: float = 1.0,
    country: str | None = None,
    carbon_intensity: float | None = None,
    price_per_kwh: float | None = None,
    currency: str | None = None,
) -> JobEstimate:
    """Energy (kWh), CO2eq (kg) and cost of a planned job, and how each was obtained.

    Args:
        accelerator: a name from :data:`mlflow_green.measure.accelerators.ACCELERATORS`
            (any case, vendor name optional: ``"h100 sxm"``); its TDP is used unless
            ``power_w`` is given (then it is only a label).
        count: accelerators the job runs on (a whole number >= 1).
        hours: wall-clock hours of the job (> 0); give this or ``accelerator_hours``.
        accelerator_hours: accelerators x hours (> 0), instead of ``count`` and ``hours``.
        power_w: average power of one accelerator, W (> 0), e.g. measured on a short run.
        utilisation: share of the TDP drawn on average, in (0, 1]; 1.0 (the full TDP,
            an upper bound) when not given. Only with a TDP, not with ``power_w``.
        pue: power usage effectiveness of the data centre, 1.0 to 3.0.
        country: ISO 3166-1 alpha-3 code of where the job runs (``"FRA"``); the world
            average when neither it nor ``carbon_intensity`` is given.
        carbon_intensity: gCO2eq/kWh (0 to 2000), overriding the country's figure.
        price_per_kwh: electricity price per kWh (>= 0), in ``currency``.
        currency: ISO 4217 code of the price (3 letters, ``"EUR"``); needs ``price_per_kwh``.

    Raises:
        ValueError: naming the bad value, its argument and what is accepted.
    """
    given = dict(locals())  # exactly the arguments, by name
    return estimate_labelled(given, {name: name for name in ARGUMENTS})


#: The arguments of :func:`estimate`, in order (the CLI names each as ``--<name>``).
ARGUMENTS = tuple(inspect.signature(estimate).parameters)


def estimate_labelled(given: Mapping[str, Any], labels: Mapping[str, str]) -> JobEstimate:
    """:func:`estimate` of the arguments in ``given`` (missing ones take their defaults),
    with errors naming each argument as ``labels`` says (the CLI: ``{"hours": "--hours"}``)."""
    unknown = set(given) - set(ARGUMENTS)
    if unknown:
        raise TypeError(f"estimate() got unexpected arguments: {', '.join(sorted(unknown))}")
    args = {name: given.get(name) for name in ARGUMENTS}
    label = {name: labels.get(name, name) for name in ARGUMENTS}
    count = _count(1 if args["count"] is None else args["count"], label["count"])
    hours = _checked(args, label, "hours", "a positive number of hours", _positive)
    acc_hours = _checked(
        args, label, "accelerator_hours", "a positive number of accelerator-hours", _positive
    )
    power_w = _checked(args, label, "power_w", _POWER, lambda w: 0 < w <= MAX_POWER_W)
    utilisation = _checked(args, label, "utilisation", _UTILISATION, lambda u: 0 < u <= 1)
    pue = parse_pue(1.0 if args["pue"] is None else args["pue"], label["pue"])
    price = _checked(args, label, "price_per_kwh", _PRICE, lambda p: p >= 0)
    currency = _currency(args["currency"], label["currency"])
    intensity = _intensity(args["country"], args["carbon_intensity"], label)

    # How the arguments go together.
    if hours is None and acc_hours is None:
        raise ValueError(
            f"give {label['hours']} (with {label['count']}, the number of accelerators) or "
            f"{label['accelerator_hours']}: the job's duration is needed"
        )
    if hours is not None and acc_hours is not None:
        raise ValueError(
            f"give {label['hours']} or {label['accelerator_hours']}, not both "
            f"(got {label['hours']}={shown(args['hours'])} and "
            f"{label['accelerator_hours']}={shown(args['accelerator_hours'])})"
        )
    if acc_hours is not None and count != 1:
        raise ValueError(
            f"{label['count']}={shown(args['count'])} with {label['accelerator_hours']}: "
            f"accelerator-hours already count every accelerator; give {label['count']} "
            f"with {label['hours']}, or {label['accelerator_hours']} alone"
        )
    if power_w is not None and utilisation is not None:
        raise ValueError(
            f"{label['utilisation']}={shown(args['utilisation'])} with "
            f"{label['power_w']}={shown(args['power_w'])}: {label['power_w']} is already the "
            f"average power; {label['utilisation']} scales a TDP from the table "
            f"({label['accelerator']}=<name>). Give one of them."
        )
    if currency is not None and price is None:
        raise ValueError(
            f"{label['currency']}={shown(args['currency'])} without "
            f"{label['price_per_kwh']}: the currency is that of the price per kWh"
        )
    if power_w is None and args["accelerator"] is None:
        raise ValueError(
            f"give {label['accelerator']}=<name> (its TDP from the table; "
            f"`mlflow-green estimate --list-accelerators` lists them) or "
            f"{label['power_w']}=<average W per accelerator>"
        )

    # Power of one accelerator.
    name = args["accelerator"]
    tdp_w = None
    if power_w is None:
        board = accelerators.lookup(name, label["accelerator"], label["power_w"])
        name, tdp_w = board.name, board.power_w
        share = 1.0 if utilisation is None else utilisation
        power_w = tdp_w * share
        how = f"assumed: the full figure; give {label['utilisation']} for a lighter load"
        how = "given" if utilisation is not None else how
        power_text = (
            f"{format_figure(tdp_w)} W {board.basis} of {board.name} ({board.source}) "
            f"x utilisation {_share(share)} ({how})"
        )
        basis, source, utilisation = board.basis, board.source, share
    else:
        if name is not None:
            name = _known_name(name, label["accelerator"])
        power_text = f"{format_figure(power_w)} W average per accelerator (given)"
        basis = source = "given"

    if acc_hours is None:
        assert hours is not None
        acc_hours = count * hours
        unit = "accelerator" if count == 1 else "accelerators"
        per = f"{count:,} {unit} x {format_figure(hours)} h"
        hours_text = f"{format_figure(acc_hours)} accelerator-hours ({per})"
    else:
        hours_text = f"{format_figure(acc_hours)} accelerator-hours (given)"
    energy_kwh = power_w * acc_hours * pue / 1000.0
    energy_method = f"{power_text} x {hours_text} x PUE {_pue(pue)}"

    g = intensity.g_per_kwh
    co2 = co2eq_kg(energy_kwh, g)
    if g is None:
        co2_method = f"unknown carbon intensity ({intensity.source})"
    else:
        co2_method = f"{format_figure(energy_kwh)} kWh x {g:g} gCO2eq/kWh{_where(intensity)}"

    cost = None if price is None else energy_kwh * price
    if price is None:
        cost_method = f"no {label['price_per_kwh']} given"
    else:
        per = f"{currency}/kWh" if currency else "per kWh (no currency given)"
        cost_method = f"{format_figure(energy_kwh)} kWh x {price:g} {per} (given)"

    return JobEstimate(
        energy_kwh=energy_kwh,
        co2eq_kg=co2,
        cost=cost,
        currency=currency,
        energy_method=energy_method,
        co2eq_method=co2_method,
        cost_method=cost_method,
        accelerator=name,
        count=count,
        hours=hours,
        accelerator_hours=acc_hours,
        power_w=power_w,
        power_basis=basis,
        power_source=source,
        tdp_w=tdp_w,
        utilisation=utilisation,
        pue=pue,
        g_per_kwh=g,
        intensity_source=intensity.source,
        country=intensity.country,
        price_per_kwh=price,
    )


_UTILISATION = "a share of the TDP above 0 and at most 1 (e.g. 0.7 for 70%)"
_POWER = f"a positive number of watts (above 0 and at most {MAX_POWER_W:,.0f})"
_PRICE = "a price per kWh of 0 or more (e.g. 0.25)"


def _number(value: Any, label: str, expected: str) -> float:
    """``value`` as a finite float; ``ValueError`` naming ``label`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{label}={shown(value)} is not a number: expected {expected}")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(f"{label}={shown(value)} is out of range: expected {expected}") from None
    if not math.isfinite(number):
        raise ValueError(f"{label}={shown(value)} is not a finite number: expected {expected}")
    return number


def _positive(number: float) -> bool:
    return number > 0


def _checked(
    args: Mapping[str, Any],
    labels: Mapping[str, str],
    name: str,
    expected: str,
    accepted: Callable[[float], bool],
) -> float | None:
    """Argument ``name``: None, or a finite number that ``accepted`` takes; else
    ``ValueError`` naming its label, the value and what is ``expected``."""
    value = args[name]
    if value is None:
        return None
    number = _number(value, labels[name], expected)
    if not accepted(number):
        raise ValueError(f"{labels[name]}={shown(value)} is out of range: expected {expected}")
    return number


def _count(value: Any, label: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(
            f"{label}={shown(value)} is not a number of accelerators: expected a whole "
            "number of 1 or more"
        )
    return int(value)


def _currency(value: Any, label: str) -> str | None:
    if value is None:
        return None
    code = value.strip().upper() if isinstance(value, str) else None
    if code is None or not _CURRENCY.fullmatch(code):
        raise ValueError(
            f"{label}={shown(value)} is not a currency code: expected 3 letters A-Z, "
            "an ISO 4217 code such as EUR, USD or GBP"
        )
    return code


def _intensity(country: Any, carbon_intensity: Any, label: Mapping[str, str]) -> CarbonIntensity:
    """carbon.py's intensity of ``country`` (or the world average), ``carbon_intensity``
    overriding it; its errors under this function's argument names."""
    if isinstance(carbon_intensity, str):  # a series or provider needs a run's timeline
        raise ValueError(
            f"{label['carbon_intensity']}={carbon_intensity!r} is not a number: expected "
            "gCO2eq/kWh (0 to 2000); a planned job has no power timeline to weight a time "
            "series or a live provider by"
        )
    try:
        return resolve_intensity(
            country=country,
            carbon_intensity=carbon_intensity,
            labels={"country": label["country"], "carbon_intensity": label["carbon_intensity"]},
        )
    except ValueError as exc:
        # carbon.py's hint names autolog's setting and variable; here it is an argument.
        text = str(exc).replace(
            "carbon_intensity=<g/kWh> or MLFLOW_GREEN_CARBON_INTENSITY",
            f"{label['carbon_intensity']}=<g/kWh>",
        )
        raise ValueError(text) from None


def _known_name(name: Any, label: str) -> str:
    """The table's name for ``name`` if it has one, else ``name`` as given (a label only)."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{label}={shown(name)} is not a name: expected an accelerator name")
    try:
        return accelerators.lookup(name, label).name
    except ValueError:
        return name.strip()


def _where(intensity: CarbonIntensity) -> str:
    """Where an intensity comes from, for the method: `` (given)``, ``, France (FRA), ...``."""
    if intensity.source == "user-supplied":
        return " (given" + (f"; location {intensity.country})" if intensity.country else ")")
    if intensity.country:
        country_name = available_countries().get(intensity.country, intensity.country)
        return f", {country_name} ({intensity.country}), {intensity.source}"
    return f", {intensity.source}"


def _share(utilisation: float) -> str:
    text = f"{utilisation:g}"
    return text if "." in text or "e" in text else text + ".0"


def _pue(pue: float) -> str:
    """``1.10`` for 1.1 (two decimals, as PUEs are quoted), more digits only when given."""
    text = f"{pue:.2f}"
    return text if float(text) == pue else f"{pue:g}"


def format_figure(value: float) -> str:
    """A figure for a method string: whole numbers in full with thousands separators,
    others to 4 significant digits (``32,640``, ``7,468``, ``85.33``, ``0.001235``)."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    digits = math.floor(math.log10(abs(value))) + 1
    text = f"{value:,.{max(0, 4 - digits)}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text
