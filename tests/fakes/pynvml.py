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
          "lost_at_s": 30.0            # optional: NVMLError_GpuIsLost from here on
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
  newer) and instantaneous on the others, in whole milliwatts.
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
class _Device:
    uuid: str
    name: str
    counter: bool
    profile: _Profile
    counter_start_mj: int
    reset_at_s: float | None
    lost_at_s: float | None


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
    """An opaque device handle, as the real module's ctypes pointer is to its callers."""

    __slots__ = ("_index",)

    def __init__(self, index: int) -> None:
        self._index = index

    def __repr__(self) -> str:
        return f"<fake c_nvmlDevice_t {self._index}>"


def _check_init() -> _Scenario:
    scenario = _scenario()
    if _init_count == 0 or scenario is None:
        _raise(NVML_ERROR_UNINITIALIZED)
    return scenario  # type: ignore[return-value]


def _device(handle: Any) -> _Device:
    scenario = _check_init()
    if not isinstance(handle, c_nvmlDevice_t) or not 0 <= handle._index < len(scenario.devices):
        _raise(NVML_ERROR_INVALID_ARGUMENT)
    dev = scenario.devices[handle._index]
    if dev.lost_at_s is not None and now_s() >= dev.lost_at_s:
        _raise(NVML_ERROR_GPU_IS_LOST)
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


def nvmlDeviceGetUUID(handle: c_nvmlDevice_t) -> str | bytes:
    return _text(_device(handle).uuid)


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
