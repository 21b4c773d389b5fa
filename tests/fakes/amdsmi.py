"""A stand-in for AMD's ``amdsmi`` Python binding (AMD SMI, ROCm 6+), driven by a scenario.

Tests install it as ``sys.modules["amdsmi"]`` (or put ``tests/fakes`` first on
``sys.path``) so that the production code's unchanged ``import amdsmi`` finds it. It
mirrors the real binding (ROCm/amdsmi ``py-interface``, 6.2 to 7.x) where a meter
touches it: function names, arguments and return types (dicts with the same keys,
``"N/A"`` for what a GPU does not report), status codes and exceptions
(``AmdSmiLibraryException``: ``err_code``, ``get_error_code()``, ``get_error_info()``;
``AmdSmiParameterException`` for an argument of the wrong type), the
``amdsmi_exception`` and ``amdsmi_wrapper`` attributes, and an init that is not
reference counted: a second ``amdsmi_init`` does nothing, one ``amdsmi_shut_down``
ends it for everyone, calls before init raise ``NOT_INIT``.

The scenario (:func:`configure`, or the JSON file named by ``FAKE_AMDSMI_SCENARIO``)::

    {"library": true,  # false (file only): import fails as without libamd_smi.so (KeyError)
     "driver": true,   # false: amdsmi_init raises DRIVER_NOT_LOADED; "no_perm": NO_PERM;
                       # "init_error": INIT_ERROR
     "api": "6.4",     # "6.2": the accumulator's key is "power"; "6.3": "power" and
                       # "energy_accumulator", plus amdsmi_get_gpu_kfd_info; "6.4" and later:
                       # "energy_accumulator" only, plus amdsmi_get_gpu_enumeration_info
     "devices": [{"name": "AMD Instinct MI300X",  # asic_info market_name
                  "bdf": "0000:05:00.0",    # handles come in BDF order, as amd-smi lists them
                  "unique_id": 6221...,     # KFD unique id: ROCr/HIP UUID "GPU-%016x"; 0: none
                  "uuid": "...",            # amdsmi_get_gpu_device_uuid
                  "kfd_node": 2,            # KFD topology node: ROCr's enumeration order
                  "profile": [[t_s, power_w], ...],  # piecewise linear, constant outside
                  "bits": 64,               # accumulator width: 64 (MI200, MI300) or 32
                  "counter_start": 0,       # accumulator (counts) at the epoch
                  "reset_at_s": 12.5,       # the accumulator restarts from 0 here
                  "lost_at_s": 30.0,        # from here calls on it fail (EIO)
                  "stale": {"from_s": 5.0, "reads": 1, "lag_s": 2.0},  # see below
                  "energy": "counter"}]}    # "not_supported" (VM guest), "invalid" (no such
                                            # field: UINT64_MAX), "secondary_die" (0, 0 W)

Times are seconds since the epoch (:func:`configure`, :func:`set_clock`, or import for
a file scenario) on the module's clock, ``time.monotonic`` unless replaced. Modelled:

* the accumulator counts :data:`COUNTER_RESOLUTION_UJ` (15.3 uJ as a C ``float``, what
  ROCm's library reports for every ASIC; the kernel's comments say 15.259 uJ = 2**-16 J,
  a 0.3% difference not modelled): ``counter_start`` plus the profile's integral up to
  the last update, in whole counts, modulo ``2**bits`` (32 where the SMU firmware keeps
  a ``uint32_t EnergyAccumulator``: Navi, MI100);
* it updates every :data:`COUNTER_PERIOD_S`: the driver re-reads the SMU metrics table
  when its copy is older than 1 ms (``smu_cmn_get_metrics_table``, ``msecs_to_jiffies(1)``;
  the firmware's own rate is not published); ``timestamp`` is that update's
  ``system_clock_counter``, boot-time ns, which a driver reload does not restart;
* ``amdsmi_get_power_info``: ``average_socket_power`` (1 s average) and
  ``current_socket_power``, whole watts (6.4 on: ``socket_power``, the average, too);
* the second die of an MI250X reports 0 counts and 0 W (its energy is in the first's);
* ``stale``: the first ``reads`` readings from ``from_s`` on return the accumulator and
  timestamp of ``lag_s`` earlier, as AMD SMI before ROCm 7 did under concurrent use
  (ROCm/amdsmi issue 115: "Energy counter goes backward in some conditions");
* a GPU that fell off the bus: sysfs reads fail with EIO, which ROCm SMI maps to
  ``UNEXPECTED_SIZE`` (``ErrnoToRsmiStatus``).
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from types import ModuleType
from typing import Any

#: AMD SMI's status codes (``amdsmi_wrapper.AMDSMI_STATUS_*``), as the C library defines them.
_STATUS = {
    "SUCCESS": 0, "INVAL": 1, "NOT_SUPPORTED": 2, "NOT_YET_IMPLEMENTED": 3,
    "FAIL_LOAD_MODULE": 4, "FAIL_LOAD_SYMBOL": 5, "DRM_ERROR": 6, "API_FAILED": 7,
    "TIMEOUT": 8, "RETRY": 9, "NO_PERM": 10, "INTERRUPT": 11, "IO": 12, "ADDRESS_FAULT": 13,
    "FILE_ERROR": 14, "OUT_OF_RESOURCES": 15, "INTERNAL_EXCEPTION": 16,
    "INPUT_OUT_OF_BOUNDS": 17, "INIT_ERROR": 18, "REFCOUNT_OVERFLOW": 19, "BUSY": 30,
    "NOT_FOUND": 31, "NOT_INIT": 32, "NO_SLOT": 33, "DRIVER_NOT_LOADED": 34, "NO_DATA": 40,
    "INSUFFICIENT_SIZE": 41, "UNEXPECTED_SIZE": 42, "UNEXPECTED_DATA": 43,
    "NON_AMD_CPU": 44, "NO_ENERGY_DRV": 45, "NO_MSR_DRV": 46, "NO_HSMP_DRV": 47,
    "NO_HSMP_SUP": 48, "NO_HSMP_MSG_SUP": 49, "HSMP_TIMEOUT": 50, "NO_DRV": 51,
    "FILE_NOT_FOUND": 52, "ARG_PTR_NULL": 53, "AMDGPU_RESTART_ERR": 54,
    "SETTING_UNAVAILABLE": 55, "MAP_ERROR": 0xFFFFFFFE, "UNKNOWN_ERROR": 0xFFFFFFFF,
}  # fmt: skip
globals().update({f"AMDSMI_STATUS_{name}": code for name, code in _STATUS.items()})
#: ``err_info`` of the codes a GPU meter meets (``amdsmi_exception.py``); others: unknown.
_ERR_INFO = {
    1: "INVAL - Invalid parameters", 2: "NOT_SUPPORTED - Feature not supported",
    8: "TIMEOUT - Timeout in API call", 9: "RETRY - Retry operation",
    10: "NO_PERM - Permission Denied", 18: "INIT_ERROR - Initialization error",
    32: "NOT_INIT - Device not initialized", 34: "DRIVER_NOT_LOADED - Driver not loaded",
    42: "UNEXPECTED_SIZE - unexpected size of data was read",
}  # fmt: skip

#: How often the energy accumulator updates, in seconds.
COUNTER_PERIOD_S = 0.001
#: Microjoules per count, as the library returns it (a C float: 15.300000190734863).
COUNTER_RESOLUTION_UJ: float = struct.unpack("f", struct.pack("f", 15.3))[0]
#: Averaging window of ``average_socket_power``, seconds.
POWER_AVERAGE_S = 1.0
#: Boot time of the fake machine at the epoch: the timestamps' origin, seconds.
BOOT_S = 1712.0
_NA = "N/A"


def _library_present() -> bool:
    path = os.environ.get("FAKE_AMDSMI_SCENARIO")
    if not path:
        return True
    with open(path, encoding="utf-8") as f:
        return json.load(f).get("library", True) is not False


if not _library_present():  # as amdsmi_wrapper.py does when ctypes.CDLL fails
    print("libamd_smi.so: cannot open shared object file: No such file or directory")
    print("Unable to find amdsmi library try installing amd-smi-lib from your package manager")
    raise KeyError("libamd_smi.so")


class AmdSmiException(Exception):
    """Base smi exception class."""


class AmdSmiLibraryException(AmdSmiException):
    """A non-zero status of the C library: ``err_code`` and ``err_info``."""

    def __init__(self, err_code: int) -> None:
        err_code = abs(err_code)
        super().__init__(err_code)
        self.err_code = err_code
        info = _ERR_INFO.get(err_code, "UNKNOWN_ERROR - An unknown error occurred")
        self.err_info = f"AMDSMI_STATUS_{info}"

    def __str__(self) -> str:
        return f"Error code:\n\t{self.err_code} | {self.err_info}"

    def get_error_info(self) -> str:
        return self.err_info

    def get_error_code(self) -> int:
        return self.err_code


class AmdSmiRetryException(AmdSmiLibraryException):
    def __init__(self) -> None:
        super().__init__(_STATUS["RETRY"])


class AmdSmiTimeoutException(AmdSmiLibraryException):
    def __init__(self) -> None:
        super().__init__(_STATUS["TIMEOUT"])


class AmdSmiParameterException(AmdSmiException):
    """An argument of the wrong type (checked before the C library is called)."""

    def __init__(self, receivedValue: Any, expectedType: Any, msg: str | None = None) -> None:
        super().__init__(msg)
        self.err_code = None
        self.err_msg = msg or (
            f"Invalid parameter:\nActual type: {type(receivedValue)}\nExpected type: {expectedType}"
        )

    def __str__(self) -> str:
        return self.err_msg


def _check_res(code: int) -> None:
    if code == _STATUS["RETRY"]:
        raise AmdSmiRetryException()
    if code == _STATUS["TIMEOUT"]:
        raise AmdSmiTimeoutException()
    if code != _STATUS["SUCCESS"]:
        raise AmdSmiLibraryException(code)


class amdsmi_processor_handle:
    """An opaque processor handle (a ``ctypes.c_void_p`` in the real binding)."""

    __slots__ = ("_index",)

    def __init__(self, index: int) -> None:
        self._index = index

    def __repr__(self) -> str:
        return f"<fake amdsmi_processor_handle {self._index}>"


class AmdSmiInitFlags(IntEnum):
    INIT_ALL_PROCESSORS = 0xFFFFFFFF
    INIT_AMD_CPUS = 1
    INIT_AMD_GPUS = 2
    INIT_AMD_APUS = 3
    INIT_NON_AMD_CPUS = 4
    INIT_NON_AMD_GPUS = 8


amdsmi_exception = ModuleType(f"{__name__}.amdsmi_exception")
amdsmi_wrapper = ModuleType(f"{__name__}.amdsmi_wrapper")
for _cls in (AmdSmiException, AmdSmiLibraryException, AmdSmiRetryException,
             AmdSmiTimeoutException, AmdSmiParameterException):  # fmt: skip
    setattr(amdsmi_exception, _cls.__name__, _cls)
for _flag in AmdSmiInitFlags:
    setattr(amdsmi_wrapper, f"AMDSMI_{_flag.name}", int(_flag))
for _name, _code in _STATUS.items():
    setattr(amdsmi_wrapper, f"AMDSMI_STATUS_{_name}", _code)
amdsmi_wrapper.amdsmi_processor_handle = amdsmi_processor_handle  # type: ignore[attr-defined]


# --- Scenario, clock and ground truth ------------------------------------------------------


@dataclass
class _Profile:
    """Piecewise-linear power in watts over seconds since the epoch, constant outside."""

    ts: list[float]
    ws: list[float]

    @classmethod
    def parse(cls, points: list[list[float]]) -> _Profile:
        ts, ws = [float(t) for t, _ in points], [float(w) for _, w in points]
        if not ts or any(b < a for a, b in itertools.pairwise(ts)) or min(ws) < 0:
            raise ValueError("a profile is [[t_s, power_w], ...], times not decreasing, w >= 0")
        return cls(ts, ws)

    def power_w(self, t: float) -> float:
        if t < self.ts[0] or t >= self.ts[-1]:
            return self.ws[0] if t < self.ts[0] else self.ws[-1]
        i = bisect.bisect_right(self.ts, t) - 1  # right-continuous at a step
        frac = (t - self.ts[i]) / (self.ts[i + 1] - self.ts[i])
        return self.ws[i] + (self.ws[i + 1] - self.ws[i]) * frac

    def integral_j(self, t0: float, t1: float) -> float:
        """Exact integral of the power from ``t0`` to ``t1`` (trapezoids are exact here)."""
        cuts = [t0, *(t for t in self.ts if t0 < t < t1), t1]
        total = 0.0
        for a, b in itertools.pairwise(cuts):
            total += (self.power_w(a) + self._left_w(b)) / 2 * (b - a)
        return total

    def _left_w(self, t: float) -> float:
        """The power just before ``t`` (differs from :meth:`power_w` at a step)."""
        i = bisect.bisect_left(self.ts, t)
        return self.ws[i] if i < len(self.ts) and self.ts[i] == t else self.power_w(t)


@dataclass
class _Device:
    name: str
    bdf: str
    unique_id: int
    uuid: str
    kfd_node: int
    profile: _Profile
    bits: int
    counter_start: int
    reset_at_s: float | None
    lost_at_s: float | None
    energy: str
    stale: dict[str, float]
    stale_served: int = 0


_OPTIONAL = ("reset_at_s", "lost_at_s")


def _device(index: int, raw: dict[str, Any]) -> _Device:
    unique_id = raw.get("unique_id", 0x5647_5055_0000_0000 + index)
    unique_id = int(unique_id, 16) if isinstance(unique_id, str) else int(unique_id)
    energy = str(raw.get("energy", "counter"))
    if energy not in ("counter", "not_supported", "invalid", "secondary_die"):
        raise ValueError(f"unknown energy kind {energy!r}")
    optional = {k: None if raw.get(k) is None else float(raw[k]) for k in _OPTIONAL}
    return _Device(
        name=str(raw.get("name", "AMD Instinct MI300X")),
        bdf=str(raw.get("bdf", f"0000:{0x05 + 0x10 * index:02x}:00.0")),
        unique_id=unique_id,
        uuid=str(
            raw.get("uuid", f"{0x74A1FF00 + index:08x}-0000-1000-8000-{unique_id % 2**48:012x}")
        ),
        kfd_node=int(raw.get("kfd_node", index + 1)),  # node 0 is the CPU
        profile=_Profile.parse(raw.get("profile", [[0.0, 0.0]])),
        bits=int(raw.get("bits", 64)),
        counter_start=int(raw.get("counter_start", 0)),
        energy=energy,
        stale={k: float(v) for k, v in raw.get("stale", {"reads": 0}).items()},
        **optional,
    )


@dataclass
class _Scenario:
    driver: bool | str
    api: tuple[int, int]
    devices: list[_Device]  # in BDF order, as amd-smi lists them

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> _Scenario:
        api = tuple(int(p) for p in str(raw.get("api", "6.4")).split(".")[:2])
        devices = [_device(i, d) for i, d in enumerate(raw.get("devices", []))]
        return cls(raw.get("driver", True), api, sorted(devices, key=lambda d: d.bdf))  # type: ignore[arg-type]


_clock: Callable[[], float] = time.monotonic
_epoch: float = _clock()
_configured: _Scenario | None = None
_from_env: tuple[str, _Scenario] | None = None
_initialised = False


def configure(scenario: dict[str, Any] | None) -> None:
    """Describe the machine and restart the epoch now; ``None``: back to the file scenario."""
    global _configured, _epoch
    _configured = None if scenario is None else _Scenario.parse(scenario)
    _epoch = _clock()


def set_clock(clock: Callable[[], float]) -> None:
    """Read time (seconds) from ``clock`` instead of ``time.monotonic``; restarts the epoch."""
    global _clock, _epoch
    _clock, _epoch = clock, clock()


def now_s() -> float:
    """Seconds since the epoch on the fake's clock: the time axis of the profiles."""
    return _clock() - _epoch


def initialised() -> bool:
    """Whether ``amdsmi_init`` holds (no ``amdsmi_shut_down`` since)."""
    return _initialised


def _scenario() -> _Scenario | None:
    global _from_env
    if _configured is not None:
        return _configured
    path = os.environ.get("FAKE_AMDSMI_SCENARIO")
    if not path:
        return None
    if _from_env is None or _from_env[0] != path:
        with open(path, encoding="utf-8") as f:
            _from_env = (path, _Scenario.parse(json.load(f)))
    return _from_env[1]


def _by_uuid(uuid: str) -> _Device:
    scenario = _scenario()
    return next(d for d in (scenario.devices if scenario else []) if d.uuid == uuid)


def _tick(t: float) -> float:
    """The last accumulator update at or before ``t``."""
    return math.floor(t / COUNTER_PERIOD_S + 1e-6) * COUNTER_PERIOD_S


def _count(dev: _Device, t: float) -> int:
    """The accumulator at ``t`` seconds since the epoch, in counts."""
    if dev.reset_at_s is not None and t >= dev.reset_at_s:
        start, base = dev.reset_at_s, 0
    else:
        start, base = 0.0, dev.counter_start
    joules = dev.profile.integral_j(start, max(_tick(t), start))
    return (base + math.floor(joules * 1e6 / COUNTER_RESOLUTION_UJ + 1e-6)) % (1 << dev.bits)


def integral_j(uuid: str, t0: float, t1: float) -> float:
    """Exact energy in joules the device used from ``t0`` to ``t1`` (seconds since the epoch)."""
    return _by_uuid(uuid).profile.integral_j(t0, t1)


def counter_integral_j(uuid: str, t0: float, t1: float) -> float:
    """Energy in joules a perfect reader of the accumulator sees between ``t0`` and ``t1``.

    The difference of the two readings (one wrap at most), in counts x resolution; across
    a reset, the counts before it plus the restarted accumulator.
    """
    dev = _by_uuid(uuid)
    span = 1 << dev.bits
    if dev.reset_at_s is not None and t0 < dev.reset_at_s <= t1:
        before = (_count(dev, dev.reset_at_s - 1e-9) - _count(dev, t0)) % span
        return (before + _count(dev, t1)) * COUNTER_RESOLUTION_UJ / 1e6
    return (_count(dev, t1) - _count(dev, t0)) % span * COUNTER_RESOLUTION_UJ / 1e6


# --- The AMD SMI functions -----------------------------------------------------------------


def _check_init() -> _Scenario:
    scenario = _scenario()
    if not _initialised or scenario is None:
        _check_res(_STATUS["NOT_INIT"])
    return scenario  # type: ignore[return-value]


def _gpu(handle: Any) -> _Device:
    if not isinstance(handle, amdsmi_processor_handle):
        raise AmdSmiParameterException(handle, amdsmi_processor_handle)
    scenario = _check_init()
    if not 0 <= handle._index < len(scenario.devices):
        _check_res(_STATUS["INVAL"])
    dev = scenario.devices[handle._index]
    if dev.lost_at_s is not None and now_s() >= dev.lost_at_s:
        _check_res(_STATUS["UNEXPECTED_SIZE"])
    return dev


def amdsmi_init(flag: AmdSmiInitFlags = AmdSmiInitFlags.INIT_AMD_GPUS) -> None:
    global _initialised
    if not isinstance(flag, AmdSmiInitFlags):
        raise AmdSmiParameterException(flag, AmdSmiInitFlags)
    if _initialised:
        return  # the library's init is a no-op once initialised (no reference count)
    scenario = _scenario()
    driver = False if scenario is None else scenario.driver
    if driver is False:
        _check_res(_STATUS["DRIVER_NOT_LOADED"])
    if driver in ("no_perm", "init_error"):
        _check_res(_STATUS["NO_PERM" if driver == "no_perm" else "INIT_ERROR"])
    _initialised = True


def amdsmi_shut_down() -> None:
    global _initialised
    _initialised = False


def amdsmi_get_processor_handles() -> list[amdsmi_processor_handle]:
    return [amdsmi_processor_handle(i) for i in range(len(_check_init().devices))]


def amdsmi_get_gpu_device_uuid(processor_handle: amdsmi_processor_handle) -> str:
    return _gpu(processor_handle).uuid


def amdsmi_get_gpu_device_bdf(processor_handle: amdsmi_processor_handle) -> str:
    return _gpu(processor_handle).bdf


def amdsmi_get_gpu_asic_info(processor_handle: amdsmi_processor_handle) -> dict[str, Any]:
    dev = _gpu(processor_handle)
    return {
        "market_name": dev.name,
        "vendor_id": "0x1002",
        "vendor_name": "Advanced Micro Devices Inc. [AMD/ATI]",
        "subvendor_id": "0x1002",
        "device_id": "0x74a1",
        "rev_id": "0x00",
        "asic_serial": f"0x{dev.unique_id:016X}" if dev.unique_id else _NA,
        "oam_id": _NA,
        "num_compute_units": 304,
        "target_graphics_version": "gfx942",
    }


def amdsmi_get_energy_count(processor_handle: amdsmi_processor_handle) -> dict[str, Any]:
    """Accumulator (counts), its resolution (uJ per count), the driver's timestamp (ns)."""
    dev = _gpu(processor_handle)
    if dev.energy == "not_supported":
        _check_res(_STATUS["NOT_SUPPORTED"])
    t = now_s()
    stale = dev.stale
    if dev.stale_served < stale.get("reads", 0) and t >= stale.get("from_s", 0.0):
        dev.stale_served += 1
        t -= stale.get("lag_s", 0.0)
    if dev.energy == "counter":
        count = _count(dev, t)
    else:
        count = 0 if dev.energy == "secondary_die" else 0xFFFFFFFFFFFFFFFF
    api = _check_init().api
    keys = ["power"] if api < (6, 3) else ["power", "energy_accumulator"]
    keys = ["energy_accumulator"] if api >= (6, 4) else keys
    timestamp = round((BOOT_S + _tick(t)) * 1e9)
    return {**dict.fromkeys(keys, count), "counter_resolution": COUNTER_RESOLUTION_UJ,
            "timestamp": timestamp}  # fmt: skip


def amdsmi_get_power_info(processor_handle: amdsmi_processor_handle) -> dict[str, Any]:
    """Socket power in whole watts: the 1 s average and the instantaneous value."""
    dev, t = _gpu(processor_handle), now_s()
    live = dev.energy != "secondary_die"  # the second die of an MI250X reports 0 W
    average = round(dev.profile.integral_j(t - POWER_AVERAGE_S, t) / POWER_AVERAGE_S) * live
    info = {
        "current_socket_power": round(dev.profile.power_w(t)) * live,
        "average_socket_power": average,
        "gfx_voltage": _NA,
        "soc_voltage": _NA,
        "mem_voltage": _NA,
        "power_limit": 750,
    }
    return {"socket_power": average, **info} if _check_init().api >= (6, 4) else info


def _amdsmi_get_gpu_kfd_info(processor_handle: amdsmi_processor_handle) -> dict[str, Any]:
    dev = _gpu(processor_handle)
    return {"kfd_id": 0x1000 + dev.kfd_node, "node_id": dev.kfd_node, "current_partition_id": 0}


def _amdsmi_get_gpu_enumeration_info(processor_handle: amdsmi_processor_handle) -> dict[str, Any]:
    dev = _gpu(processor_handle)
    first = min(d.kfd_node for d in _check_init().devices)
    return {
        "drm_render": 128 + processor_handle._index,
        "drm_card": processor_handle._index,
        "hsa_id": dev.kfd_node,
        "hip_id": dev.kfd_node - first,
        "hip_uuid": f"GPU-{dev.unique_id:016x}",
    }


#: Functions a binding older than the scenario's ``api`` lacks, and the version adding them.
_NEWER = {"amdsmi_get_gpu_kfd_info": (6, 3), "amdsmi_get_gpu_enumeration_info": (6, 4)}


def __getattr__(name: str) -> Any:
    """PEP 562: the functions of :data:`_NEWER` exist only from their ROCm version on."""
    scenario = _scenario()
    if name in _NEWER and scenario is not None and scenario.api >= _NEWER[name]:
        return globals()[f"_{name}"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
