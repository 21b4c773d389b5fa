"""A grid carbon intensity that changes over time, and its energy-weighted mean over a run.

``carbon_intensity`` may name a CSV file of the grid's intensity hour by hour (or at any
regular step), e.g. from a grid operator or Electricity Maps' data portal; each row holds
until the next. Every interval of the power timeline is split at the rows' boundaries, so
the run gets one effective intensity ``g = sum(e_i * I_i) / sum(e_i)`` and
``energy_kwh * g / 1000`` is the exact integral of power x intensity. Time outside the
series uses the location's yearly figure; the source string says which share each covers.

Accepted CSV (UTF-8, a BOM is fine; extra columns are ignored):

* header columns ``timestamp`` and ``g_per_kwh`` (gCO2eq/kWh, 0 to 2000), or an Electricity
  Maps export: ``Datetime (UTC)`` and its life-cycle column (``Carbon intensity gCO₂eq/kWh
  (Life cycle)``, named ``(LCA)`` or ``(life cycle assessment)`` in older exports; the same
  basis as the Electricity Maps API's default ``carbonIntensity``); ``g_per_kwh`` wins
  when a file has both;
* timestamps in ISO 8601 as ``datetime.fromisoformat`` reads them, with a ``Z`` suffix
  accepted on every Python version; either all with a UTC offset or all without one (then
  read as UTC, as in Electricity Maps' ``Datetime (UTC)``);
* at least two rows, sorted, no duplicates, and one step between all consecutive rows (the
  step sets how long each value holds; a gap or irregular spacing is refused).

Standard library only (no MLflow, no pandas).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Protocol

from mlflow_green.measure._env import shown
from mlflow_green.measure.carbon import UNKNOWN_SOURCE_PREFIX, parse_carbon_intensity


class TimelinePointLike(Protocol):
    """A point with ``t_s`` and ``power_w``, like ``report.TimelinePoint``."""

    t_s: float
    power_w: dict[str, float]


#: A power timeline as the monitor records it: ``(t_s, {domain: watts})``, each point the
#: average power over the interval ending ``t_s`` seconds after the run's start (starting at
#: the previous point's ``t_s``, or 0 for the first). ``EnergyReport.timeline``'s points
#: (with ``t_s`` and ``power_w`` attributes) are accepted too.
Timeline = Sequence[tuple[float, Mapping[str, float]] | TimelinePointLike]

TIMESTAMP_COLUMN = "timestamp"
VALUE_COLUMN = "g_per_kwh"
# Electricity Maps' data-portal exports, normalised by _norm (case, "₂", spaces).
_EM_TIMESTAMP = ("datetime (utc)",)
_EM_VALUE = tuple(
    f"carbon intensity gco2eq/kwh ({kind})"
    for kind in ("life cycle", "lca", "life cycle assessment")
)
ACCEPTED = (
    "a CSV file with header columns timestamp (ISO 8601; without an offset read as UTC) and "
    "g_per_kwh (gCO2eq/kWh, 0 to 2000), at least two rows, sorted, one row per step at a "
    "regular spacing (e.g. hourly); an Electricity Maps export (Datetime (UTC), "
    "Carbon intensity gCO₂eq/kWh (Life cycle)) works as is"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)


@dataclass(frozen=True)
class IntensitySeries:
    """Grid carbon intensity at a regular step: row ``i`` holds over
    ``[start_s[i], start_s[i] + step_s)``.

    A ``g_per_kwh`` of NaN marks a row a provider had no value for (that time counts as not
    covered); a series loaded from a file never holds one.
    """

    source: str
    """The file's absolute path, or the provider and zone (``electricitymaps FR``)."""
    start_s: tuple[float, ...]
    """Start of each row, seconds since the epoch, increasing by ``step_s``."""
    step_s: float
    g_per_kwh: tuple[float, ...]
    """gCO2eq/kWh of each row."""

    def __post_init__(self) -> None:
        if not self.start_s or len(self.start_s) != len(self.g_per_kwh):
            raise ValueError("an IntensitySeries needs one value per row, and at least one row")
        if not (math.isfinite(self.step_s) and self.step_s > 0):
            raise ValueError(f"IntensitySeries step_s={self.step_s!r}: expected seconds > 0")

    @property
    def end_s(self) -> float:
        """End of the last row, seconds since the epoch."""
        return self.start_s[0] + len(self.start_s) * self.step_s

    @property
    def description(self) -> str:
        """``hourly series /data/fr.csv``: the step in words, then the source."""
        return f"{step_words(self.step_s)} series {self.source}"

    def value_at(self, t_s: float) -> float | None:
        """The intensity at epoch second ``t_s``; ``None`` outside the series or in a NaN row."""
        if not self.start_s[0] <= t_s < self.end_s:
            return None
        value = self.g_per_kwh[self._row(t_s)]
        return None if math.isnan(value) else value

    def _row(self, t_s: float) -> int:
        # Row holding t_s (clamped): floor division of floats may land one off at a boundary.
        i = min(max(int((t_s - self.start_s[0]) // self.step_s), 0), len(self.start_s) - 1)
        if i > 0 and self.start_s[0] + i * self.step_s > t_s:
            i -= 1
        return i


def step_words(step_s: float) -> str:
    """``hourly``, ``15-minute``, ``daily``, ``2-hour``, ``90-second``."""
    for unit_s, one, many in (
        (86400, "daily", "day"),
        (3600, "hourly", "hour"),
        (60, "", "minute"),
    ):
        count = step_s / unit_s
        if count == int(count) and count >= 1:
            return one if count == 1 and one else f"{int(count)}-{many}"
    return f"{step_s:g}-second"


def parse_timestamp(text: str) -> datetime:
    """An ISO 8601 timestamp as ``datetime.fromisoformat`` reads it, ``Z`` accepted on 3.10."""
    value = text.strip()
    if value[-1:] in ("Z", "z"):
        value = value[:-1] + "+00:00"
    return datetime.fromisoformat(value)


def epoch_us(moment: datetime) -> int:
    """Microseconds since the epoch, exactly; a naive ``moment`` is read as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return (moment - _EPOCH) // _US


def build_series(
    source: str,
    times_us: Sequence[int],
    values: Sequence[float],
    where: Sequence[str],
    default_step_s: float | None = None,
) -> IntensitySeries:
    """A series from rows already parsed: epoch microseconds and values. Checks the
    order and spacing; ``where[i]`` names row ``i`` and its timestamp in errors
    (``line 5 (timestamp='2024-03-01T13:00Z')``). One row is
    refused unless ``default_step_s`` says how long it holds. Raises ``ValueError``
    (a message without the setting's label; the caller puts it in front)."""
    if not times_us:
        raise ValueError("has no rows: expected at least two")
    if len(times_us) == 1 and default_step_s is None:
        raise ValueError(
            f"has one row ({where[0]}): at least two are needed, since the spacing of the "
            "timestamps sets how long each value holds"
        )
    for i in range(1, len(times_us)):
        if times_us[i] < times_us[i - 1]:
            raise ValueError(
                f"{where[i]} is earlier than {where[i - 1]}: unsorted timestamps. Expected "
                "rows sorted by time"
            )
        if times_us[i] == times_us[i - 1]:
            raise ValueError(
                f"{where[i]} is the same time as {where[i - 1]}: duplicate timestamps. "
                "Expected one row per time"
            )
    diffs = [times_us[i] - times_us[i - 1] for i in range(1, len(times_us))]
    step_us = min(diffs, default=0)
    for i, diff in enumerate(diffs, 1):
        if diff != step_us:
            raise ValueError(
                f"{where[i]} is {diff / 1e6:g} s after {where[i - 1]}, but the series' step "
                f"(its smallest spacing) is {step_us / 1e6:g} s: a gap or irregular spacing. "
                "Expected one row per step with no rows missing"
            )
    step_s = step_us / 1e6 if diffs else float(default_step_s or 0)
    return IntensitySeries(
        source, tuple(t / 1e6 for t in times_us), step_s, tuple(float(v) for v in values)
    )


def _norm(name: str) -> str:
    return " ".join(name.replace("₂", "2").casefold().split())


def _column(header: list[str], names: Sequence[str]) -> int | None:
    normalised = [_norm(h) for h in header]
    for name in names:
        if name in normalised:
            return normalised.index(name)
    return None


def load_series(path: str | os.PathLike[str], label: str = "carbon_intensity") -> IntensitySeries:
    """Read a carbon-intensity CSV (see the module's docstring for what is accepted).

    ``label`` is where ``path`` came from: the argument (``carbon_intensity``) or the
    variable (``MLFLOW_GREEN_CARBON_INTENSITY``). Raises ``ValueError`` that starts with
    ``<label>=<path>`` and names the line, the bad value and what is accepted: for a
    missing or unreadable file, missing columns, no rows, a value that is not a number,
    not finite or outside 0-2000 g/kWh, and unsorted, duplicate, unevenly spaced or
    mixed naive/aware timestamps.
    """
    prefix = f"{label}={shown(os.fspath(path))}"
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            rows = [(n, row) for n, row in _lines(f) if any(cell.strip() for cell in row)]
    except FileNotFoundError:
        raise ValueError(
            f"{prefix} is not a number, and no such file. Expected a number of gCO2eq/kWh "
            f"(0 to 2000), 'electricitymaps:<ZONE>', or {ACCEPTED}"
        ) from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(
            f"{prefix}: cannot be read as a CSV file ({exc}). Expected {ACCEPTED}"
        ) from exc
    if not rows:
        raise ValueError(f"{prefix}: the file is empty. Expected {ACCEPTED}")
    header_line, header = rows[0]
    t_col = _column(header, (TIMESTAMP_COLUMN, *_EM_TIMESTAMP))
    v_col = _column(header, (VALUE_COLUMN, *_EM_VALUE))
    if t_col is None or v_col is None:
        missing = [n for n, c in ((TIMESTAMP_COLUMN, t_col), (VALUE_COLUMN, v_col)) if c is None]
        raise ValueError(
            f"{prefix}: line {header_line}: the header has no {' and no '.join(missing)} column "
            f"(it has {shown(header)}). Expected {ACCEPTED}"
        )
    source = os.path.abspath(os.fspath(path))
    names = (header[t_col].strip(), header[v_col].strip())
    times: list[int] = []
    values: list[float] = []
    where: list[str] = []
    aware_at: tuple[str, bool] | None = None  # first row: where, and whether it has an offset
    for line, row in rows[1:]:
        here = f"{prefix}: line {line}"
        cells = [row[c].strip() if c < len(row) else "" for c in (t_col, v_col)]
        try:
            moment = parse_timestamp(cells[0])
        except ValueError:
            raise ValueError(
                f"{here}: {names[0]}={shown(cells[0])} is not an ISO 8601 timestamp: expected "
                "e.g. 2024-03-01T13:00:00Z, 2024-03-01T14:00:00+01:00 or 2024-03-01 13:00:00 "
                "(no offset: read as UTC)"
            ) from None
        aware = moment.tzinfo is not None
        if aware_at is None:
            aware_at = (f"line {line}", aware)
        elif aware != aware_at[1]:
            this, first = ("has a UTC offset", "none") if aware else ("has no UTC offset", "one")
            raise ValueError(
                f"{here}: {names[0]}={shown(cells[0])} {this} but {aware_at[0]}'s timestamp has "
                f"{first}: mixed naive and aware timestamps. Expected an offset on every "
                "timestamp, or on none (then all are read as UTC)"
            )
        try:
            value = parse_carbon_intensity(cells[1], names[1])
        except ValueError as exc:
            raise ValueError(f"{here}: {exc}") from None
        times.append(epoch_us(moment))
        values.append(value)
        where.append(f"line {line} ({names[0]}={shown(cells[0])})")
    try:
        return build_series(source, times, values, where)
    except ValueError as exc:
        raise ValueError(f"{prefix}: {exc}. Expected {ACCEPTED}") from None


def _lines(f: Iterable[str]) -> list[tuple[int, list[str]]]:
    """Rows of a CSV file, each with the number of the line it starts on."""
    reader = csv.reader(f)
    out: list[tuple[int, list[str]]] = []
    start = 1
    for row in reader:
        out.append((start, row))
        start = reader.line_num + 1
    return out


def _percent(share: float) -> str:
    if share >= 1.0:
        return "100%"
    if share <= 0.0:
        return "0%"
    pct = share * 100.0
    return "<1%" if pct < 1 else ">99%" if pct > 99 else f"{pct:.0f}%"


def _g(g_per_kwh: float) -> str:
    return f"{g_per_kwh:.4g} g/kWh"


def _integrate(
    series: IntensitySeries, start_time_s: float, pieces: list[tuple[float, float, float]]
) -> tuple[float, float, float]:
    """``(covered, covered x intensity, uncovered)`` weights of ``(a_s, b_s, rate)`` pieces:
    each piece's weight ``rate x (b - a)`` split exactly at the series' row boundaries."""
    s0, step, n = series.start_s[0], series.step_s, len(series.start_s)
    end = series.end_s
    covered = weighted = uncovered = 0.0
    for a, b, rate in pieces:
        lo_abs, hi_abs = start_time_s + a, start_time_s + b
        lo, hi = max(lo_abs, s0), min(hi_abs, end)
        if hi <= lo:
            uncovered += rate * (b - a)
            continue
        uncovered += rate * ((lo - lo_abs) + (hi_abs - hi))
        i, x = series._row(lo), lo
        while x < hi and i < n:
            y = min(hi, s0 + (i + 1) * step)
            weight = rate * (y - x)
            value = series.g_per_kwh[i]
            if math.isnan(value):
                uncovered += weight
            else:
                covered += weight
                weighted += weight * value
            x, i = max(x, y), i + 1
    return covered, weighted, uncovered


def weighted_intensity(
    series: IntensitySeries,
    start_time_s: float,
    timeline: Timeline,
    fallback_g_per_kwh: float | None,
    fallback_source: str = "yearly figure",
) -> tuple[float | None, str, float]:
    """The run's energy-weighted mean intensity: ``(g_effective, source, share_covered)``.

    ``timeline`` is the run's power timeline (see :data:`Timeline`), ``start_time_s`` its
    wall-clock start (epoch seconds). Energy outside the series (or in a row without a
    value) is weighted with ``fallback_g_per_kwh``, the location's yearly figure labelled
    ``fallback_source`` (``codecarbon energy mix``). With no energy in the timeline the
    mean is weighted by time instead; with no time either, it is the value at the start.
    ``share_covered`` (0 to 1) is the share of the weight the series covers; the source
    says it: ``hourly series /x.csv (80% of the energy; the rest codecarbon energy mix
    56 g/kWh)``. ``g_effective`` is ``None`` only when part of the run is uncovered and the
    fallback is unknown (its source then starts with ``unknown: ``).
    """
    energy: list[tuple[float, float, float]] = []
    time: list[tuple[float, float, float]] = []
    prev = 0.0
    for point in timeline:
        t_s, power_w = (point.t_s, point.power_w) if hasattr(point, "t_s") else point
        t = float(t_s)
        if not math.isfinite(t) or t <= prev:
            continue
        watts = sum(w for w in power_w.values() if math.isfinite(w) and w > 0)
        energy.append((prev, t, watts))
        time.append((prev, t, 1.0))
        prev = t
    what = "energy"
    covered, weighted, uncovered = _integrate(series, start_time_s, energy)
    if covered + uncovered <= 0:
        what = "time, no energy measured"
        covered, weighted, uncovered = _integrate(series, start_time_s, time)
    desc = series.description
    fallback = (
        f"{fallback_source} {_g(fallback_g_per_kwh)}" if fallback_g_per_kwh is not None else ""
    )
    if covered + uncovered <= 0:  # no duration at all: the intensity at the start
        value = series.value_at(start_time_s)
        if value is not None:
            return value, f"{desc} (its value at the run's start; no duration measured)", 1.0
        covered, weighted, uncovered, what = 0.0, 0.0, 1.0, "run's start"
    share = covered / (covered + uncovered)
    if share >= 1.0:
        return weighted / covered, f"{desc} (100% of the {what})", 1.0
    if fallback_g_per_kwh is None:
        reason = fallback_source.removeprefix(UNKNOWN_SOURCE_PREFIX)
        return (
            None,
            f"{UNKNOWN_SOURCE_PREFIX}{desc} covers {_percent(share)} of the {what}, and the "
            f"rest has no known intensity ({reason})",
            share,
        )
    if covered <= 0:
        return (
            fallback_g_per_kwh,
            f"{fallback} (100% of the {what}: the {desc} does not cover the run)",
            0.0,
        )
    g = (weighted + uncovered * fallback_g_per_kwh) / (covered + uncovered)
    return g, f"{desc} ({_percent(share)} of the {what}; the rest {fallback})", share
