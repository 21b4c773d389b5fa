"""``power.png`` off the run's path: one background thread, a spool entry until it is logged.

Drawing the chart with matplotlib costs ~50 ms (and ~0.5 s of imports the first
time), more than the 20 ms a run's artifacts may add to its end. So a run's end
logs the cheap artifacts itself and queues the chart here. Each queued chart is
first written to the spool (a chart-only entry, deleted once the chart is
logged): a process that ends before drawing it (``os._exit`` in a fork child,
SIGKILL, an upload that fails) leaves it for ``mlflow-green sync``, never loses
it. When runs end faster than charts are drawn (a sweep of short trials), the
run's end draws its own chart: the queue never holds more than
:data:`MAX_QUEUED` charts. At exit the queue gets a bounded wait.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mlflow_green.measure.report import EnergyReport
from mlflow_green.runs.artifacts import PageInfo, log_chart

#: How long interpreter exit waits for the charts still queued.
EXIT_WAIT_S = 5.0
#: Charts waiting at most; a run ending with more draws its own (bounded memory and lag).
MAX_QUEUED = 8
# The most one drawing can take (matplotlib's first import included, on a busy machine).
# Never an upload: a thread left inside matplotlib's C++ code while the interpreter shuts
# down aborts the process, one waiting on the network does not.
_DRAW_WAIT_S = 30.0


@dataclass
class _Chart:
    client: Any
    run_id: str
    report: EnergyReport
    info: PageInfo
    warn: Callable[[str], None]
    entry: Path | None  # its spool entry; None when the spool folder refused it
    artifact_uri: str | None = None


_lock = threading.Condition()
_queue: deque[_Chart] = deque()
_busy: list[_Chart] = []  # the chart being drawn or uploaded, if any
_drawing = False  # inside matplotlib (see _DRAW_WAIT_S)
_thread: threading.Thread | None = None
_leaving = False
_held = threading.local()


def submit(
    client: Any,
    run_id: str,
    report: EnergyReport,
    info: PageInfo,
    warn: Callable[[str], None],
    artifact_uri: str | None = None,
) -> None:
    """Draw ``power.png`` for ``run_id`` and log it under ``green/``, in the background."""
    global _thread
    entry = _spool_entry(client, run_id, report, info)
    chart = _Chart(client, run_id, report, info, warn, entry, artifact_uri)
    with _lock:
        if not _leaving and len(_queue) < MAX_QUEUED:
            _queue.append(chart)
            if not getattr(_held, "depth", 0):
                _wake()
            return
        # The queue is full, or the process is leaving (MLflow ends the fluent runs left
        # open after our exit handler): this run's end draws its chart.
        _set_drawing(True)
    _draw(chart)


def _wake() -> None:
    """Start the drawing thread if needed and let it take the queue (holding ``_lock``)."""
    global _thread
    if _thread is None or not _thread.is_alive():
        _thread = threading.Thread(target=_loop, name="mlflow-green-render", daemon=True)
        _thread.start()
    _lock.notify_all()


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Charts submitted in this block (by this thread) start drawing when it ends: a run's
    end wraps MLflow's own end of the run in it, so that matplotlib, holding the GIL for
    ~50 ms, does not slow the run's end down."""
    _held.depth = getattr(_held, "depth", 0) + 1
    try:
        yield
    finally:
        _held.depth -= 1
        if not _held.depth:
            with _lock:
                if _queue:
                    _wake()


def _spool_entry(client: Any, run_id: str, report: EnergyReport, info: PageInfo) -> Path | None:
    from mlflow_green.runs import spool

    try:
        return spool.write(
            client.tracking_uri,
            run_id,
            report,
            [],
            [],
            log_artifacts=True,
            error=f"green/power.png waits to be drawn by process {os.getpid()}",
            page=asdict(info),
            chart_only=True,
        )
    except Exception:  # a read-only home: the chart is drawn all the same, unguarded
        return None


def _loop() -> None:
    while True:
        with _lock:
            while not _queue or _leaving:
                _lock.wait()
            chart = _queue.popleft()
            _busy.append(chart)
            _set_drawing(True)  # under the lock: finish() must never miss a drawing starting
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
        log_chart(
            chart.client,
            chart.run_id,
            chart.report,
            chart.info,
            path,
            _set_drawing,
            chart.artifact_uri,
        )
        if chart.entry is not None:
            chart.entry.unlink(missing_ok=True)
    except Exception as exc:  # never break the user's job
        where = f"it waits in {chart.entry} for `mlflow-green sync`" if chart.entry else "lost"
        chart.warn(f"could not log green/power.png to run {chart.run_id} ({exc!r}); {where}")
    finally:
        _set_drawing(False)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def _set_drawing(value: bool = False) -> None:
    """Whether a chart is inside matplotlib (False: drawn, its upload starts)."""
    global _drawing
    with _lock:
        _drawing = value
        _lock.notify_all()


def wait(timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for every queued chart; True when none is left."""
    with _lock:
        return _lock.wait_for(lambda: not _queue and not _busy, timeout_s)


def finish(timeout_s: float = EXIT_WAIT_S) -> None:
    """At exit: wait up to ``timeout_s`` for the queued charts; those still waiting stay in
    the spool (``mlflow-green sync`` draws them), with one warning."""
    global _leaving
    wait(timeout_s)
    with _lock:
        _leaving = True  # the thread takes no more charts
        left = [*_busy, *_queue]
        _queue.clear()
        _lock.wait_for(lambda: not _drawing, _DRAW_WAIT_S)
    if left:
        from mlflow_green.runs import spool

        kept = sum(c.entry is not None for c in left)
        lost = [c.run_id for c in left if c.entry is None]
        left[0].warn(
            f"{len(left)} power chart(s) were not logged before exit"
            + (f"; {kept} wait in {spool.spool_dir()} for `mlflow-green sync`" if kept else "")
            + (f"; lost for run(s) {', '.join(lost)}" if lost else "")
        )


def _after_fork() -> None:
    # The thread does not exist in a child; the parent's charts are the parent's.
    global _lock, _thread, _leaving, _drawing
    _lock, _thread, _leaving, _drawing = threading.Condition(), None, False, False
    _queue.clear()
    _busy.clear()


os.register_at_fork(after_in_child=_after_fork)
