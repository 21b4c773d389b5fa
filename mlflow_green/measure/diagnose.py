"""``mlflow-green doctor``'s findings: each domain's meter on this machine, why, and the fix.

:func:`diagnose` opens the machine's meters with :func:`mlflow_green.measure.meters.discover`,
exactly as autolog does (its warnings are collected, not shown), so the method named
for each domain is the one a run would record in ``green.<domain>_meter``. Each energy
interface is then opened on its own with the same opening functions
(:func:`open_nvml_meters`, ``open_amdsmi_meters``, :func:`open_apple_meters`,
:func:`open_rapl_meters`, the powercap folder from ``MLFLOW_GREEN_POWERCAP_ROOT``) to
say why a better method is not used and what would make it usable. Nothing is
changed: files are read, libraries initialised and shut down, meters closed.

The top-level imports are the standard library, the RAPL meter and
:mod:`mlflow_green.measure._diagnose_fixes` (the machine's facts and the fixes' wording)
only, so that :func:`rapl_check` runs without the package's dependencies (tests run it
as an unprivileged user).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlflow_green.measure._diagnose_fixes import (
    Environment,
    detect_environment,
    energy_unreadable,
    nvml_fix,
    permission_fix,
    rapl_fix,
    rapl_zones,
)
from mlflow_green.measure.meters.base import DOMAINS, Meter, MeterUnavailable
from mlflow_green.measure.meters.rapl import DEFAULT_ROOT, ROOT_ENV, open_rapl_meters

__all__ = [
    "ABSENT",
    "ESTIMATED",
    "MEASURED",
    "Check",
    "Diagnosis",
    "DomainDiagnosis",
    "Environment",
    "amd_check",
    "apple_check",
    "detect_environment",
    "diagnose",
    "nvml_check",
    "rapl_check",
]

MEASURED, ESTIMATED, ABSENT = "measured", "estimated", "absent"
_RAPL = ("cpu", "ram")
#: Why each method is what it is: the "why not a better one" when nothing can be done.
_WHY = {
    "nvml-energy-counter": "NVML's hardware energy counter (Volta and newer): exact between "
    "two reads, nothing better exists",
    "nvml-power": "these GPUs have no energy counter (older than Volta): NVML's power is "
    "polled every 0.1 s and integrated, and spikes shorter than that are missed; no fix, "
    "the GPU lacks the counter",
    "amdsmi-energy-counter": "the AMD GPU's energy accumulator read through amdsmi: a hardware "
    "counter, nothing better exists",
    "apple-ioreport": "IOReport's energy counters through zeus-apple-silicon: Apple's own "
    "model-based figures for the SoC, the best macOS offers without sudo",
    "rapl": "RAPL hardware counters (Linux powercap): nothing better exists",
    "estimate-tdp": "an estimate, not a measurement: the CPU's TDP times CodeCarbon's load "
    "model (10% of TDP idle, all of it at full load)",
    "estimate-ram-size": "an estimate, not a measurement: 0.3725 W per GB installed, "
    "whatever the load (Green Algorithms)",
    "none": "nothing is measured in this domain",
}


@dataclass(frozen=True)
class Check:
    """One energy interface, opened as autolog opens it: what it found, or why not, and the fix."""

    interface: str
    domains: tuple[str, ...]  # the domains it can measure
    available: bool  # opened, for at least one domain
    detail: str
    fix: str = ""  # one step per line; "" when nothing can or need be done
    #: False where the interface cannot exist on this platform (Apple IOReport off macOS).
    relevant: bool = True


@dataclass(frozen=True)
class DomainDiagnosis:
    """What autolog would record for one domain, and why."""

    domain: str
    method: str  # the green.<domain>_meter tag
    hardware: str
    status: str  # MEASURED, ESTIMATED or ABSENT
    why: str
    fix: str = ""


@dataclass(frozen=True)
class Diagnosis:
    """The finding: domains in report order, the interfaces checked, autolog's warnings."""

    environment: Environment
    domains: tuple[DomainDiagnosis, ...]
    checks: tuple[Check, ...]
    warnings: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``--format json``."""
        return asdict(self)


def diagnose(environment: Environment | None = None) -> Diagnosis:
    """Diagnose this machine's meters (see the module docstring); never raises for hardware."""
    env = environment or detect_environment()
    checks = (
        _guarded("NVML", ("gpu",), lambda: nvml_check(env)),
        _guarded("amdsmi", ("gpu",), lambda: amd_check(env)),
        _guarded("Apple IOReport", DOMAINS, lambda: apple_check(env)),
        _guarded("RAPL", _RAPL, lambda: rapl_check(env)),
    )
    chosen, warned = _autolog_meters()
    domains = tuple(_verdict(d, chosen.get(d, []), checks, env) for d in DOMAINS)
    return Diagnosis(env, domains, checks, warned)


# --- the interfaces ------------------------------------------------------------------------


def nvml_check(env: Environment) -> Check:
    """NVIDIA GPUs through NVML: the GPUs measured, hidden ones, MIG; or why not and the fix."""
    from mlflow_green.measure.meters.nvml import open_nvml_meters

    meters, notes, failure = _open(open_nvml_meters)
    if failure is not None:
        return Check("NVML", ("gpu",), False, str(failure), nvml_fix(failure, env))
    try:
        total, mig = _nvml_facts()
    finally:
        _close(meters)
    devices = [d for m in meters for d in m.devices]
    spec = os.environ.get("CUDA_VISIBLE_DEVICES")
    if not devices:
        if spec is not None and total:
            detail = f"CUDA_VISIBLE_DEVICES={spec!r} hides all {total} GPUs from this process"
            fix = (
                "unset CUDA_VISIBLE_DEVICES, or list the GPUs the job uses "
                "(e.g. CUDA_VISIBLE_DEVICES=0): a process measures only the GPUs it can use"
            )
            if "MIG-" in spec:  # keep it: it is what puts the job on its MIG slice
                fix = (
                    "keep CUDA_VISIBLE_DEVICES (it puts the job on its MIG slice) but name the "
                    "MIG devices by the UUIDs `nvidia-smi -L` lists (MIG-<uuid>), which are "
                    "measured as their slice share of the GPU; the old "
                    "MIG-GPU-<uuid>/<gi>/<ci> form cannot be resolved"
                )
            return Check("NVML", ("gpu",), False, "; ".join([detail, *notes]), fix)
        return Check("NVML", ("gpu",), False, "; ".join(["NVML lists no GPU", *notes]))
    parts = [f"{len(devices)} GPU(s): " + "; ".join(f"{m.hardware()} ({m.method})" for m in meters)]
    if spec is not None and total > len(devices):
        parts.append(f"CUDA_VISIBLE_DEVICES={spec!r} shows {len(devices)} of {total} GPUs")
    parts += [
        f"MIG mode is on for {uuid} ({name}): NVML's energy counter is per physical GPU, so "
        "the figure is the whole GPU's, all its MIG instances together (a MIG instance has "
        "no counter of its own)"
        for uuid, name in mig
        if uuid in devices
    ]
    return Check("NVML", ("gpu",), True, "; ".join(parts + notes))


def amd_check(env: Environment) -> Check:
    """AMD GPUs through amdsmi, when this version of mlflow-green has that meter."""
    try:
        from mlflow_green.measure.meters.amdsmi import open_amdsmi_meters
    except ImportError:
        return Check("amdsmi", ("gpu",), False, "not available in this version of mlflow-green")
    meters, notes, failure = _open(open_amdsmi_meters)
    if failure is not None:
        fix = ""
        if env.has_gpu("AMD"):
            fix = (
                "install ROCm's AMD SMI with its Python package amdsmi and load the amdgpu "
                "driver: `amd-smi list` must list the GPU"
            )
        return Check("amdsmi", ("gpu",), False, "; ".join([str(failure), *notes]), fix)
    _close(meters)
    if not meters:
        return Check("amdsmi", ("gpu",), False, "; ".join(["no AMD GPU visible", *notes]))
    text = "; ".join(f"{m.hardware()} ({m.method})" for m in meters)
    return Check("amdsmi", ("gpu",), True, "; ".join([text, *notes]))


def apple_check(env: Environment) -> Check:
    """Apple silicon through zeus-apple-silicon (macOS on arm64 only)."""
    from mlflow_green.measure.meters.apple import open_apple_meters

    meters, _, failure = _open(open_apple_meters)
    if failure is not None:
        macos = env.platform == "darwin"
        missing = macos and not importlib.util.find_spec("zeus_apple_silicon")
        fix = "pip install zeus-apple-silicon" if missing and failure.warn else ""
        return Check("Apple IOReport", DOMAINS, False, str(failure), fix, relevant=macos)
    _close(meters)
    text = "; ".join(f"{m.domain}: {m.hardware()}" for m in meters)
    return Check("Apple IOReport", DOMAINS, True, text)


def rapl_check(env: Environment, root: str | os.PathLike[str] | None = None) -> Check:
    """CPU and DRAM through RAPL, from ``root`` or the folder autolog uses; the fix when absent."""
    configured = os.environ.get(ROOT_ENV) if root is None else None
    path = Path(root if root is not None else configured or DEFAULT_ROOT)
    meters, _, failure = _open(lambda: open_rapl_meters(path))
    if failure is None:
        _close(meters)
        text = f"{path}: " + ", ".join(d for m in meters for d in m.devices)
        if "ram" not in {m.domain for m in meters}:
            dram = [z for z in rapl_zones(path) if z[1] == "dram"]
            if dram and energy_unreadable(dram[0][0]):
                fix = permission_fix(path)
                return Check("RAPL", _RAPL, True, f"{text}; {dram[0][0]} is unreadable", fix)
            text += "; no DRAM zone (most desktop, laptop and AMD CPUs have none)"
        return Check("RAPL", _RAPL, True, text)
    return Check("RAPL", _RAPL, False, str(failure), rapl_fix(path, configured, env))


def _nvml_facts() -> tuple[int, list[tuple[str, str]]]:
    """(GPUs NVML lists, (UUID, name) of those with MIG mode on); (0, []) on any NVML error."""
    import pynvml

    mig: list[tuple[str, str]] = []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return 0, []
    try:
        total = pynvml.nvmlDeviceGetCount()
        get_mode = getattr(pynvml, "nvmlDeviceGetMigMode", None)
        enabled = getattr(pynvml, "NVML_DEVICE_MIG_ENABLE", 1)
        for index in range(total if get_mode is not None else 0):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            try:
                current, _pending = get_mode(handle)
            except pynvml.NVMLError:  # NOT_SUPPORTED: a GPU without MIG
                continue
            if current == enabled:
                uuid, name = pynvml.nvmlDeviceGetUUID(handle), pynvml.nvmlDeviceGetName(handle)
                mig.append((_text(uuid), _text(name)))
    except pynvml.NVMLError:
        return 0, []
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()
    return total, mig


# --- autolog's choice, and the verdict -------------------------------------------------------


def _autolog_meters() -> tuple[dict[str, list[tuple[str, str]]], tuple[str, ...]]:
    """(domain -> [(method, hardware)] of autolog's meters, the warnings it gives); closed."""
    from mlflow_green.measure import meters as meters_module

    meters, notes, failure = _open(meters_module.discover)
    hint = getattr(meters_module, "DOCTOR_HINT", "")  # "... see mlflow-green doctor": this is it
    notes = [n.removesuffix(hint) if hint else n for n in notes]
    chosen: dict[str, list[tuple[str, str]]] = {}
    for meter in meters:
        if meter.method != "none":
            chosen.setdefault(meter.domain, []).append((meter.method, meter.hardware()))
    _close(meters)
    if failure is not None:
        notes.append(f"opening the meters failed: {failure}")
    return chosen, tuple(notes)


def _verdict(
    domain: str, chosen: list[tuple[str, str]], checks: tuple[Check, ...], env: Environment
) -> DomainDiagnosis:
    methods = list(dict.fromkeys(method for method, _ in chosen)) or ["none"]
    hardware = "; ".join(h for _, h in chosen if h)
    estimate = all(m.startswith("estimate") for m in methods)
    status = ABSENT if methods == ["none"] else ESTIMATED if estimate else MEASURED
    why = [_WHY.get(m, f"measured with {m}") for m in methods]
    relevant = [c for c in checks if domain in c.domains and c.relevant]
    # What the working interfaces found; and, short of a measurement, why the others fail.
    why += [f"{c.interface}: {c.detail}" for c in relevant if c.available]
    if status != MEASURED:
        why += [f"{c.interface}: {c.detail}" for c in relevant if not c.available and c.detail]
    # A working interface's fix (e.g. RAPL's unreadable DRAM zone) is for the domains it misses.
    fixes = [c.fix for c in relevant if c.fix and (not c.available or status != MEASURED)]
    fixes = list(dict.fromkeys(fixes))
    no_gpu = domain == "gpu" and env.platform.startswith("linux") and not env.gpus_on_pci
    if status == ABSENT and not fixes and no_gpu:
        fixes = ["nothing to do: no NVIDIA or AMD GPU is on this machine's PCI bus"]
    method = "+".join(methods)
    return DomainDiagnosis(domain, method, hardware, status, ". ".join(why), "\n".join(fixes))


# --- helpers ---------------------------------------------------------------------------------


def _open(opener: Callable[[], list[Meter]]) -> tuple[list[Meter], list[str], Any]:
    """(meters, warnings it gave, the MeterUnavailable or other exception raised, else None)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            meters, failure = opener(), None
        except MeterUnavailable as exc:
            meters, failure = [], exc
        except Exception as exc:  # a doctor must not crash on the hardware it examines
            meters, failure = [], MeterUnavailable(f"{type(exc).__name__}: {exc}")
            failure.__cause__ = exc
    return meters, [str(w.message) for w in caught], failure


def _guarded(interface: str, domains: tuple[str, ...], check: Callable[[], Check]) -> Check:
    try:
        return check()
    except Exception as exc:
        return Check(interface, domains, False, f"the check failed: {type(exc).__name__}: {exc}")


def _close(meters: list[Meter]) -> None:
    for meter in meters:
        with contextlib.suppress(Exception):
            meter.close()


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
