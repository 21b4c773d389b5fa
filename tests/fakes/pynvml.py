"""A stand-in for NVIDIA's ``pynvml`` module (package nvidia-ml-py), driven by a scenario.

Tests put ``tests/fakes`` first on ``sys.path`` (or ``PYTHONPATH`` for a
subprocess) so that the production code's unchanged ``import pynvml`` finds
this module. It mirrors the real binding where the meters touch it: the same
function names and return types (``int`` millijoules, ``int`` milliwatts,
``str`` UUIDs and names), the same error codes and the same generated
``NVMLError_*`` exception classes, including ``NVMLError(code)`` returning the
matching subclass.

The hardware is described by a scenario, given in-process with
:func:`configure` or, when not configured, read from the JSON file named by the
``FAKE_NVML_SCENARIO`` environment variable::

    {
      "driver": true,                  # false: nvmlInit raises NVMLError_LibraryNotFound;
                                       # "not_loaded": NVMLError_DriverNotLoaded
      "strings": "str",                # "bytes": UUIDs and names come back as bytes,
                                       # as from old bindings
      "clock": "monotonic",            # only supported value; see set_clock()
      "devices": [
        {
          "uuid": "GPU-...",           # default "GPU-fake-<index>"
          "name": "NVIDIA A100-SXM4-40GB",
          "counter": true,             # false: no energy counter (pre-Volta)
          "profile": [[t_s, power_w], ...],   # piecewise linear, constant outside;
                                       # a repeated t_s makes a step
          "counter_start_mj": 0,       # counter value at the epoch (driver loaded earlier)
          "reset_at_s": 12.5,          # optional: the counter restarts from 0 here
          "lost_at_s": 30.0,           # optional: NVMLError_GpuIsLost from here on
          "processes": [               # compute processes on the GPU (default: none)
            {
              "pid": 4242,             # an int, or "self": the pid of the reading process
              "used_memory_mib": 1024, # usedGpuMemory; null: not available (None, as on WDDM)
              "sm": [[t_s, pct], ...], # SM utilisation, a step function: pct from t_s on,
                                       # 0 before the first point (default: always 0)
              "mem": [[t_s, pct], ...],# memory-controller utilisation, the same way
              "start_s": 0.0,          # listed and sampled from here ...
              "end_s": null            # ... up to here (null: to the end)
            }
          ],
          "process_util": true,        # false: nvmlDeviceGetProcessUtilization answers
                                       # NOT_SUPPORTED (pre-Maxwell parts, some vGPUs)
          "util_period_s": 0.1667,     # the driver's per-process sampling period
          "process_util_errors": [[from_s, to_s, code], ...],  # optional: the per-process
                                       # query raises NVMLError(code) from from_s up to
                                       # to_s (transient faults: a timeout, UNKNOWN...)
          "mig": {                     # optional: MIG capable (absent: NOT_SUPPORTED)
            "enabled": true,           # MIG mode (current and pending)
            "total_slices": 7,         # GPU slices of the whole GPU (7 on A100/H100, 4 on A30)
            "instances": [{"slices": 3, "processes": [...as above...],
                           "uuid": "MIG-..."}, ...]   # default "MIG-<GPU uuid>-<index>"
          }
        }
      ]
    }

Times are seconds since an epoch: the moment of :func:`configure` (or of
:func:`set_clock`, or of module import for a scenario read from the
environment), on the module's clock, ``time.monotonic`` unless replaced with
:func:`set_clock`.

Behaviour modelled on the hardware:

* the energy counter updates every 100 ms: its value at ``t`` is the exact
  integral of the profile from the epoch up to ``floor(t / 0.1) * 0.1``, in whole
  millijoules, plus ``counter_start_mj``;
* power usage is the average over the last 1 s on counter devices (Ampere and
  newer) and instantaneous on the others, in whole milliwatts;
* per-process utilisation (``nvmlDeviceGetProcessUtilization``) is sampled by the
  driver every ``util_period_s`` (NVML: "between 1 second and 1/6 second, depending on
  the product"; default 1/6 s): sample ``k`` holds, for each process with non-zero SM
  or memory utilisation over ``((k-1) P, k P]``, its whole-percent mean over that
  period, stamped with the CPU time of ``k P`` in microseconds (the fake's clock from
  :data:`TIMESTAMP_ORIGIN_S`: an opaque cursor, as the real wall-clock stamps are to a
  caller). The driver keeps the last :data:`PROCESS_SAMPLE_BUFFER` periods. A query
  returns one entry per process with samples newer than ``lastSeenTimeStamp``: the mean
  of those samples (an old ``lastSeenTimeStamp`` gives an average, not the latest value,
  as nvitop found), stamped with its newest; none at all is ``NVMLError_NotFound``
  ("no valid sample entries found since lastSeenTimeStamp"). GPUs flagged
  ``"process_util": false`` and GPUs in MIG mode answer ``NVMLError_NotSupported``
  (nvml.h: "On MIG-enabled GPUs, querying process utilization is not currently
  supported");
* ``nvmlDeviceGetComputeRunningProcesses`` lists the processes running now, with
  ``usedGpuMemory`` in bytes (``None`` where not available) and
  ``gpuInstanceId``/``computeInstanceId`` 0xFFFFFFFF outside MIG; on a MIG device
  handle, that instance's processes; on the parent of MIG instances, all of them (the
  aggregate a privileged caller gets);
* MIG: ``nvmlDeviceGetMigMode`` ([current, pending]), ``nvmlDeviceGetMaxMigDeviceCount``
  (the slice count), ``nvmlDeviceGetMigDeviceHandleByIndex`` (``NVMLError_NotFound`` for
  an empty index), ``nvmlDeviceGetAttributes`` (MIG device handles only:
  ``gpuInstanceSliceCount``...), ``nvmlDeviceGetGpuInstanceProfileInfo`` (``sliceCount``
  of each profile the GPU offers, ``NVMLError_NotSupported`` for the others).
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import os
import string
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

# --- Return codes: the same names and values as the real module --------------------------

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_ALREADY_INITIALIZED = 5
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_INSUFFICIENT_SIZE = 7
NVML_ERROR_INSUFFICIENT_POWER = 8
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_IRQ_ISSUE = 11
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_CORRUPTED_INFOROM = 14
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_RESET_REQUIRED = 16
NVML_ERROR_OPERATING_SYSTEM = 17
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18
NVML_ERROR_IN_USE = 19
NVML_ERROR_MEMORY = 20
NVML_ERROR_NO_DATA = 21
NVML_ERROR_VGPU_ECC_NOT_SUPPORTED = 22
NVML_ERROR_INSUFFICIENT_RESOURCES = 23
NVML_ERROR_FREQ_NOT_SUPPORTED = 24
NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25
NVML_ERROR_DEPRECATED = 26
NVML_ERROR_NOT_READY = 27
NVML_ERROR_GPU_NOT_FOUND = 28
NVML_ERROR_INVALID_STATE = 29
NVML_ERROR_RESET_TYPE_NOT_SUPPORTED = 30
NVML_ERROR_UNKNOWN = 999

#: How often the energy counter updates, in seconds.
COUNTER_PERIOD_S = 0.1
#: Averaging window of the power reading on counter (Ampere and newer) devices, in seconds.
POWER_AVERAGE_S = 1.0
#: The driver's default per-process utilisation sampling period, in seconds.
PROCESS_SAMPLE_PERIOD_S = 1.0 / 6.0
#: Sampling periods of per-process utilisation the driver keeps.
PROCESS_SAMPLE_BUFFER = 100
#: Per-process utilisation stamps: microseconds of CPU time; the fake's count from here.
TIMESTAMP_ORIGIN_S = 1_700_000_000.0
#: ``nvmlProcessInfo_t.gpuInstanceId``/``computeInstanceId`` outside MIG.
NVML_VALUE_NOT_AVAILABLE_uint = 0xFFFFFFFF
NVML_DEVICE_MIG_DISABLE = 0x0
NVML_DEVICE_MIG_ENABLE = 0x1
NVML_GPU_INSTANCE_PROFILE_1_SLICE = 0x0
NVML_GPU_INSTANCE_PROFILE_2_SLICE = 0x1
NVML_GPU_INSTANCE_PROFILE_3_SLICE = 0x2
NVML_GPU_INSTANCE_PROFILE_4_SLICE = 0x3
NVML_GPU_INSTANCE_PROFILE_7_SLICE = 0x4
NVML_GPU_INSTANCE_PROFILE_8_SLICE = 0x5
NVML_GPU_INSTANCE_PROFILE_6_SLICE = 0x6
NVML_GPU_INSTANCE_PROFILE_COUNT = 0x12
#: Slices of each GPU instance profile id (the real module's NVML_GPU_INSTANCE_PROFILE_*:
#: the 1, 2, 3, 4, 7, 8, 6 slice ones, then REV, GFX, NO_ME and ALL_ME variants).
_PROFILE_SLICES = (1, 2, 3, 4, 7, 8, 6, 1, 2, 1, 1, 2, 4, 1, 2, 1, 2, 3)


class NVMLError(Exception):
    """Base of all NVML errors; ``NVMLError(code)`` builds the subclass for ``code``."""

    _valClassMapping: ClassVar[dict[int, type[NVMLError]]] = {}
    _errcode_to_string: ClassVar[dict[int, str]] = {
        NVML_ERROR_UNINITIALIZED: "Uninitialized",
        NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
        NVML_ERROR_NOT_SUPPORTED: "Not Supported",
        NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
        NVML_ERROR_ALREADY_INITIALIZED: "Already Initialized",
        NVML_ERROR_NOT_FOUND: "Not Found",
        NVML_ERROR_INSUFFICIENT_SIZE: "Insufficient Size",
        NVML_ERROR_INSUFFICIENT_POWER: "Insufficient External Power",
        NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
        NVML_ERROR_TIMEOUT: "Timeout",
        NVML_ERROR_IRQ_ISSUE: "Interrupt Request Issue",
        NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
        NVML_ERROR_FUNCTION_NOT_FOUND: "Function Not Found",
        NVML_ERROR_CORRUPTED_INFOROM: "Corrupted infoROM",
        NVML_ERROR_GPU_IS_LOST: "GPU is lost",
        NVML_ERROR_RESET_REQUIRED: "GPU requires restart",
        NVML_ERROR_OPERATING_SYSTEM: "The operating system has blocked the request.",
        NVML_ERROR_LIB_RM_VERSION_MISMATCH: "RM has detected an NVML/RM version mismatch.",
        NVML_ERROR_MEMORY: "Insufficient Memory",
        NVML_ERROR_UNKNOWN: "Unknown Error",
    }

    value: int

    def __new__(typ, value: int) -> NVMLError:
        if typ is NVMLError:
            typ = NVMLError._valClassMapping.get(value, typ)
        obj = Exception.__new__(typ)
        obj.value = value
        return obj

    def __str__(self) -> str:
        return NVMLError._errcode_to_string.get(self.value, f"NVML Error with code {self.value}")

    def __eq__(self, other: object) -> bool:
        return self.value == getattr(other, "value", None)


def nvmlExceptionClass(nvmlErrorCode: int) -> type[NVMLError]:
    """The ``NVMLError`` subclass raised for a return code."""
    if nvmlErrorCode not in NVMLError._valClassMapping:
        raise ValueError(f"nvmlErrorCode {nvmlErrorCode} is not valid")
    return NVMLError._valClassMapping[nvmlErrorCode]


def _extractNVMLErrorsAsClasses() -> None:
    """One subclass per ``NVML_ERROR_*`` code, named as the real module names them.

    ``NVML_ERROR_GPU_IS_LOST`` becomes ``NVMLError_GpuIsLost``; its constructor
    takes no code (``NVMLError_GpuIsLost()``).
    """
    namespace = globals()
    for err_name in [name for name in namespace if name.startswith("NVML_ERROR_")]:
        words = string.capwords(err_name.replace("NVML_ERROR_", ""), "_").replace("_", "")
        err_val = namespace[err_name]

        def gen_new(val: int) -> Callable[..., NVMLError]:
            def new(typ: type[NVMLError], *args: Any) -> NVMLError:
                return NVMLError.__new__(typ, val)

            return new

        cls = type("NVMLError_" + words, (NVMLError,), {"__new__": gen_new(err_val)})
        cls.__module__ = __name__
        namespace[cls.__name__] = cls
        NVMLError._valClassMapping[err_val] = cls


_extractNVMLErrorsAsClasses()


def _raise(code: int) -> None:
    raise NVMLError(code)


# --- Scenario, clock and ground truth ------------------------------------------------------


class ManualClock:
    """A clock that moves only when told: ``clock()`` is the time in seconds."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, dt_s: float) -> float:
        """Move forward by ``dt_s`` seconds; returns the new time."""
        if dt_s < 0:
            raise ValueError("a monotonic clock cannot go back")
        self.now += dt_s
        return self.now


@dataclass
class _Profile:
    """Piecewise-linear power in watts over seconds since the epoch, constant outside."""

    ts: list[float]
    ws: list[float]
    cum_j: list[float]  # integral from ts[0] up to ts[i]

    @classmethod
    def parse(cls, points: list[list[float]]) -> _Profile:
        if not points:
            raise ValueError("a profile needs at least one [t_s, power_w] point")
        ts = [float(t) for t, _ in points]
        ws = [float(w) for _, w in points]
        if any(b < a for a, b in itertools.pairwise(ts)):
            raise ValueError("profile times must not decrease")
        if any(w < 0 for w in ws):
            raise ValueError("profile power must not be negative")
        cum = [0.0]
        for i in range(1, len(ts)):
            cum.append(cum[-1] + (ws[i - 1] + ws[i]) / 2 * (ts[i] - ts[i - 1]))
        return cls(ts, ws, cum)

    def _segment(self, t: float) -> int:
        # The last i with ts[i] <= t; at a step (repeated time) that is the later point, so
        # the profile is right-continuous and ts[i + 1] > t >= ts[i].
        return bisect.bisect_right(self.ts, t) - 1

    def power_w(self, t: float) -> float:
        if t <= self.ts[0]:
            return self.ws[0]
        if t >= self.ts[-1]:
            return self.ws[-1]
        i = self._segment(t)
        frac = (t - self.ts[i]) / (self.ts[i + 1] - self.ts[i])
        return self.ws[i] + (self.ws[i + 1] - self.ws[i]) * frac

    def antiderivative_j(self, t: float) -> float:
        """Integral of the power from ``ts[0]`` to ``t`` (negative before ``ts[0]``)."""
        if t <= self.ts[0]:
            return self.ws[0] * (t - self.ts[0])
        if t >= self.ts[-1]:
            return self.cum_j[-1] + self.ws[-1] * (t - self.ts[-1])
        i = self._segment(t)
        return self.cum_j[i] + (self.ws[i] + self.power_w(t)) / 2 * (t - self.ts[i])

    def integral_j(self, t0: float, t1: float) -> float:
        return self.antiderivative_j(t1) - self.antiderivative_j(t0)


@dataclass
class _Steps:
    """A step function of time (a utilisation in percent): ``vs[i]`` from ``ts[i]`` on, 0 before."""

    ts: list[float]
    vs: list[float]

    @classmethod
    def parse(cls, points: list[list[float]] | None) -> _Steps:
        ts = [float(t) for t, _ in points or []]
        vs = [float(v) for _, v in points or []]
        if any(b < a for a, b in itertools.pairwise(ts)):
            raise ValueError("utilisation times must not decrease")
        if any(not 0 <= v <= 100 for v in vs):
            raise ValueError("utilisation must be a percentage (0 to 100)")
        return cls(ts, vs)

    def mean(self, t0: float, t1: float) -> float:
        """The mean over ``(t0, t1]``."""
        total, edges = 0.0, [*self.ts, math.inf]
        for i, v in enumerate(self.vs):
            lo, hi = max(t0, edges[i]), min(t1, edges[i + 1])
            if hi > lo:
                total += v * (hi - lo)
        return total / (t1 - t0)


@dataclass
class _Process:
    pid: int
    used_memory_b: int | None
    sm: _Steps
    mem: _Steps
    start_s: float
    end_s: float | None

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> _Process:
        pid = os.getpid() if raw["pid"] == "self" else int(raw["pid"])
        mib = raw.get("used_memory_mib", 0)
        return cls(
            pid=pid,
            used_memory_b=None if mib is None else int(mib * 2**20),
            sm=_Steps.parse(raw.get("sm")),
            mem=_Steps.parse(raw.get("mem")),
            start_s=float(raw.get("start_s", 0.0)),
            end_s=_optional_float(raw.get("end_s")),
        )

    def running(self, t0: float, t1: float | None = None) -> bool:
        """Whether the process runs at ``t0`` (or at some time in ``(t0, t1]``)."""
        t1 = t0 if t1 is None else t1
        return self.start_s <= t1 and (self.end_s is None or t0 < self.end_s)


@dataclass
class _MigInstance:
    slices: int
    processes: list[_Process]
    uuid: str | None = None


@dataclass
class _Mig:
    enabled: bool
    total_slices: int
    instances: list[_MigInstance]

    @classmethod
    def parse(cls, raw: dict[str, Any] | None) -> _Mig | None:
        if raw is None:
            return None
        instances = [
            _MigInstance(
                int(i["slices"]), [_Process.parse(p) for p in i.get("processes", [])], i.get("uuid")
            )
            for i in raw.get("instances", [])
        ]
        total = int(raw.get("total_slices", 7))
        if sum(i.slices for i in instances) > total:
            raise ValueError("MIG instances hold more slices than the GPU has")
        return cls(bool(raw.get("enabled", True)), total, instances)


@dataclass
class _Device:
    uuid: str
    name: str
    counter: bool
    profile: _Profile
    counter_start_mj: int
    reset_at_s: float | None
    lost_at_s: float | None
    processes: list[_Process]
    process_util: bool
    util_period_s: float
    mig: _Mig | None
    process_util_errors: list[tuple[float, float, int]]


@dataclass
class _Scenario:
    driver: bool | str
    as_bytes: bool
    devices: list[_Device]

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> _Scenario:
        clock = raw.get("clock", "monotonic")
        if clock != "monotonic":
            raise ValueError(f"unsupported clock {clock!r}; use set_clock() for another one")
        strings = raw.get("strings", "str")
        if strings not in ("str", "bytes"):
            raise ValueError(f"'strings' must be 'str' or 'bytes', not {strings!r}")
        devices = []
        for index, dev in enumerate(raw.get("devices", [])):
            devices.append(
                _Device(
                    uuid=str(dev.get("uuid", f"GPU-fake-{index}")),
                    name=str(dev.get("name", "NVIDIA A100-SXM4-40GB")),
                    counter=bool(dev.get("counter", True)),
                    profile=_Profile.parse(dev.get("profile", [[0.0, 0.0]])),
                    counter_start_mj=int(dev.get("counter_start_mj", 0)),
                    reset_at_s=_optional_float(dev.get("reset_at_s")),
                    lost_at_s=_optional_float(dev.get("lost_at_s")),
                    processes=[_Process.parse(p) for p in dev.get("processes", [])],
                    process_util=bool(dev.get("process_util", True)),
                    util_period_s=float(dev.get("util_period_s", PROCESS_SAMPLE_PERIOD_S)),
                    mig=_Mig.parse(dev.get("mig")),
                    process_util_errors=[
                        (float(a), float(b), int(code))
                        for a, b, code in dev.get("process_util_errors", [])
                    ],
                )
            )
        return cls(driver=raw.get("driver", True), as_bytes=strings == "bytes", devices=devices)


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


_clock: Callable[[], float] = time.monotonic
_epoch: float = _clock()
_configured: _Scenario | None = None
_from_env: tuple[str, _Scenario] | None = None  # (path, scenario), read once per path
_init_count = 0  # successful nvmlInit calls not yet matched by nvmlShutdown


def configure(scenario: dict[str, Any] | None) -> None:
    """Describe the machine for this process and restart the epoch now.

    ``None`` forgets the in-process scenario, so ``FAKE_NVML_SCENARIO`` applies again.
    """
    global _configured, _epoch
    _configured = None if scenario is None else _Scenario.parse(scenario)
    _epoch = _clock()


def set_clock(clock: Callable[[], float]) -> None:
    """Read time (seconds) from ``clock`` instead of ``time.monotonic``; restarts the epoch."""
    global _clock, _epoch
    _clock = clock
    _epoch = clock()


def now_s() -> float:
    """Seconds since the epoch on the fake's clock: the time axis of the profiles."""
    return _clock() - _epoch


def init_count() -> int:
    """Successful ``nvmlInit`` calls not yet matched by ``nvmlShutdown``."""
    return _init_count


def _scenario() -> _Scenario | None:
    global _from_env
    if _configured is not None:
        return _configured
    path = os.environ.get("FAKE_NVML_SCENARIO")
    if not path:
        return None
    if _from_env is None or _from_env[0] != path:
        with open(path, encoding="utf-8") as f:
            _from_env = (path, _Scenario.parse(json.load(f)))
    return _from_env[1]


def _device_by_uuid(uuid: str) -> _Device:
    scenario = _scenario()
    for dev in scenario.devices if scenario else []:
        if dev.uuid == uuid:
            return dev
    raise KeyError(uuid)


def _tick(t: float) -> float:
    """The last counter update at or before ``t``; the tolerance absorbs 2.3 / 0.1 < 23."""
    return math.floor(t / COUNTER_PERIOD_S + 1e-6) * COUNTER_PERIOD_S


def _counter_mj(dev: _Device, t: float) -> int:
    """The counter's value at ``t`` seconds since the epoch, in whole millijoules."""
    if dev.reset_at_s is not None and t >= dev.reset_at_s:
        start, base = dev.reset_at_s, 0
    else:
        start, base = 0.0, dev.counter_start_mj
    last_update = max(_tick(t), start)
    return base + math.floor(1000.0 * dev.profile.integral_j(start, last_update) + 1e-6)


def integral_j(uuid: str, t0: float, t1: float) -> float:
    """Exact energy in joules the device used from ``t0`` to ``t1`` (seconds since the epoch)."""
    return _device_by_uuid(uuid).profile.integral_j(t0, t1)


def counter_integral_j(uuid: str, t0: float, t1: float) -> float:
    """Energy in joules a perfect reader of the counter sees between ``t0`` and ``t1``.

    The difference of the (100 ms, whole-millijoule) counter values at the two
    instants; across a reset, the energy counted before it plus the counter after it.
    """
    dev = _device_by_uuid(uuid)
    end_mj = _counter_mj(dev, t1)
    if dev.reset_at_s is not None and t0 < dev.reset_at_s <= t1:
        # The value just before the reset, where the old count stopped.
        before_reset = _counter_mj(dev, dev.reset_at_s - 1e-9)
        return (before_reset - _counter_mj(dev, t0) + end_mj) / 1000.0
    return (end_mj - _counter_mj(dev, t0)) / 1000.0


# --- The NVML functions the meters use ---------------------------------------------------


class c_nvmlDevice_t:
    """An opaque device handle, as the real module's ctypes pointer is to its callers.

    A MIG device handle is one too, with the index of its instance in ``_mig``.
    """

    __slots__ = ("_index", "_mig")

    def __init__(self, index: int, mig: int | None = None) -> None:
        self._index = index
        self._mig = mig

    def __repr__(self) -> str:
        mig = "" if self._mig is None else f" MIG {self._mig}"
        return f"<fake c_nvmlDevice_t {self._index}{mig}>"


def _check_init() -> _Scenario:
    scenario = _scenario()
    if _init_count == 0 or scenario is None:
        _raise(NVML_ERROR_UNINITIALIZED)
    return scenario  # type: ignore[return-value]


def _device(handle: Any, *, mig_handle_ok: bool = False) -> _Device:
    scenario = _check_init()
    if not isinstance(handle, c_nvmlDevice_t) or not 0 <= handle._index < len(scenario.devices):
        _raise(NVML_ERROR_INVALID_ARGUMENT)
    dev = scenario.devices[handle._index]
    if dev.lost_at_s is not None and now_s() >= dev.lost_at_s:
        _raise(NVML_ERROR_GPU_IS_LOST)
    if handle._mig is not None and not mig_handle_ok:
        _raise(NVML_ERROR_NOT_SUPPORTED)  # a MIG slice has no counter, no power reading...
    return dev


def _text(value: str) -> str | bytes:
    scenario = _scenario()
    return value.encode() if scenario is not None and scenario.as_bytes else value


def nvmlInitWithFlags(flags: int) -> None:
    global _init_count
    scenario = _scenario()
    # The real binding raises LibraryNotFound when libnvidia-ml.so.1 cannot be loaded.
    if scenario is None or scenario.driver is False:
        _raise(NVML_ERROR_LIBRARY_NOT_FOUND)
    if scenario.driver == "not_loaded":  # type: ignore[union-attr]
        _raise(NVML_ERROR_DRIVER_NOT_LOADED)
    _init_count += 1


def nvmlInit() -> None:
    nvmlInitWithFlags(0)


def nvmlShutdown() -> None:
    global _init_count
    _check_init()
    _init_count -= 1


def nvmlErrorString(result: int) -> str:
    return NVMLError._errcode_to_string.get(result, "Unknown Error")


def nvmlDeviceGetCount() -> int:
    return len(_check_init().devices)


def nvmlDeviceGetHandleByIndex(index: int) -> c_nvmlDevice_t:
    handle = c_nvmlDevice_t(int(index))
    _device(handle)  # validates the index and the device's health, as the driver does
    return handle


def _mig_uuid(dev: _Device, index: int) -> str:
    return _mig_instance(dev, index).uuid or f"MIG-{dev.uuid.removeprefix('GPU-')}-{index}"


def nvmlDeviceGetUUID(handle: c_nvmlDevice_t) -> str | bytes:
    """The GPU's UUID; on a MIG device handle, the MIG device's (``MIG-...``)."""
    dev = _device(handle, mig_handle_ok=True)
    return _text(dev.uuid if handle._mig is None else _mig_uuid(dev, handle._mig))


def nvmlDeviceGetHandleByUUID(uuid: str | bytes) -> c_nvmlDevice_t:
    """The GPU or MIG device with this UUID (nvml.h: "the UUID of the target GPU or MIG
    instance"); ``NVMLError_NotFound`` when none has it."""
    wanted = uuid.decode() if isinstance(uuid, bytes) else uuid
    for index, dev in enumerate(_check_init().devices):
        if dev.uuid == wanted:
            return nvmlDeviceGetHandleByIndex(index)
        if dev.mig is not None and dev.mig.enabled:
            for i in range(len(dev.mig.instances)):
                if _mig_uuid(dev, i) == wanted:
                    _device(c_nvmlDevice_t(index))  # a lost GPU fails here, as the driver does
                    return c_nvmlDevice_t(index, i)
    _raise(NVML_ERROR_NOT_FOUND)
    raise AssertionError  # unreachable


def nvmlDeviceIsMigDeviceHandle(device: c_nvmlDevice_t) -> bool:
    _device(device, mig_handle_ok=True)
    return device._mig is not None


def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(migDevice: c_nvmlDevice_t) -> c_nvmlDevice_t:
    """The parent GPU of a MIG device; ``NVMLError_InvalidArgument`` for a GPU handle."""
    _device(migDevice, mig_handle_ok=True)
    if migDevice._mig is None:
        _raise(NVML_ERROR_INVALID_ARGUMENT)
    return c_nvmlDevice_t(migDevice._index)


def nvmlDeviceGetGpuInstanceId(device: c_nvmlDevice_t) -> int:
    """The GPU instance id of a MIG device (here its index); ``NotSupported`` on a GPU."""
    _device(device, mig_handle_ok=True)
    if device._mig is None:
        _raise(NVML_ERROR_NOT_SUPPORTED)
    return int(device._mig)


def nvmlDeviceGetName(handle: c_nvmlDevice_t) -> str | bytes:
    return _text(_device(handle).name)


def nvmlDeviceGetTotalEnergyConsumption(handle: c_nvmlDevice_t) -> int:
    """Millijoules since the driver was loaded (see the module docstring)."""
    dev = _device(handle)
    if not dev.counter:
        _raise(NVML_ERROR_NOT_SUPPORTED)
    return _counter_mj(dev, now_s())


def nvmlDeviceGetPowerUsage(handle: c_nvmlDevice_t) -> int:
    """Milliwatts: a 1 s average on counter devices, instantaneous on the others."""
    dev = _device(handle)
    t = now_s()
    if dev.counter:
        watts = dev.profile.integral_j(t - POWER_AVERAGE_S, t) / POWER_AVERAGE_S
    else:
        watts = dev.profile.power_w(t)
    return round(watts * 1000.0)


# --- Per-process utilisation, running processes and MIG -----------------------------------


class c_nvmlProcessUtilizationSample_t:
    """One entry of ``nvmlDeviceGetProcessUtilization``: the real ctypes struct's fields."""

    __slots__ = ("decUtil", "encUtil", "memUtil", "pid", "smUtil", "timeStamp")

    def __init__(self, pid: int, timeStamp: int, smUtil: int, memUtil: int) -> None:
        self.pid, self.timeStamp, self.smUtil, self.memUtil = pid, timeStamp, smUtil, memUtil
        self.encUtil = self.decUtil = 0


class nvmlFriendlyObject:
    """What the real module makes of a struct (``nvmlStructToFriendlyObject``): attributes."""

    def __init__(self, dictionary: dict[str, Any]) -> None:
        for key, value in dictionary.items():
            setattr(self, key, value)

    def __str__(self) -> str:
        return str(self.__dict__)


def _timestamp_us(t_s: float) -> int:
    return round((TIMESTAMP_ORIGIN_S + t_s) * 1e6)


def nvmlDeviceGetProcessUtilization(
    handle: c_nvmlDevice_t, timeStamp: int
) -> list[c_nvmlProcessUtilizationSample_t]:
    """Per-process utilisation since ``timeStamp`` (µs); see the module docstring."""
    dev = _device(handle)
    if not dev.process_util or (dev.mig is not None and dev.mig.enabled):
        _raise(NVML_ERROR_NOT_SUPPORTED)
    for from_s, to_s, code in dev.process_util_errors:
        if from_s <= now_s() < to_s:
            _raise(code)
    period = dev.util_period_s
    last = math.floor(now_s() / period + 1e-6)
    seen: dict[int, list[tuple[int, int, int]]] = {}  # pid -> [(stamp, sm, mem)]
    for k in range(max(1, last - PROCESS_SAMPLE_BUFFER + 1), last + 1):
        stamp, t0, t1 = _timestamp_us(k * period), (k - 1) * period, k * period
        if stamp <= int(timeStamp):
            continue
        for proc in dev.processes:
            if proc.running(t0, t1):
                sm, mem = round(proc.sm.mean(t0, t1)), round(proc.mem.mean(t0, t1))
                if sm or mem:
                    seen.setdefault(proc.pid, []).append((stamp, sm, mem))
    if not seen:
        _raise(NVML_ERROR_NOT_FOUND)
    return [
        c_nvmlProcessUtilizationSample_t(
            pid,
            max(s for s, _, _ in samples),
            round(sum(sm for _, sm, _ in samples) / len(samples)),
            round(sum(mem for _, _, mem in samples) / len(samples)),
        )
        for pid, samples in seen.items()
    ]


def _process_infos(procs: list[_Process], instance: int | None) -> list[nvmlFriendlyObject]:
    t = now_s()
    na = NVML_VALUE_NOT_AVAILABLE_uint
    return [
        nvmlFriendlyObject(
            {
                "pid": p.pid,
                "usedGpuMemory": p.used_memory_b,
                "gpuInstanceId": na if instance is None else instance,
                "computeInstanceId": na if instance is None else 0,
            }
        )
        for p in procs
        if p.running(t)
    ]


def nvmlDeviceGetComputeRunningProcesses(handle: c_nvmlDevice_t) -> list[nvmlFriendlyObject]:
    """The compute processes running now (``pid``, ``usedGpuMemory`` in bytes or ``None``)."""
    dev = _device(handle, mig_handle_ok=True)
    if handle._mig is not None:
        return _process_infos(_mig_instance(dev, handle._mig).processes, handle._mig)
    out = _process_infos(dev.processes, None)
    if dev.mig is not None and dev.mig.enabled:
        for i, instance in enumerate(dev.mig.instances):
            out += _process_infos(instance.processes, i)
    return out


nvmlDeviceGetComputeRunningProcesses_v3 = nvmlDeviceGetComputeRunningProcesses


def _mig(dev: _Device) -> _Mig:
    if dev.mig is None:
        _raise(NVML_ERROR_NOT_SUPPORTED)
    return dev.mig  # type: ignore[return-value]


def _mig_instance(dev: _Device, index: int) -> _MigInstance:
    mig = _mig(dev)
    if not mig.enabled or not 0 <= index < len(mig.instances):
        _raise(NVML_ERROR_INVALID_ARGUMENT)
    return mig.instances[index]


def nvmlDeviceGetMigMode(device: c_nvmlDevice_t) -> list[int]:
    """``[currentMode, pendingMode]``; ``NVMLError_NotSupported`` on GPUs without MIG."""
    mode = NVML_DEVICE_MIG_ENABLE if _mig(_device(device)).enabled else NVML_DEVICE_MIG_DISABLE
    return [mode, mode]


def nvmlDeviceGetMaxMigDeviceCount(device: c_nvmlDevice_t) -> int:
    return _mig(_device(device)).total_slices


def nvmlDeviceGetMigDeviceHandleByIndex(device: c_nvmlDevice_t, index: int) -> c_nvmlDevice_t:
    """The MIG device at ``index``; ``NVMLError_NotFound`` where the index holds none."""
    mig = _mig(_device(device))
    if not 0 <= index < mig.total_slices:
        _raise(NVML_ERROR_INVALID_ARGUMENT)
    if not mig.enabled or index >= len(mig.instances):
        _raise(NVML_ERROR_NOT_FOUND)
    return c_nvmlDevice_t(device._index, index)


def nvmlDeviceGetAttributes(device: c_nvmlDevice_t) -> nvmlFriendlyObject:
    """Engine counts of a MIG device (the real call supports MIG device handles only)."""
    dev = _device(device, mig_handle_ok=True)
    if device._mig is None:
        _raise(NVML_ERROR_NOT_SUPPORTED)
    instance = _mig_instance(dev, device._mig)
    fields = ("multiprocessorCount", "sharedCopyEngineCount", "sharedDecoderCount")
    out = dict.fromkeys(fields, 0)
    out.update(gpuInstanceSliceCount=instance.slices, computeInstanceSliceCount=instance.slices)
    return nvmlFriendlyObject(out)


nvmlDeviceGetAttributes_v2 = nvmlDeviceGetAttributes


def nvmlDeviceGetGpuInstanceProfileInfo(
    device: c_nvmlDevice_t, profile: int, version: int = 2
) -> nvmlFriendlyObject:
    """A GPU instance profile's ``sliceCount``; ``NVMLError_NotSupported`` for profiles the
    GPU does not offer (more slices than it has; 6 or 8 slices but not all of it) and
    outside MIG mode."""
    mig = _mig(_device(device))
    if not 0 <= profile < NVML_GPU_INSTANCE_PROFILE_COUNT:
        _raise(NVML_ERROR_INVALID_ARGUMENT)
    slices = _PROFILE_SLICES[profile]
    if not mig.enabled or slices > mig.total_slices or (slices > 4 and slices != mig.total_slices):
        _raise(NVML_ERROR_NOT_SUPPORTED)
    return nvmlFriendlyObject(
        {"id": profile, "sliceCount": slices, "instanceCount": mig.total_slices // slices}
    )
