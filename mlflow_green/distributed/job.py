"""Who this process is in a distributed job: rank, world size, node, the GPUs it uses.

Read from the launcher's environment, never from an initialised process group,
so it is known when ``autolog()`` runs (usually before ``init_process_group``):
torchrun sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``LOCAL_WORLD_SIZE``;
Slurm's ``srun`` sets ``SLURM_PROCID``/``SLURM_NTASKS``/``SLURM_LOCALID``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
from dataclasses import dataclass

#: Overrides the hostname as this process's node identity (like MLflow's
#: ``MLFLOW_SYSTEM_METRICS_NODE_ID``).
NODE_ID_ENV = "MLFLOW_GREEN_NODE_ID"

# (rank, world size, local rank, local world size) variables of each launcher, in order.
_LAUNCHERS = (
    ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"),
    ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE"),
)


@dataclass(frozen=True)
class RankInfo:
    """This process's place in the job."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int | None
    node_id: str
    store_host: str
    store_port: int
    namespace: str
    """Key prefix for this job attempt in the store (a torchrun restart gets a new one)."""


def node_id() -> str:
    """``MLFLOW_GREEN_NODE_ID`` if set, else the hostname; safe in an MLflow metric name."""
    raw = os.environ.get(NODE_ID_ENV, "").strip() or socket.gethostname() or "node"
    # MLflow metric names allow letters, digits, _ - . / and space; "/" would nest the key.
    return re.sub(r"[^A-Za-z0-9_.-]", "_", raw)


def _int(name: str) -> int | None:
    try:
        return int(os.environ[name].split("(")[0])  # SLURM_NTASKS_PER_NODE may read "2(x3)"
    except (KeyError, ValueError):
        return None


def _torch_installed() -> bool:
    # Looked up, not imported: importing torch costs seconds and may not be wanted.
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):  # e.g. sys.modules["torch"] = None blocks it
        return False


def rank_info() -> RankInfo | None:
    """This process's rank in a job of two or more ranks; ``None`` when single-process.

    ``None`` too when torch is not installed (the store is torch's) or when no
    rendezvous address (``MASTER_ADDR``/``MASTER_PORT``) is set.
    """
    for rank_var, world_var, local_var, local_world_var in _LAUNCHERS:
        rank, world = _int(rank_var), _int(world_var)
        if rank is None or world is None or world < 2:
            continue
        host, port = os.environ.get("MASTER_ADDR"), _int("MASTER_PORT")
        if not host or port is None or not _torch_installed():
            return None
        local = _int(local_var)
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        job = os.environ.get("TORCHELASTIC_RUN_ID") or os.environ.get("SLURM_JOB_ID") or "job"
        return RankInfo(
            rank=rank,
            world_size=world,
            local_rank=local if local is not None else 0,
            local_world_size=_int(local_world_var),
            node_id=node_id(),
            store_host=host,
            store_port=port,
            namespace=f"mlflow_green/{job}/{attempt}/",
        )
    return None


def claimed_gpus(info: RankInfo, visible: list[str]) -> list[str]:
    """The GPUs (UUIDs) this rank uses, when that can be told; else every GPU it sees.

    The torchrun convention is one GPU per local rank, ``cuda:LOCAL_RANK``: when a
    node shows as many GPUs as it runs ranks, rank ``i`` uses the ``i``-th.
    """
    n = info.local_world_size
    if n is not None and n > 1 and len(visible) == n and 0 <= info.local_rank < n:
        return [visible[info.local_rank]]
    return list(visible)
