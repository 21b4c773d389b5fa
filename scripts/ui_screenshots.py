"""Regenerate the screenshots in docs/img/ from a real ``mlflow ui`` in headless Chromium.

    .venv/bin/python scripts/ui_screenshots.py [--out docs/img]

Logs a few short scikit-learn runs with ``mlflow_green.autolog()`` into a temporary
SQLite store (in a subprocess, as a user's script would), starts ``mlflow ui`` on it
(127.0.0.1, a free port), writes the experiment report with ``mlflow-green report``,
and drives Debian's ``/usr/bin/chromium`` with Playwright (never a browser download).
tests/test_browser.py drives the same functions, so the screenshots and the test see
the same pages.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: import tests.mlflow_server from the repository
    sys.path.insert(0, str(REPO))

from tests.mlflow_server import (  # noqa: E402
    free_port,
    log_tail,
    start_process_group,
    stop_process_group,
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
EXPERIMENT = "mlflow-green-ui"
#: Run name -> (estimator, its hyperparameters); small enough to train in about a second.
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "logreg": ("LogisticRegression", {"max_iter": 300}),
    "forest-30": ("RandomForestClassifier", {"n_estimators": 30, "random_state": 0}),
    "forest-200": ("RandomForestClassifier", {"n_estimators": 200, "random_state": 0}),
}
#: Generous: a busy 2-core machine can take tens of seconds to start the UI or draw a page.
TIMEOUT_MS = 120_000
SERVER_START_S = 120.0
VIEWPORT = {"width": 1400, "height": 900}


def missing_browser() -> str | None:
    """Why the browser cannot run here (no Chromium, no Playwright), or None."""
    if not os.path.exists(CHROMIUM):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install playwright; no browser download needed)"
    return None


def _clean_env() -> dict[str, str]:
    """This environment without MLflow's and mlflow-green's settings, telemetry off."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return {**env, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


# --- the runs -----------------------------------------------------------------------------------


def _log_runs(root: Path) -> None:
    """Log the runs of :data:`MODELS` into ``root/mlflow.db`` (run in a fresh process)."""
    import mlflow
    from sklearn import ensemble, linear_model
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    import mlflow_green

    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    mlflow.set_experiment(EXPERIMENT)
    mlflow_green.autolog(country="FRA", sample_interval_s=0.05)
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=0)
    for name, (estimator, params) in MODELS.items():
        cls = getattr(ensemble, estimator, None) or getattr(linear_model, estimator)
        with mlflow.start_run(run_name=name):
            mlflow.log_params({"model": estimator, **params})
            model = cls(**params)
            with mlflow_green.phase("train"):
                model.fit(x_train, y_train)
            with mlflow_green.phase("evaluate"):
                accuracy = model.score(x_test, y_test)
            mlflow.log_metric("accuracy", accuracy)


def make_runs(root: Path) -> str:
    """Log the runs in a subprocess (autolog stays out of this process); return the store URI."""
    env = {**_clean_env(), "PYTHONPATH": str(REPO)}
    code = "import pathlib, sys; from scripts.ui_screenshots import _log_runs; "
    code += "_log_runs(pathlib.Path(sys.argv[1]))"
    done = subprocess.run(
        [sys.executable, "-c", code, str(root)], cwd=root, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"logging the runs failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return f"sqlite:///{root / 'mlflow.db'}"


def write_experiment_report(tracking_uri: str, path: Path) -> None:
    """``mlflow-green report --experiment EXPERIMENT -o path`` (the command, in this process)."""
    from click.testing import CliRunner

    from mlflow_green.cli.report import report

    result = CliRunner().invoke(
        report, ["--experiment", EXPERIMENT, "-o", str(path), "--tracking-uri", tracking_uri]
    )
    if result.exit_code != 0:
        raise RuntimeError(f"mlflow-green report failed ({result.exit_code}): {result.output}")


# --- the UI -------------------------------------------------------------------------------------


@dataclass
class UiServer:
    """``mlflow ui`` on a store, in its own process group."""

    root: Path
    tracking_uri: str
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**_clean_env(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", self.tracking_uri]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = start_process_group(cmd, self.root, env, self.root / "ui.log")

    def wait_healthy(self, timeout_s: float = SERVER_START_S) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow ui exited {self.proc.returncode}:\n{self.tail()}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.url}/health", timeout=2) as r,
            ):
                if r.status == 200:
                    return
            time.sleep(0.2)  # polling interval of a bounded wait
        raise RuntimeError(f"mlflow ui not healthy after {timeout_s} s:\n{self.tail()}")

    def tail(self) -> str:
        return log_tail(self.root / "ui.log", 4000)

    def stop(self) -> None:
        stop_process_group(self.proc, grace_s=10)


# --- the browser --------------------------------------------------------------------------------


@dataclass
class UiSession:
    """A store with runs, ``mlflow ui`` on it, the experiment report, and a browser page."""

    root: Path
    tracking_uri: str
    server: UiServer
    page: Any  # playwright.sync_api.Page
    experiment_id: str
    run_ids: dict[str, str]
    """Run name -> run id."""
    report_path: Path
    """The experiment report ``mlflow-green report`` wrote."""

    def url(self, route: str) -> str:
        """The UI's URL of a route (MLflow 3 routes after ``#``), in its "Model training" mode."""
        sep = "&" if "?" in route else "?"
        return f"{self.server.url}/#{route}{sep}workflowType=machine_learning"


@contextlib.contextmanager
def ui_session(root: Path | None = None) -> Iterator[UiSession]:
    """Runs, server, report and a Chromium page; everything is stopped and removed after."""
    from playwright.sync_api import sync_playwright

    from tests.mlflow_server import sqlite_db_copy

    own_root = root is None
    root = Path(tempfile.mkdtemp(prefix="mlflow-green-ui-")) if root is None else root
    server: UiServer | None = None
    try:
        sqlite_db_copy(root / "mlflow.db")  # migrated once: the server and the runs share it
        tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
        server = UiServer(root, tracking_uri)
        server.start()  # starts while the runs are logged
        make_runs(root)
        report_path = root / "experiment-report.html"
        write_experiment_report(tracking_uri, report_path)
        experiment_id, run_ids = _runs_of(tracking_uri)
        server.wait_healthy()
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport=VIEWPORT)
                page.set_default_timeout(TIMEOUT_MS)
                page.set_default_navigation_timeout(TIMEOUT_MS)
                yield UiSession(
                    root, tracking_uri, server, page, experiment_id, run_ids, report_path
                )
            finally:
                browser.close()
    finally:
        if server is not None:
            server.stop()
        if own_root:
            shutil.rmtree(root, ignore_errors=True)


def _runs_of(tracking_uri: str) -> tuple[str, dict[str, str]]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    return experiment.experiment_id, {r.info.run_name: r.info.run_id for r in runs}


def close_assistant(page: Any) -> None:
    """Close MLflow 3's assistant side panel (open in a fresh browser) if it is there."""
    close = page.locator('[data-component-id="mlflow.assistant.chat_panel.close"]')
    if close.count() and close.first.is_visible():
        close.first.click()
        close.first.wait_for(state="hidden")


def open_experiment_charts(s: UiSession) -> Any:
    """The experiment's runs in chart view; returns the card of ``green/energy_kwh``."""
    s.page.goto(s.url(f"/experiments/{s.experiment_id}/runs?compareRunsMode=CHART"))
    card = s.page.get_by_test_id("experiment-view-compare-runs-card").filter(
        has=s.page.get_by_text("green/energy_kwh", exact=True)
    )
    card.locator(".js-plotly-plot").first.wait_for()
    close_assistant(s.page)
    return card


def open_run_metrics(s: UiSession, run_name: str) -> Any:
    """A run's *Model metrics* tab; returns the legend of its ``green/energy_kwh`` chart."""
    run_id = s.run_ids[run_name]
    s.page.goto(s.url(f"/experiments/{s.experiment_id}/runs/{run_id}/model-metrics"))
    legend = s.page.get_by_text(f"{run_name} (green/energy_kwh)").first
    legend.wait_for()
    close_assistant(s.page)
    return legend


def open_compare_scatter(
    s: UiSession, x: str = "green/co2eq_kg", y: str = "accuracy", runs: list[str] | None = None
) -> Any:
    """The compare page of ``runs`` (default: all) on its *Scatter plot* tab, ``y`` against ``x``;
    returns the plot."""
    ids = [s.run_ids[n] for n in (runs or list(s.run_ids))]
    route = f"/compare-runs?runs={json.dumps(ids)}&experiments={json.dumps([s.experiment_id])}"
    s.page.goto(s.url(route.replace(" ", "")))
    close_assistant(s.page)
    s.page.get_by_role("tab", name="Scatter Plot").click()
    for axis, metric in (("X-axis", x), ("Y-axis", y)):
        s.page.get_by_role("combobox", name=axis).click()
        s.page.get_by_role("option", name=metric, exact=True).click()
    plot = s.page.locator(".js-plotly-plot").filter(has_text=x)
    plot.locator(".xtitle", has_text=x).wait_for()
    return plot


def open_run_report(s: UiSession, run_name: str) -> Any:
    """The run's ``green/report.html`` in MLflow's artifact viewer; returns its frame (a
    Playwright ``FrameLocator``) once the page's heading shows."""
    run_id = s.run_ids[run_name]
    s.page.goto(
        s.url(f"/experiments/{s.experiment_id}/runs/{run_id}/artifactPath/green/report.html")
    )
    frame = s.page.frame_locator("iframe.mlflow-html-iframe")
    frame.get_by_role("heading", name=f"Energy report: {run_name}").wait_for()
    close_assistant(s.page)
    return frame


def open_experiment_report(s: UiSession) -> Any:
    """The file ``mlflow-green report`` wrote, in the browser; returns its scatter chart."""
    s.page.goto(s.report_path.as_uri())
    chart = s.page.locator("svg", has=s.page.locator(".point"))
    chart.first.wait_for()
    return chart.first


# --- the screenshots ----------------------------------------------------------------------------


def take_screenshots(out: Path, root: Path | None = None) -> list[Path]:
    """Write the docs' screenshots into ``out``; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    shots: list[Path] = []
    with ui_session(root) as s:
        page = s.page

        def shot(name: str, **kwargs: Any) -> None:
            shots.append(out / name)
            page.screenshot(path=str(shots[-1]), **kwargs)

        open_experiment_charts(s)
        shot("ui-experiment-charts.png")
        open_run_metrics(s, "forest-30")
        shot("ui-run-model-metrics.png")
        open_compare_scatter(s)
        shot("ui-compare-scatter.png")
        page.set_viewport_size({"width": VIEWPORT["width"], "height": 1250})
        open_run_report(s, "forest-200")
        shot("ui-run-report.png")
        page.set_viewport_size({"width": 1250, "height": 800})
        open_experiment_report(s)
        shot("ui-experiment-report.png", full_page=True)
    return shots


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img", help="folder to write")
    args = parser.parse_args(argv)
    why = missing_browser()
    if why:
        print(f"cannot take the screenshots: {why}", file=sys.stderr)
        return 2
    start = time.monotonic()
    for path in take_screenshots(args.out):
        print(f"wrote {path}")
    print(f"({time.monotonic() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
