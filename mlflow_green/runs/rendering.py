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
from mlflow_green.runs.artifacts import PageInfo, plot_power, upload_chart

#: How long interpreter exit waits for the charts still queued.
EXIT_WAIT_S = 5.0
#: Charts waiting at most; a run ending with more draws its own (bounded memory and lag).
MAX_QUEUED = 8


@dataclass
class _Chart:
    client: Any
    run_id: str
    report: EnergyReport
    info: PageInfo
    warn: Callable[[str], None]
    entry: Path | None  # its spool entry; None when the spool folder refused it
    artifact_uri: str | None = None
    owner: int = 0  # the thread whose run's end submitted it


_lock = threading.Condition()
_queue: deque[_Chart] = deque()  # to draw
_uploads: deque[tuple[_Chart, str]] = deque()  # drawn: (chart, folder holding power.png)
_busy: list[_Chart] = []  # being drawn or uploaded
_drawer: threading.Thread | None = None
_uploader: threading.Thread | None = None
_leaving = False
_holding: set[int] = set()  # threads inside held(): their charts wait for the block's end


def submit(
    client: Any,
    run_id: str,
    report: EnergyReport,
    info: PageInfo,
    warn: Callable[[str], None],
    artifact_uri: str | None = None,
) -> None:
    """Draw ``power.png`` for ``run_id`` and log it under ``green/``, in the background."""
    entry = _spool_entry(client, run_id, report, info)
    chart = _Chart(client, run_id, report, info, warn, entry, artifact_uri)
    with _lock:
        if not _leaving and len(_queue) < MAX_QUEUED and _start_threads():
            chart.owner = threading.get_ident()
            _queue.append(chart)
            _lock.notify_all()
            return
    # The queue is full, or the process is leaving (MLflow ends the fluent runs left open
    # after the threads stopped): this run's end draws and logs its chart.
    folder = _draw(chart)
    if folder is not None:
        _upload(chart, folder)


def _start_threads() -> bool:
    """Start the drawer and the uploader if needed (holding ``_lock``); False if it cannot."""
    global _drawer, _uploader
    try:
        if _drawer is None or not _drawer.is_alive():
            # Not a daemon: the interpreter never stops it inside matplotlib's C++ code
            # (a daemon thread stopped there aborts the process). It leaves when the
            # interpreter shuts down, after a bounded wait (_stop_at_shutdown).
            threading._register_atexit(_stop_at_shutdown)  # type: ignore[attr-defined]
            _drawer = threading.Thread(target=_draw_loop, name="mlflow-green-draw")
            _drawer.start()
        if _uploader is None or not _uploader.is_alive():
            # A daemon: an upload may hang on the network, and exit must not wait for it
            # (its chart stays in the spool).
            _uploader = threading.Thread(
                target=_upload_loop, name="mlflow-green-upload", daemon=True
            )
            _uploader.start()
    except RuntimeError:  # the interpreter is shutting down: draw inline
        return False
    return True


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Charts submitted in this block (by this thread) start drawing when it ends: a run's
    end wraps MLflow's own end of the run in it, so that matplotlib, holding the GIL for
    ~50 ms, does not slow the run's end down."""
    me = threading.get_ident()
    with _lock:
        outer = me in _holding
        _holding.add(me)
    try:
        yield
    finally:
        if not outer:
            with _lock:
                _holding.discard(me)
                _lock.notify_all()


def _next() -> _Chart | None:
    """The first queued chart whose run's end is over (holding ``_lock``)."""
    return next((c for c in _queue if c.owner not in _holding), None)


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


def _draw_loop() -> None:
    while True:
        with _lock:
            while (chart := _next()) is None and not _leaving:
                _lock.wait()
            if _leaving:
                return
            _queue.remove(chart)
            _busy.append(chart)
        folder = _draw(chart)
        with _lock:
            if folder is not None:
                _uploads.append((chart, folder))
            else:
                _busy.remove(chart)
            _lock.notify_all()


def _upload_loop() -> None:
    while True:
        with _lock:
            while not _uploads:
                _lock.wait()
            chart, folder = _uploads.popleft()
        try:
            _upload(chart, folder)
        finally:
            with _lock:
                if chart in _busy:
                    _busy.remove(chart)
                _lock.notify_all()


def _draw(chart: _Chart) -> str | None:
    """Draw the chart into a new folder; its path, or None (warned) on failure."""
    # mkdtemp, not TemporaryDirectory: at exit, weakref finalizers delete the latter's
    # folders while the uploader may still be reading one.
    folder = tempfile.mkdtemp(prefix="mlflow-green-")
    try:
        plot_power(chart.report, chart.info, os.path.join(folder, "power.png"))
        return folder
    except Exception as exc:  # never break the user's job
        _failed(chart, exc)
        shutil.rmtree(folder, ignore_errors=True)
        return None


def _upload(chart: _Chart, folder: str) -> None:
    try:
        path = os.path.join(folder, "power.png")
        upload_chart(chart.client, chart.run_id, path, chart.artifact_uri)
        if chart.entry is not None:
            chart.entry.unlink(missing_ok=True)
    except Exception as exc:  # never break the user's job
        _failed(chart, exc)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _failed(chart: _Chart, exc: Exception) -> None:
    where = f"it waits in {chart.entry} for `mlflow-green sync`" if chart.entry else "lost"
    chart.warn(f"could not log green/power.png to run {chart.run_id} ({exc!r}); {where}")


def wait(timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for every queued chart; True when none is left."""
    with _lock:
        return _lock.wait_for(lambda: not _queue and not _busy, timeout_s)


def _stop_at_shutdown() -> None:
    # Called by the interpreter's shutdown before it joins the drawer (and before atexit).
    finish(EXIT_WAIT_S)


def finish(timeout_s: float = EXIT_WAIT_S) -> None:
    """At exit: wait up to ``timeout_s`` for the queued charts, then stop drawing; those
    still waiting stay in the spool (``mlflow-green sync`` draws them), with one warning."""
    global _leaving
    if _leaving:
        return
    wait(timeout_s)
    with _lock:
        _leaving = True  # the drawer leaves after the chart it is drawing
        left = [*_busy, *_queue]
        _queue.clear()
        _lock.notify_all()
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
    # The threads do not exist in a child; the parent's charts are the parent's.
    global _lock, _drawer, _uploader, _leaving
    _lock, _drawer, _uploader, _leaving = threading.Condition(), None, None, False
    _holding.clear()
    _queue.clear()
    _uploads.clear()
    _busy.clear()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_after_fork)
