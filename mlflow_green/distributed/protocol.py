"""The job store's protocol: every key the ranks share, and how each is read and written.

torchrun (and ``init_process_group`` with ``env://`` under srun) serves a
key-value store at ``MASTER_ADDR:MASTER_PORT``. Each rank opens its own client
connections to it, so nothing here competes with the user's process group,
needs it initialised, or takes part in a collective: a rank that finishes
early, late or never cannot deadlock the others.

Keys, under the job's namespace:

* ``owner/<rank>``: the first process to answer for a rank (host:pid).
* ``node/<rank>``: each rank's node id and claimed GPUs, set on connection.
* ``events`` / ``event/<n>``: rank 0 appends ``start`` and ``end`` of each of its
  runs. The other ranks poll the log (every 50 ms, less often in big jobs), open a
  measurement window at ``start`` and answer ``end`` with
  ``run/<key>/final/<rank>`` (and count ``run/<key>/done``).
* ``run/<key>/ended``: set by rank 0 when the run ends (a rank joining later skips it).
* ``run/<key>/live/<rank>``: every flush interval, the rank's running totals,
  so rank 0's flushes show the whole job and a rank that dies leaves its last.
* ``beat/<rank>``: a counter each rank bumps every second; rank 0 stops waiting
  for a rank whose counter stands still.

Values are JSON (``combine``'s contributions, node descriptions, events).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import socket
import threading
import time
from typing import Any

from mlflow_green.distributed.combine import Contribution, JobEnergy, combine, contribution
from mlflow_green.distributed.job import RankInfo, claimed_gpus
from mlflow_green.measure.report import EnergyReport

_log = logging.getLogger(__name__)

#: Longest rank 0 waits at a run's end for ranks that are alive (their beat moves).
WAIT_ENV = "MLFLOW_GREEN_RANK_WAIT_S"
DEFAULT_WAIT_S = 30.0
BEAT_S = 1.0
#: A rank whose beat has not moved for this long is taken for dead.
DEAD_AFTER_S = 5.0 * BEAT_S
OP_TIMEOUT_S = 30.0
_POLL_S = 0.02  # rank 0, while gathering
_CONNECT_TIMEOUT_S = 300.0  # srun: rank 0 may start the store well after our first try
_FIRST_WAIT_S = 1.0  # the blocking wait for every report, before polling
_JOIN_GRACE_S = 2.0  # how long a run's end waits for a rank that never joined
_FOREVER = datetime.timedelta(days=3650)  # a blocked wait for the next event


def rank_wait_s() -> float:
    """How long rank 0 waits at a run's end for live ranks (``MLFLOW_GREEN_RANK_WAIT_S``)."""
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
    info: RankInfo, connect_s: float = OP_TIMEOUT_S, op_s: float | None = OP_TIMEOUT_S
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


def open_store(info: RankInfo, stopped: threading.Event, op_s: float | None = OP_TIMEOUT_S) -> Any:
    """Connect once the store's port answers (None if ``stopped`` is set first).

    Plain socket probes first: torch's own connection retries log a line each, and
    under srun the store only exists once rank 0 calls ``init_process_group``.
    """
    deadline = time.monotonic() + _CONNECT_TIMEOUT_S
    address = (info.store_host, info.store_port)
    while not stopped.is_set():
        try:
            socket.create_connection(address, timeout=2.0).close()
        except OSError:
            if time.monotonic() >= deadline:
                raise
            stopped.wait(0.5)
            continue
        return connect(info, OP_TIMEOUT_S, op_s)
    return None


def get_json(store: Any, key: str) -> Any:
    """The JSON value at ``key`` (which must exist)."""
    return json.loads(store.get(key).decode())


# -- every rank ------------------------------------------------------------------------------
def claim_rank(store: Any, rank: int) -> bool:
    """Whether this process is the rank's first to join (the others stand down).

    A process started by a rank (a spawned DataLoader worker, say) inherits its
    ``RANK`` and may call ``autolog()`` too: it must not answer for the rank.
    """
    me = f"{socket.gethostname()}:{os.getpid()}"
    owner = store.compare_set(f"owner/{rank}", "", me).decode()
    if owner != me:
        _log.debug("mlflow-green: rank %d is followed by %s already", rank, owner)
    return owner == me


def describe(store: Any, info: RankInfo, visible_gpus: list[str]) -> None:
    """Say which node this rank is on and which of its ``visible_gpus`` it uses."""
    entry = {"node": info.node_id, "claims": claimed_gpus(info, visible_gpus)}
    store.set(f"node/{info.rank}", json.dumps(entry))


def read_nodes(store: Any, world_size: int) -> dict[int, dict[str, Any]]:
    """Every rank's description that has arrived, by rank."""
    keys = [f"node/{r}" for r in range(world_size)]
    return {r: get_json(store, k) for r, k in enumerate(keys) if store.check([k])}


# -- rank 0 ----------------------------------------------------------------------------------
def post_event(store: Any, event: dict[str, Any]) -> None:
    """Append ``event`` to the job's event log."""
    n = store.add("events", 1)
    store.set(f"event/{n}", json.dumps(event))


def end_run(store: Any, key: str) -> None:
    """Mark run ``key`` ended and tell the other ranks to send their final reports."""
    store.set(f"run/{key}/ended", "1")  # a rank that joins later skips this run
    post_event(store, {"kind": "end", "key": key})


def gather_final(
    store: Any,
    key: str,
    world_size: int,
    wait_s: float,
    absent: set[int],
    abort: threading.Event,
) -> dict[int, Contribution]:
    """The final reports of run ``key``, waiting up to ``wait_s`` for ranks that are alive.

    Ranks that never joined are added to ``absent`` (and taken out when they join);
    a dead rank (its beat stands still) and ``abort`` stop the wait early.
    """
    others = set(range(1, world_size))  # neither reported nor given up on
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
                    final[rank] = get_json(store, k)
                    others.discard(rank)
                    continue
                if not store.check([f"node/{rank}"]):
                    # Never joined: autolog() is not on there (or not yet, briefly).
                    grace = 0.0 if rank in absent else _JOIN_GRACE_S
                    if now - start >= grace:
                        others.discard(rank)
                        absent.add(rank)
                    continue
                absent.discard(rank)
                count = store.add(f"beat/{rank}", 0)
                last = beats.get(rank)
                if last is None or last[0] != count:
                    beats[rank] = (count, now)
                elif now - last[1] >= DEAD_AFTER_S:
                    others.discard(rank)  # dead: its last live report, if any, counts
        if not others or now - start >= wait_s or abort.is_set():
            break
        time.sleep(_POLL_S)
    return final


def combine_job(
    store: Any, info: RankInfo, key: str, report: EnergyReport, final: dict[int, Contribution]
) -> JobEnergy:
    """Rank 0's ``report``, the ``final`` reports and the latest live ones of the rest, added up."""
    reports = {0: contribution(report, 0, info.node_id, True, False), **final}
    for rank in range(1, info.world_size):
        k = f"run/{key}/live/{rank}"
        if rank not in reports and store.check([k]):
            reports[rank] = get_json(store, k)
    return combine(reports, read_nodes(store, info.world_size), info.world_size)


def forget_run(store: Any, key: str, world_size: int) -> None:
    """Delete the reports of run ``key`` from the store once they are added up."""
    for rank in range(1, world_size):
        for kind in ("final", "live"):
            store.delete_key(f"run/{key}/{kind}/{rank}")
    store.delete_key(f"run/{key}/done")


# -- other ranks -----------------------------------------------------------------------------
def event_count(store: Any) -> int:
    """How many events rank 0 has posted so far."""
    return store.add("events", 0)


def read_event(store: Any, n: int) -> dict[str, Any]:
    """Event number ``n`` (from 1)."""
    return get_json(store, f"event/{n}")


def run_ended(store: Any, key: str) -> bool:
    """Whether rank 0 has ended run ``key``."""
    return store.check([f"run/{key}/ended"])


def beat(store: Any, rank: int) -> None:
    """Show rank 0 that this rank is alive."""
    store.add(f"beat/{rank}", 1)


def send_live(store: Any, key: str, rank: int, live: Contribution) -> None:
    """This rank's running totals for run ``key`` (replacing the previous ones)."""
    store.set(f"run/{key}/live/{rank}", json.dumps(live))


def send_final(store: Any, key: str, rank: int, final: Contribution) -> None:
    """This rank's final report for run ``key``, counted in ``run/<key>/done``."""
    store.set(f"run/{key}/final/{rank}", json.dumps(final))
    store.add(f"run/{key}/done", 1)
