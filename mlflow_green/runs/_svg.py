"""What the run page and the experiment report share: inline SVG charts, readable numbers, CSS.

Charts are plain strings of SVG (no JavaScript, no external resources): axes with
"nice" ticks, step lines, shaded spans (the experiment page draws its own scatter). Every
text that may come from a user goes through :func:`esc`. Every helper is total: NaN,
infinities and MLflow's stand-in for them (SQLite keeps inf as 1.8e308, see
:func:`finite`) read as missing ("-", a default axis, a gap), never as an exception.
"""

from __future__ import annotations

import html
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass

#: Colours per energy domain, readable on white.
COLOURS = {"gpu": "#7b1fa2", "cpu": "#1565c0", "ram": "#ef6c00"}

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2328;
margin:0;padding:16px 24px;max-width:1200px}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:22px 0 6px;
border-bottom:1px solid #d0d7de;padding-bottom:3px}
.sub{color:#57606a;margin:0 0 12px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:10px 0}
.card{border:1px solid #d0d7de;border-radius:6px;padding:8px 14px;min-width:120px;
max-width:280px}
.card .v{font-size:22px;font-weight:600}.card .k{color:#57606a;font-size:12px}
table{border-collapse:collapse;margin:4px 0}
th,td{border-bottom:1px solid #eaeef2;padding:3px 10px;text-align:left;vertical-align:top}
th{background:#f6f8fa;font-weight:600}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
code{font-size:12px;background:#f6f8fa;padding:0 3px;border-radius:3px}
.note{color:#57606a;font-size:12px}.warn{color:#9a6700}
svg{display:block;max-width:100%;height:auto}svg text{font:11px sans-serif;fill:#1f2328}
tr.front td:first-child{font-weight:600}td.ranked{font-weight:600}
.wide{overflow-x:auto}.wide td{white-space:nowrap}
"""


def esc(text: object) -> str:
    """``text`` as HTML-safe text (quotes too, so it is safe in attributes)."""
    return html.escape(str(text), quote=True)


def page(title: str, body: str) -> str:
    """A complete self-contained HTML document."""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>{body}</body></html>"
    )


#: What a missing or non-finite number reads as.
MISSING = "-"
#: Magnitudes from here on are not numbers anyone logged: MLflow's SQLite store keeps
#: inf as 1.7976931348623157e308 (and -inf as its negative).
ABSURD = 1e308


def finite(value: object) -> float | None:
    """``value`` as a float when it is a real number below :data:`ABSURD`, else ``None``."""
    if type(value) is float:  # the common case, fast (NaN fails both comparisons)
        return value if -ABSURD < value < ABSURD else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond float range
        return None
    return number if math.isfinite(number) and abs(number) < ABSURD else None


def _clamp(value: float) -> float:
    return max(-sys.float_info.max, min(sys.float_info.max, value))


# --- readable numbers ---------------------------------------------------------------------------


def sig(value: float, digits: int = 3) -> str:
    """``value`` with ``digits`` significant digits, never in exponent notation below 1e6;
    :data:`MISSING` when it is not a finite number."""
    if finite(value) is None:
        return MISSING
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    if magnitude >= 6 or magnitude < -6:
        return f"{value:.{digits - 1}e}"
    decimals = max(0, digits - 1 - magnitude)
    return f"{value:,.{decimals}f}"


#: (kWh per unit, unit), the largest first; mWh down to 0.01 mWh, then µWh.
ENERGY_UNITS = ((1.0, "kWh"), (1e-3, "Wh"), (1e-6, "mWh"), (1e-9, "µWh"))


def energy_unit(kwh: float) -> tuple[float, str]:
    """The unit ``kwh`` reads best in, as (kWh per unit, name); kWh when it is not finite."""
    if finite(kwh) is None:
        return ENERGY_UNITS[0]
    for scale, unit in ENERGY_UNITS[:-1]:
        if abs(kwh) >= (scale if unit != "mWh" else scale / 100):
            return scale, unit
    return ENERGY_UNITS[-1]


def energy(kwh: float) -> str:
    """Energy in the unit that reads best: ``1.23 kWh``, ``45.6 Wh``, ``0.43 mWh`` ..."""
    if finite(kwh) is None:
        return MISSING
    if kwh == 0:
        return "0 Wh"
    scale, unit = energy_unit(kwh)
    return f"{sig(kwh / scale)} {unit}"


def mass_co2(kg: float | None) -> str:
    """CO2eq mass in g (kg from 1,000 g, mg below 1 g); "unknown" for ``None`` or non-finite."""
    if kg is None or finite(kg) is None:
        return "unknown"
    grams = kg * 1000
    if abs(grams) >= 1000:
        return f"{sig(kg)} kg"
    if abs(grams) >= 1 or grams == 0:
        return f"{sig(grams)} g"
    return f"{sig(grams * 1000)} mg"


def duration(seconds: float) -> str:
    """``12.3 s``, ``4 min 05 s``, ``2 h 03 min``; :data:`MISSING` when not finite."""
    if finite(seconds) is None:
        return MISSING
    if seconds < 60 or seconds >= 1e9:  # negative, or beyond 30 years: plain seconds
        return f"{sig(seconds)} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


# --- ticks --------------------------------------------------------------------------------------


def nice_step(span: float, target_ticks: int = 5) -> float:
    """A 1, 2, 2.5 or 5 x 10^k step that cuts ``span`` into about ``target_ticks`` parts."""
    raw = span / max(1, target_ticks) if finite(span) is not None else 0.0
    if raw <= 0 or not math.isfinite(raw):
        return 1.0
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * power:
            return m * power
    return 10 * power


def nice_ticks(top: float, target_ticks: int = 5) -> list[float]:
    """Ticks from 0 to the first nice multiple at or above ``top`` (an axis that starts at 0);
    ``[0, 1]`` when ``top`` is not a finite number above 0."""
    if finite(top) is None or top <= 0:
        return [0.0, 1.0]
    step = nice_step(top, target_ticks)
    count = max(1, math.ceil(top / step - 1e-9))
    return [_clamp(i * step) for i in range(count + 1)]


def nice_range(lo: float, hi: float, target_ticks: int = 5) -> list[float]:
    """Ticks on nice multiples that cover ``[lo, hi]`` with a little room on both sides.

    A bound that is not finite is left out (both: ``[0, 1]``); magnitudes near the float
    limit are worked out a quarter the size, so nothing overflows.
    """
    known = [v for v in (finite(lo), finite(hi)) if v is not None]
    if not known:
        return [0.0, 1.0]
    lo, hi = min(known), max(known)
    if max(abs(lo), abs(hi)) > 4e307:  # a quarter is below 2.5e307: no recursion
        return [_clamp(t * 4) for t in nice_range(lo / 4, hi / 4, target_ticks)]
    if hi - lo <= 0:
        pad = abs(hi) * 0.05 or 1.0
        lo, hi = lo - pad, hi + pad
    pad = (hi - lo) * 0.08
    step = nice_step(hi - lo + 2 * pad, target_ticks)
    first = math.floor((lo - pad) / step)
    last = math.ceil((hi + pad) / step)
    return [i * step for i in range(first, last + 1)]


def tick_label(value: float, step: float) -> str:
    """A tick's label with just the decimals its step needs (step 2.5 -> one, 0.02 -> two)."""
    if finite(value) is None or finite(step) is None:
        return sig(value)
    if abs(value) >= 1e15:
        return f"{value:.6g}"
    decimals = 0
    while decimals < 9 and step > 0:
        scaled = step * 10**decimals
        if abs(scaled - round(scaled)) <= 1e-6 * scaled:
            break
        decimals += 1
    return f"{value:,.{decimals}f}"


def log_ticks(lo: float, hi: float) -> list[float]:
    """Ticks for a log axis over ``[lo, hi]``: powers of 10, plus 2 and 5 over few decades,
    every n-th power over many; ``[1, 10]`` unless both are finite and above 0."""
    if finite(lo) is None or finite(hi) is None or lo <= 0 or hi <= 0:
        return [1.0, 10.0]
    lo, hi = min(lo, hi), max(lo, hi)
    first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    mults = (1, 2, 5) if last - first <= 3 else (1,)
    every = max(1, math.ceil((last - first) / 10))
    ticks = [m * 10.0**e for e in range(first, last + 1, every) for m in mults]
    return [t for t in ticks if lo <= t <= hi] or [lo, hi]


def _fraction(v: float, lo: float, hi: float) -> float:
    """Where ``v`` lies from ``lo`` (0) to ``hi`` (1), within [-1, 2]; halves, so that the
    differences of numbers near the float limit do not overflow; 0 for what is not finite."""
    span = hi * 0.5 - lo * 0.5
    if not span or not math.isfinite(span):
        span = 0.5
    fraction = (v * 0.5 - lo * 0.5) / span
    return max(-1.0, min(2.0, fraction)) if math.isfinite(fraction) else 0.0


# --- the chart frame ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """The plot area of a chart and the data ranges it maps (x may be logarithmic)."""

    x0: float
    x1: float
    y0: float
    y1: float
    width: int = 760
    height: int = 280
    left: int = 62
    right: int = 16
    top: int = 26
    bottom: int = 42
    log_x: bool = False

    def _fx(self, x: float) -> float:
        if self.log_x:
            return math.log10(x) if x > 0 else -math.inf
        return x

    def px(self, x: float) -> float:
        """The pixel column of ``x`` (clamped a little outside the plot area)."""
        lo, hi = self._fx(self.x0), self._fx(self.x1)
        return self.left + _fraction(self._fx(x), lo, hi) * (self.width - self.left - self.right)

    def py(self, y: float) -> float:
        """The pixel row of ``y`` (clamped a little outside the plot area)."""
        plot_px = max(1, self.height - self.top - self.bottom)
        return self.height - self.bottom - _fraction(y, self.y0, self.y1) * plot_px

    def open(self, label: str) -> str:
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{esc(label)}" '
            f'viewBox="0 0 {self.width} {self.height}" width="{self.width}" '
            f'height="{self.height}">'
        )


def axes(
    frame: Frame, xticks: Sequence[float], yticks: Sequence[float], xlabel: str, ylabel: str
) -> str:
    """Grid lines, tick labels and axis titles of ``frame``."""
    out = []
    bottom, top = frame.height - frame.bottom, frame.top
    left, right = frame.left, frame.width - frame.right
    ystep = yticks[1] - yticks[0] if len(yticks) > 1 else 1.0
    for y in yticks:
        py = frame.py(y)
        out.append(
            f'<line x1="{left}" x2="{right}" y1="{py:.1f}" y2="{py:.1f}" stroke="#eaeef2"/>'
            f'<text x="{left - 6}" y="{py + 4:.1f}" text-anchor="end">'
            f"{tick_label(y, ystep)}</text>"
        )
    xstep = xticks[1] - xticks[0] if len(xticks) > 1 else 1.0
    for x in xticks:
        px = frame.px(x)
        label = sig(x, 2) if frame.log_x else tick_label(x, xstep)
        out.append(
            f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{top}" y2="{bottom}" stroke="#eaeef2"/>'
            f'<text x="{px:.1f}" y="{bottom + 15}" text-anchor="middle">{esc(label)}</text>'
        )
    out.append(
        f'<path d="M{left} {top}V{bottom}H{right}" fill="none" stroke="#57606a"/>'
        f'<text x="{(left + right) / 2:.0f}" y="{frame.height - 6}" text-anchor="middle">'
        f"{esc(xlabel)}</text>"
        f'<text transform="translate(13 {(top + bottom) / 2:.0f}) rotate(-90)" '
        f'text-anchor="middle">{esc(ylabel)}</text>'
    )
    return "".join(out)


def step_line(
    frame: Frame, ends_s: Sequence[float], values: Sequence[float], colour: str, name: str = ""
) -> str:
    """A step line (class ``series``, and ``name``): each value holds over the interval that
    ends at its time (the first from 0). A value that is not finite is a gap in the line."""
    parts: list[str] = []
    start_s, drawing = 0.0, False
    for t, v in zip(ends_s, values, strict=True):
        if finite(t) is None:
            drawing = False
            continue
        if finite(v) is None:
            drawing, start_s = False, t
            continue
        if not drawing:
            parts.append(f"M{frame.px(start_s):.1f} {frame.py(v):.1f}")
            drawing = True
        parts.append(f"V{frame.py(v):.1f}H{frame.px(t):.1f}")
        start_s = t
    if not parts:
        return ""
    return (
        f'<path class="series {esc(name)}" d="{"".join(parts)}" fill="none" stroke="{colour}" '
        'stroke-width="1.6" stroke-linejoin="round"/>'
    )


#: Pixels per character of an 11 px label (an estimate: the browser decides).
CHAR_PX = 6.5
#: Characters of a span's label at most (the full name is in its tooltip).
LABEL_CHARS = 40


def span_label(label: str) -> str:
    """``label`` cut to :data:`LABEL_CHARS` characters (an ellipsis marks the cut)."""
    return label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…"


def span_label_x(frame: Frame, start: float, label: str) -> tuple[float, float]:
    """Where the label of a span that starts at ``start`` goes: (first px, last px)."""
    width = CHAR_PX * len(span_label(label))
    x = max(frame.left, min(frame.px(max(start, frame.x0)) + 3, frame.width - 4 - width))
    return x, x + width


def shaded_span(frame: Frame, start: float, end: float, label: str, row: int | None) -> str:
    """A shaded vertical band from ``start`` to ``end`` with ``label`` as its tooltip, and at
    its top in label row ``row`` (``None``: no label)."""
    x0, x1 = frame.px(max(start, frame.x0)), frame.px(min(end, frame.x1))
    top, bottom = frame.top, frame.height - frame.bottom
    text = ""
    if row is not None:
        text_x, _ = span_label_x(frame, start, label)
        y = top - 4 - 11 * row
        text = f'<text x="{text_x:.1f}" y="{y:.1f}">{esc(span_label(label))}</text>'
    return (
        f'<g class="phase"><rect x="{x0:.1f}" y="{top}" width="{max(x1 - x0, 1.0):.1f}" '
        f'height="{max(bottom - top, 1)}" fill="#2e7d32" fill-opacity="0.10" stroke="#2e7d32" '
        f'stroke-opacity="0.35"><title>{esc(label)}</title></rect>{text}</g>'
    )


def downsample(
    ends_s: Sequence[float], values: Sequence[float], max_points: int
) -> tuple[list[float], list[float]]:
    """At most ``max_points`` steps: consecutive intervals merged into time-weighted averages.

    The energy under the line is kept; bursts shorter than a merged interval are averaged.
    Values that are not finite (:func:`finite`) are left out of the averages: a merged
    interval with none known is NaN (a gap in :func:`step_line`).
    """
    n = len(values)
    if n <= max_points:
        return list(ends_s), list(values)
    per = math.ceil(n / max_points)
    out_t, out_v = [], []
    previous = 0.0
    for i in range(0, n, per):
        chunk_end = min(i + per, n)
        joules, known_s, last_known = 0.0, 0.0, math.nan
        for j in range(i, chunk_end):
            t, v = finite(ends_s[j]), finite(values[j])
            if t is None:
                continue
            if v is not None:
                joules += v * (t - previous)
                known_s += t - previous
                last_known = v
            previous = t
        out_t.append(previous)
        out_v.append(joules / known_s if known_s > 0 else last_known)
    return out_t, out_v
