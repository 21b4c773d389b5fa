"""The ranks of a job talking through the launcher's TCPStore.

torchrun (and ``init_process_group`` with ``env://`` under srun) serves a
key-value store at ``MASTER_ADDR:MASTER_PORT``. Each rank opens its own client
connections to it, so nothing here competes with the user's process group,
needs it initialised, or takes part in a collective: a rank that finishes
early, late or never cannot deadlock the others.

Protocol, under the job's namespace:

* ``node/<rank>``: each rank's node id and claimed GPUs, set on connection.
* ``events`` / ``event/<n>``: rank 0 appends ``start`` and ``end`` of each of its
  runs. The other ranks poll the log (every 50 ms, less often in big jobs), open a
  measurement window at ``start`` and answer ``end`` with
  ``run/<key>/final/<rank>`` (and count ``run/<key>/done``).
* ``run/<key>/live/<rank>``: every flush interval, the rank's running totals,
  so rank 0's flushes show the whole job and a rank that dies leaves its last.
* ``beat/<rank>``: a counter each rank bumps every second; rank 0 stops waiting
  for a rank whose counter stands still.

No thread of ours sits in a store call without a time limit, and at exit the
threads stop before the interpreter does: a thread still inside torch's C++ when
Python finalises aborts the process.
"""

from __future__ import annotations

import atexit
import dataclasses
import datetime
import itertools
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from mlflow_green.distributed.combine import (
    Contribution,
    JobEnergy,
    combine,
    contribution,
    owned_energy_j,
    unmeasured,
)
from mlflow_green.distributed.job import RankInfo, claimed_gpus
from mlflow_green.monitor import Window, get_monitor
from mlflow_green.report import EnergyReport

_log = logging.getLogger(__name__)

#: Longest rank 0 waits at a run's end for ranks that are alive (their beat moves).
WAIT_ENV = "MLFLOW_GREEN_RANK_WAIT_S"
DEFAULT_WAIT_S = 30.0
BEAT_S = 1.0
#: A rank whose beat has not moved for this long is taken for dead.
DEAD_AFTER_S = 5.0 * BEAT_S
_POLL_S = 0.02  # rank 0, while gathering
_FOLLOW_POLL_S = 0.05  # other ranks, for the event log (scaled up for big jobs)
_EXIT_JOIN_S = 3.0
_CONNECT_TIMEOUT_S = 300.0  # srun: rank 0 may start the store well after our first try
_OP_TIMEOUT_S = 30.0
_CONNECT_GRACE_S = 5.0  # how long a run's end waits for a store not reached yet
_FIRST_WAIT_S = 1.0  # the blocking wait for every report, before polling
_JOIN_GRACE_S = 2.0  # how long a run's end waits for a rank that never joined
_FOREVER = datetime.timedelta(days=3650)  # a blocked wait for the next event


def _wait_s() -> float:
    raw = os.environ.get(WAIT_ENV, "").strip()
    try:
        value = float(raw) if raw else DEFAULT_WAIT_S
    except ValueError:
        value = -1.0
    if not value >= 0:
        _log.warning(
            "mlflow-green: %s=%r is not seconds >= 0; using %s", WAIT_ENV, raw, DEFAULT_WAIT_S
        )
        return DEFAULT_WAIT_S
    return value


def connect(
    info: RankInfo, connect_s: float = _OP_TIMEOUT_S, op_s: float | None = _OP_TIMEOUT_S
) -> Any:
    """A new client connection to the job's store (a ``PrefixStore`` on our namespace).

    ``connect_s`` bounds the connection attempts, ``op_s`` each later operation
    (``None``: no limit, for a thread blocked on the next event).
    """
    from torch.distributed import PrefixStore, TCPStore

    store = TCPStore(
        info.store_host,
        info.store_port,
        is_master=False,
        timeout=datetime.timedelta(seconds=connect_s),
        wait_for_workers=False,  # the launcher's rendezvous counts workers: we are none
    )
    store.set_timeout(_FOREVER if op_s is None else datetime.timedelta(seconds=op_s))
    return PrefixStore(info.namespace, store)


def _get_json(store: Any, key: str) -> Any:
    return json.loads(store.get(key).decode())


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
        store = self._open_store()
        if store is None or not self._claim_rank(store):
            self._no_store.set()
            return None
        self._describe(store)
        self._connected.set()
        return store

    def _claim_rank(self, store: Any) -> bool:
        """Whether this process is the rank's first to join (the others stand down).

        A process started by a rank (a spawned DataLoader worker, say) inherits its
        ``RANK`` and may call ``autolog()`` too: it must not answer for the rank.
        """
        me = f"{socket.gethostname()}:{os.getpid()}"
        owner = store.compare_set(f"owner/{self.info.rank}", "", me).decode()
        if owner != me:
            _log.debug("mlflow-green: rank %d is followed by %s already", self.info.rank, owner)
        return owner == me

    def _describe(self, store: Any) -> None:
        visible = get_monitor().devices("gpu")
        entry = {
            "node": self.info.node_id,
            "claims": claimed_gpus(self.info, visible),
        }
        store.set(f"node/{self.info.rank}", json.dumps(entry))

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
        nodes = self._call(self._read_nodes, timeout_s)
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

    def _read_nodes(self, store: Any) -> dict[int, dict[str, Any]]:
        keys = [f"node/{r}" for r in range(self.info.world_size)]
        return {r: _get_json(store, k) for r, k in enumerate(keys) if store.check([k])}

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

    def _open_store(self, op_s: float | None = _OP_TIMEOUT_S) -> Any:
        """Connect once the store's port answers (None if stopped first).

        Plain socket probes first: torch's own connection retries log a line each, and
        under srun the store only exists once rank 0 calls ``init_process_group``.
        """
        deadline = time.monotonic() + _CONNECT_TIMEOUT_S
        address = (self.info.store_host, self.info.store_port)
        while not self._stopped.is_set():
            try:
                socket.create_connection(address, timeout=2.0).close()
            except OSError:
                if time.monotonic() >= deadline:
                    raise
                self._stopped.wait(0.5)
                continue
            return connect(self.info, _OP_TIMEOUT_S, op_s)
        return None

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
                return task(connect(self.info, timeout_s, timeout_s))
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
        self._submit(lambda store: self._post(store, {"kind": "start", "key": key}))
        return key

    @staticmethod
    def _post(store: Any, event: dict[str, Any]) -> None:
        n = store.add("events", 1)
        store.set(f"event/{n}", json.dumps(event))

    def collect(self, key: str, report: EnergyReport) -> JobEnergy | None:
        """End run ``key`` on every rank and add up the job's energy (bounded wait)."""
        wait_s = _wait_s()

        def task(store: Any) -> JobEnergy:
            store.set(f"run/{key}/ended", "1")  # a rank that joins later skips this run
            self._post(store, {"kind": "end", "key": key})
            return self._gather(store, key, report, wait_s)

        # A store that never answered (bad MASTER_ADDR?) must not hold up every run's end:
        # the first run's end waits a little for it, later ones not at all.
        job = None
        if not self._no_store.is_set() and not self._connected.wait(_CONNECT_GRACE_S):
            self._no_store.set()
        if self._connected.is_set():
            future = self._submit(task)
            self._pending[key] = future
            job = self.result(key, wait_s + DEAD_AFTER_S + 30.0)
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
        return self._call(lambda store: self._combine(store, key, report, {}), 5.0)

    def _gather(self, store: Any, key: str, report: EnergyReport, wait_s: float) -> JobEnergy:
        others = set(range(1, self.info.world_size))  # neither reported nor given up on
        final: dict[int, Contribution] = {}
        beats: dict[int, tuple[int, float]] = {}  # rank -> (beat count, when it last moved)
        start = next_scan = time.monotonic()
        seen_done = -1
        joined = [r for r in sorted(others) if store.check([f"node/{r}"])]
        if joined:
            # The usual case, every rank alive: one blocking wait returns as soon as the last
            # report lands. Past it, poll (a timed-out wait also logs a line from torch).
            try:
                store.wait(
                    [f"run/{key}/final/{r}" for r in joined],
                    datetime.timedelta(seconds=min(_FIRST_WAIT_S, wait_s)),
                )
            except Exception as exc:
                _log.debug("mlflow-green: still waiting for ranks: %r", exc)
        while others:
            now = time.monotonic()
            done = store.add(f"run/{key}/done", 0)  # one request while nothing changes
            if done != seen_done or now >= next_scan:
                seen_done, next_scan = done, now + BEAT_S / 2
                for rank in sorted(others):
                    k = f"run/{key}/final/{rank}"
                    if store.check([k]):
                        final[rank] = _get_json(store, k)
                        others.discard(rank)
                        continue
                    if not store.check([f"node/{rank}"]):
                        # Never joined: autolog() is not on there (or not yet, briefly).
                        grace = 0.0 if rank in self._absent else _JOIN_GRACE_S
                        if now - start >= grace:
                            others.discard(rank)
                            self._absent.add(rank)
                        continue
                    self._absent.discard(rank)
                    count = store.add(f"beat/{rank}", 0)
                    last = beats.get(rank)
                    if last is None or last[0] != count:
                        beats[rank] = (count, now)
                    elif now - last[1] >= DEAD_AFTER_S:
                        others.discard(rank)  # dead: its last live report, if any, counts
            if not others or now - start >= wait_s or self._abort.is_set():
                break
            time.sleep(_POLL_S)
        job = self._combine(store, key, report, final)
        absent = sorted(self._absent - self._absent_told)
        if absent:
            self._absent_told.update(absent)
            self._warn(
                f"rank(s) {', '.join(map(str, absent))} never joined the job's energy "
                "accounting: call mlflow_green.autolog() on every rank (or set "
                "MLFLOW_GREEN_AUTOLOG=true for the whole job); their nodes' energy is missing"
            )
        for rank in range(1, self.info.world_size):
            for kind in ("final", "live"):
                store.delete_key(f"run/{key}/{kind}/{rank}")
        store.delete_key(f"run/{key}/done")
        return job

    def _combine(
        self, store: Any, key: str, report: EnergyReport, final: dict[int, Contribution]
    ) -> JobEnergy:
        reports = {0: contribution(report, 0, self.info.node_id, True, False), **final}
        for rank in range(1, self.info.world_size):
            k = f"run/{key}/live/{rank}"
            if rank not in reports and store.check([k]):
                reports[rank] = _get_json(store, k)
        return combine(reports, self._read_nodes(store), self.info.world_size)

    # -- other ranks -------------------------------------------------------------------------
    def _follow(self) -> None:
        try:
            store = self._join()
            if store is None:
                return
            # Events before this point happened before we joined: replay them for the runs
            # still open, skip the runs that ended.
            first_live = store.add("events", 0) + 1
            n, next_beat, last_live = 1, 0.0, time.monotonic()
            poll_s = min(1.0, _FOLLOW_POLL_S * max(1.0, self.info.world_size / 64))
            while True:
                count = store.add("events", 0)
                while n <= count and not self._stopped.is_set():
                    self._on_event(store, _get_json(store, f"event/{n}"), replay=n < first_live)
                    n += 1
                now = time.monotonic()
                if now >= next_beat:
                    store.add(f"beat/{self.info.rank}", 1)
                    next_beat = now + BEAT_S
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
        if event["kind"] == "start" and not (replay and store.check([f"run/{key}/ended"])):
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
        store.set(f"run/{key}/final/{self.info.rank}", json.dumps(final))
        store.add(f"run/{key}/done", 1)

    def _contribution(self, report: EnergyReport, final: bool = True) -> Contribution:
        return contribution(report, self.info.rank, self.info.node_id, final, self._own_runs)

    def _send_live(self, store: Any) -> None:
        with self._lock:
            joined = list(self._joined.items())
        for key, window in joined:
            report = EnergyReport.from_measurement(window.snapshot(), self._config().measure)
            live = self._contribution(report, final=False)
            store.set(f"run/{key}/live/{self.info.rank}", json.dumps(live))

    def finish(self, timeout_s: float = 5.0) -> None:
        """Send the final report of every run this rank follows (at exit, on SIGTERM)."""
        with self._lock:
            keys = list(self._joined)
        if not keys or self.info.rank == 0:
            return
        try:
            address = (self.info.store_host, self.info.store_port)
            socket.create_connection(address, timeout=timeout_s).close()  # fail fast if gone
            store = connect(self.info, timeout_s, timeout_s)
            for key in keys:
                self._send_final(store, key, answer_unjoined=False)
        except Exception as exc:
            self._fail("sending this rank's energy at exit", exc)
