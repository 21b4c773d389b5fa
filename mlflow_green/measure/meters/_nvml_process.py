"""This process tree's share of each NVIDIA GPU's energy, for ``scope="process"``.

NVML counts energy per GPU, never per process, so a process's GPU energy is an
attribution: the GPU's counter energy over each interval between two meter reads
is split between the processes on it, and this module says which fraction of it
belongs to a given set of pids (the process tree being measured). The fractions of
all the processes on a GPU add up to 1 in every interval, so the attributed figures
of the programs sharing a GPU add up to the GPU's whole energy.

* **Activity** (``process-share``): ``nvmlDeviceGetProcessUtilization(handle,
  lastSeenTimeStamp)`` gives, for each process with activity in the driver's samples
  newer than the cursor (one every 1/6 s to 1 s, depending on the GPU), its SM
  utilisation in percent; an interval's share is the tree's summed SM utilisation
  over everyone's. The cursor is the newest sample stamp seen, so each interval gets
  the samples taken since the previous read. Entries above 100 % (a driver fault seen
  with zombie processes) are ignored. Idle and static power during an active interval
  is split the same way: the program keeping the GPU busy pays for keeping it on.
* **Idle rule**: an interval in which no process has SM activity (NVML finds no new
  sample: ``NVMLError_NotFound``) is split between the processes holding memory on
  the GPU (``nvmlDeviceGetComputeRunningProcesses``) in proportion to the memory
  they hold, equally if NVML cannot say how much (``usedGpuMemory`` ``None``). A
  process that holds a CUDA context and memory is what keeps an idle GPU out of its
  deepest power states and away from others, and memory is the one resource it
  reserves while idle; a GPU with no process at all is nobody's (share 0). A query
  less than :data:`SAMPLE_PERIOD_MAX_S` after the last one that found samples is not
  idleness but a read faster than the driver samples: the previous split is kept.
* **MIG** (``mig-slice-share``): NVML has no per-process utilisation on GPUs in MIG
  mode ("not currently supported", nvml.h), and a MIG instance has no energy counter.
  A GPU in MIG mode is attributed by slices: the GPU instances where the tree runs a
  compute process, their ``gpuInstanceSliceCount`` over the GPU's slice count (the
  largest GPU instance profile it offers, 7 on A100/H100), whatever their activity;
  unused slices are nobody's.
* **Fall-backs, each with one warning naming the GPU**: a GPU without the
  per-process call (``NVMLError_NotSupported``) is attributed whole (share 1) from
  then on; so is an interval in which NVML lists processes on the GPU but none of
  them is visible here (a container with its own PID namespace: NVML's pids are the
  host's, and nothing can be matched to this tree).
* **MIG slices named in ``CUDA_VISIBLE_DEVICES``** (``MIG-<uuid>``, what Kubernetes
  and Slurm set for a MIG job): :func:`mig_slice` maps each to its parent GPU
  (``nvmlDeviceGetHandleByUUID``, ``nvmlDeviceGetDeviceHandleFromMigDeviceHandle``);
  the meter reads the parent's counter and counts the instance's slice share of it,
  in both scopes, as ``<method>+mig-slice-share``, with the MIG UUID as the device
  id (two jobs on two instances of one GPU are two devices). Decision: the slice
  share, not the whole GPU, because the instance is what the job holds and the
  scheduler gives each instance to one job; so with ``scope="process"`` such a
  device is not split further (the whole instance is the job's).
* **Transient errors**: any other ``NVMLError`` (a timeout, ``NVML_ERROR_UNKNOWN``...)
  costs only that interval, which keeps the previous split (whole if there is none
  yet), and the next read queries again from the same cursor, so its samples cover
  both intervals. Only :data:`MAX_CONSECUTIVE_FAILURES` failures in a row turn the
  GPU whole for good, with one warning.
* **Limitation, bursty processes**: NVML gives one entry per process per query, the
  mean SM utilisation over the driver's sample periods since the cursor *in which
  that process was active* (nvitop found this; the stand-in models it), not over the
  whole interval, and the entry does not say how many periods it averages. A process
  busy 100 % for a quarter of each second and idle the rest reads as 100 %, against
  50 % for a steady neighbour, so it gets 2/3 of the interval instead of its 1/3 of
  the SM activity. Reading more often than the sample period does not help (one
  period per read, the previous split kept in between), and weighting by the number
  of periods each pid appears in would need one query per period, which the sampler
  does not do; so the shares of processes with very different duty cycles are biased
  toward the bursty one. Their sum is still the GPU's whole energy.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import psutil

from mlflow_green._warnings import warn

_log = logging.getLogger(__name__)

#: Longest per-process sampling period of NVML ("between 1 second and 1/6 second,
#: depending on the product"): a query finding no new sample within this long of the
#: previous one that found some keeps the previous split.
SAMPLE_PERIOD_MAX_S = 1.0
#: ``process_method`` of GPUs attributed by their SM activity.
ACTIVITY_METHOD = "process-share"
#: ``process_method`` of GPUs in MIG mode, attributed by GPU slices.
MIG_METHOD = "mig-slice-share"
#: NVML's GPU instance profile ids run from 0 to NVML_GPU_INSTANCE_PROFILE_COUNT - 1.
_PROFILE_IDS = range(0x12)
#: Transient NVML failures in a row after which a GPU is attributed whole for good.
MAX_CONSECUTIVE_FAILURES = 3


@dataclass
class _GpuState:
    """What one GPU's attribution carries from one interval to the next."""

    uuid: str
    handle: Any
    mode: str = ""  # "activity", "mig" or "whole"; "" until the first query
    last_seen_us: int = 0
    last_sample_t: float = -math.inf
    share: float | None = None  # the last interval's split; None before the first
    failures: int = 0  # transient NVML failures in a row
    mig: list[tuple[Any, int]] = field(default_factory=list)  # (MIG handle, slices)
    total_slices: int = 0
    unmatched_warned: bool = False


class ProcessShares:
    """Per-GPU fractions of each interval's energy that belong to a set of pids.

    Call :meth:`shares` once per meter read, right after it, so that both cover the
    same interval. Not thread-safe: the monitor serialises reads.
    """

    def __init__(self, nvml: Any, gpus: Sequence[Any], clock: Callable[[], float]) -> None:
        self._nvml = nvml
        self._clock = clock
        self._gpus = [_GpuState(gpu.uuid, gpu.handle) for gpu in gpus]

    @property
    def method(self) -> str | None:
        """How the attributed GPUs are attributed (``process-share``, ``mig-slice-share``
        or both joined by ``+``); ``None`` while every GPU is attributed whole."""
        modes = {g.mode for g in self._gpus}
        names = [
            m for mode, m in (("activity", ACTIVITY_METHOD), ("mig", MIG_METHOD)) if mode in modes
        ]
        return "+".join(names) or None

    def shares(self, pids: Collection[int]) -> dict[str, float]:
        """Fraction of each GPU's energy since the last call that belongs to ``pids``.

        GPUs attributed whole are left out (their factor is 1); so is a GPU whose query
        failed transiently before it had any split (whole for that interval only).
        """
        pid_set = set(pids)
        out: dict[str, float] = {}
        for gpu in self._gpus:
            if gpu.mode == "whole":
                continue
            try:
                if not gpu.mode:
                    self._start(gpu)
                if gpu.mode == "mig":
                    out[gpu.uuid] = self._mig_share(gpu, pid_set)
                elif gpu.mode == "activity":
                    out[gpu.uuid] = self._activity_share(gpu, pid_set)
            except self._nvml.NVMLError_NotSupported as exc:
                self._whole(gpu, f"NVML does not support it ({type(exc).__name__})")
            except self._nvml.NVMLError as exc:
                gpu.failures += 1
                if gpu.failures >= MAX_CONSECUTIVE_FAILURES:
                    why = f"NVML failed {gpu.failures} times in a row ({type(exc).__name__}: {exc})"
                    self._whole(gpu, why)
                else:  # this interval only: keep the last split (none yet: whole), retry
                    _log.debug("mlflow-green: GPU %s: transient NVML error %r", gpu.uuid, exc)
                    if gpu.share is not None:
                        out[gpu.uuid] = gpu.share
            else:
                gpu.failures = 0
        return out

    # -- the modes -------------------------------------------------------------------------
    def _start(self, gpu: _GpuState) -> None:
        nvml = self._nvml
        try:
            mig_mode = nvml.nvmlDeviceGetMigMode(gpu.handle)[0]
        except (nvml.NVMLError_NotSupported, nvml.NVMLError_FunctionNotFound):
            mig_mode = 0  # not a MIG-capable GPU (or a driver without MIG)
        if mig_mode == getattr(nvml, "NVML_DEVICE_MIG_ENABLE", 1):
            self._start_mig(gpu)
            return
        try:
            nvml.nvmlDeviceGetProcessUtilization(gpu.handle, 0)
        except nvml.NVMLError_NotSupported:
            self._whole(gpu, "it has no per-process utilisation (NVML_ERROR_NOT_SUPPORTED)")
            return
        except nvml.NVMLError_NotFound:
            pass  # supported; no process has been active lately
        gpu.mode = "activity"  # the first interval gets its own query, from the cursor 0

    def _activity_share(self, gpu: _GpuState, pids: set[int]) -> float:
        nvml = self._nvml
        try:
            samples = nvml.nvmlDeviceGetProcessUtilization(gpu.handle, gpu.last_seen_us)
        except nvml.NVMLError_NotFound:
            samples = []
        now = self._clock()
        if samples:
            gpu.last_seen_us = max(gpu.last_seen_us, *(int(s.timeStamp) for s in samples))
            gpu.last_sample_t = now
        valid = [s for s in samples if s.smUtil <= 100]
        busy = sum(s.smUtil for s in valid)
        if busy > 0:
            gpu.share = sum(s.smUtil for s in valid if s.pid in pids) / busy
            return self._matched(gpu, gpu.share, {s.pid for s in valid})
        if not samples and now - gpu.last_sample_t < SAMPLE_PERIOD_MAX_S:
            return gpu.share or 0.0  # read faster than the driver samples: nothing new yet
        gpu.share, listed = self._idle_share(gpu, pids)
        return self._matched(gpu, gpu.share, listed)

    def _idle_share(self, gpu: _GpuState, pids: set[int]) -> tuple[float, set[int]]:
        memory: dict[int, int] = {}
        unknown = False  # usedGpuMemory None: NVML cannot say (WDDM, some MIG set-ups)
        for proc in self._nvml.nvmlDeviceGetComputeRunningProcesses(gpu.handle):
            unknown = unknown or proc.usedGpuMemory is None
            memory[proc.pid] = memory.get(proc.pid, 0) + (proc.usedGpuMemory or 0)
        total = sum(memory.values())
        if not memory:
            return 0.0, set()
        if unknown or total == 0:
            return sum(1 for p in memory if p in pids) / len(memory), set(memory)
        return sum(m for p, m in memory.items() if p in pids) / total, set(memory)

    def _start_mig(self, gpu: _GpuState) -> None:
        nvml = self._nvml
        for index in range(nvml.nvmlDeviceGetMaxMigDeviceCount(gpu.handle)):
            try:
                mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(gpu.handle, index)
            except nvml.NVMLError_NotFound:
                continue  # no instance at this index
            gpu.mig.append((mig, int(nvml.nvmlDeviceGetAttributes(mig).gpuInstanceSliceCount)))
        for profile in _PROFILE_IDS:
            try:
                info = nvml.nvmlDeviceGetGpuInstanceProfileInfo(gpu.handle, profile)
            except nvml.NVMLError:
                continue  # a profile this GPU does not offer
            gpu.total_slices = max(gpu.total_slices, int(info.sliceCount))
        if gpu.total_slices <= 0:
            self._whole(gpu, "MIG mode is on but NVML gives no GPU instance profile")
            return
        gpu.mode = "mig"

    def _mig_share(self, gpu: _GpuState, pids: set[int]) -> float:
        slices, listed = 0, set()
        for handle, count in gpu.mig:
            running = {p.pid for p in self._nvml.nvmlDeviceGetComputeRunningProcesses(handle)}
            listed |= running
            if running & pids:
                slices += count
        gpu.share = min(slices / gpu.total_slices, 1.0)
        return self._matched(gpu, gpu.share, listed)

    # -- fall-backs ------------------------------------------------------------------------
    def _matched(self, gpu: _GpuState, share: float, listed: set[int]) -> float:
        """``share``, or 1 when NVML lists processes none of which is visible here."""
        if share > 0 or not listed or any(psutil.pid_exists(p) for p in listed):
            return share
        if not gpu.unmatched_warned:
            gpu.unmatched_warned = True
            warn(
                f"mlflow-green: GPU {gpu.uuid}: NVML lists processes ({_pids(listed)}) none of "
                "which is visible here (a container with its own PID namespace?): with "
                'scope="process" its energy is attributed whole while that lasts',
                stacklevel=2,
            )
        return 1.0

    def _whole(self, gpu: _GpuState, why: str) -> None:
        gpu.mode = "whole"
        warn(
            f'mlflow-green: GPU {gpu.uuid}: with scope="process" its energy is attributed '
            f"whole to this process tree: {why}",
            stacklevel=2,
        )


def mig_slice(nvml: Any, uuid: str) -> tuple[Any, int, int]:
    """``(parent GPU handle, the MIG device's GPU slices, the GPU's slices)`` of the MIG
    device ``uuid``.

    Raises:
        NVMLError: no such MIG device (``NotFound``), or NVML failed.
        ValueError: NVML gives no slice counts for it.
    """
    mig = nvml.nvmlDeviceGetHandleByUUID(uuid)
    parent = nvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig)
    slices = int(nvml.nvmlDeviceGetAttributes(mig).gpuInstanceSliceCount)
    total = 0
    for profile in _PROFILE_IDS:
        try:
            info = nvml.nvmlDeviceGetGpuInstanceProfileInfo(parent, profile)
        except nvml.NVMLError:
            continue  # a profile this GPU does not offer
        total = max(total, int(info.sliceCount))
    if not 0 < slices <= total:
        raise ValueError(f"NVML gives {slices} of {total} GPU slices")
    return parent, slices, total


def _pids(pids: set[int], limit: int = 5) -> str:
    shown = sorted(pids)[:limit]
    return ", ".join(map(str, shown)) + (", ..." if len(pids) > limit else "")
