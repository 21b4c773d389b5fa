"""NVIDIA GPU energy through NVML (the ``pynvml`` module of the nvidia-ml-py package).

Two methods, best first, chosen per GPU:

* ``nvml-energy-counter``: ``nvmlDeviceGetTotalEnergyConsumption``, a hardware
  counter of millijoules since the driver was loaded (Volta and newer). The
  difference of two reads is the energy of the window with no sampling error;
  the counter updates about every 100 ms, so only the ends of a window are
  uncertain. On Grace Hopper it covers the whole module (CPU + GPU).
* ``nvml-power``: GPUs without the counter answer ``NVMLError_NotSupported``;
  their ``nvmlDeviceGetPowerUsage`` (milliwatts, instantaneous on those older
  parts) is polled every :data:`POWER_POLL_INTERVAL_S` and integrated with the
  trapezoid rule, as Zeus does. Polling misses spikes shorter than the period,
  which is why the method is reported.

With ``scope="process"`` either meter attributes each GPU's energy to the processes
on it (:meth:`_NvmlMeter.process_shares`, in :mod:`._nvml_process`): by their share of
its SM activity, by GPU slices in MIG mode, whole where NVML cannot tell.

``pynvml`` is imported inside :func:`open_nvml_meters` only: importing this
module, and :mod:`mlflow_green`, stays cheap on machines without a GPU.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from mlflow_green._warnings import warn
from mlflow_green.measure.meters.base import Meter, MeterUnavailable

_log = logging.getLogger(__name__)

#: Longest period in seconds between two power samples of :class:`NvmlPowerMeter`
#: (>= 10 Hz, the rate Zeus uses to integrate power on GPUs without a counter).
POWER_POLL_INTERVAL_S = 0.1


@dataclass(frozen=True)
class NvmlGpu:
    """One visible GPU: its NVML handle, UUID (the device id) and model name; for a MIG
    device, its parent GPU's handle, its own ``MIG-`` UUID and its slice share."""

    handle: Any
    uuid: str
    name: str
    share: float = 1.0  # slices of a MIG device over its GPU's; 1: a whole GPU


class _NvmlSession:
    """One successful ``nvmlInit``, shared by the meters opened with it.

    NVML is reference counted (each ``nvmlInit`` needs one ``nvmlShutdown``), so
    the meters of one :func:`open_nvml_meters` call share a single init and the
    last one to close shuts it down; a second call makes a second session.
    """

    def __init__(self, nvml: Any) -> None:
        self.nvml = nvml
        self.holders = 0

    def release(self) -> None:
        self.holders -= 1
        if self.holders == 0:
            self.nvml.nvmlShutdown()


def _text(value: str | bytes) -> str:
    """NVML strings: ``str`` from current bindings, ``bytes`` from older ones."""
    return value.decode() if isinstance(value, bytes) else value


def _describe(gpus: Sequence[NvmlGpu]) -> str:
    """Model names grouped with counts, e.g. ``"NVIDIA H100 80GB HBM3 x2"``."""
    counts = Counter(gpu.name for gpu in gpus)  # keeps first-seen order
    return ", ".join(f"{name} x{count}" for name, count in counts.items())


def _select_indices(spec: str, count: int, uuid_at: Callable[[int], str]) -> list[int]:
    """NVML indices of the GPUs named by ``CUDA_VISIBLE_DEVICES=spec``, in its order.

    As CUDA does, entries are integer indices or ``GPU-`` UUID prefixes (which
    must match exactly one GPU), and the list ends at the first invalid entry (an
    index out of range, an unknown or ambiguous UUID, a repeat, anything else):
    so ``""`` and ``"-1"`` hide every GPU. ``MIG-`` entries are left to
    :func:`_visible_gpus` (a MIG device has no energy counter of its own: its parent's
    is shared by slices, see :mod:`._nvml_process`).

    Indices are NVML's (PCI bus order); they are CUDA's only with
    ``CUDA_DEVICE_ORDER=PCI_BUS_ID``. On machines of identical GPUs, the usual
    case, the measured set is the same either way.
    """
    selected: list[int] = []
    uuids: list[str] | None = None  # listed only when needed: listing touches every GPU
    for raw in spec.split(","):
        entry = raw.strip()
        index: int | None = None
        if entry.startswith("MIG-"):
            continue
        if entry.startswith("GPU-"):
            if uuids is None:
                uuids = [uuid_at(i) for i in range(count)]
            matches = [i for i, uuid in enumerate(uuids) if uuid.startswith(entry)]
            if len(matches) == 1:
                index = matches[0]
        elif entry.isascii() and entry.isdigit() and int(entry) < count:
            index = int(entry)
        if index is None or index in selected:
            break
        selected.append(index)
    return selected


def _visible_gpus(nvml: Any) -> list[NvmlGpu]:
    """The GPUs this process can use, honouring ``CUDA_VISIBLE_DEVICES`` (unset: all)."""
    count = nvml.nvmlDeviceGetCount()
    spec = os.environ.get("CUDA_VISIBLE_DEVICES")

    def uuid_at(index: int) -> str:
        return _text(nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(index)))

    indices = list(range(count)) if spec is None else _select_indices(spec, count, uuid_at)
    gpus = _mig_gpus(nvml, [e.strip() for e in (spec or "").split(",") if "MIG-" in e])
    for index in indices:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        gpus.append(
            NvmlGpu(
                handle=handle,
                uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
                name=_text(nvml.nvmlDeviceGetName(handle)),
            )
        )
    return gpus


def _mig_gpus(nvml: Any, entries: list[str]) -> list[NvmlGpu]:
    """The MIG devices named ``MIG-<uuid>``, each as its parent GPU with its slice share;
    others (unknown, the old ``MIG-GPU-<uuid>/<gi>/<ci>`` form) are skipped, one warning."""
    from mlflow_green.measure.meters._nvml_process import mig_slice

    gpus, skipped = [], []
    for entry in entries:
        try:
            parent, slices, total = mig_slice(nvml, entry)
        except (nvml.NVMLError, ValueError) as exc:
            skipped.append(f"{entry} ({type(exc).__name__})")
            continue
        name = f"{_text(nvml.nvmlDeviceGetName(parent))} MIG {slices}/{total} slices"
        gpus.append(NvmlGpu(handle=parent, uuid=entry, name=name, share=slices / total))
    if skipped:
        warn(
            f"CUDA_VISIBLE_DEVICES names MIG devices NVML cannot resolve ({', '.join(skipped)}): "
            "they are not measured",
            stacklevel=4,  # the caller of open_nvml_meters
        )
    return gpus


def _has_energy_counter(nvml: Any, handle: Any) -> bool:
    try:
        nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except nvml.NVMLError_NotSupported:
        return False
    return True


def _init_failure_reason(nvml: Any, err: Exception) -> str:
    if isinstance(err, nvml.NVMLError_LibraryNotFound):
        return "no NVIDIA driver (NVML library not found)"
    if isinstance(err, nvml.NVMLError_DriverNotLoaded):
        return "NVIDIA driver not loaded"
    return f"NVML initialisation failed: {err}"


def open_nvml_meters(*, clock: Callable[[], float] = time.monotonic) -> list[Meter]:
    """Open the GPU meters of this process: at most one counter and one power meter.

    Initialises NVML and sorts the visible GPUs by method: those with an energy
    counter into an :class:`NvmlEnergyCounterMeter`, those without into an
    :class:`NvmlPowerMeter`. Returns ``[]`` (and shuts NVML down) when no GPU is
    visible. The meters share the NVML session; it ends when the last is closed.

    Args:
        clock: Time source in seconds for power integration; tests inject one.

    Raises:
        MeterUnavailable: nvidia-ml-py is missing or there is no NVIDIA driver (no
            warning: no GPU), or, with ``warn=True``, the driver is installed but not
            loaded or NVML failed (initialising or listing the GPUs).
    """
    try:
        import pynvml
    except ImportError as err:
        raise MeterUnavailable("nvidia-ml-py is not installed (no pynvml module)") from err
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as err:
        # No driver at all is absence (no warning); a driver that fails is a fault.
        absent = isinstance(err, pynvml.NVMLError_LibraryNotFound)
        raise MeterUnavailable(_init_failure_reason(pynvml, err), warn=not absent) from err

    session = _NvmlSession(pynvml)
    meters: list[Meter] = []
    try:
        groups: dict[tuple[bool, bool], list[NvmlGpu]] = {}  # (counter?, MIG?) -> GPUs
        for gpu in _visible_gpus(pynvml):
            key = (_has_energy_counter(pynvml, gpu.handle), gpu.share < 1.0)
            groups.setdefault(key, []).append(gpu)
        for (has_counter, _), gpus in sorted(groups.items(), reverse=True):
            kind = NvmlEnergyCounterMeter if has_counter else NvmlPowerMeter
            meters.append(kind(session, gpus, clock=clock))
    except BaseException as err:
        # Nothing was handed out, so this init is ours to undo.
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()
        if isinstance(err, pynvml.NVMLError):
            raise MeterUnavailable(f"NVML failed while listing GPUs: {err}", warn=True) from err
        raise
    if not meters:
        pynvml.nvmlShutdown()
    session.holders = len(meters)
    return meters


class _NvmlMeter(Meter):
    """What both NVML meters share: GPUs, UUID device ids, the session, the clock."""

    domain = "gpu"

    def __init__(
        self,
        session: _NvmlSession,
        gpus: Sequence[NvmlGpu],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._session = session
        self._nvml = session.nvml
        self._gpus = list(gpus)
        self._closed = False
        self._shares: Any = None  # a _nvml_process.ProcessShares once scope="process" asks
        if any(gpu.share < 1.0 for gpu in self._gpus):  # MIG devices: a slice share each
            self.method = f"{self.method}+mig-slice-share"

    def process_shares(self, pids: Collection[int]) -> dict[str, float] | None:
        """Fraction of each GPU's energy since the previous call that belongs to ``pids``:
        their share of its SM activity (``process-share``), of its slices in MIG mode
        (``mig-slice-share``); ``None`` while every GPU is attributed whole (see
        :mod:`mlflow_green.measure.meters._nvml_process`)."""
        if self._shares is None:
            from mlflow_green.measure.meters._nvml_process import ProcessShares

            whole_gpus = [gpu for gpu in self._gpus if gpu.share == 1.0]  # not MIG devices
            self._shares = ProcessShares(self._nvml, whole_gpus, self._clock)
        shares = self._shares.shares(pids)
        method = self._shares.method
        if method is None:
            return None
        self.process_method = method
        return shares

    @property
    def devices(self) -> list[str]:
        """GPU UUIDs (``"GPU-..."``), so GPUs seen by several processes can be deduplicated."""
        return [gpu.uuid for gpu in self._gpus]

    def hardware(self) -> str:
        return _describe(self._gpus)

    def close(self) -> None:
        """Release this meter's share of the NVML session (``nvmlShutdown`` when last)."""
        if not self._closed:
            self._closed = True
            self._session.release()


class NvmlEnergyCounterMeter(_NvmlMeter):
    """GPUs with NVML's total-energy counter (Volta and newer); exact between reads.

    Any period between reads will do: the counter is 64-bit millijoules and
    never wraps in practice.
    """

    method = "nvml-energy-counter"
    poll_interval_s = None

    def __init__(self, session: _NvmlSession, gpus: Sequence[NvmlGpu], **kwargs: Any) -> None:
        super().__init__(session, gpus, **kwargs)
        self._last_t = self._clock()
        # Counter values in mJ at the last read; energy is counted from here.
        self._last_mj = {gpu.uuid: self._counter_mj(gpu) for gpu in self._gpus}
        # Kept in integer millijoules so that summing many deltas loses nothing.
        self._total_mj = dict.fromkeys(self._last_mj, 0)

    def _counter_mj(self, gpu: NvmlGpu) -> int:
        return int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(gpu.handle))

    def read(self) -> dict[str, float]:
        """Joules used by each GPU since the meter was opened.

        Raises:
            pynvml.NVMLError: e.g. ``NVMLError_GpuIsLost``; the monitor handles it.
        """
        t = self._clock()
        for gpu in self._gpus:
            now_mj = self._counter_mj(gpu)
            last_mj = self._last_mj[gpu.uuid]
            if now_mj >= last_mj:
                self._total_mj[gpu.uuid] += now_mj - last_mj
            else:
                self._total_mj[gpu.uuid] += self._across_reset_mj(gpu, now_mj, t - self._last_t)
            self._last_mj[gpu.uuid] = now_mj
        self._last_t = t
        return {gpu.uuid: self._total_mj[gpu.uuid] / 1000.0 * gpu.share for gpu in self._gpus}

    def _across_reset_mj(self, gpu: NvmlGpu, now_mj: int, dt_s: float) -> int:
        # The counter restarted (driver reload, GPU reset) since the last read: it holds the
        # energy since the restart, the part before it is unknown. Power (a 1 s average on
        # these GPUs) x time covers the interval, as CodeCarbon does; never less than the
        # counter's own figure.
        try:
            power_mw = int(self._nvml.nvmlDeviceGetPowerUsage(gpu.handle))
        except Exception as exc:  # no power reading: keep what the counter knows
            _log.debug("mlflow-green: power across a counter reset of %s: %s", gpu.uuid, exc)
            return now_mj
        return max(now_mj, round(power_mw * max(dt_s, 0.0)))


class NvmlPowerMeter(_NvmlMeter):
    """GPUs without an energy counter: power polled and integrated (trapezoid rule).

    Must be read at least every :data:`POWER_POLL_INTERVAL_S` seconds; energy
    drawn in spikes shorter than the period between reads is missed or
    overcounted.
    """

    method = "nvml-power"
    poll_interval_s = POWER_POLL_INTERVAL_S

    def __init__(self, session: _NvmlSession, gpus: Sequence[NvmlGpu], **kwargs: Any) -> None:
        super().__init__(session, gpus, **kwargs)
        # (time in s, power in W) of the previous sample; the first is taken now so that
        # the first read already covers the time since the meter was opened.
        self._last = {gpu.uuid: self._sample(gpu) for gpu in self._gpus}
        self._energy_j = dict.fromkeys(self._last, 0.0)

    def _sample(self, gpu: NvmlGpu) -> tuple[float, float]:
        power_w = self._nvml.nvmlDeviceGetPowerUsage(gpu.handle) / 1000.0
        return self._clock(), power_w

    def read(self) -> dict[str, float]:
        """Joules used by each GPU since the meter was opened, integrating a new sample.

        Raises:
            pynvml.NVMLError: e.g. ``NVMLError_GpuIsLost``; the monitor handles it.
        """
        for gpu in self._gpus:
            t_s, power_w = self._sample(gpu)
            last_t_s, last_power_w = self._last[gpu.uuid]
            # Power is taken to vary linearly between two samples.
            self._energy_j[gpu.uuid] += (last_power_w + power_w) / 2.0 * max(t_s - last_t_s, 0.0)
            self._last[gpu.uuid] = (t_s, power_w)
        return {gpu.uuid: self._energy_j[gpu.uuid] * gpu.share for gpu in self._gpus}
