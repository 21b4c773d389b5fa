"""The machine facts and the fixes ``mlflow-green doctor`` gives (see :mod:`.diagnose`).

Where the process runs (container, virtual machine, GPUs on the PCI bus), read from
files only, and the exact steps that would give a domain a better meter: the RAPL
permission (``chmod`` and a udev rule), a container hiding the host's powercap zones,
a VM without RAPL, the RAPL driver, the NVIDIA driver. Standard library only, as
:func:`mlflow_green.measure.diagnose.rapl_check` needs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mlflow_green.measure.meters._sysfs import read_attribute
from mlflow_green.measure.meters.base import MeterUnavailable
from mlflow_green.measure.meters.rapl import DEFAULT_ROOT, ROOT_ENV

_GPU_VENDORS = {"0x10de": "NVIDIA", "0x1002": "AMD"}
_VM_FIX = (
    "hypervisors do not pass RAPL to their guests, so nothing inside the VM can give it: "
    "the CPU and RAM figures here stay estimates. To measure them, run on bare metal (a "
    "physical server, or a cloud bare-metal instance), where Linux exposes RAPL under "
    "/sys/class/powercap."
)
_CONTAINER_FIX = (
    "Docker (24.0.7+), Podman and Kubernetes hide /sys/devices/virtual/powercap, where the "
    "zones of /sys/class/powercap lead (CVE-2020-8694), so mounting /sys/class/powercap alone "
    "is not enough. Mount the host's zones read-only and point mlflow-green at them:\n"
    "docker run -v /sys/devices/virtual/powercap:/host/powercap:ro "
    f"-e {ROOT_ENV}=/host/powercap/intel-rapl ...\n"
    "(Kubernetes: a read-only hostPath volume of /sys/devices/virtual/powercap and the same "
    f"{ROOT_ENV}.) The job must run as root, or the host must grant read access:\n"
    "sudo chmod -R a+r /sys/class/powercap/intel-rapl"
)
_UDEV_RULE = 'SUBSYSTEM=="powercap", ACTION=="add", RUN+="/bin/chmod a+r /sys%p/energy_uj"'


@dataclass(frozen=True)
class Environment:
    """Facts about the machine that decide the fixes; each is the evidence found, or ``""``."""

    platform: str
    container: str = ""
    virtual_machine: str = ""
    #: GPUs on the PCI bus, e.g. ``"NVIDIA at 0000:01:00.0"`` (Linux only; empty elsewhere).
    gpus_on_pci: tuple[str, ...] = ()

    def has_gpu(self, vendor: str) -> bool:
        return any(g.startswith(vendor) for g in self.gpus_on_pci)


def detect_environment(
    fs_root: str | os.PathLike[str] = "/", environ: Mapping[str, str] | None = None
) -> Environment:
    """Container, virtual machine and PCI GPUs, read from the files under ``fs_root``."""
    root = Path(fs_root)
    env = os.environ if environ is None else environ
    container = ""
    if (root / ".dockerenv").exists():
        container = "Docker: /.dockerenv exists"
    elif (root / "run" / ".containerenv").exists():
        container = "Podman: /run/.containerenv exists"
    elif env.get("KUBERNETES_SERVICE_HOST"):
        container = "Kubernetes pod: KUBERNETES_SERVICE_HOST is set"
    elif env.get("container"):
        container = f"container={env['container']}"
    else:
        cgroup = _read(root / "proc" / "1" / "cgroup")
        marks = [m for m in ("docker", "kubepods", "containerd", "libpod", "lxc") if m in cgroup]
        container = f"{marks[0]} in /proc/1/cgroup" if marks else ""
    cpuinfo = _read(root / "proc" / "cpuinfo").splitlines()
    flags = next((line.split() for line in cpuinfo if line.startswith("flags")), [])
    vm = "the CPU reports a hypervisor in /proc/cpuinfo" if "hypervisor" in flags else ""
    gpus = []
    with contextlib.suppress(OSError):
        for device in sorted((root / "sys" / "bus" / "pci" / "devices").iterdir()):
            vendor = _read(device / "vendor").strip()
            # PCI class 0x03: display controller; 0x12: processing accelerator (Instinct).
            if vendor in _GPU_VENDORS and _read(device / "class").strip()[:4] in ("0x03", "0x12"):
                gpus.append(f"{_GPU_VENDORS[vendor]} at {device.name}")
    return Environment(sys.platform, container, vm, tuple(gpus))


def rapl_fix(path: Path, configured: str | None, env: Environment) -> str:
    """How to get RAPL when ``open_rapl_meters(path)`` failed; ``""`` when nothing would help.

    ``configured`` is the value of ``MLFLOW_GREEN_POWERCAP_ROOT`` that named ``path``, if any.
    """
    if not env.platform.startswith("linux"):
        return ""  # powercap is Linux's; macOS has IOReport, Windows nothing we read
    found = rapl_zones(path)
    if any(name.startswith("package") and energy_unreadable(zone) for zone, name in found):
        return permission_fix(path)
    if found:  # readable zones that still failed: the message says why
        return ""
    if configured:
        return (
            f"{ROOT_ENV}={configured!r} holds no RAPL zone: unset it to use {DEFAULT_ROOT}, "
            "or point it at the folder that holds the intel-rapl:N zones"
        )
    dangling = False
    with contextlib.suppress(OSError):
        dangling = any(e.name.startswith("intel-rapl") and not e.exists() for e in path.iterdir())
    container = f"This is a container ({env.container})" if env.container else "In a container"
    if env.virtual_machine:  # the kernel runs in a VM: neither it nor a container on it has RAPL
        then = f"\nThen, as this is a container ({env.container}): " if env.container else ""
        return f"This is a virtual machine ({env.virtual_machine}): {_VM_FIX}" + (
            then + _CONTAINER_FIX if then else ""
        )
    if dangling or env.container:
        return f"{container}: {_CONTAINER_FIX}"
    return (
        "Load the kernel's RAPL driver (Intel, and AMD on recent kernels):\n"
        "sudo modprobe intel_rapl_msr"
    )


def permission_fix(path: Path) -> str:
    """Granting read access to the RAPL counters under ``path``: now, and for good."""
    target = path / "intel-rapl" if (path / "intel-rapl").exists() else f"{path}/*"
    return (
        "Since Linux 5.10 energy_uj is readable by root only (CVE-2020-8694). Run the job as "
        "root, or grant read access until the next reboot:\n"
        f"sudo chmod -R a+r {target}\n"
        "and for good, with a udev rule:\n"
        f"echo '{_UDEV_RULE}' | sudo tee /etc/udev/rules.d/60-powercap-energy.rules\n"
        "sudo udevadm control --reload && sudo udevadm trigger --subsystem-match=powercap "
        "--action=add\n"
        "(this lets every local user read the counters, the power side channel the CVE "
        "closed: on a shared machine, prefer running as root)"
    )


def nvml_fix(failure: MeterUnavailable, env: Environment) -> str:
    """What would let NVML open, given how ``open_nvml_meters`` failed; ``""`` if no NVIDIA GPU."""
    has_nvidia = env.has_gpu("NVIDIA")
    if importlib.util.find_spec("pynvml") is None:
        return "pip install nvidia-ml-py" if has_nvidia else ""
    import pynvml

    cause = failure.__cause__
    if isinstance(cause, pynvml.NVMLError_DriverNotLoaded):
        return "load the NVIDIA driver: sudo modprobe nvidia (or reboot after installing it)"
    if isinstance(cause, pynvml.NVMLError_LibraryNotFound):
        if has_nvidia and env.container:
            return (
                "an NVIDIA GPU is on the PCI bus but not in this container: start it with the "
                "GPUs (NVIDIA Container Toolkit): docker run --gpus all ..."
            )
        if has_nvidia:
            return "install the NVIDIA driver: `nvidia-smi` must list the GPU"
        return ""
    return "`nvidia-smi` shows the same failure: repair the NVIDIA driver installation"


def rapl_zones(path: Path) -> list[tuple[Path, str]]:
    """(directory, name) of the readable-named RAPL zones under ``path`` and one level below."""
    found = []
    with contextlib.suppress(OSError):
        for entry in sorted(path.iterdir()):
            if entry.name.startswith("intel-rapl") and ":" in entry.name:
                with contextlib.suppress(OSError):
                    found.append((entry, read_attribute(entry / "name").strip()))
                    found += [
                        (sub, read_attribute(sub / "name").strip())
                        for sub in sorted(entry.iterdir())
                        if sub.name.startswith(entry.name + ":")
                    ]
    return found


def energy_unreadable(zone: Path) -> bool:
    try:
        read_attribute(zone / "energy_uj")
    except PermissionError:
        return True
    except OSError:
        return False
    return False


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
