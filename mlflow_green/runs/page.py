"""A run's ``green/report.html``: one self-contained page of its energy, CO2eq and their sources.

Inline CSS and SVG only (no script, nothing fetched), so MLflow's artifact viewer
shows it as it is. Cheap: a string built in one pass; the power chart is bounded to
:data:`MAX_CHART_POINTS` steps per domain and :data:`MAX_LABEL_ROWS` rows of phase
labels, whatever the run's length. Numbers that are not finite read as missing.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlflow_green.measure.meters import DOMAINS
from mlflow_green.measure.report import J_PER_KWH, EnergyReport
from mlflow_green.runs import _svg
from mlflow_green.runs._svg import esc

#: Steps per domain at most in the power chart (longer timelines are averaged down).
MAX_CHART_POINTS = 300
#: Rows of phase labels at most over the power chart; each phase name is labelled once,
#: where it fits (every band has its name as a tooltip).
MAX_LABEL_ROWS = 3

#: One sentence per method tag: how it measures and what it cannot see (README, "How each
#: number is obtained").
METHOD_LIMITS = {
    "nvml-energy-counter": "NVML's total-energy counter (Volta and later GPUs), the difference of "
    "two reads; it updates every ~100 ms and covers the whole GPU, not one process (on Grace "
    "Hopper, the whole module).",
    "nvml-power": "GPU power polled at 10 Hz and integrated (trapezoids), for GPUs without the "
    "energy counter; spikes shorter than 100 ms are missed.",
    "amdsmi-energy-counter": "AMD SMI's energy counter, the difference of two reads; it covers "
    "the whole GPU, not one process.",
    "rapl": "Linux powercap (RAPL) energy counters of each CPU package or DRAM zone, wraparound "
    "handled; a counter that steps back counts 0 J for that interval and is listed under meter "
    "failures.",
    "estimate-tdp": "An estimate, not a measurement: the CPU's TDP (CodeCarbon's table) × "
    "(0.1 + 0.9 × load³), load from /proc/stat; unknown CPU models get 4 W per thread.",
    "estimate-ram-size": "An estimate, not a measurement: 0.3725 W per GB of RAM installed "
    "(Green Algorithms), constant whatever the memory traffic.",
}

_SCOPES = {
    "machine": "the whole machine's energy: other work running on it at the same time is included.",
    "process": "CPU energy scaled to this process tree's share of busy CPU time, RAM to its share "
    "of memory; GPUs are attributed whole.",
}


@dataclass(frozen=True)
class PhaseSpan:
    """One ``phase(name)`` block; seconds since the run's start."""

    name: str
    start_s: float
    end_s: float


def render_run_page(
    report: EnergyReport,
    run_name: str | None = None,
    phases: Sequence[PhaseSpan] = (),
    phase_kwh: Mapping[str, float] | None = None,
    job: Mapping[str, Any] | None = None,
    *,
    partial: str | None = None,
) -> str:
    """The run's ``green/report.html`` as one string.

    ``phases`` shade the power chart; ``phase_kwh`` (name -> kWh, PUE applied, as the
    ``green/phase/<name>_kwh`` metrics) fills the phase table; ``job`` is a distributed
    job's :meth:`~mlflow_green.distributed.JobEnergy.to_dict` (a per-node table);
    ``partial`` is the run's ``green.partial`` tag, when it has one.
    """
    title = run_name or report.name
    domains = [d for d in DOMAINS if report.methods.get(d, "none") != "none"]
    body = [
        f"<h1>Energy report: {esc(title)}</h1>",
        f'<p class="sub">{_when(report)} · measured by mlflow-green {esc(report.version)}</p>',
        _warnings(report, partial),
        _headline(report, domains),
        _domain_table(report, domains),
        _footprint(report),
        _phase_table(report, phases, phase_kwh),
        _power_chart(report, domains, phases),
        _job_table(job) if job else "",
        _methods(report, domains),
        _settings(report, partial),
    ]
    return _svg.page(f"Energy report: {title}", "".join(body))


def _when(report: EnergyReport) -> str:
    try:
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(report.start_time_s))
    except (OverflowError, OSError, ValueError):  # NaN, inf or beyond the platform's years
        started = "at an unknown time"
    return f"started {started}, {_svg.duration(report.duration_s)}"


def _share(part: float | None, total: float) -> str:
    """``part`` as a percentage of ``total``; "-" unless both are finite and total > 0."""
    part, total_ = _svg.finite(part), _svg.finite(total)
    if part is None or total_ is None or total_ <= 0:
        return _svg.MISSING
    return f"{part / total_ * 100:.1f}%"


def _warnings(report: EnergyReport, partial: str | None) -> str:
    items = [
        f"<li>{esc(domain)} meter stopped early: {esc(why)} (energy after that is missing)</li>"
        for domain, why in report.failures.items()
    ]
    if partial:
        items.append(f"<li>partial run: {esc(partial)}</li>")
    return f'<ul class="warn">{"".join(items)}</ul>' if items else ""


def _intensity_text(report: EnergyReport) -> str:
    """ "at 56 gCO2eq/kWh (source)" or "unknown: why"."""
    if report.carbon_intensity_g_per_kwh is None:
        why = report.intensity_source.removeprefix("unknown:").strip()
        return f"unknown carbon intensity: {esc(why or 'no location')}"
    return (
        f"at {_svg.sig(report.carbon_intensity_g_per_kwh)} gCO2eq/kWh "
        f"({esc(report.intensity_source)})"
    )


def _headline(report: EnergyReport, domains: list[str]) -> str:
    co2eq = report.co2eq_kg
    co2_raw = "no <code>green/co2eq_kg</code> metric" if co2eq is None else f"{co2eq:.6g} kg"
    watts = sum(report.mean_power_w.get(d, 0.0) for d in domains)
    cards = [
        (
            "energy",
            _svg.energy(report.energy_kwh),
            f"{report.energy_kwh:.6g} kWh, PUE {report.pue:g}",
        ),
        ("CO2eq", _svg.mass_co2(co2eq), f"{co2_raw}; {_intensity_text(report)}"),
        ("duration", _svg.duration(report.duration_s), f"{report.duration_s:.6g} s"),
        ("mean power", f"{_svg.sig(watts)} W", "at the devices, all domains"),
    ]
    html = "".join(
        f'<div class="card" id="card-{key.lower()}"><div class="k">{key}</div>'
        f'<div class="v">{value}</div><div class="note">{note}</div></div>'
        for key, value, note in cards
    )
    return f'<div class="cards">{html}</div>'


def _domain_table(report: EnergyReport, domains: list[str]) -> str:
    if not domains:
        return "<h2>Energy by domain</h2><p>No domain had a meter: nothing was measured.</p>"
    total = report.energy_kwh
    kwh = report.energy_kwh_by_domain
    power = report.mean_power_w
    rows = []
    for d in domains:
        devices = report.energy_j_by_device.get(d, {})
        detail = ", ".join(f"{esc(k)} {_svg.sig(j)} J" for k, j in devices.items())
        share = _share(kwh.get(d, 0.0), total)
        rows.append(
            f"<tr><td>{esc(d)}</td><td><code>{esc(report.methods[d])}</code></td>"
            f'<td class="n">{_svg.energy(kwh.get(d, 0.0))}</td><td class="n">{share}</td>'
            f'<td class="n">{_svg.sig(power.get(d, 0.0))} W</td><td class="note">{detail}</td></tr>'
        )
    return (
        "<h2>Energy by domain</h2><table><tr><th>domain</th><th>method</th>"
        '<th class="n">energy</th><th class="n">share</th><th class="n">mean power</th>'
        f"<th>devices (J, no PUE)</th></tr>{''.join(rows)}</table>"
    )


_FIGURES = {"cost": "cost", "water_l": "water", "embodied_co2eq_kg": "embodied CO2eq"}


def _footprint(report: EnergyReport) -> str:
    """Cost, water and embodied emissions with their formulas; nothing when none is set."""
    if not report.footprint.configured:
        return ""
    rows = "".join(
        f"<tr><td>{_FIGURES[name]}</td><td><code>green/{name}</code></td>"
        f'<td class="n">{esc("unknown" if f.value is None else f"{f.value:.6g} {f.unit}".strip())}'
        f'</td><td class="note">{esc(f.method)}</td></tr>'
        for name, f in report.footprint_figures.items()
    )
    score = report.sci
    value = "unknown" if score.sci_g is None else f"{score.sci_g:.6g} g CO2eq per run"
    rows += (
        f'<tr><td>SCI</td><td>report.json <code>sci</code></td><td class="n">{esc(value)}</td>'
        f'<td class="note">{esc(score.method)}</td></tr>'
    )
    return (
        '<h2>Footprint beyond energy</h2><table><tr><th>figure</th><th>metric</th><th class="n">'
        f"value</th><th>how</th></tr>{rows}</table>"
    )


def _phase_table(
    report: EnergyReport, phases: Sequence[PhaseSpan], phase_kwh: Mapping[str, float] | None
) -> str:
    seconds: dict[str, float] = {}
    for span in phases:
        start_s, end_s = _svg.finite(span.start_s), _svg.finite(span.end_s)
        spent_s = end_s - start_s if start_s is not None and end_s is not None else 0.0
        seconds[span.name] = seconds.get(span.name, 0.0) + max(0.0, spent_s)
    names = list(dict.fromkeys([*(phase_kwh or {}), *seconds]))
    if not names:
        return ""
    total = report.energy_kwh
    rows = []
    for name in names:
        kwh = (phase_kwh or {}).get(name)
        energy = "-" if kwh is None else _svg.energy(kwh)
        share = _share(kwh, total)
        spent = _svg.duration(seconds[name]) if name in seconds else "-"
        rows.append(
            f'<tr><td>{esc(name)}</td><td class="n">{energy}</td><td class="n">{share}</td>'
            f'<td class="n">{spent}</td></tr>'
        )
    return (
        '<h2>Energy by phase</h2><table><tr><th>phase</th><th class="n">energy</th>'
        '<th class="n">share of the run</th><th class="n">time</th></tr>'
        f'{"".join(rows)}</table><p class="note">Each <code>mlflow_green.phase(name)</code>, '
        "repeats summed, PUE applied; phases may nest (an outer phase includes the inner one) "
        "and the rest of the run (logging, saving the model) is in no phase.</p>"
    )


def _finite_spans(phases: Sequence[PhaseSpan]) -> list[PhaseSpan]:
    """The spans with finite ends, start before end, by start; back-to-back (or overlapping)
    spans of one name merged into one."""
    out: list[PhaseSpan] = []
    for span in phases:
        start, end = _svg.finite(span.start_s), _svg.finite(span.end_s)
        if start is None or end is None:
            continue
        start, end = min(start, end), max(start, end)
        out.append(PhaseSpan(span.name, start, end))
    out.sort(key=lambda p: p.start_s)
    merged: list[PhaseSpan] = []
    for span in out:
        last = merged[-1] if merged else None
        if last is not None and last.name == span.name and span.start_s <= last.end_s:
            merged[-1] = PhaseSpan(span.name, last.start_s, max(last.end_s, span.end_s))
        else:
            merged.append(span)
    return merged


def _phase_rows(frame: _svg.Frame, spans: Sequence[PhaseSpan]) -> list[int | None]:
    """The label row of each span (``None``: no label): each name once, at its first span
    where the label fits in one of :data:`MAX_LABEL_ROWS` rows without overlapping another."""
    ends = [float(frame.left)] * MAX_LABEL_ROWS  # per row: x where its last label ends
    labelled: set[str] = set()
    rows: list[int | None] = []
    for span in spans:
        row = None
        if span.name not in labelled:
            x0, x1 = _svg.span_label_x(frame, span.start_s, span.name)
            row = next((i for i, end in enumerate(ends) if end <= x0), None)
            if row is not None:
                ends[row] = x1 + 8
                labelled.add(span.name)
        rows.append(row)
    return rows


def _power_chart(report: EnergyReport, domains: list[str], phases: Sequence[PhaseSpan]) -> str:
    head = "<h2>Power over time</h2>"
    timeline = [p for p in report.timeline if _svg.finite(p.t_s) is not None]
    if not timeline or not domains:
        return head + "<p>No power timeline was recorded (a run shorter than one sample).</p>"
    ends = [p.t_s for p in timeline]
    series = {}
    for d in domains:
        t, v = _svg.downsample(ends, [p.power_w.get(d, 0.0) for p in timeline], MAX_CHART_POINTS)
        series[d] = (t, v)
    known = [w for _, v in series.values() for w in v if _svg.finite(w) is not None]
    yticks = _svg.nice_ticks(max(known, default=0.0) * 1.05)  # headroom over the max
    spans = _finite_spans(phases)
    x_end = max(0.0, ends[-1], _svg.finite(report.duration_s) or 0.0, *(p.end_s for p in spans))
    xticks = [t for t in _svg.nice_ticks(x_end, 8) if t <= x_end * (1 + 1e-9)] or [0.0]
    probe = _svg.Frame(0.0, x_end, 0.0, yticks[-1])
    rows = _phase_rows(probe, spans)
    used = max((r for r in rows if r is not None), default=0)
    frame = _svg.Frame(0.0, x_end, 0.0, yticks[-1], top=16 + 11 * used)
    svg = [frame.open("power over time, watts per domain")]
    svg += [
        _svg.shaded_span(frame, p.start_s, p.end_s, p.name, r)
        for p, r in zip(spans, rows, strict=True)
    ]
    svg.append(_svg.axes(frame, xticks, yticks, "seconds since the run started", "power (W)"))
    svg += [_svg.step_line(frame, *series[d], _svg.COLOURS.get(d, "#000"), d) for d in domains]
    svg.append("</svg>")
    legend = " ".join(
        f'<span style="color:{_svg.COLOURS.get(d, "#000")}">■</span> {esc(d)} '
        f"(<code>{esc(report.methods[d])}</code>)"
        for d in domains
    )
    merged = len(timeline) > MAX_CHART_POINTS
    note = (
        f"Average power at the devices over each sample interval (no PUE); {len(timeline):,} "
        f"samples{', averaged into at most ' + str(MAX_CHART_POINTS) + ' steps' if merged else ''}."
        + (" Shaded: phases, each name labelled once (hover a band for its name)." if spans else "")
    )
    return f'{head}<p>{legend}</p>{"".join(svg)}<p class="note">{note}</p>'


def _job_table(job: Mapping[str, Any]) -> str:
    rows = []
    for node, e in (job.get("nodes") or {}).items():
        intensity = e.get("carbon_intensity_g_per_kwh")
        where = " / ".join(str(x) for x in (e.get("country"), e.get("region")) if x) or "-"
        rows.append(
            f"<tr><td>{esc(node)}</td><td>{esc(', '.join(map(str, e.get('ranks', []))))}</td>"
            f'<td class="n">{_svg.energy(e.get("energy_kwh") or 0.0)}</td>'
            f'<td class="n">{_svg.mass_co2(e.get("co2eq_kg"))}</td>'
            f'<td class="n">{esc(e.get("pue", "-"))}</td>'
            f'<td class="n">{"unknown" if intensity is None else _svg.sig(intensity)}</td>'
            f"<td>{esc(where)}</td></tr>"
        )
    missing = job.get("missing_ranks") or []
    note = (
        f'<p class="warn">Missing ranks (no final report): {esc(", ".join(map(str, missing)))}</p>'
        if missing
        else ""
    )
    return (
        f"<h2>Distributed job: {len(rows)} node(s), {esc(job.get('world_size', '?'))} rank(s)</h2>"
        '<table><tr><th>node</th><th>ranks</th><th class="n">energy</th>'
        '<th class="n">CO2eq</th><th class="n">PUE</th><th class="n">gCO2eq/kWh</th>'
        f"<th>location</th></tr>{''.join(rows)}</table>{note}"
        '<p class="note">The power chart shows rank 0\'s node only.</p>'
    )


def _methods(report: EnergyReport, domains: list[str]) -> str:
    by_method: dict[str, list[str]] = {}
    for d in domains:
        by_method.setdefault(report.methods[d], []).append(d)
    items = [
        f"<li><code>{esc(m)}</code> ({esc(', '.join(ds))}): "
        f"{esc(METHOD_LIMITS.get(m, 'see the mlflow-green documentation.'))}</li>"
        for m, ds in by_method.items()
    ]
    absent = [d for d in DOMAINS if d not in domains]
    if absent:
        items.append(f"<li>Not measured (no meter): {esc(', '.join(absent))}.</li>")
    items.append(
        f"<li>Scope <code>{esc(report.scope)}</code>: {esc(_SCOPES.get(report.scope, ''))}</li>"
    )
    items.append(
        f"<li>Every kWh figure includes the PUE ({report.pue:g}); joules and watts are at the "
        "devices. CO2eq = kWh × carbon intensity.</li>"
    )
    return f"<h2>How these numbers were obtained</h2><ul>{''.join(items)}</ul>"


def _settings(report: EnergyReport, partial: str | None) -> str:
    intensity = report.carbon_intensity_g_per_kwh
    rows: list[tuple[str, str]] = [
        ("PUE", f"{report.pue:g}"),
        ("scope", report.scope),
        ("country", report.country or "unknown"),
    ]
    if report.region:
        rows.append(("region", report.region))
    if report.cloud_provider:
        rows.append(("cloud", f"{report.cloud_provider}:{report.cloud_region}"))
    rows += [
        ("carbon intensity", "unknown" if intensity is None else f"{intensity:g} gCO2eq/kWh"),
        ("intensity source", report.intensity_source),
    ]
    rows += [(f"hardware: {k}", v) for k, v in report.hardware.items() if v]
    rows += [(f"meter failure: {d}", why) for d, why in report.failures.items()]
    if partial:
        rows.append(("partial", partial))
    rows += [
        (
            "device energy",
            f"{report.device_energy_j:.6g} J "
            f"({report.device_energy_j / J_PER_KWH:.6g} kWh, no PUE)",
        ),
        ("mlflow-green", report.version),
    ]
    html = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
    return f"<h2>Settings</h2><table>{html}</table>"
