"""AMD GPU energy through AMD SMI (the ``amdsmi`` Python binding that ships with ROCm 6+).

One method, ``amdsmi-energy-counter``: ``amdsmi_get_energy_count(handle)`` returns the
GPU's energy accumulator, the energy of one count (``counter_resolution``, µJ: 15.3 for
every ASIC in ROCm's library) and the driver's timestamp of the reading (ns). Counts x
resolution between two readings is the energy in between; the accumulator comes from
the SMU metrics table, re-read by the driver when over 1 ms old, so only the ends of a
window are uncertain. Its key changed across ROCm releases (``power`` up to 6.2, both
from 6.2.1, ``energy_accumulator`` only from 6.4): both are read.

Its width depends on the firmware: 64 bits on MI200 and MI300, 32 where the SMU keeps a
``uint32_t`` (Navi, MI100): 65.7 kJ, 88 s at 750 W. A reading below the previous one is
a 32-bit wrap when the energy that implies is plausible (at most
:data:`MAX_PLAUSIBLE_POWER_W` over the time between the readings' timestamps); else a
restart from 0 (driver reload, GPU reset) when the new value alone is: that interval
counts the GPU's power x time, at least what the restarted counter holds, as the NVML
meter does; else a stale reading (AMD SMI before ROCm 7 returned some under concurrent
use, amdsmi issue 115): it is not counted and the previous reading stays the
baseline, so nothing is lost or counted twice. Both go to
:meth:`AmdSmiEnergyMeter.notes`.

AMD SMI has a handle per logical GPU (each die of an MI250X, each partition of an
MI300X in CPX mode). An MI250X's second die reads 0 counts and 0 W, its energy being in
the first die's counter; it is left out with a warning, as is a GPU whose counter is
missing (a virtual machine) or marked invalid by the driver.

Only the GPUs this process can use are measured, read as ROCr and HIP read them:
``ROCR_VISIBLE_DEVICES`` (indices into ROCr's enumeration or ``GPU-`` UUID prefixes,
case-insensitive; the list ends at the first invalid, unknown, ambiguous or repeated
entry; set but empty: no GPU), then ``HIP_VISIBLE_DEVICES``, or ``CUDA_VISIBLE_DEVICES``
when that is unset or empty (indices into what ROCr left or part of a ``GPU-`` UUID; the
list ends at the first invalid entry, repeats are skipped). ROCr enumerates in KFD
topology order, not AMD SMI's PCI bus order: handles are sorted by ``hip_id``
(``amdsmi_get_gpu_enumeration_info``, ROCm 6.4+) or ``node_id``
(``amdsmi_get_gpu_kfd_info``, 6.3). ``amdsmi`` is imported in :func:`open_amdsmi_meters`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mlflow_green._warnings import warn
from mlflow_green.measure.meters.base import Meter, MeterUnavailable

_log = logging.getLogger(__name__)

METHOD = "amdsmi-energy-counter"
#: Highest power in watts one AMD SMI handle could plausibly draw: well above the
#: 1,400 W of the MI355X, the most power-hungry AMD accelerator when this was written.
#: It bounds the energy a wrap or a restart may imply, and sets the poll interval.
MAX_PLAUSIBLE_POWER_W = 2000.0
#: Shortest time, seconds, a wrap or restart is judged over (as for RAPL): up to 2 kJ is
#: always plausible, whatever the timestamps of two close readings say.
MIN_ELAPSED_S = 1.0
#: Bounds of :attr:`AmdSmiEnergyMeter.poll_interval_s`, seconds.
POLL_INTERVAL_BOUNDS_S = (1.0, 60.0)
#: Counter events remembered for :meth:`AmdSmiEnergyMeter.notes`.
MAX_NOTED_EVENTS = 100
_WRAP_32 = 1 << 32
#: What a note says of each counter event: what happened, how the interval was counted.
_EVENTS = {
    "restart": ("restarted from 0 (driver reload or GPU reset)", "counted as power x time"),
    "stale": ("went back (a stale reading)", "held over to the next reading"),
}
#: Accumulator values that mean "not available" (the driver's or ROCm SMI's all-ones).
_INVALID = (0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF)
#: ``amdsmi_get_power_info`` keys, best first: ``socket_power`` (ROCm 6.4+), the 1 s
#: average, the instantaneous value; whole watts, or ``"N/A"``.
_POWER_KEYS = ("socket_power", "average_socket_power", "current_socket_power")
#: AMD SMI status codes (``amdsmi_wrapper.AMDSMI_STATUS_*``, fixed by the C library).
_NOT_SUPPORTED, _NO_PERM, _DRIVER_NOT_LOADED = 2, 10, 34


@dataclass
class AmdGpu:
    """One measured GPU: its handle, AMD SMI UUID (the device id), name, counter state."""

    handle: Any
    uuid: str
    name: str
    resolution_uj: float  # µJ per count
    last_count: int  # accumulator at the last reading, counts
    last_ts_ns: int  # the driver's timestamp of that reading
    last_t: float  # the meter's clock at that reading
    counts: int = 0  # counted since the meter opened
    extra_uj: float = 0.0  # counted from power x time across restarts


def _release(amdsmi: Any, owned: bool) -> None:
    """Shut AMD SMI down if our init started it. Its init is not reference counted (a
    second ``amdsmi_init`` does nothing, one ``amdsmi_shut_down`` ends it for the whole
    process), so a library someone else initialised (CodeCarbon, the user) is left so."""
    if owned:
        with contextlib.suppress(amdsmi.AmdSmiException):
            amdsmi.amdsmi_shut_down()


def _import_amdsmi() -> Any:
    printed = io.StringIO()  # the binding prints to stdout when libamd_smi.so is missing
    try:
        with contextlib.redirect_stdout(printed):
            import amdsmi
    except ModuleNotFoundError as err:
        if err.name != "amdsmi":
            raise MeterUnavailable(f"the amdsmi package is broken: {err}", warn=True) from err
        raise MeterUnavailable("the amdsmi package is not installed") from err
    except Exception as err:  # KeyError, OSError, AttributeError: library missing or mismatched
        said = " ".join(printed.getvalue().split()) or repr(err)
        raise MeterUnavailable(
            f"the amdsmi package cannot use AMD SMI's library ({said}): install ROCm's "
            "amd-smi-lib, or the amdsmi package of the installed ROCm version",
            warn=True,
        ) from err
    return amdsmi


def _error_text(err: Exception) -> str:
    return str(getattr(err, "err_info", None) or err)


def _init(amdsmi: Any) -> bool:
    """Initialise AMD SMI for GPUs; True when it was not initialised before (ours to end)."""
    try:
        amdsmi.amdsmi_get_processor_handles()  # raises NOT_INIT unless initialised already
        owned = False
    except amdsmi.AmdSmiException:
        owned = True
    try:
        amdsmi.amdsmi_init(amdsmi.AmdSmiInitFlags.INIT_AMD_GPUS)
    except amdsmi.AmdSmiException as err:
        code = getattr(err, "err_code", None)
        if code == _DRIVER_NOT_LOADED:
            raise MeterUnavailable("no AMD GPU driver (amdgpu not loaded)") from err
        hint = ": the user needs /dev/kfd and /dev/dri/renderD* (groups render, video)"
        hint = hint if code == _NO_PERM else ""
        raise MeterUnavailable(
            f"AMD SMI initialisation failed: {_error_text(err)}{hint}", warn=True
        ) from err
    return owned


def _energy_count(amdsmi: Any, handle: Any) -> tuple[int, float, int]:
    """(accumulator in counts, µJ per count, the driver's timestamp in ns) of one GPU."""
    raw = amdsmi.amdsmi_get_energy_count(handle)
    count = raw["energy_accumulator"] if "energy_accumulator" in raw else raw["power"]
    return int(count), float(raw["counter_resolution"]), int(raw.get("timestamp") or 0)


def _power_w(amdsmi: Any, handle: Any) -> float | None:
    """The GPU's socket power in watts, ``None`` when AMD SMI has no figure."""
    try:
        info = amdsmi.amdsmi_get_power_info(handle)
    except amdsmi.AmdSmiException as exc:
        _log.debug("mlflow-green: no AMD GPU power reading: %s", exc)
        return None
    values = [info.get(k) for k in _POWER_KEYS]
    return next((float(v) for v in values if isinstance(v, (int, float))), None)


def _kfd_uuid(amdsmi: Any, handle: Any) -> str:
    """The ``GPU-`` UUID ROCr and HIP give a GPU: its KFD unique id in 16 hex digits."""
    with contextlib.suppress(ValueError, amdsmi.AmdSmiException):  # "N/A", not supported
        if value := int(str(amdsmi.amdsmi_get_gpu_asic_info(handle).get("asic_serial")), 16):
            return f"GPU-{value:016x}"
    return "GPU-XX"  # ROCr's name for a GPU without one: no entry selects it


def _in_rocr_order(amdsmi: Any, handles: Sequence[Any]) -> list[tuple[Any, str]]:
    """The handles in ROCr's enumeration (KFD topology) order, each with its UUID."""
    keyed = []
    for position, handle in enumerate(handles):
        key: Any = position
        uuid = ""
        with contextlib.suppress(amdsmi.AmdSmiException):  # not supported: bus order
            if hasattr(amdsmi, "amdsmi_get_gpu_enumeration_info"):  # ROCm 6.4+
                info = amdsmi.amdsmi_get_gpu_enumeration_info(handle)
                key, uuid = info.get("hip_id"), str(info.get("hip_uuid") or "")
            elif hasattr(amdsmi, "amdsmi_get_gpu_kfd_info"):  # ROCm 6.3
                key = amdsmi.amdsmi_get_gpu_kfd_info(handle).get("node_id")
        if not uuid.startswith("GPU-") or not uuid[4:].strip("0"):
            uuid = _kfd_uuid(amdsmi, handle)
        keyed.append((key if isinstance(key, int) else position, position, handle, uuid))
    return [(handle, uuid) for *_, handle, uuid in sorted(keyed, key=lambda k: k[:2])]


def _c_integer(token: str) -> int | None:
    """``strtol(token, &end, 0)`` when it reads all of ``token`` (decimal, 0x hex, 0 octal)."""
    sign, body = (-1, token[1:]) if token[:1] == "-" else (1, token.removeprefix("+"))
    base, digits = 10, body
    if body.upper().startswith("0X"):
        base, digits = 16, body[2:]
    elif body.startswith("0") and len(body) > 1:
        base, digits = 8, body[1:]
    if not digits or any(c not in "0123456789ABCDEF"[:base] for c in digits.upper()):
        return None
    return sign * int(digits, base)


def _select_rocr(spec: str, uuids: Sequence[str]) -> list[int]:
    """Indices chosen by ``ROCR_VISIBLE_DEVICES=spec``, as ROCr's RvdFilter reads it."""
    chosen: list[int] = []
    known = [u.upper() if u != "GPU-XX" else "" for u in uuids]
    for raw in spec.split(",") if spec else []:
        token = raw.strip().upper()
        index: int | None
        if token.startswith("G"):  # a UUID prefix that must match exactly one GPU
            matches = [i for i, u in enumerate(known) if u and u.startswith(token)]
            index = matches[0] if 5 <= len(token) <= 20 and len(matches) == 1 else None
        else:
            index = _c_integer(token)
        if index is None or not 0 <= index < len(uuids) or index in chosen:
            break
        chosen.append(index)
    return chosen


def _select_hip(spec: str, uuids: Sequence[str]) -> list[int]:
    """Indices chosen by ``HIP_VISIBLE_DEVICES=spec``, as HIP (ROCclr) reads it."""
    chosen: list[int] = []
    for entry in spec.split(","):
        if "GPU-" in entry:  # the first GPU whose UUID contains it
            entry = next((str(i) for i, u in enumerate(uuids) if entry in u), entry)
        valid = entry.isascii() and entry.isdigit() and str(int(entry)) == entry
        if not valid or int(entry) >= len(uuids):
            break
        if int(entry) not in chosen:
            chosen.append(int(entry))
    return chosen


def _visible_handles(amdsmi: Any) -> list[Any]:
    """The GPUs this process can use, honouring ROCR_, HIP_ and CUDA_VISIBLE_DEVICES."""
    gpus = _in_rocr_order(amdsmi, amdsmi.amdsmi_get_processor_handles())
    rocr = os.environ.get("ROCR_VISIBLE_DEVICES")
    if rocr is not None:
        gpus = [gpus[i] for i in _select_rocr(rocr, [u for _, u in gpus])]
    hip = os.environ.get("HIP_VISIBLE_DEVICES") or os.environ.get("CUDA_VISIBLE_DEVICES")
    if hip:
        gpus = [gpus[i] for i in _select_hip(hip, [u for _, u in gpus])]
    return [handle for handle, _ in gpus]


def _open_gpu(amdsmi: Any, handle: Any, t: float) -> AmdGpu | str:
    """The GPU with its first reading, or why it cannot be measured."""
    name = str(amdsmi.amdsmi_get_gpu_asic_info(handle).get("market_name") or "AMD GPU")
    label = f"{name} at {amdsmi.amdsmi_get_gpu_device_bdf(handle)}"
    try:
        count, resolution_uj, ts_ns = _energy_count(amdsmi, handle)
    except amdsmi.AmdSmiException as err:
        if getattr(err, "err_code", None) != _NOT_SUPPORTED:
            raise
        return f"{label} has no energy counter (AMD SMI: not supported, as in a virtual machine)"
    if count in _INVALID or resolution_uj <= 0:
        return f"{label}: the driver reports its energy counter as not available"
    if count == 0 and not (_power_w(amdsmi, handle) or 0) > 0:
        return (
            f"{label} reports no energy of its own (a secondary die or partition, as an "
            "MI250X's second die: the first one's counter covers it; make that one visible)"
        )
    uuid = str(amdsmi.amdsmi_get_gpu_device_uuid(handle))
    return AmdGpu(handle, uuid, name, resolution_uj, count, ts_ns, t)


def open_amdsmi_meters(*, clock: Callable[[], float] = time.monotonic) -> list[Meter]:
    """Open the AMD GPU meter of this process: one meter for every visible GPU with a counter.

    Returns ``[]`` when no AMD GPU is visible. GPUs that cannot be measured are left
    out with one warning while others are measured.

    Args:
        clock: Time source in seconds (a fall-back to the driver's timestamps, notes).

    Raises:
        MeterUnavailable: no amdsmi package or no amdgpu driver (``warn=False``); a
            broken install, an init or listing failure, or visible GPUs none of which
            can be measured (``warn=True``, with the reason).
    """
    amdsmi = _import_amdsmi()
    owned = _init(amdsmi)
    try:
        opened = [_open_gpu(amdsmi, h, clock()) for h in _visible_handles(amdsmi)]
    except amdsmi.AmdSmiException as err:
        _release(amdsmi, owned)
        raise MeterUnavailable(
            f"AMD SMI failed while listing GPUs: {_error_text(err)}", warn=True
        ) from err
    gpus = [g for g in opened if isinstance(g, AmdGpu)]
    left_out = [g for g in opened if isinstance(g, str)]
    if left_out and not gpus:
        _release(amdsmi, owned)
        raise MeterUnavailable("; ".join(left_out), warn=True)
    if left_out:
        warn(f"mlflow-green: AMD GPU energy not measured for {'; '.join(left_out)}", stacklevel=3)
    if not gpus:
        _release(amdsmi, owned)
        return []
    return [AmdSmiEnergyMeter(amdsmi, gpus, owned=owned, clock=clock)]


class AmdSmiEnergyMeter(Meter):
    """AMD GPUs' energy accumulators: exact between readings, wraps and restarts handled."""

    domain = "gpu"
    method = METHOD

    def __init__(
        self,
        amdsmi: Any,
        gpus: Sequence[AmdGpu],
        *,
        owned: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._amdsmi = amdsmi
        self._owned = owned  # AMD SMI's init was ours: shut it down on close
        self._gpus = list(gpus)
        self._clock = clock
        self._closed = False
        self._events: deque[tuple[float, str, str, float]] = deque(maxlen=MAX_NOTED_EVENTS)
        # A counter that may be 32 bits wide (its value fits) must be read before it can
        # wrap twice: half the time one wrap takes at the highest plausible power.
        narrow = [g.resolution_uj for g in self._gpus if g.last_count < _WRAP_32]
        if narrow:
            wrap_s = _WRAP_32 * min(narrow) / 1e6 / MAX_PLAUSIBLE_POWER_W
            low, high = POLL_INTERVAL_BOUNDS_S
            self.poll_interval_s = min(max(wrap_s / 2, low), high)

    @property
    def devices(self) -> list[str]:
        """AMD SMI UUIDs, so GPUs seen by several processes can be deduplicated."""
        return [gpu.uuid for gpu in self._gpus]

    def hardware(self) -> str:
        counts = Counter(gpu.name for gpu in self._gpus)  # keeps first-seen order
        return ", ".join(f"{name} x{count}" for name, count in counts.items())

    def read(self) -> dict[str, float]:
        """Joules used by each GPU since the meter was opened.

        Raises:
            amdsmi.AmdSmiException: e.g. a GPU that fell off the bus; the monitor handles it.
        """
        for gpu in self._gpus:
            count, _, ts_ns = _energy_count(self._amdsmi, gpu.handle)
            self._advance(gpu, count, ts_ns, self._clock())
        return {g.uuid: (g.counts * g.resolution_uj + g.extra_uj) / 1e6 for g in self._gpus}

    def _advance(self, gpu: AmdGpu, count: int, ts_ns: int, t: float) -> None:
        elapsed_s = (ts_ns - gpu.last_ts_ns) / 1e9 if ts_ns > gpu.last_ts_ns else t - gpu.last_t
        elapsed_s = max(elapsed_s, 0.0)
        if count >= gpu.last_count:
            gpu.counts += count - gpu.last_count
        else:
            limit = MAX_PLAUSIBLE_POWER_W * max(elapsed_s, MIN_ELAPSED_S) * 1e6 / gpu.resolution_uj
            wrapped = _WRAP_32 - gpu.last_count + count
            if 0 < ts_ns <= gpu.last_ts_ns:  # older than the baseline's own time: stale
                self._events.append((t, gpu.uuid, "stale", elapsed_s))
                return
            if gpu.last_count < _WRAP_32 and wrapped <= limit:
                gpu.counts += wrapped
            elif count <= limit:  # restarted from 0 since the last reading
                power_w = _power_w(self._amdsmi, gpu.handle) or 0.0
                gpu.extra_uj += max(count * gpu.resolution_uj, power_w * elapsed_s * 1e6)
                self._events.append((t, gpu.uuid, "restart", elapsed_s))
            else:  # a stale reading: the baseline stays, its energy is counted when passed
                self._events.append((t, gpu.uuid, "stale", elapsed_s))
                return
        gpu.last_count, gpu.last_ts_ns, gpu.last_t = count, ts_ns, t

    def notes(self, since_s: float = float("-inf")) -> list[str]:
        """Counter restarts and stale readings at or after ``since_s``: a sentence a GPU a kind."""
        grouped: dict[tuple[str, str], list[float]] = {}
        for t, uuid, kind, elapsed_s in self._events:
            if t >= since_s:
                grouped.setdefault((uuid, kind), []).append(elapsed_s)
        return [
            f"energy counter of AMD GPU {uuid} {_EVENTS[kind][0]} "
            f"{'once' if len(spans) == 1 else f'{len(spans)} times'}: "
            f"{sum(spans):.3g} s {_EVENTS[kind][1]}"
            for (uuid, kind), spans in grouped.items()
        ]

    def close(self) -> None:
        """Shut AMD SMI down if this meter initialised it."""
        if not self._closed:
            self._closed = True
            _release(self._amdsmi, self._owned)
