"""The reports in a real browser: a run's ``green/report.html`` inside ``mlflow ui``, and the
experiment report of ``mlflow-green report``.

Headless Debian Chromium driven by Playwright, through the same functions that make the
docs' screenshots (scripts/ui_screenshots.py). Skipped, saying why, where Chromium or
Playwright is missing (``.ci/run`` installs Chromium, so CI always runs it). Every wait is
for something on the page, with generous timeouts for a busy machine; no sleeps.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from mlflow import MlflowClient

from mlflow_green.runs import _svg
from scripts import ui_screenshots as ui

_MISSING = ui.missing_browser()
pytestmark = pytest.mark.skipif(
    _MISSING is not None, reason=f"browser tests need Chromium and Playwright: {_MISSING}"
)


@pytest.fixture(scope="module")
def session() -> Iterator[ui.UiSession]:
    with ui.ui_session() as s:
        yield s


def _metrics(s: ui.UiSession, run_name: str) -> dict[str, float]:
    return MlflowClient(s.tracking_uri).get_run(s.run_ids[run_name]).data.metrics


@pytest.mark.parametrize("run_name", ["forest-30"])
def test_run_report_shows_in_mlflow_artifact_viewer(session: ui.UiSession, run_name: str) -> None:
    frame = ui.open_run_report(session, run_name)
    m = _metrics(session, run_name)
    # The headline figures are the run's own metrics, in readable units.
    energy = frame.locator("#card-energy")
    assert energy.locator(".v").inner_text() == _svg.energy(m["green/energy_kwh"])
    assert f"{m['green/energy_kwh']:.6g} kWh" in energy.inner_text()
    co2eq = frame.locator("#card-co2eq")
    assert co2eq.locator(".v").inner_text() == _svg.mass_co2(m["green/co2eq_kg"])
    assert "gCO2eq/kWh" in co2eq.inner_text()
    # The phase table, the power chart with its shaded phases, and the methods.
    phases = frame.get_by_role("table").filter(has_text="share of the run")
    train_row = phases.get_by_role("row").filter(has_text="train")
    assert _svg.energy(m["green/phase/train_kwh"]) in train_row.inner_text()
    meters = MlflowClient(session.tracking_uri).get_run(session.run_ids[run_name]).data.tags
    metered = [d for d in ("gpu", "cpu", "ram") if meters[f"green.{d}_meter"] != "none"]
    chart = frame.locator('svg[aria-label^="power over time"]')
    assert chart.locator("path.series").count() == len(metered)
    assert chart.locator("g.phase", has_text="train").count() == 1
    assert frame.get_by_text(meters["green.cpu_meter"]).first.is_visible()
    # Domains without a meter are not listed as measured ones.
    if meters["green.gpu_meter"] == "none":
        domains = frame.get_by_role("table").filter(has_text="mean power")
        assert domains.get_by_role("row").filter(has_text="gpu").count() == 0


def test_experiment_report_lists_every_run_and_marks_the_pareto_front(
    session: ui.UiSession,
) -> None:
    chart = ui.open_experiment_report(session)
    page = session.page
    assert page.get_by_role("heading", name=f"Experiment {ui.EXPERIMENT}").is_visible()
    table = page.get_by_role("table")
    for name in session.run_ids:
        assert table.get_by_role("row").filter(has_text=name).count() == 1
        assert chart.locator(".point", has_text=name).count() == 1
    front = chart.locator(".point.pareto")
    marked = table.locator("td.pareto-mark", has_text="★")
    assert front.count() >= 1
    assert marked.count() == front.count()
    # The most accurate run is always on the front.
    best = max(session.run_ids, key=lambda n: _metrics(session, n)["accuracy"])
    assert table.locator("tr.front").filter(has_text=best).count() == 1
