"""The HTML pages: a run's ``green/report.html``, the experiment report and ``mlflow-green report``.

Pages are rendered from real ``EnergyReport`` objects and real MLflow runs (SQLite);
what a browser shows of them is tests/test_browser.py's job.
"""

from __future__ import annotations

import math
import re

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from mlflow_green.cli.report import report as report_command
from mlflow_green.measure.report import J_PER_KWH, EnergyReport, TimelinePoint
from mlflow_green.runs import _svg
from mlflow_green.runs.experiment_page import RunRow, metric_names, render_experiment_page
from mlflow_green.runs.page import MAX_CHART_POINTS, METHOD_LIMITS, PhaseSpan, render_run_page
from tests.mlflow_server import sqlite_db_copy

CPU_J, RAM_J = 1.2, 0.35


def make_report(
    timeline_s: int = 3,
    ram_w: float = 9.4155,
    intensity: float | None = 56.0,
    source: str = "codecarbon energy mix",
    **overrides,
) -> EnergyReport:
    """A CPU+RAM report (no GPU meter), one timeline point a second."""
    fields = dict(
        name="run abc",
        start_time_s=1_700_000_000.0,
        duration_s=float(timeline_s),
        energy_j_by_domain={"gpu": 0.0, "cpu": CPU_J, "ram": RAM_J},
        energy_j_by_device={"gpu": {}, "cpu": {"package-0": CPU_J}, "ram": {"ram": RAM_J}},
        methods={"gpu": "none", "cpu": "rapl", "ram": "estimate-ram-size"},
        hardware={"cpu": "Xeon & co", "ram": "16 GB"},
        scope="machine",
        pue=1.5,
        carbon_intensity_g_per_kwh=intensity,
        intensity_source=source,
        country="FRA",
        region=None,
        timeline=[
            TimelinePoint(float(t), {"gpu": 0.0, "cpu": 20.0 + t % 7, "ram": ram_w})
            for t in range(1, timeline_s + 1)
        ],
    )
    fields.update(overrides)
    return EnergyReport(**fields)


def svg_of(page: str) -> str:
    return re.search(r'<svg[^>]*aria-label="power over time.*?</svg>', page, re.S).group(0)


def test_headline_figures_in_readable_units_with_intensity_and_source() -> None:
    r = make_report()
    page = render_run_page(r, run_name="forest-30")
    assert "<h1>Energy report: forest-30</h1>" in page
    kwh = (CPU_J + RAM_J) * 1.5 / J_PER_KWH  # 6.46e-7 kWh
    assert _svg.energy(kwh) == "0.646 mWh"
    assert "0.646 mWh" in page and f"{kwh:.6g} kWh" in page
    assert _svg.mass_co2(r.co2eq_kg) in page  # 3.6e-8 kg -> mg
    assert "mg" in _svg.mass_co2(r.co2eq_kg)
    assert "at 56.0 gCO2eq/kWh (codecarbon energy mix)" in page
    assert "PUE 1.5" in page


@pytest.mark.parametrize(
    ("kwh", "text"),
    [
        (0.0, "0 Wh"),
        (2.5, "2.50 kWh"),
        (0.0123, "12.3 Wh"),
        (1.2e-4, "120 mWh"),
        (3e-12, "0.00300 µWh"),
    ],
)
def test_energy_units(kwh: float, text: str) -> None:
    assert _svg.energy(kwh) == text


def test_unknown_co2_says_unknown_and_why() -> None:
    why = "unknown: MLFLOW_GREEN_COUNTRY='FRQ' is not a country code"
    page = render_run_page(make_report(intensity=None, source=why))
    card = re.search(r'id="card-co2eq".*?</div></div>', page, re.S).group(0)
    assert ">unknown<" in card
    assert "MLFLOW_GREEN_COUNTRY=&#x27;FRQ&#x27; is not a country code" in card
    assert "None" not in page


def test_domains_without_a_meter_are_absent() -> None:
    page = render_run_page(make_report())
    domains = re.search(r"<h2>Energy by domain</h2><table>.*?</table>", page, re.S).group(0)
    assert "<td>cpu</td>" in domains and "<td>ram</td>" in domains
    assert "gpu" not in domains
    assert "Not measured (no meter): gpu." in page
    assert re.findall(r'class="series (\w+)"', svg_of(page)) == ["cpu", "ram"]


def test_every_user_string_is_escaped() -> None:
    evil = '<script>alert("x")</script>'
    r = make_report(hardware={"cpu": evil}, failures={"cpu": evil}, region=evil)
    page = render_run_page(
        r,
        run_name=evil,
        phases=[PhaseSpan(evil, 0.2, 1.0)],
        phase_kwh={evil: 1e-7},
        job={"world_size": 2, "nodes": {evil: {"ranks": [0, 1], "energy_kwh": 1e-7}}},
        partial=evil,
    )
    assert "<script" not in page
    assert page.count("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;") >= 8
    rows = [RunRow("id1", evil, {"accuracy": 0.9, "green/energy_kwh": 1e-6}, {})]
    assert "<script" not in render_experiment_page(evil, rows, "accuracy")


def test_page_is_self_contained() -> None:
    page = render_run_page(make_report(), phases=[PhaseSpan("train", 0.5, 2.0)])
    assert page.startswith("<!DOCTYPE html>") and page.endswith("</html>")
    assert "<script" not in page and " src=" not in page and " href=" not in page
    assert re.findall(r"https?://[^\"' ]+", page) == ["http://www.w3.org/2000/svg"]


def test_phases_shaded_and_tabulated() -> None:
    r = make_report()
    spans = [
        PhaseSpan("train", 0.5, 2.0),
        PhaseSpan("evaluate", 2.0, 2.5),
        PhaseSpan("train", 2.5, 2.7),
        PhaseSpan("load", 0.0, 0.25),  # from the run's start
    ]
    page = render_run_page(r, phases=spans, phase_kwh={"train": 4e-7, "evaluate": 1e-7})
    svg = svg_of(page)
    assert svg.count('class="phase"') == 4
    table = re.search(r"<h2>Energy by phase</h2><table>.*?</table>", page, re.S).group(0)
    train = re.search(r"<tr><td>train</td>.*?</tr>", table).group(0)
    assert "0.400 mWh" in train and "1.70 s" in train  # two blocks summed
    assert f"{4e-7 / r.energy_kwh * 100:.1f}%" in train
    assert re.search(
        r'<tr><td>load</td><td class="n">-</td><td class="n">-</td><td class="n">0.250 s', table
    )


def test_a_nearly_constant_series_is_drawn_flat_from_zero() -> None:
    # A RAM estimate wobbling in its fourth decimal (9.4145-9.4165 W) must not read as spikes.
    timeline = [
        TimelinePoint(float(t), {"cpu": 20.0, "ram": 9.4145 + 0.002 * (t % 2)})
        for t in range(1, 31)
    ]
    svg = svg_of(render_run_page(make_report(timeline_s=30, timeline=timeline)))
    ram = re.findall(r'class="series ram" d="(M[^"]+)"', svg)[0]
    ys = [float(y) for y in re.findall(r"V([\d.]+)", ram)]
    assert max(ys) - min(ys) <= 0.2  # pixels: flat
    labels = re.findall(r'text-anchor="end">([^<]+)</text>', svg)
    assert labels[0] == "0" and labels[-1] == "25"  # from 0 to a rounded maximum (20 W cpu)


def test_a_long_timeline_is_downsampled_keeping_its_energy() -> None:
    hour = make_report(timeline_s=3600)
    svg = svg_of(render_run_page(hour))
    paths = re.findall(r'class="series \w+" d="(M[^"]+)"', svg)
    assert len(paths) == 2
    for path in paths:
        assert path.count("V") <= MAX_CHART_POINTS
    ends = [p.t_s for p in hour.timeline]
    watts = [p.power_w["cpu"] for p in hour.timeline]
    t, v = _svg.downsample(ends, watts, MAX_CHART_POINTS)
    joules = sum(w * (b - a) for w, a, b in zip(v, [0.0, *t], t, strict=False))
    assert len(v) <= MAX_CHART_POINTS
    assert joules == pytest.approx(sum(watts), rel=1e-9)  # 1 s intervals


def test_no_timeline_and_no_meter_are_said() -> None:
    r = make_report(timeline=[], methods={"gpu": "none", "cpu": "none", "ram": "none"})
    page = render_run_page(r)
    assert "No power timeline was recorded" in page
    assert "No domain had a meter" in page


def test_each_method_used_has_its_sentence() -> None:
    contract = {"nvml-energy-counter", "nvml-power", "rapl", "estimate-tdp", "estimate-ram-size"}
    assert contract <= set(METHOD_LIMITS)
    page = render_run_page(make_report())
    assert _svg.esc(METHOD_LIMITS["rapl"]) in page
    assert _svg.esc(METHOD_LIMITS["estimate-ram-size"]) in page
    assert _svg.esc(METHOD_LIMITS["estimate-tdp"]) not in page


def test_settings_failures_and_job_nodes() -> None:
    r = make_report(failures={"cpu": "package-0 stepped back; 3 s uncounted"})
    job = {
        "world_size": 4,
        "missing_ranks": [3],
        "nodes": {
            "node-a": {"ranks": [0, 1], "energy_kwh": 2e-3, "co2eq_kg": 1e-4, "pue": 1.2,
                       "carbon_intensity_g_per_kwh": 50.0, "country": "FRA"},
            "node-b": {"ranks": [2], "energy_kwh": 1e-3, "co2eq_kg": None, "pue": 1.0,
                       "carbon_intensity_g_per_kwh": None},
        },
    }  # fmt: skip
    page = render_run_page(r, job=job, partial="created 3.0 s after its start")
    assert "Distributed job: 2 node(s), 4 rank(s)" in page
    assert "<td>node-a</td><td>0, 1</td>" in page and "2.00 Wh" in page
    assert "Missing ranks (no final report): 3" in page
    assert "package-0 stepped back; 3 s uncounted" in page
    assert "created 3.0 s after its start" in page
    assert "<th>hardware: cpu</th><td>Xeon &amp; co</td>" in page


# --- the experiment report ----------------------------------------------------------------------


def rows() -> list[RunRow]:
    def run(name, acc, kwh, train=None, **more):
        m = {"accuracy": acc, "green/energy_kwh": kwh, **more}
        if train is not None:
            m["green/phase/train_kwh"] = train
        return RunRow(f"id-{name}", name, m, {"green.cpu_meter": "rapl", "green.gpu_meter": "none"})

    return [
        run("small", 0.90, 4e-6, 1e-6),
        run("big", 0.97, 9e-6, 8e-6),
        run("worse", 0.89, 8e-6, 5e-6),  # dominated by small
        run("whole", 0.95, 7e-6),  # no phase: the whole run's energy
        RunRow("id-bare", "bare", {"accuracy": 0.99}),  # not measured: listed, not plotted
    ]


def test_experiment_page_marks_the_pareto_front_and_says_the_energy_basis() -> None:
    page = render_experiment_page("digits", rows(), "accuracy", source="sqlite:///x.db")
    front = re.findall(r'<g class="point pareto">.*?<title>([^<]+)</title>', page)
    assert sorted(front) == ["big", "small", "whole"]
    assert page.count("★</td>") == 3
    assert re.search(r"<td>worse</td><td class=\"pareto-mark\"></td>", page)
    # In bold (class ranked): the train phase's energy where there is one, else the run's.
    whole = re.search(r"<td>whole</td>.*?</tr>", page).group(0)
    assert re.findall(r'class="n ranked" title="([^"]+)"', whole) == [repr(7e-6)]
    small = re.search(r"<td>small</td>.*?</tr>", page).group(0)
    assert re.findall(r'class="n ranked" title="([^"]+)"', small) == [repr(1e-6)]
    assert "<td>bare</td>" in page and page.count('class="point') == 4
    assert "cpu: rapl" in page and "gpu:" not in page


def test_experiment_page_lower_is_better() -> None:
    runs = [
        RunRow("a", "a", {"rmse": 0.5, "green/energy_kwh": 1e-6}),
        RunRow("b", "b", {"rmse": 0.2, "green/energy_kwh": 2e-6}),
        RunRow("c", "c", {"rmse": 0.6, "green/energy_kwh": 3e-6}),
    ]
    page = render_experiment_page("e", runs, "rmse", greater_is_better=False)
    assert sorted(re.findall(r'class="point pareto">.*?<title>([^<]+)<', page)) == ["a", "b"]
    assert "rmse (lower is better)" in page


def test_metric_names_lists_the_runs_own_first() -> None:
    assert metric_names(rows())[:1] == ["accuracy"]
    assert metric_names(rows())[-1].startswith("green/")


# --- mlflow-green report ------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path) -> str:
    uri = f"sqlite:///{sqlite_db_copy(tmp_path / 'mlflow.db')}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("digits")
    for name, acc, kwh in (("logreg", 0.95, 3e-6), ("forest", 0.97, 2e-6)):
        run = client.create_run(experiment, run_name=name)
        client.log_metric(run.info.run_id, "accuracy", acc)
        client.log_metric(run.info.run_id, "f1", acc)
        client.log_metric(run.info.run_id, "green/energy_kwh", kwh)
        client.set_terminated(run.info.run_id)
    client.create_experiment("other")
    return uri


def invoke(*args: str):
    return CliRunner().invoke(report_command, list(args))


def test_report_command_writes_the_page(store, tmp_path) -> None:
    out = tmp_path / "report.html"
    result = invoke("--experiment", "digits", "-o", str(out), "--tracking-uri", store)
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    assert "<td>logreg</td>" in page and "<td>forest</td>" in page
    assert "2 run(s)" in result.output


def test_report_command_unknown_experiment_names_it_and_the_existing_ones(store, tmp_path) -> None:
    result = invoke(
        "--experiment", "digitz", "-o", str(tmp_path / "r.html"), "--tracking-uri", store
    )
    assert result.exit_code == 2
    assert "'digitz'" in result.output and "'digits'" in result.output
    assert "'other'" in result.output and not (tmp_path / "r.html").exists()


def test_report_command_metric_the_runs_lack_lists_theirs(store, tmp_path) -> None:
    out = str(tmp_path / "r.html")
    result = invoke("--experiment", "digits", "-o", out, "--metric", "auc", "--tracking-uri", store)
    assert result.exit_code == 2
    assert "--metric 'auc'" in result.output and "accuracy, f1, green/energy_kwh" in result.output


def test_report_command_checks_options_before_connecting(tmp_path) -> None:
    missing_db = tmp_path / "absent.db"
    uri = f"sqlite:///{missing_db}"
    bad_out = str(tmp_path / "no-such-folder" / "r.html")
    result = invoke("--experiment", "digits", "-o", bad_out, "--tracking-uri", uri)
    assert result.exit_code == 2 and "no-such-folder" in result.output
    result = invoke("--experiment", "digits", "-o", str(tmp_path / "r.html"), "--tracking-uri", uri)
    assert result.exit_code == 2 and f"no SQLite database at {missing_db}" in result.output
    assert not missing_db.exists()  # no database created


# --- numbers that are not numbers, many phases, the ranking's energy rule -------------------------

#: What MLflow's SQLite store gives back for a logged inf.
SQLITE_INF = 1.7976931348623157e308
NOT_FINITE = [float("nan"), float("inf"), -float("inf"), SQLITE_INF, -SQLITE_INF]


@pytest.mark.parametrize("bad", NOT_FINITE, ids=["nan", "inf", "-inf", "sqlite-inf", "-sqlite-inf"])
def test_run_page_renders_with_non_finite_power_and_duration(bad: float) -> None:
    timeline = [
        TimelinePoint(1.0, {"cpu": 20.0, "ram": 9.0}),
        TimelinePoint(2.0, {"cpu": bad, "ram": 9.0}),
        TimelinePoint(3.0, {"cpu": 22.0, "ram": 9.0}),
    ]
    page = render_run_page(make_report(timeline=timeline), phases=[PhaseSpan("train", 0.5, bad)])
    svg = svg_of(page)
    assert "nan" not in svg.lower() and "inf" not in svg.lower()
    cpu = re.findall(r'class="series cpu" d="(M[^"]+)"', svg)[0]
    assert cpu.count("M") == 2  # a gap where the power is unknown
    labels = re.findall(r'text-anchor="end">([^<]+)</text>', svg)
    assert labels[-1] == "25"  # the axis fits the known values
    page = render_run_page(make_report(duration_s=bad, start_time_s=bad))
    card = re.search(r'id="card-duration".*?</div></div>', page, re.S).group(0)
    assert '<div class="v">-</div>' in card


@pytest.mark.parametrize("bad", [*NOT_FINITE, 1e308])
def test_axis_and_number_helpers_are_total(bad: float) -> None:
    for ticks in (
        _svg.nice_ticks(bad),
        _svg.nice_range(bad, bad),
        _svg.nice_range(bad, 2.0),
        _svg.nice_range(-9e307, 9e307),  # finite, but the span overflows
        _svg.log_ticks(bad, 10.0),
        _svg.log_ticks(1e-320, 9e307),
    ):
        assert ticks and len(ticks) < 100 and all(abs(t) < 1.8e308 for t in ticks)
    assert _svg.nice_range(bad, 2.0)[0] < 2.0 < _svg.nice_range(bad, 2.0)[-1]
    for text in (_svg.sig(bad), _svg.energy(bad), _svg.duration(bad), _svg.tick_label(bad, 1)):
        assert text == _svg.MISSING
    assert _svg.mass_co2(bad) == "unknown"
    assert _svg.tick_label(2.0, bad) == "2.00"
    frame = _svg.Frame(-9e307, 9e307, bad, 1.0)
    assert all(math.isfinite(p) for p in (frame.px(bad), frame.px(1.0), frame.py(0.5)))


def test_two_hundred_epochs_of_phases_keep_the_chart_whole() -> None:
    n = 2000
    timeline = [TimelinePoint(float(t), {"cpu": 50.0, "ram": 5.0}) for t in range(1, n + 1)]
    phases = []
    for epoch in range(200):
        phases += [
            PhaseSpan("train", epoch * 10, epoch * 10 + 8),
            PhaseSpan("eval", epoch * 10 + 8, epoch * 10 + 10),
        ]
    svg = svg_of(render_run_page(make_report(timeline_s=n, timeline=timeline), phases=phases))
    bands = re.findall(
        r'<g class="phase"><rect x="[^"]+" y="([\d.]+)" [^>]*height="([-\d.]+)"', svg
    )
    assert len(bands) == 400
    top = float(bands[0][0])
    assert all(float(h) >= 150 for _, h in bands)  # the plot area keeps most of the 280 px
    label = r'<g class="phase"><rect [^>]*><title>\w+</title></rect><text [^>]*y="([\d.]+)">(\w+)<'
    labels = re.findall(label, svg)
    assert sorted(name for _, name in labels) == ["eval", "train"]  # each name once
    assert all(0 < float(y) < top for y, _ in labels)  # above the plot, inside the picture
    assert top <= 16 + 11 * 2 + 1  # at most three label rows


def test_back_to_back_spans_of_one_name_are_one_band() -> None:
    phases = [PhaseSpan("train", t, t + 1) for t in range(3)] + [PhaseSpan("eval", 2.5, 3.0)]
    svg = svg_of(render_run_page(make_report(), phases=phases))
    assert re.findall(r"<title>(\w+)</title>", svg) == ["train", "eval"]


def test_experiment_page_uses_the_rankings_energy_rule() -> None:
    from mlflow_green.registry._search import training_energy

    def run(name, train, tags=None, **more):
        metrics = {"accuracy": 0.9, "green/energy_kwh": 4e-6, "green/phase/train_kwh": train}
        return RunRow(f"id-{name}", name, {**metrics, **more}, tags or {})

    runs = [
        run("phase", 1e-6),
        run("zero", 0.0),  # too short for the counter: the run's energy, not 0
        run("inf", SQLITE_INF),
        run("node-metrics", 1e-6, **{"green/node/a/energy_kwh": 2e-6}),
        run("two-nodes", 1e-6, {"green.nodes": "2"}),
        run("one-node", 1e-6, {"green.nodes": "1"}),
    ]
    page = render_experiment_page("e", runs, "accuracy")
    for r in runs:
        kwh, basis = r.ranking_energy()
        expected_kwh, _, source = training_energy(r.metrics, r.tags)
        assert kwh == expected_kwh and (basis == "train phase") == (source == "phase:train")
        row = re.search(rf"<td>{r.name}</td>.*?</tr>", page).group(0)
        assert re.findall(r'class="n ranked" title="([^"]+)"', row) == [repr(kwh)]
    assert [r.name for r in runs if r.ranking_energy()[1] == "train phase"] == ["phase", "one-node"]


def test_experiment_page_leaves_non_finite_runs_off_the_chart_with_a_note() -> None:
    runs = [
        RunRow(
            "a", "ok", {"loss": 0.2, "green/energy_kwh": 2e-6, "green/duration_s": NOT_FINITE[0]}
        ),
        RunRow("b", "diverged", {"loss": SQLITE_INF, "green/energy_kwh": 3e-6}),
        RunRow("c", "broken-meter", {"loss": 0.3, "green/energy_kwh": float("inf")}),
    ]
    page = render_experiment_page("e", runs, "loss", greater_is_better=False)
    assert re.findall(r"<circle [^>]*><title>([^<]+)</title>", page) == ["ok"]
    note = re.search(r'<p class="note off-chart">([^<]+)</p>', page).group(1)
    assert "diverged (loss not finite)" in note and "broken-meter (energy not finite)" in note
    diverged = re.search(r"<td>diverged</td>.*?</tr>", page).group(0)
    assert 'title="1.7976931348623157e+308: not finite">-</td>' in diverged
    assert "nan" not in re.sub(r'title="[^"]*"', "", page).lower()


def test_report_command_with_a_diverged_run(tmp_path) -> None:
    uri = f"sqlite:///{sqlite_db_copy(tmp_path / 'mlflow.db')}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("sweep")
    for name, loss, kwh in (
        ("ok-1", 0.3, 2e-6),
        ("ok-2", 0.2, 5e-6),
        ("diverged", float("inf"), 3e-6),
    ):
        run = client.create_run(experiment, run_name=name)
        client.log_metric(run.info.run_id, "loss", loss)
        client.log_metric(run.info.run_id, "green/energy_kwh", kwh)
        client.set_terminated(run.info.run_id)
    out = tmp_path / "r.html"
    args = ["--experiment", "sweep", "--metric", "loss", "--lower-is-better", "-o", str(out)]
    result = invoke(*args, "--tracking-uri", uri)
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    assert sorted(re.findall(r'class="point[^"]*">.*?<title>([^<]+)<', page)) == ["ok-1", "ok-2"]
    assert "<td>diverged</td>" in page and "diverged (loss not finite)" in page
