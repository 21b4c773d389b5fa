"""Distributed jobs: one MLflow run holds the energy of every node, nothing counted twice.

With ``autolog()`` on every rank of a torchrun (or srun) job and the run
started on rank 0, each rank measures its node from the run's start to its end
and rank 0 adds the reports up (see ``combine`` for who counts what). Without
torch, or outside a multi-rank job, nothing here runs.

``job`` tells who this process is, ``combine`` adds reports up, ``coordinator``
moves them through the launcher's store, whose keys ``protocol`` defines.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from mlflow_green.distributed.combine import JobEnergy, NodeEnergy
from mlflow_green.distributed.job import NODE_ID_ENV, RankInfo, node_id, rank_info

__all__ = ["NODE_ID_ENV", "JobEnergy", "NodeEnergy", "RankInfo", "current", "node_id", "start"]

_log = logging.getLogger(__name__)
_COORDINATOR: Any = None
_LOCK = threading.Lock()


def start(config: Callable[[], Any], warn: Callable[[str], None]) -> Any:
    """Join this process's job, if it is a rank of one; returns the coordinator or None.

    ``config`` returns autolog's current configuration, ``warn`` reports faults.
    """
    global _COORDINATOR
    with _LOCK:
        if _COORDINATOR is None:
            info = rank_info()
            if info is not None:
                from mlflow_green.distributed.coordinator import Coordinator

                _COORDINATOR = Coordinator(info, config, warn)
                _log.debug("mlflow-green: rank %d of %d", info.rank, info.world_size)
        return _COORDINATOR


def current() -> Any:
    """The running coordinator, or None (single process, or autolog not on)."""
    return _COORDINATOR


def stop() -> None:
    """Leave the job (``autolog(disable=True)``)."""
    global _COORDINATOR
    with _LOCK:
        coordinator, _COORDINATOR = _COORDINATOR, None
    if coordinator is not None:
        coordinator.stop()


def _forget_after_fork() -> None:
    # A DataLoader worker is not a rank: it must not follow rank 0's runs.
    global _COORDINATOR, _LOCK
    _COORDINATOR, _LOCK = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
