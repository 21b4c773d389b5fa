"""``power.png`` off the run's path: one background thread, a bounded wait at exit.

Drawing the chart with matplotlib costs ~50 ms (and ~0.5 s of imports the first
time), more than the 20 ms a run's artifacts may add to its end. So a run's end
logs the cheap artifacts itself and queues the chart here. At interpreter exit
(or SIGTERM) the queue gets a bounded wait; a chart still waiting then goes to
the spool with its report, and ``mlflow-green sync`` draws and uploads it:
nothing is lost. After that, a run that ends (MLflow ends open runs at exit
after our handler) draws its chart at once.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from mlflow_green.measure.report import EnergyReport
from mlflow_green.runs.artifacts import PageInfo, plot_power

#: How long interpreter exit waits for the charts still queued.
EXIT_WAIT_S = 5.0
# The most one chart can take (matplotlib's first import included, on a busy machine).
_BUSY_WAIT_S = 30.0


@dataclass
class _Chart:
    client: Any
    run_id: str
    report: EnergyReport
    info: PageInfo
    warn: Callable[[str], None]


_lock = threading.Condition()
_queue: deque[_Chart] = deque()
_busy: list[_Chart] = []  # the chart being drawn, if any
_thread: threading.Thread | None = None
_leaving = False


def submit(
    client: Any, run_id: str, report: EnergyReport, info: PageInfo, warn: Callable[[str], None]
) -> None:
    """Draw ``power.png`` for ``run_id`` and log it under ``green/``, in the background."""
    global _thread
    chart = _Chart(client, run_id, report, info, warn)
    with _lock:
        if not _leaving:
            _queue.append(chart)
            if _thread is None or not _thread.is_alive():
                _thread = threading.Thread(target=_loop, name="mlflow-green-render", daemon=True)
                _thread.start()
            _lock.notify_all()
            return
    _draw(chart)  # the process is leaving: nobody would wait for the thread


def _loop() -> None:
    while True:
        with _lock:
            while not _queue or _leaving:
                _lock.wait()
            chart = _queue.popleft()
            _busy.append(chart)
        try:
            _draw(chart)
        finally:
            with _lock:
                _busy.remove(chart)
                _lock.notify_all()


def _draw(chart: _Chart) -> None:
    # mkdtemp, not TemporaryDirectory: at exit, weakref finalizers delete the latter's
    # folders while this thread may still be drawing into one.
    folder = None
    try:
        folder = tempfile.mkdtemp(prefix="mlflow-green-")
        path = os.path.join(folder, "power.png")
        plot_power(chart.report, chart.info, path)
        chart.client.log_artifact(chart.run_id, path, "green")
    except Exception as exc:  # never break the user's job
        chart.warn(f"could not log green/power.png to run {chart.run_id}: {exc!r}")
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def wait(timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for every queued chart; True when none is left."""
    with _lock:
        return _lock.wait_for(lambda: not _queue and not _busy, timeout_s)


def finish(timeout_s: float = EXIT_WAIT_S) -> None:
    """At exit: wait up to ``timeout_s`` for the queued charts, spool those still waiting
    (``mlflow-green sync`` draws them), and draw any later chart at once."""
    global _leaving
    from mlflow_green.runs import spool

    wait(timeout_s)
    with _lock:
        _leaving = True  # the thread takes no more charts
        left = list(_queue)
        _queue.clear()
        # The chart being drawn is finished, whatever the timeout: a thread left inside
        # matplotlib's C++ code while the interpreter shuts down aborts the process.
        _lock.wait_for(lambda: not _busy, _BUSY_WAIT_S)
    spooled, lost = [], []
    for chart in left:
        try:
            spooled.append(
                spool.write(
                    chart.client.tracking_uri,
                    chart.run_id,
                    chart.report,
                    [],
                    [],
                    log_artifacts=True,
                    error=f"the process ended before green/power.png was drawn ({timeout_s:g} s)",
                    page=asdict(chart.info),
                )
            )
        except Exception as exc:
            lost.append(f"{chart.run_id} ({exc!r})")
    if left:  # one warning for all of them
        left[0].warn(
            f"{len(left)} power chart(s) were not drawn before exit: "
            + (
                f"{len(spooled)} wait in {spool.spool_dir()} for `mlflow-green sync`"
                if spooled
                else ""
            )
            + (f"; lost for run(s) {', '.join(lost)}" if lost else "")
        )


def _after_fork() -> None:
    # The thread does not exist in a child; its charts belong to the parent.
    global _lock, _thread, _leaving
    _lock, _thread, _leaving = threading.Condition(), None, False
    _queue.clear()
    _busy.clear()


os.register_at_fork(after_in_child=_after_fork)
