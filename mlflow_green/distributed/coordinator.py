"""This process's part in its job's energy accounting: rank 0's runs, the other ranks' windows.

Rank 0 announces its runs' starts and ends through the job's store and adds up
the ranks' reports at each end; every other rank follows those events, measures
each run from its start and answers its end (``protocol`` holds the keys). Rank
0's store operations run on one thread of ours, in order; the other ranks follow
the event log on theirs.

No thread of ours sits in a store call without a time limit, and at exit the
threads stop before the interpreter does: a thread still inside torch's C++ when
Python finalises aborts the process.
"""

from __future__ import annotations

import atexit
import dataclasses
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from mlflow_green.distributed import protocol
from mlflow_green.distributed.combine import (
    Contribution,
    JobEnergy,
    contribution,
    owned_energy_j,
    unmeasured,
)
from mlflow_green.distributed.job import RankInfo
from mlflow_green.measure.monitor import Window, get_monitor
from mlflow_green.measure.report import EnergyReport

_log = logging.getLogger(__name__)

_FOLLOW_POLL_S = 0.05  # other ranks, for the event log (scaled up for big jobs)
_EXIT_JOIN_S = 3.0
_CONNECT_GRACE_S = 5.0  # how long a run's end waits for a store not reached yet


class Coordinator:
    """This process's part in its job's energy accounting (one per process)."""

    def __init__(
        self,
        info: RankInfo,
        config: Callable[[], Any],
        warn: Callable[[str], None],
    ) -> None:
        self.info = info
        self._config = config  # -> autolog's current configuration (measure, flush_interval_s)
        self._warn = warn
        self._stopped = threading.Event()
        self._abort = threading.Event()  # SIGTERM: rank 0 stops waiting for the others
        # Re-entrant: the SIGTERM handler may run in the main thread while it holds the lock.
        self._lock = threading.RLock()
        self._own_runs = False
        self._joined: dict[str, Window] = {}  # run key -> window (ranks other than 0)
        self._tasks: list[tuple[Callable[[Any], Any], Future]] = []
        self._has_task = threading.Condition(self._lock)
        self._failed = False
        self._connected = threading.Event()
        self._no_store = threading.Event()  # connecting failed for good, or was given up
        self._answered: set[str] = set()  # run keys this rank sent its final report for
        self._pending: dict[str, Future] = {}  # rank 0: collections under way
        self._keys = itertools.count()
        self._absent: set[int] = set()  # ranks that never described themselves
        self._absent_told: set[int] = set()
        target = self._serve_rank0 if info.rank == 0 else self._follow
        self._thread = threading.Thread(target=target, name="mlflow-green-job", daemon=True)
        self._thread.start()
        atexit.register(self._at_exit)

    # -- every rank --------------------------------------------------------------------------
    def _join(self) -> Any:
        """Connect, answer for this rank and describe it; None if stopped or another does."""
        store = protocol.open_store(self.info, self._stopped)
        if store is None or not protocol.claim_rank(store, self.info.rank):
            self._no_store.set()
            return None
        protocol.describe(store, self.info, get_monitor().devices("gpu"))
        self._connected.set()
        return store

    def _fail(self, what: str, exc: BaseException) -> None:
        # The store goes away when the job ends (or rank 0 exits): that loses nothing
        # unless this rank still follows a run.
        with self._lock:
            losing = bool(self._joined) or self.info.rank == 0
        if not losing or self._stopped.is_set():
            _log.debug("mlflow-green: %s: %r", what, exc)
        elif not self._failed:
            self._failed = True
            self._warn(
                f"rank {self.info.rank}: {what} failed ({exc!r}); this rank's energy is not "
                "shared with the job's run"
            )

    def own_run_started(self) -> None:
        """This rank logs runs of its own: its share goes there, not into rank 0's run."""
        self._own_runs = True

    def own_share(self, report: EnergyReport, timeout_s: float = 5.0) -> EnergyReport:
        """``report`` cut down to what this rank owns (see ``combine``), for its own run."""
        nodes = self._call(
            lambda store: protocol.read_nodes(store, self.info.world_size), timeout_s
        )
        if nodes is None:
            return report
        nodes.setdefault(self.info.rank, {"node": self.info.node_id, "claims": []})
        mine = contribution(report, self.info.rank, self.info.node_id, True, True)
        kept = owned_energy_j(mine, nodes)
        by_device = {d: dict(kept.get(d, {})) for d in report.energy_j_by_device}
        methods = {
            d: (m if by_device.get(d) or not report.energy_j_by_device.get(d) else "none")
            for d, m in report.methods.items()
        }
        return dataclasses.replace(
            report,
            energy_j_by_device=by_device,
            energy_j_by_domain={d: sum(v.values()) for d, v in by_device.items()},
            methods=methods,
        )

    def own_tags(self) -> dict[str, str]:
        """Tags of a run this rank logs itself: which rank and node its share is."""
        return {
            "green.rank": str(self.info.rank),
            "green.node": self.info.node_id,
            "green.ranks": str(self.info.world_size),
        }

    def stop(self) -> None:
        """Stop following the job (``autolog(disable=True)``); open windows close."""
        self._stopped.set()
        with self._lock:
            self._has_task.notify_all()
            windows, self._joined = list(self._joined.values()), {}
        for window in windows:
            window.close()
        atexit.unregister(self._at_exit)

    def _at_exit(self) -> None:
        if self.info.rank == 0:
            if self._connected.is_set():
                # Keep the thread: MLflow ends runs left open after this, and their end
                # needs it. Let it finish what is queued; idle, it waits in Python (safe).
                self._call(lambda store: None, _EXIT_JOIN_S)
                return
            self._no_store.set()  # runs ended from here on do not wait for a store
        self._stopped.set()
        self._thread.join(_EXIT_JOIN_S)
        self.finish()

    # -- rank 0 ------------------------------------------------------------------------------
    def _submit(self, task: Callable[[Any], Any]) -> Future:
        future: Future = Future()
        with self._lock:
            self._tasks.append((task, future))
            self._has_task.notify()
        return future

    def _call(self, task: Callable[[Any], Any], timeout_s: float) -> Any:
        if self.info.rank != 0:  # only rank 0 keeps a task thread: others connect anew
            try:
                return task(protocol.connect(self.info, timeout_s, timeout_s))
            except Exception as exc:
                _log.debug("mlflow-green: job store: %r", exc)
                return None
        try:
            return self._submit(task).result(timeout_s)
        except Exception as exc:
            _log.debug("mlflow-green: job store: %r", exc)
            return None

    def _serve_rank0(self) -> None:
        # Every store operation of rank 0 runs here, in order, on one connection: run starts
        # never wait for the store, and events reach the log in the order they happened.
        try:
            store = self._join()
            if store is None:
                return
        except Exception as exc:
            self._no_store.set()
            self._fail("connecting to the job's store", exc)
            store = None
        while True:
            with self._lock:
                while not self._tasks and not self._stopped.is_set():
                    self._has_task.wait()
                if self._stopped.is_set() and not self._tasks:
                    return
                task, future = self._tasks.pop(0)
            if store is None:
                future.set_exception(RuntimeError("not connected to the job's store"))
                continue
            try:
                future.set_result(task(store))
            except BaseException as exc:
                future.set_exception(exc)

    def announce(self, run_id: str) -> str:
        """Tell the other ranks that a run started here; returns the run's job key."""
        key = f"{run_id}.{os.getpid()}.{next(self._keys)}"
        self._submit(lambda store: protocol.post_event(store, {"kind": "start", "key": key}))
        return key

    def collect(self, key: str, report: EnergyReport) -> JobEnergy | None:
        """End run ``key`` on every rank and add up the job's energy (bounded wait)."""
        wait_s = protocol.rank_wait_s()

        def task(store: Any) -> JobEnergy:
            protocol.end_run(store, key)
            return self._gather(store, key, report, wait_s)

        # A store that never answered (bad MASTER_ADDR?) must not hold up every run's end:
        # the first run's end waits a little for it, later ones not at all.
        job = None
        if not self._no_store.is_set() and not self._connected.wait(_CONNECT_GRACE_S):
            self._no_store.set()
        if self._connected.is_set():
            future = self._submit(task)
            self._pending[key] = future
            job = self.result(key, wait_s + protocol.DEAD_AFTER_S + 30.0)
        if job is None:
            self._warn(
                f"could not collect the other ranks' energy for run {key.split('.')[0]}; "
                "the run holds rank 0's only"
            )
        return job

    def result(self, key: str, timeout_s: float) -> JobEnergy | None:
        """The outcome of :meth:`collect` for ``key`` (None if it failed or is unknown)."""
        future = self._pending.get(key)
        try:
            return future.result(timeout_s) if future is not None else None
        except Exception as exc:
            _log.debug("mlflow-green: job store: %r", exc)
            return None
        finally:
            if future is not None and future.done():
                self._pending.pop(key, None)

    def abort(self) -> None:
        """SIGTERM: collections under way stop waiting and add up what arrived."""
        self._abort.set()

    def live(self, key: str, report: EnergyReport) -> JobEnergy | None:
        """The job's running totals from the ranks' latest live reports (for flushes)."""
        if not self._connected.is_set():
            return None
        return self._call(
            lambda store: protocol.combine_job(store, self.info, key, report, {}), 5.0
        )

    def _gather(self, store: Any, key: str, report: EnergyReport, wait_s: float) -> JobEnergy:
        final = protocol.gather_final(
            store, key, self.info.world_size, wait_s, self._absent, self._abort
        )
        job = protocol.combine_job(store, self.info, key, report, final)
        absent = sorted(self._absent - self._absent_told)
        if absent:
            self._absent_told.update(absent)
            self._warn(
                f"rank(s) {', '.join(map(str, absent))} never joined the job's energy "
                "accounting: call mlflow_green.autolog() on every rank (or set "
                "MLFLOW_GREEN_AUTOLOG=true for the whole job); their nodes' energy is missing"
            )
        protocol.forget_run(store, key, self.info.world_size)
        return job

    # -- other ranks -------------------------------------------------------------------------
    def _follow(self) -> None:
        try:
            store = self._join()
            if store is None:
                return
            # Events before this point happened before we joined: replay them for the runs
            # still open, skip the runs that ended.
            first_live = protocol.event_count(store) + 1
            n, next_beat, last_live = 1, 0.0, time.monotonic()
            poll_s = min(1.0, _FOLLOW_POLL_S * max(1.0, self.info.world_size / 64))
            while True:
                count = protocol.event_count(store)
                while n <= count and not self._stopped.is_set():
                    self._on_event(store, protocol.read_event(store, n), replay=n < first_live)
                    n += 1
                now = time.monotonic()
                if now >= next_beat:
                    protocol.beat(store, self.info.rank)
                    next_beat = now + protocol.BEAT_S
                if now - last_live >= self._config().flush_interval_s:
                    last_live = now
                    self._send_live(store)
                if self._stopped.wait(poll_s):
                    return
        except Exception as exc:
            # The beat stops with this thread: rank 0 soon stops waiting for this rank.
            self._fail("following rank 0's runs", exc)

    def _on_event(self, store: Any, event: dict[str, Any], replay: bool) -> None:
        key = event["key"]
        if event["kind"] == "start" and not (replay and protocol.run_ended(store, key)):
            cfg = self._config().measure
            window = get_monitor().open(f"job run {key}", cfg.scope, cfg.sample_interval_s)
            with self._lock:
                self._joined[key] = window
        elif event["kind"] == "end":
            self._send_final(store, key)

    def _send_final(self, store: Any, key: str, answer_unjoined: bool = True) -> None:
        with self._lock:
            if key in self._answered:
                return  # sent already (at exit, or by the follower): never overwrite it
            window = self._joined.pop(key, None)
            if window is None and not answer_unjoined:
                return
            self._answered.add(key)
        if window is not None:
            report = EnergyReport.from_measurement(window.close(), self._config().measure)
            final = self._contribution(report)
        else:  # a run that ended before we joined: say so, rather than keep rank 0 waiting
            final = unmeasured(self.info.rank, self.info.node_id, self._own_runs)
        protocol.send_final(store, key, self.info.rank, final)

    def _contribution(self, report: EnergyReport, final: bool = True) -> Contribution:
        return contribution(report, self.info.rank, self.info.node_id, final, self._own_runs)

    def _send_live(self, store: Any) -> None:
        with self._lock:
            joined = list(self._joined.items())
        for key, window in joined:
            report = EnergyReport.from_measurement(window.snapshot(), self._config().measure)
            live = self._contribution(report, final=False)
            protocol.send_live(store, key, self.info.rank, live)

    def finish(self, timeout_s: float = 5.0) -> None:
        """Send the final report of every run this rank follows (at exit, on SIGTERM)."""
        with self._lock:
            keys = list(self._joined)
        if not keys or self.info.rank == 0:
            return
        try:
            address = (self.info.store_host, self.info.store_port)
            socket.create_connection(address, timeout=timeout_s).close()  # fail fast if gone
            store = protocol.connect(self.info, timeout_s, timeout_s)
            for key in keys:
                self._send_final(store, key, answer_unjoined=False)
        except Exception as exc:
            self._fail("sending this rank's energy at exit", exc)
