"""The experiment report (``mlflow-green report``): an experiment's runs side by side, one page.

Quality against energy with the Pareto front, and a table of each run's metric,
energy, phase, CO2eq, duration, per-domain energy and meters. Self-contained HTML
(inline CSS and SVG). Energy on the chart is the ``train`` phase's where a run has
one that stands for its training, the whole run's otherwise: the rule of
``mlflow-green rank`` (:func:`mlflow_green.registry._search.train_phase_kwh`); the table
says which. Values that are not finite (MLflow's SQLite store keeps inf as 1.8e308) are
missing: such a run is listed, off the chart, and the page says why.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mlflow_green.measure.meters import DOMAINS
from mlflow_green.registry._search import train_phase_kwh
from mlflow_green.runs import _svg
from mlflow_green.runs._svg import esc

ENERGY = "green/energy_kwh"
TRAIN = "green/phase/train_kwh"
CO2EQ = "green/co2eq_kg"
#: Runs per search request (MLflow's limit for ``search_runs``).
PAGE_SIZE = 1000
#: Runs named at most in the note on runs left off the chart.
OFF_CHART_NAMED = 20
FRONT_COLOUR, OTHER_COLOUR = "#2e7d32", "#9e9e9e"


@dataclass(frozen=True)
class RunRow:
    """What the report shows of one run."""

    run_id: str
    name: str
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    start_ms: int | None = None
    end_ms: int | None = None

    def metric(self, name: str) -> float | None:
        """The metric's value; ``None`` when absent or not finite (see :func:`_svg.finite`)."""
        return _svg.finite(self.metrics.get(name))

    @property
    def duration_s(self) -> float | None:
        seconds = self.metric("green/duration_s")
        if seconds is None and self.start_ms is not None and self.end_ms is not None:
            seconds = (self.end_ms - self.start_ms) / 1000
        return seconds if seconds is not None and seconds >= 0 else None

    def ranking_energy(self) -> tuple[float | None, str]:
        """(kWh, basis): the ``train`` phase's energy where it stands for the run's training
        (finite, > 0, not a multi-node job: ``mlflow-green rank``'s rule), else the run's."""
        phase_kwh = train_phase_kwh(self.metrics, self.tags)
        if phase_kwh is not None:
            return phase_kwh, "train phase"
        run_kwh = self.metric(ENERGY)
        if run_kwh is not None:
            return run_kwh, "whole run"
        return None, "not measured"


def read_runs(client: Any, experiment_id: str) -> list[RunRow]:
    """Every active run of the experiment, newest first (a request per 1,000 runs)."""
    rows, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id], max_results=PAGE_SIZE, page_token=token, order_by=["start_time DESC"]
        )
        for run in page:
            info, data = run.info, run.data
            rows.append(
                RunRow(
                    run_id=info.run_id,
                    name=info.run_name or info.run_id,
                    metrics=dict(data.metrics),
                    tags={k: v for k, v in data.tags.items() if k.startswith("green.")},
                    start_ms=info.start_time,
                    end_ms=info.end_time,
                )
            )
        token = page.token
        if not token:
            return rows


def metric_names(runs: Sequence[RunRow]) -> list[str]:
    """The metrics the runs have, the runs' own first, then mlflow-green's, each sorted."""
    names = {k for r in runs for k in r.metrics}
    return sorted(names, key=lambda n: (n.startswith("green/"), n))


def render_experiment_page(
    experiment_name: str,
    runs: Sequence[RunRow],
    metric: str,
    greater_is_better: bool = True,
    source: str = "",
) -> str:
    """The report as one HTML string; ``source`` says where the runs were read (a URI)."""
    points, front = _front(runs, metric, greater_is_better)
    order = sorted(
        runs,
        key=lambda r: (
            r.run_id not in front,
            not math.isfinite(_quality(r, metric, greater_is_better)),
            -_quality(r, metric, greater_is_better),
        ),
    )
    better = "higher" if greater_is_better else "lower"
    generated = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    body = [
        f"<h1>Experiment {esc(experiment_name)}: {esc(metric)} against energy</h1>",
        f'<p class="sub">{len(runs)} run(s) · {esc(source)} · generated {generated} by '
        "<code>mlflow-green report</code></p>",
        f"<h2>{esc(metric)} ({better} is better) against energy</h2>",
        _chart(points, front, metric, better),
        _off_chart(runs, points, metric),
        f'<p class="note">Energy: the <code>train</code> phase\'s '
        "(<code>green/phase/train_kwh</code>) where a run has one above 0 and is not a "
        "multi-node job, the whole run's "
        "(<code>green/energy_kwh</code>) otherwise (in bold in the table). Pareto front "
        "(green, ★): runs that no other "
        f"run matches or beats on both {esc(metric)} and energy while beating it on one.</p>",
        "<h2>Runs</h2>",
        _table(order, front, metric),
    ]
    return _svg.page(f"{experiment_name}: {metric} against energy", "".join(body))


def _quality(run: RunRow, metric: str, greater_is_better: bool) -> float:
    value = run.metric(metric)
    if value is None:
        return -math.inf
    return value if greater_is_better else -value


def _front(
    runs: Sequence[RunRow], metric: str, greater_is_better: bool
) -> tuple[list[tuple[RunRow, float, float]], set[str]]:
    """The plottable runs as (run, kWh, metric) and the run ids on the Pareto front."""
    points = []
    for r in runs:
        kwh, _ = r.ranking_energy()
        value = r.metric(metric)
        if kwh is not None and kwh > 0 and value is not None:
            points.append((r, kwh, value))
    if not points:
        return points, set()
    from mlflow_green.registry.rank import pareto_front

    sign = 1.0 if greater_is_better else -1.0
    mask = pareto_front([sign * v for _, _, v in points], [k for _, k, _ in points])
    return points, {p[0].run_id for p, on in zip(points, mask, strict=True) if on}


def _chart(
    points: list[tuple[RunRow, float, float]], front: set[str], metric: str, better: str
) -> str:
    if not points:
        return (
            f"<p>No run has both <code>{esc(metric)}</code> and a measured energy: "
            "nothing to plot.</p>"
        )
    energies = [k for _, k, _ in points]
    values = [v for _, _, v in points]
    scale, unit = _svg.energy_unit(max(energies))
    lo_e, hi_e = min(energies) / scale, max(energies) / scale
    log_x = hi_e / lo_e > 20
    if log_x:
        x0, x1 = 10 ** math.floor(math.log10(lo_e)), 10 ** math.ceil(math.log10(hi_e))
        xticks = _svg.log_ticks(x0, x1)
    else:
        xticks = _svg.nice_ticks(hi_e * 1.08)
        x0, x1 = 0.0, xticks[-1]
    yticks = _svg.nice_range(min(values), max(values))
    frame = _svg.Frame(x0, x1, yticks[0], yticks[-1], height=340, right=120, log_x=log_x)
    scale_note = ", log scale" if log_x else ""
    svg = [
        frame.open(f"{metric} against energy, Pareto front marked"),
        _svg.axes(
            frame, xticks, yticks, f"energy ({unit}{scale_note})", f"{metric} ({better} is better)"
        ),
        _scatter(frame, [(k / scale, v, r.name, r.run_id in front) for r, k, v in points]),
        "</svg>",
    ]
    return "".join(svg)


def _off_chart(
    runs: Sequence[RunRow], points: list[tuple[RunRow, float, float]], metric: str
) -> str:
    """A note naming the runs left off the chart, and why."""
    plotted = {r.run_id for r, _, _ in points}
    why = []
    for r in runs:
        if r.run_id in plotted:
            continue
        if metric not in r.metrics:
            reason = f"no {metric}"
        elif r.metric(metric) is None:
            reason = f"{metric} not finite"
        elif r.ranking_energy()[0] is None:
            reason = "energy not measured" if ENERGY not in r.metrics else "energy not finite"
        else:
            reason = "energy 0"
        why.append(f"{esc(r.name)} ({esc(reason)})")
    if not why:
        return ""
    more = len(why) - OFF_CHART_NAMED
    named = ", ".join(why[:OFF_CHART_NAMED]) + (f" and {more} more" if more > 0 else "")
    return f'<p class="note off-chart">Not on the chart ({len(why)}): {named}.</p>'


def _meters(run: RunRow) -> str:
    parts = [
        f"{d}: {run.tags[f'green.{d}_meter']}"
        for d in DOMAINS
        if run.tags.get(f"green.{d}_meter", "none") != "none"
    ]
    return "<br>".join(esc(p) for p in parts) or "-"


def _cell(value: float | None, fmt: Any = None, ranked: bool = False) -> str:
    if value is None:
        return '<td class="n">-</td>'
    if _svg.finite(value) is None:  # logged, but not a number to show (inf, NaN, 1.8e308)
        return f'<td class="n" title="{esc(repr(value))}: not finite">-</td>'
    text = fmt(value) if fmt else _svg.sig(value, 4)
    cls = "n ranked" if ranked else "n"
    return f'<td class="{cls}" title="{value!r}">{esc(text)}</td>'


def _table(runs: Sequence[RunRow], front: set[str], metric: str) -> str:
    domains = [d for d in DOMAINS if any(f"green/energy/{d}_kwh" in r.metrics for r in runs)]
    head = [metric, "train phase", "run energy", "CO2eq", "duration", *domains]
    rows = []
    for r in runs:
        _, basis = r.ranking_energy()
        on = r.run_id in front
        m = r.metrics
        cells = [
            f"<td>{esc(r.name)}</td>",
            f'<td class="pareto-mark">{"★" if on else ""}</td>',
            _cell(m.get(metric)),
            _cell(m.get(TRAIN), _svg.energy, basis == "train phase"),
            _cell(m.get(ENERGY), _svg.energy, basis == "whole run"),
            _cell(m.get(CO2EQ), _svg.mass_co2),
            _cell(r.duration_s, _svg.duration),
            *(_cell(m.get(f"green/energy/{d}_kwh"), _svg.energy) for d in domains),
            f"<td>{_meters(r)}</td>",
        ]
        rows.append(f'<tr class="{"front" if on else "run"}">{"".join(cells)}</tr>')
    header = "<th>run</th><th>Pareto</th>"
    header += "".join(f'<th class="n">{esc(h)}</th>' for h in head) + "<th>meters</th>"
    return (
        f'<div class="wide"><table><tr>{header}</tr>{"".join(rows)}</table></div>'
        '<p class="note">In bold: the energy on the chart. Domains: energy per domain (PUE '
        "applied, they add up to the run's energy); meters: how each was measured.</p>"
    )


def _scatter(
    frame: _svg.Frame, points: Sequence[tuple[float, float, str, bool]], front_line: bool = True
) -> str:
    """Labelled points ``(x, y, label, on_front)``; the front's points joined as a staircase."""
    out = []
    front = sorted((p for p in points if p[3]), key=lambda p: p[0])
    if front_line and len(front) > 1:
        path = [f"M{frame.px(front[0][0]):.1f} {frame.py(front[0][1]):.1f}"]
        for x, y, _, _ in front[1:]:
            path.append(f"H{frame.px(x):.1f}V{frame.py(y):.1f}")
        out.append(
            f'<path class="pareto-line" d="{"".join(path)}" fill="none" '
            f'stroke="{FRONT_COLOUR}" stroke-width="1.5"/>'
        )
    for x, y, label, on_front in points:
        px, py = frame.px(x), frame.py(y)
        colour, radius = (FRONT_COLOUR, 5) if on_front else (OTHER_COLOUR, 4)
        cls = "point pareto" if on_front else "point"
        out.append(
            f'<g class="{cls}"><circle cx="{px:.1f}" cy="{py:.1f}" r="{radius}" '
            f'fill="{colour}"><title>{esc(label)}</title></circle>'
            f'<text x="{px + 7:.1f}" y="{py - 6:.1f}">{esc(label)}</text></g>'
        )
    return "".join(out)
