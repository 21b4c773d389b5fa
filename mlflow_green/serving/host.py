"""One meter per host: the elected worker measures the machine and writes the serving run.

Every worker runs an agent thread that publishes its own counts and tries the
host lock (non-blocking). The worker that holds it is the *host meter*: it opens
one machine-scope window (idle time included), sums every worker's counts, and
each flush interval writes cumulative values to the serving run; it also runs
the Prometheus exporter. If it dies, the kernel drops its lock and another
worker takes over: it continues the same run from the energy and duration last
written (the time between that write and the takeover is not measured).
"""

from __future__ import annotations

import atexit
import logging
import shutil
import threading
import time
from typing import Any

from mlflow_green._warnings import warn
from mlflow_green.measure.carbon import co2eq_kg
from mlflow_green.measure.monitor import get_monitor
from mlflow_green.measure.report import J_PER_KWH, EnergyReport
from mlflow_green.serving.counting import Counts, WorkerCounts
from mlflow_green.serving.prometheus import Exporter, Totals
from mlflow_green.serving.settings import ServingSettings
from mlflow_green.serving.shared import HostLock, SessionFolder, older_sessions, this_host

_log = logging.getLogger(__name__)
#: How often a worker publishes its counts and tries the host lock.
TICK_S = 0.5
#: At a stop, how long the host meter waits at most for the other workers' final counts:
#: they stop at the same time, and each publishes its last counts in its own shutdown.
FINAL_WAIT_S = 5.0
#: At a stop, how long the worker waits at most for its agent thread (possibly inside a
#: flush to a slow server) and for the final flush: a server that stopped answering must
#: not hold the worker (and `mlflow models serve`'s shutdown) for MLflow's minutes of retries.
STOP_WAIT_S = 10.0
#: Added to the final flush's wait: the probe's own time at a stop.
LEAVING_S = 5.0


class HostMeter:
    """The host's one meter; only the worker holding the host lock builds one."""

    def __init__(self, settings: ServingSettings, session: SessionFolder) -> None:
        self.settings, self.session = settings, session
        cfg = settings.measure
        self.window = get_monitor().open("serving", "machine", cfg.sample_interval_s)
        state = session.state() or {}
        self.state: dict[str, Any] = state
        self.base_j: dict[str, float] = {
            k: float(v) for k, v in (state.get("energy_j_by_domain") or {}).items()
        }
        self.base_duration_s = float(state.get("duration_s") or 0.0)
        self.step = int(state.get("step", -1))
        self.run: Any = None
        self.exporter: Exporter | None = None
        self.last_flush = float("-inf")
        self._lock = threading.Lock()
        self._down: str | None = None  # the tracking server's last outage, said once
        if settings.prometheus_port is not None:
            try:
                self.exporter = Exporter(settings.prometheus_port, self.totals)
            except Exception as exc:
                _warn(
                    f"the Prometheus exporter could not listen on port "
                    f"{settings.prometheus_port} (MLFLOW_GREEN_PROMETHEUS_PORT): {exc}"
                )

    def _energy(self) -> tuple[EnergyReport, dict[str, float], float]:
        report = EnergyReport.from_measurement(self.window.snapshot(), self.settings.measure)
        domains = set(self.base_j) | set(report.energy_j_by_domain)
        joules = {
            d: self.base_j.get(d, 0.0) + report.energy_j_by_domain.get(d, 0.0) for d in domains
        }
        return report, joules, self.base_duration_s + report.duration_s

    def totals(self) -> Totals:
        """The session's figures now (what Prometheus scrapes)."""
        counts, _ = self.session.total()
        report, joules, _ = self._energy()
        kwh = sum(joules.values()) * report.pue / J_PER_KWH
        co2 = co2eq_kg(kwh, report.carbon_intensity_g_per_kwh)
        return Totals(
            energy_j_by_domain={d: j for d, j in joules.items() if report.methods.get(d) != "none"},
            co2eq_g=None if co2 is None else co2 * 1000.0,
            requests=counts.requests,
            predictions=counts.predictions,
            tokens=counts.tokens,
        )

    def flush(self, final: bool = False) -> None:
        """Write the cumulative values to the serving run (creating it on first use).

        A tracking server that does not answer is probed first (one warning per
        outage); the values are then written at the next flush instead of MLflow
        retrying for minutes. The final flush waits at most ``STOP_WAIT_S`` for a
        flush in progress.
        """
        if not self._lock.acquire(timeout=STOP_WAIT_S if final else -1):
            _warn("the serving run's last values were not written: a flush is still stuck")
            return
        try:
            self.last_flush = time.monotonic()
            if self._tracking_down(final):
                return
            self._write(final)
        finally:
            self._lock.release()

    def _tracking_down(self, final: bool) -> bool:
        import mlflow

        from mlflow_green._tracking import LEAVING_PROBE_TIMEOUT_S, PROBE_TIMEOUT_S, probe

        timeout_s = LEAVING_PROBE_TIMEOUT_S if final else PROBE_TIMEOUT_S
        reason = probe(mlflow.get_tracking_uri(), None, timeout_s)
        if reason is None:
            self._down = None
            return False
        if self._down is None:
            what = "last values" if final else "values until it answers again"
            _warn(f"{reason}; the serving run is not updated (its {what})")
        self._down = reason
        return True

    def _write(self, final: bool) -> None:
        from mlflow_green.runs.names import tags as report_tags
        from mlflow_green.serving.servingrun import ServingRun

        counts, token_method = self.session.total()
        report, joules, duration_s = self._energy()
        if self.run is None:
            self.run = ServingRun.continue_or_create(self.settings, self.state, report_tags(report))
            self._save(joules, duration_s, ended=False)  # a successor continues this run
            self._end_older_sessions()
        metrics = _metrics(report, joules, duration_s, counts)
        self.step = max(int(duration_s), self.step + 1)
        run_tags = {"green.serving_token_counter": token_method}
        self.run.log(metrics, self.step, run_tags)
        if "green/serving/wh_per_1k" in metrics:
            self.run.tag_version(metrics["green/serving/wh_per_1k"])
        if final:
            self.run.end("FINISHED")
        self._save(joules, duration_s, ended=final)

    def _save(self, joules: dict[str, float], duration_s: float, ended: bool) -> None:
        self.state = {
            "run_id": self.run.run_id,
            "name": self.run.name,
            "version": self.run.version,
            "energy_j_by_domain": joules,
            "duration_s": duration_s,
            "step": self.step,
            "logged_at_ms": int(time.time() * 1000),
            "ended": ended,
            "host": this_host(),  # only this host judges whether the session is gone
        }
        self.session.save_state(self.state)

    def _wait_for_workers(self) -> None:
        # The workers stop together; without this wait the requests a worker answered
        # since its last publish (up to TICK_S ago) would miss the run's final values.
        deadline = time.monotonic() + FINAL_WAIT_S
        while self.session.unfinished() and time.monotonic() < deadline:
            time.sleep(0.05)  # polling interval of a bounded wait on the other processes
        late = self.session.unfinished()
        if late:
            _log.debug("mlflow-green: final serving values without workers %s", late)

    def _end_older_sessions(self) -> None:
        from mlflow_green.serving.servingrun import end_stale

        for folder in older_sessions(self.settings.key_folder, self.settings.folder):
            session = SessionFolder(folder)
            if not session.gone():  # a live server sharing this key, or another host's
                continue
            state = session.state() or {}
            try:
                if state.get("run_id") and not state.get("ended"):
                    ended = end_stale(
                        str(state["run_id"]),
                        state.get("logged_at_ms"),
                        self.settings.experiment,
                        folder.name,
                    )
                    if not ended:  # not its serving run: keep the folder for a person to see
                        continue
            except Exception as exc:  # kept: a later session tries again
                _log.debug("mlflow-green: ending an earlier serving run: %r", exc)
                continue
            shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        """Final flush (once every other worker's last counts are in), end the run, stop."""
        try:
            self._wait_for_workers()
            # In a daemon thread, waited for at most STOP_WAIT_S: a server that answered the
            # probe and then stalls must not keep the worker from exiting.
            flusher = threading.Thread(target=self._final_flush, daemon=True)
            flusher.start()
            flusher.join(STOP_WAIT_S + LEAVING_S)
            if flusher.is_alive():
                _warn(
                    "the serving run's last values were not written: the tracking server "
                    "does not answer in time"
                )
        finally:
            self.window.close()
            if self.exporter is not None:
                self.exporter.close()

    def _final_flush(self) -> None:
        try:
            self.flush(final=True)
        except Exception as exc:
            _warn(f"serving metering could not write its last values: {exc!r}")


def _metrics(
    report: EnergyReport, joules: dict[str, float], duration_s: float, counts: Counts
) -> dict[str, float]:
    kwh_by_domain = {d: j * report.pue / J_PER_KWH for d, j in joules.items()}
    kwh = sum(kwh_by_domain.values())
    out = {
        "green/energy_kwh": kwh,
        "green/duration_s": duration_s,
        "green/serving/requests": float(counts.requests),
        "green/serving/errors": float(counts.errors),
        "green/serving/predictions": float(counts.predictions),
        "green/serving/tokens": float(counts.tokens),
    }
    co2 = co2eq_kg(kwh, report.carbon_intensity_g_per_kwh)
    if co2 is not None:
        out["green/co2eq_kg"] = co2
    for domain, value in kwh_by_domain.items():
        if report.methods.get(domain, "none") != "none":
            out[f"green/energy/{domain}_kwh"] = value
    if counts.predictions:
        # Everything the host drew while serving, idle time included, per 1,000 predictions.
        out["green/serving/wh_per_1k"] = kwh * 1000.0 / counts.predictions * 1000.0
    out.update(_footprint(report, joules, kwh, duration_s, co2, counts))
    return out


def _footprint(
    report: EnergyReport,
    joules: dict[str, float],
    kwh: float,
    duration_s: float,
    co2: float | None,
    counts: Counts,
) -> dict[str, float]:
    """The session's cost, water and embodied emissions (each only when its settings were
    given, as on a training run) and its SCI per 1,000 predictions and per output token."""
    from mlflow_green.measure.sci import PER_1K_QUERIES, PER_TOKEN, sci
    from mlflow_green.runs.names import figure_metrics

    device_kwh = sum(joules.values()) / J_PER_KWH  # the devices' own draw, no PUE
    figures = report.footprint.figures(kwh, device_kwh, duration_s)
    out = figure_metrics(figures)
    embodied = figures["embodied_co2eq_kg"].value
    for key, units, unit in (
        ("green/serving/sci_g_per_1k", counts.predictions / 1000.0, PER_1K_QUERIES),
        ("green/serving/sci_g_per_token", float(counts.tokens), PER_TOKEN),
    ):
        score = sci(co2, embodied, units, unit) if units > 0 else None
        if score is not None and score.sci_g is not None:  # unknown M or I: no metric, never 0
            out[key] = score.sci_g
    return out


def _warn(message: str) -> None:
    warn(f"mlflow-green: {message}", RuntimeWarning, stacklevel=3)


class Agent:
    """A worker's metering thread: publish counts, take over the host meter when free."""

    def __init__(self, settings: ServingSettings) -> None:
        self.settings = settings
        self.counts = WorkerCounts()
        self.session = SessionFolder(settings.folder)
        self.lock = HostLock(settings.key_folder / "host.lock")
        self.meter: HostMeter | None = None
        self._stop = threading.Event()
        self._published: tuple | None = None
        self._failures = 0
        self._thread = threading.Thread(target=self._run, name="mlflow-green-serving", daemon=True)
        self._done = False

    def start(self) -> None:
        """Start the thread; :meth:`shutdown` runs when the worker exits.

        The scoring server's own shutdown calls it (see ``hook``): uvicorn ends a worker
        by re-raising SIGTERM, which skips atexit. Exits by other paths: atexit, and the
        finalizers of a multiprocessing child (which leaves with ``os._exit``).
        """
        try:  # on file from the start: the host meter's last flush waits for this worker
            self._publish()
        except Exception as exc:  # the agent's ticks retry, and warn, if it persists
            _log.debug("mlflow-green: first publish of the serving counts: %r", exc)
        self._thread.start()
        atexit.register(self.shutdown)
        try:
            from multiprocessing import util

            util.Finalize(None, self.shutdown, exitpriority=100)
        except Exception as exc:
            _log.debug("mlflow-green: no multiprocessing finalizer: %r", exc)

    def _run(self) -> None:
        while not self._stop.wait(TICK_S):
            self.tick()

    def tick(self) -> None:
        """Publish this worker's counts; as host meter, flush when due. Never raises."""
        try:
            self._publish()
            if self.meter is None and self.lock.try_acquire():
                self.meter = HostMeter(self.settings, self.session)
                for note in self.settings.notes:
                    _warn(note)
            meter = self.meter
            if meter is not None:
                due = meter.last_flush + self.settings.flush_interval_s
                if time.monotonic() >= due:
                    meter.flush()
                    self._failures = 0
        except Exception as exc:
            self._failures += 1
            if self._failures == 1:  # one warning per outage, not one per interval
                _warn(f"serving metering failed ({exc!r}); it keeps trying")
            else:
                _log.debug("mlflow-green: serving metering failed again: %r", exc)

    def _publish(self, final: bool = False) -> None:
        counts = self.counts.drain()
        key = (*counts.to_dict().values(), self.counts.token_method)
        if key != self._published or final:
            self.session.publish(counts, self.counts.token_method, final)
            self._published = key

    def shutdown(self) -> None:
        """Publish the last counts; the host meter writes its last values and ends the run."""
        if self._done:
            return
        self._done = True
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(STOP_WAIT_S)  # it may be in a flush to a stalled server
        try:
            self._publish(final=True)  # now, synchronously: the host meter waits for it
        except Exception as exc:
            _warn(f"serving metering could not publish its last counts: {exc!r}")
        try:  # even after a failed publish: the run is ended and the exporter closed
            if self.meter is not None:
                self.meter.close()
        except Exception as exc:
            _warn(f"serving metering could not write its last values: {exc!r}")
        finally:
            self.lock.release()
