"""The footprint beyond energy and CO2eq: electricity cost, water, and embodied emissions.

Seven settings (``autolog``/``track`` arguments, each also ``MLFLOW_GREEN_<NAME>``,
resolved in :mod:`mlflow_green.measure.config`) turn a run's measured energy and
duration into three figures. With E the run's energy in kWh (PUE included, as
``green/energy_kwh``), E_dev the devices' own energy in kWh (no PUE) and t its
duration in seconds:

* ``cost = E x price_per_kwh``, in ``currency`` (an ISO 4217 code), the whole
  facility's draw being what a power bill counts;
* ``water_l = E_dev x wue_l_per_kwh + E x electricity_water_l_per_kwh``: on-site
  water usage effectiveness (The Green Grid's WUE, White Paper #35, 2011: a site's
  water in litres per kWh of IT equipment energy, hence the devices' energy) plus,
  optionally, the water consumed off-site to generate the electricity the facility
  draws. This is Li, Yang, Islam & Ren (2023), "Making AI Less Thirsty: Uncovering
  and Addressing the Secret Water Footprint of AI Models" (arXiv:2304.03271):
  server energy x (on-site WUE + PUE x off-site EWIF);
* ``embodied_co2eq_kg = embodied_co2eq_kg x t / (lifetime_years x 365.25 x 86400 s)
  x reserved_share``: the share of the machine's manufacturing emissions the run
  used, SCI's ``M = TE x (TiR / EL) x (RR / ToR)`` (ISO/IEC 21031:2024, Green
  Software Foundation): total embodied emissions x time reserved / expected
  lifetime x resources reserved / total resources.

No setting has a default figure: manufacturers' product carbon footprints differ by
model and configuration and no open source gives one figure per device that could
be quoted for every machine, so the user gives them. A figure whose settings are
missing is unknown (``None``, with the reason), never 0. Each figure comes with a
one-line method (``"0.42 kWh x 0.25 EUR/kWh (given)"``) for ``report.json``.

No MLflow here, and nothing but the standard library.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from mlflow_green.measure._env import bounded_number, shown

__all__ = [
    "ELECTRICITY_WATER_BOUNDS_L_PER_KWH",
    "EMBODIED_BOUNDS_KG",
    "FOOTPRINT_FIGURES",
    "FOOTPRINT_SETTINGS",
    "ISO_4217_CODES",
    "LIFETIME_BOUNDS_YEARS",
    "PRICE_BOUNDS_PER_KWH",
    "SECONDS_PER_YEAR",
    "WUE_BOUNDS_L_PER_KWH",
    "Figure",
    "Footprint",
    "parse_currency",
]

#: The settings, in the order of the arguments.
FOOTPRINT_SETTINGS = (
    "price_per_kwh",
    "currency",
    "wue_l_per_kwh",
    "electricity_water_l_per_kwh",
    "embodied_co2eq_kg",
    "lifetime_years",
    "reserved_share",
)
#: The figures, as :meth:`Footprint.figures` names them (metric ``green/<name>``).
FOOTPRINT_FIGURES = ("cost", "water_l", "embodied_co2eq_kg")
#: A Julian year, the year of ``lifetime_years``.
SECONDS_PER_YEAR = 365.25 * 86400

#: ISO 4217 List One (current currency and funds codes), as the standard's maintenance
#: agency SIX Financial Information AG publishes it
#: (https://www.six-group.com/en/products-services/financial-information/data-standards.html):
#: the list published 2025-05-12 less BGN, withdrawn when Bulgaria adopted the euro on
#: 2026-01-01 (as in Debian's iso-codes ``iso_4217.json``). Funds (BOV, CLF, ...), precious
#: metals (XAU, ...) and X codes (XDR, XTS, XXX) are in it, as in the standard.
_LIST_ONE = """
    AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BHD BIF BMD BND BOB BOV BRL BSD BTN BWP
    BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN
    ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK
    JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD
    MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP
    PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP
    SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU UYW UZS VED VES VND VUV
    WST XAD XAF XAG XAU XBA XBB XBC XBD XCD XCG XDR XOF XPD XPF XPT XSU XTS XUA XXX YER ZAR
    ZMW ZWG
"""
ISO_4217_CODES: tuple[str, ...] = tuple(_LIST_ONE.split())
_ACTIVE = frozenset(ISO_4217_CODES)
#: List One codes that name no money a price could be in.
_NOT_MONEY = {"XTS": "testing", "XXX": "transactions without a currency"}
#: Codes withdrawn from List One, and the code that replaced each (ISO 4217 List Three).
_WITHDRAWN = {
    "ANG": "XCG",
    "BGN": "EUR",
    "BYR": "BYN",
    "CUC": "CUP",
    "EEK": "EUR",
    "HRK": "EUR",
    "LTL": "EUR",
    "LVL": "EUR",
    "MRO": "MRU",
    "SLL": "SLE",
    "STD": "STN",
    "VEF": "VES",
    "ZWL": "ZWG",
}
_THREE_LETTERS = re.compile(r"[A-Z]{3}")

#: ``price_per_kwh``: 0 is allowed (own generation, electricity included in a rent). The
#: top is generous because the price is in any currency's units: a kWh costs thousands of
#: Vietnamese dong, tens of thousands of Lebanese pounds; beyond a million units it is a
#: price per MWh, or in a smaller unit, rather than per kWh.
PRICE_BOUNDS_PER_KWH = (0.0, 1e6)
#: ``wue_l_per_kwh``: 0 for air-cooled sites and dry coolers; reported sites use up to a
#: few L/kWh (the US average was about 1.8 L/kWh, Shehabi et al. 2016, LBNL); above 20 is
#: a unit slip (millilitres, or gallons per MWh) rather than a cooling system.
WUE_BOUNDS_L_PER_KWH = (0.0, 20.0)
#: ``electricity_water_l_per_kwh``: 0 for wind and solar; thermal plants consume a few
#: L/kWh, and hydropower's reservoir evaporation, as some studies count it, reaches tens
#: of L/kWh; above 100 is a unit slip.
ELECTRICITY_WATER_BOUNDS_L_PER_KWH = (0.0, 100.0)
#: ``embodied_co2eq_kg``: a laptop's manufacturing is a few hundred kg CO2eq, a GPU server's
#: a few tonnes; a million kg (1,000 t, hundreds of servers) covers a whole cluster given
#: as one machine. 0 is allowed: embodied emissions counted elsewhere.
EMBODIED_BOUNDS_KG = (0.0, 1e6)
#: ``lifetime_years``: servers are amortised over 3 to 6 years (4 is a common choice); less
#: than 0.1 year (5 weeks) or more than 30 years is a mistake (months given as years, ...).
LIFETIME_BOUNDS_YEARS = (0.1, 30.0)

_parse_price = bounded_number(*PRICE_BOUNDS_PER_KWH, "a price per kWh", " (e.g. 0.25)")
_parse_wue = bounded_number(
    *WUE_BOUNDS_L_PER_KWH,
    "an on-site water usage effectiveness in L/kWh",
    " (0 for air cooling; the US average is about 1.8)",
)
_parse_electricity_water = bounded_number(
    *ELECTRICITY_WATER_BOUNDS_L_PER_KWH,
    "the water consumed to generate the electricity, in L/kWh",
    " (0 for wind and solar; a few L/kWh for thermal plants)",
)
_parse_embodied = bounded_number(
    *EMBODIED_BOUNDS_KG, "the machine's manufacturing emissions in kg CO2eq"
)
_parse_lifetime = bounded_number(*LIFETIME_BOUNDS_YEARS, "the machine's lifetime in years")
_SHARE_NOTE = " (above 0; 1: the whole machine, 0.25: 2 of its 8 GPUs)"
_parse_share_range = bounded_number(0.0, 1.0, "a share of the machine", _SHARE_NOTE)


def _parse_share(value: Any, label: str) -> float:
    """``reserved_share``: in (0, 1]; a run that reserves nothing of the machine is a mistake."""
    share = _parse_share_range(value, label)
    if share == 0:
        raise ValueError(
            f"{label}={shown(value)} is out of range: expected a share of the machine "
            f"between 0 and 1{_SHARE_NOTE}"
        )
    return share


def parse_currency(value: Any, label: str) -> str:
    """An active ISO 4217 code (any case; returned in capitals), else ``ValueError`` naming
    ``label`` and the value, with the closest codes (or the successor of a withdrawn one)."""
    code = value.strip().upper() if isinstance(value, str) else None
    if code is None or not _THREE_LETTERS.fullmatch(code):
        raise ValueError(
            f"{label}={shown(value)} is not a currency code: expected an ISO 4217 code of "
            "3 letters A-Z, such as EUR, USD or GBP"
        )
    if code in _NOT_MONEY:
        raise ValueError(
            f"{label}={shown(value)} is ISO 4217's code for {_NOT_MONEY[code]}, not a "
            "currency a price is in: expected a currency code such as EUR, USD or GBP"
        )
    if code in _ACTIVE:
        return code
    if code in _WITHDRAWN:
        hint = f" ({code} was withdrawn; its successor is {_WITHDRAWN[code]})"
    else:
        close = difflib.get_close_matches(code, ISO_4217_CODES, n=3, cutoff=0.6)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    raise ValueError(
        f"{label}={shown(value)} is not an active ISO 4217 currency code{hint}: expected one "
        f"of the {len(ISO_4217_CODES)} codes of ISO 4217 List One, such as EUR, USD or GBP"
    )


_PARSERS: dict[str, Callable[[Any, str], Any]] = {
    "price_per_kwh": _parse_price,
    "currency": parse_currency,
    "wue_l_per_kwh": _parse_wue,
    "electricity_water_l_per_kwh": _parse_electricity_water,
    "embodied_co2eq_kg": _parse_embodied,
    "lifetime_years": _parse_lifetime,
    "reserved_share": _parse_share,
}
# (setting, the setting it needs, why)
_NEEDS = (
    ("currency", "price_per_kwh", "the currency is that of the price per kWh"),
    ("embodied_co2eq_kg", "lifetime_years", "they are spread over the machine's lifetime"),
    ("lifetime_years", "embodied_co2eq_kg", "it spreads the machine's embodied emissions"),
    ("reserved_share", "embodied_co2eq_kg", "it is the run's share of the embodied emissions"),
    (
        "electricity_water_l_per_kwh",
        "wue_l_per_kwh",
        "water is on-site WUE plus the electricity's; give wue_l_per_kwh=0 for a site "
        "that uses no water for cooling",
    ),
)


def _checked(values: Mapping[str, Any], labels: Mapping[str, str]) -> dict[str, Any]:
    """Every setting parsed (None stays None; ``reserved_share`` defaults to 1), and the
    pairs checked; ``ValueError`` naming the first bad one by its label."""
    unknown = set(values) - set(FOOTPRINT_SETTINGS)
    if unknown:
        raise TypeError(f"unknown footprint settings: {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {}
    for name in FOOTPRINT_SETTINGS:
        value = values.get(name)
        out[name] = None if value is None else _PARSERS[name](value, labels.get(name, name))
    if out["reserved_share"] is None:
        out["reserved_share"] = 1.0
    for name, needed, why in _NEEDS:
        given = values.get(name) is not None and not (name == "reserved_share" and out[name] == 1)
        if given and out[needed] is None:  # (a share of 1 is the default: the whole machine)
            label = labels.get(name, name)
            raise ValueError(
                f"{label}={shown(values[name])} without {labels.get(needed, needed)}: {why}"
            )
    return out


@dataclass(frozen=True)
class Figure:
    """One footprint figure of a run: its value (``None`` when unknown) and how it was got."""

    value: float | None
    unit: str
    """``L``, ``kg CO2eq``, or the cost's currency (``""`` when none was given)."""
    method: str
    """The formula with its numbers, or why the figure is unknown."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``value``, ``unit``, ``method``."""
        return {"value": self.value, "unit": self.unit, "method": self.method}


def _num(value: float) -> str:
    return f"{value:.6g}"


@dataclass(frozen=True)
class Footprint:
    """The footprint settings of a measurement; every figure without its settings is unknown.

    Constructing one validates it as :meth:`parse` does (errors name the fields).
    """

    price_per_kwh: float | None = None
    """Electricity price per kWh, in :attr:`currency` (or in no stated currency)."""
    currency: str | None = None
    """ISO 4217 code of the price; needs :attr:`price_per_kwh`."""
    wue_l_per_kwh: float | None = None
    """On-site water usage effectiveness: litres per kWh of IT (device) energy."""
    electricity_water_l_per_kwh: float | None = None
    """Off-site water consumed to generate the electricity, litres per kWh drawn."""
    embodied_co2eq_kg: float | None = None
    """The machine's manufacturing emissions; needs :attr:`lifetime_years`."""
    lifetime_years: float | None = None
    """The machine's expected lifetime; needs :attr:`embodied_co2eq_kg`."""
    reserved_share: float = 1.0
    """Share of the machine the run reserves, in (0, 1]."""
    refused: str = ""
    """Why the settings were not used (zero-code mode turns a bad value into one warning and
    this reason); every figure is then unknown."""

    def __post_init__(self) -> None:
        checked = _checked({n: getattr(self, n) for n in FOOTPRINT_SETTINGS}, {})
        for name, value in checked.items():  # floats, and the currency in capitals
            object.__setattr__(self, name, value)

    @classmethod
    def parse(cls, values: Mapping[str, Any], labels: Mapping[str, str] | None = None) -> Footprint:
        """The footprint of ``values`` (setting -> value or None, numbers possibly as text).

        ``labels`` say where each value came from (``MLFLOW_GREEN_PRICE_PER_KWH``); a bad
        value raises ``ValueError`` naming that label, the value and what is accepted.
        """
        return cls(**_checked(values, labels or {}))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Footprint:
        """The inverse of :meth:`settings` (unknown keys ignored; ``None``: no settings)."""
        data = data or {}
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names and v is not None})

    @property
    def configured(self) -> bool:
        """Whether any setting was given (or refused)."""
        return self.refused != "" or any(
            getattr(self, n) is not None for n in FOOTPRINT_SETTINGS if n != "reserved_share"
        )

    def settings(self) -> dict[str, Any]:
        """The settings, JSON-ready (``refused`` only when set)."""
        out: dict[str, Any] = {n: getattr(self, n) for n in FOOTPRINT_SETTINGS}
        if self.refused:
            out["refused"] = self.refused
        return out

    def _unknown(self, setting: str, unit: str) -> Figure:
        why = f"not computed: {self.refused}" if self.refused else f"no {setting} given"
        return Figure(None, unit, why)

    def cost(self, energy_kwh: float) -> Figure:
        """``energy_kwh`` (PUE included) x :attr:`price_per_kwh`, in :attr:`currency`."""
        unit = self.currency or ""
        if self.price_per_kwh is None or self.refused:
            return self._unknown("price_per_kwh", unit)
        per = f"{self.currency}/kWh" if self.currency else "per kWh (no currency given)"
        return Figure(
            energy_kwh * self.price_per_kwh,
            unit,
            f"{_num(energy_kwh)} kWh x {self.price_per_kwh:g} {per} (given)",
        )

    def water_l(self, device_energy_kwh: float, energy_kwh: float) -> Figure:
        """``device_energy_kwh`` (no PUE) x on-site WUE, plus ``energy_kwh`` (PUE included) x
        the electricity's water intensity when given (Li et al. 2023)."""
        if self.wue_l_per_kwh is None or self.refused:
            return self._unknown("wue_l_per_kwh", "L")
        litres = device_energy_kwh * self.wue_l_per_kwh
        method = (
            f"{_num(device_energy_kwh)} kWh at the devices x {self.wue_l_per_kwh:g} L/kWh "
            "on-site WUE (given)"
        )
        if self.electricity_water_l_per_kwh is not None:
            litres += energy_kwh * self.electricity_water_l_per_kwh
            method += (
                f" + {_num(energy_kwh)} kWh x {self.electricity_water_l_per_kwh:g} L/kWh "
                "off-site water of the electricity (given)"
            )
        return Figure(litres, "L", method)

    def embodied(self, duration_s: float) -> Figure:
        """The run's share of the machine's manufacturing emissions (SCI's M), kg CO2eq."""
        if self.embodied_co2eq_kg is None or self.lifetime_years is None or self.refused:
            return self._unknown("embodied_co2eq_kg", "kg CO2eq")
        lifetime_s = self.lifetime_years * SECONDS_PER_YEAR
        share = max(duration_s, 0.0) / lifetime_s * self.reserved_share
        return Figure(
            self.embodied_co2eq_kg * share,
            "kg CO2eq",
            f"{self.embodied_co2eq_kg:g} kg x {_num(duration_s)} s / ({self.lifetime_years:g} "
            f"years x {SECONDS_PER_YEAR:.0f} s) x {self.reserved_share:g} of the machine "
            "reserved (given)",
        )

    def figures(
        self, energy_kwh: float, device_energy_kwh: float, duration_s: float
    ) -> dict[str, Figure]:
        """``cost``, ``water_l`` and ``embodied_co2eq_kg`` of a measurement."""
        return {
            "cost": self.cost(energy_kwh),
            "water_l": self.water_l(device_energy_kwh, energy_kwh),
            "embodied_co2eq_kg": self.embodied(duration_s),
        }

    def to_dict(
        self, energy_kwh: float, device_energy_kwh: float, duration_s: float
    ) -> dict[str, Any]:
        """``report.json``'s ``footprint``: the settings and each figure with its method."""
        out: dict[str, Any] = {"settings": self.settings()}
        for name, figure in self.figures(energy_kwh, device_energy_kwh, duration_s).items():
            out[name] = figure.to_dict()
        return out
