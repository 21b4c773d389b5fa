"""Tests of ``mlflow_green.measure.diagnose`` (what ``mlflow-green doctor`` says) on scripted
hardware: the fake powercap tree (tests/fakes/powercap.py), the fake NVML (tests/fakes/pynvml.py),
the stand-in ``zeus_apple_silicon``, and machine facts given as an :class:`Environment` or as
files under a fake filesystem root.

A permission error needs another user than root: those checks run ``rapl_check`` as
``nobody`` (its imports are the standard library only), as tests/measure/test_rapl.py does.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import warnings
from pathlib import Path

import pytest

from mlflow_green.measure.diagnose import (
    ABSENT,
    ESTIMATED,
    MEASURED,
    Environment,
    amd_check,
    apple_check,
    detect_environment,
    diagnose,
    rapl_check,
)
from mlflow_green.measure.meters.rapl import ROOT_ENV, open_rapl_meters
from tests.fakes.powercap import (
    PowercapTree,
    run_python_unprivileged,
    unprivileged_python,
    world_traversable_tmpdir,
)

REPO = Path(__file__).resolve().parents[2]
FAKES = REPO / "tests" / "fakes"
BARE_METAL = Environment("linux")
VM = Environment("linux", virtual_machine="the CPU reports a hypervisor in /proc/cpuinfo")
CONTAINER = Environment("linux", container="Docker: /.dockerenv exists")
A100 = "NVIDIA A100-SXM4-40GB"


def domains(found) -> dict:
    return {d.domain: d for d in found.domains}


def snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    """Mode and content of every file under ``folder``: what "changes nothing" compares."""
    return {
        str(p): (p.lstat().st_mode, p.read_text() if p.is_file() and not p.is_symlink() else "")
        for p in sorted(folder.rglob("*"))
    }


# --- the machine's facts ---------------------------------------------------------------------


def _pci(root: Path, address: str, vendor: str, klass: str) -> None:
    device = root / "sys" / "bus" / "pci" / "devices" / address
    device.mkdir(parents=True)
    (device / "vendor").write_text(vendor + "\n")
    (device / "class").write_text(klass + "\n")


def test_environment_from_files(tmp_path: Path) -> None:
    (tmp_path / ".dockerenv").touch()
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "cpuinfo").write_text("processor : 0\nflags : fpu vme hypervisor sse\n")
    _pci(tmp_path, "0000:01:00.0", "0x10de", "0x030200")  # NVIDIA 3D controller
    _pci(tmp_path, "0000:01:00.1", "0x10de", "0x040300")  # its audio function: not a GPU
    _pci(tmp_path, "0000:02:00.0", "0x1002", "0x120000")  # AMD Instinct (accelerator class)
    _pci(tmp_path, "0000:00:02.0", "0x1af4", "0x018000")  # virtio disk
    env = detect_environment(tmp_path, environ={})
    assert env.platform == sys.platform
    assert env.container == "Docker: /.dockerenv exists"
    assert "hypervisor" in env.virtual_machine
    assert env.gpus_on_pci == ("NVIDIA at 0000:01:00.0", "AMD at 0000:02:00.0")
    assert env.has_gpu("NVIDIA") and env.has_gpu("AMD")


def test_bare_metal_environment_and_cgroup_containers(tmp_path: Path) -> None:
    (tmp_path / "proc" / "1").mkdir(parents=True)
    (tmp_path / "proc" / "cpuinfo").write_text("flags : fpu vme sse\n")
    env = detect_environment(tmp_path, environ={})
    assert (env.container, env.virtual_machine, env.gpus_on_pci) == ("", "", ())
    (tmp_path / "proc" / "1" / "cgroup").write_text("0::/kubepods/burstable/pod1234\n")
    assert "kubepods" in detect_environment(tmp_path, environ={}).container
    podman = detect_environment(tmp_path, environ={"container": "podman"})
    assert podman.container == "container=podman"
    k8s = detect_environment(tmp_path / "nothing", environ={"KUBERNETES_SERVICE_HOST": "10.0.0.1"})
    assert k8s.container.startswith("Kubernetes pod")


# --- RAPL --------------------------------------------------------------------------------------


def test_rapl_present_is_measured_and_nothing_changes(fake_powercap, fake_nvml) -> None:
    fake_powercap.add_package(0, energy_uj=5_000_000)
    before = snapshot(fake_powercap.root)
    found = diagnose(BARE_METAL)
    assert snapshot(fake_powercap.root) == before
    cpu, ram = domains(found)["cpu"], domains(found)["ram"]
    assert (cpu.method, cpu.status, cpu.fix) == ("rapl", MEASURED, "")
    assert (ram.method, ram.status, ram.fix) == ("rapl", MEASURED, "")
    assert "nothing better exists" in cpu.why and "package-0" in cpu.why
    json.dumps(found.to_dict())  # plain data


def test_rapl_without_dram_zone_estimates_ram_and_says_why(fake_powercap, fake_nvml) -> None:
    fake_powercap.add_package(0, dram=False)
    found = domains(diagnose(BARE_METAL))
    assert found["cpu"].method == "rapl"
    assert (found["ram"].method, found["ram"].status) == ("estimate-ram-size", ESTIMATED)
    assert "no DRAM zone" in found["ram"].why and found["ram"].fix == ""


def test_absent_root_in_a_vm_names_the_estimate_and_bare_metal(tmp_path: Path) -> None:
    check = rapl_check(VM, tmp_path / "missing")
    assert not check.available and "no RAPL powercap zones" in check.detail
    assert "virtual machine" in check.fix and "bare metal" in check.fix
    assert "hypervisors do not pass RAPL" in check.fix


def test_absent_root_in_a_container_says_how_to_mount_the_host_zones(tmp_path: Path) -> None:
    fix = rapl_check(CONTAINER, tmp_path / "missing").fix
    assert "This is a container (Docker: /.dockerenv exists)" in fix
    assert (
        "docker run -v /sys/devices/virtual/powercap:/host/powercap:ro "
        f"-e {ROOT_ENV}=/host/powercap/intel-rapl ..."
    ) in fix.splitlines()
    assert "mounting /sys/class/powercap alone is not enough" in fix
    both = rapl_check(Environment("linux", CONTAINER.container, VM.virtual_machine), tmp_path)
    assert both.fix.startswith("This is a virtual machine") and "docker run -v" in both.fix


def test_absent_root_on_bare_metal_loads_the_driver(tmp_path: Path) -> None:
    fix = rapl_check(BARE_METAL, tmp_path / "missing").fix
    assert fix.splitlines()[-1] == "sudo modprobe intel_rapl_msr"


def test_a_wrong_powercap_root_setting_is_named(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(ROOT_ENV, str(tmp_path / "elsewhere"))
    check = rapl_check(VM)
    assert check.fix.startswith(f"{ROOT_ENV}={str(tmp_path / 'elsewhere')!r} holds no RAPL zone")


def test_zones_hidden_from_a_container_and_the_mount_that_fixes_it(tmp_path: Path) -> None:
    tree = PowercapTree(tmp_path)
    tree.add_package(0, energy_uj=7_000_000)
    host_zones = tmp_path / "host-powercap"
    shutil.copytree(tmp_path / "sys" / "devices" / "virtual" / "powercap", host_zones)
    # What Docker shows: /sys/class/powercap's links lead into a hidden (empty) folder.
    shutil.rmtree(tmp_path / "sys" / "devices" / "virtual" / "powercap")
    check = rapl_check(BARE_METAL, tree.path)  # no container evidence: the dangling links say it
    assert not check.available
    assert check.fix.startswith("In a container: Docker (24.0.7+), Podman and Kubernetes hide")
    # The advice works: the zones mounted elsewhere, MLFLOW_GREEN_POWERCAP_ROOT at intel-rapl.
    meters = open_rapl_meters(host_zones / "intel-rapl")
    assert [m.devices for m in meters] == [["package-0"], ["dram-0"]]


def test_non_linux_has_no_rapl_fix(tmp_path: Path) -> None:
    assert rapl_check(Environment("darwin"), tmp_path / "missing").fix == ""


def test_discover_warnings_are_collected_not_shown(fake_powercap, fake_nvml) -> None:
    zones = fake_powercap.add_package(0, dram=False)
    fake_powercap.break_file(zones.package, "energy_uj", "directory")
    with warnings.catch_warnings(record=True) as leaked:
        warnings.simplefilter("always")
        found = diagnose(BARE_METAL)
    assert leaked == []
    assert any("falls back to an estimate" in w for w in found.warnings)
    assert not any("mlflow-green doctor" in w for w in found.warnings)  # no pointer to itself
    cpu = domains(found)["cpu"]
    assert (cpu.method, cpu.status) == ("estimate-tdp", ESTIMATED)
    assert "is a directory, not a regular file" in cpu.why


_UNPRIVILEGED = """
import json, os, sys, types
repo = os.environ["PYTHONPATH"]
for name in ("mlflow_green", "mlflow_green.measure", "mlflow_green.measure.meters"):
    module = types.ModuleType(name)
    module.__path__ = [os.path.join(repo, *name.split("."))]
    sys.modules[name] = module
from dataclasses import asdict
from mlflow_green.measure.diagnose import Environment, rapl_check
print(json.dumps(asdict(rapl_check(Environment("linux"), sys.argv[1]))))
"""


@pytest.fixture
def check_unprivileged():
    """``(tree, check)``: a fake tree, and ``rapl_check`` on it as a user that is not root."""
    if not hasattr(os, "geteuid"):
        pytest.skip("file permissions are POSIX-only")
    root = world_traversable_tmpdir()
    tree = PowercapTree(root)

    def check() -> dict:
        if os.geteuid() != 0:
            from dataclasses import asdict

            return asdict(rapl_check(Environment("linux"), tree.path))
        if unprivileged_python() is None:
            pytest.skip("running as root and no Python >= 3.10 can be run as user nobody")
        done = run_python_unprivileged(_UNPRIVILEGED, REPO, [str(tree.path)])
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    yield tree, check
    shutil.rmtree(root)


def test_unreadable_counters_give_the_chmod_and_the_udev_rule(check_unprivileged) -> None:
    tree, check = check_unprivileged
    zones = tree.add_package(0)
    tree.deny_energy_access(zones.package)
    found = check()
    assert not found["available"]
    assert "readable by root only" in found["detail"]
    fix = found["fix"].splitlines()
    assert "CVE-2020-8694" in fix[0] and "Run the job as root" in fix[0]
    assert f"sudo chmod -R a+r {tree.path / 'intel-rapl'}" in fix
    udev = next(line for line in fix if "udev/rules.d" in line)
    assert 'SUBSYSTEM=="powercap", ACTION=="add", RUN+="/bin/chmod a+r /sys%p/energy_uj"' in udev
    assert any(line.startswith("sudo udevadm trigger") or "udevadm trigger" in line for line in fix)


def test_unreadable_dram_keeps_the_cpu_and_gives_the_fix(check_unprivileged) -> None:
    tree, check = check_unprivileged
    zones = tree.add_package(0)
    tree.deny_energy_access(zones.dram)
    found = check()
    assert found["available"] and found["domains"] == ["cpu", "ram"]
    assert "is unreadable" in found["detail"]
    assert f"sudo chmod -R a+r {tree.path / 'intel-rapl'}" in found["fix"].splitlines()


# --- NVIDIA ------------------------------------------------------------------------------------


def test_no_driver_and_no_gpu_is_nothing_to_fix(fake_nvml, fake_powercap) -> None:
    gpu = domains(diagnose(BARE_METAL))["gpu"]
    assert (gpu.method, gpu.status) == ("none", ABSENT)
    assert "NVML: no NVIDIA driver (NVML library not found)" in gpu.why
    assert gpu.fix == "nothing to do: no NVIDIA or AMD GPU is on this machine's PCI bus"


def test_no_driver_with_an_nvidia_gpu_on_the_bus(fake_nvml, fake_powercap) -> None:
    on_bus = Environment("linux", gpus_on_pci=("NVIDIA at 0000:01:00.0",))
    assert "install the NVIDIA driver" in domains(diagnose(on_bus))["gpu"].fix
    in_container = Environment("linux", CONTAINER.container, gpus_on_pci=on_bus.gpus_on_pci)
    assert "docker run --gpus all" in domains(diagnose(in_container))["gpu"].fix


def test_driver_not_loaded(fake_nvml, fake_powercap) -> None:
    fake_nvml.configure([], driver="not_loaded")
    gpu = domains(diagnose(BARE_METAL))["gpu"]
    assert "NVIDIA driver not loaded" in gpu.why and "sudo modprobe nvidia" in gpu.fix


def test_nvidia_ml_py_not_installed(monkeypatch, fake_powercap) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    on_bus = Environment("linux", gpus_on_pci=("NVIDIA at 0000:01:00.0",))
    gpu = domains(diagnose(on_bus))["gpu"]
    assert "nvidia-ml-py is not installed" in gpu.why and gpu.fix == "pip install nvidia-ml-py"


def test_gpus_with_counters_are_measured(fake_nvml, fake_powercap) -> None:
    fake_nvml.configure([{"uuid": "GPU-a", "name": A100}, {"uuid": "GPU-b", "name": A100}])
    gpu = domains(diagnose(BARE_METAL))["gpu"]
    assert (gpu.method, gpu.status, gpu.fix) == ("nvml-energy-counter", MEASURED, "")
    assert gpu.hardware == f"{A100} x2" and "2 GPU(s)" in gpu.why
    assert fake_nvml.pynvml.init_count() == 0  # every nvmlInit was shut down


def test_gpu_without_counter_says_why_power_is_integrated(fake_nvml, fake_powercap) -> None:
    fake_nvml.configure([{"name": "Tesla P100-PCIE-16GB", "counter": False}])
    gpu = domains(diagnose(BARE_METAL))["gpu"]
    assert gpu.method == "nvml-power" and "no energy counter" in gpu.why


@pytest.mark.parametrize("spec", ["", "-1"])
def test_cuda_visible_devices_hiding_every_gpu(fake_nvml, fake_powercap, monkeypatch, spec) -> None:
    fake_nvml.configure([{"uuid": "GPU-a"}, {"uuid": "GPU-b"}])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", spec)
    gpu = domains(diagnose(BARE_METAL))["gpu"]
    assert (gpu.method, gpu.status) == ("none", ABSENT)
    assert f"CUDA_VISIBLE_DEVICES={spec!r} hides all 2 GPUs from this process" in gpu.why
    assert gpu.fix.startswith("unset CUDA_VISIBLE_DEVICES, or list the GPUs the job uses")


def test_cuda_visible_devices_showing_some_gpus(fake_nvml, fake_powercap, monkeypatch) -> None:
    fake_nvml.configure([{"uuid": "GPU-a"}, {"uuid": "GPU-b"}])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    gpu = domains(diagnose(BARE_METAL))["gpu"]
    assert gpu.status == MEASURED and "CUDA_VISIBLE_DEVICES='1' shows 1 of 2 GPUs" in gpu.why


def test_mig_mode_says_the_energy_is_the_whole_gpus(fake_nvml, fake_powercap, monkeypatch) -> None:
    """The fake NVML has no MIG calls: NVML's own signature is added here, for this test."""
    nvml = fake_nvml.pynvml
    fake_nvml.configure([{"uuid": "GPU-mig", "name": "NVIDIA H100 80GB HBM3"}, {"uuid": "GPU-b"}])

    def get_mig_mode(handle):  # nvmlDeviceGetMigMode: [current, pending]; NotSupported w/o MIG
        if nvml.nvmlDeviceGetUUID(handle) != "GPU-mig":
            raise nvml.NVMLError(nvml.NVML_ERROR_NOT_SUPPORTED)
        return [1, 1]

    monkeypatch.setattr(nvml, "nvmlDeviceGetMigMode", get_mig_mode, raising=False)
    monkeypatch.setattr(nvml, "NVML_DEVICE_MIG_ENABLE", 1, raising=False)
    gpu = domains(diagnose(BARE_METAL))["gpu"]
    assert "MIG mode is on for GPU-mig (NVIDIA H100 80GB HBM3)" in gpu.why
    assert "per physical GPU" in gpu.why and "GPU-b (" not in gpu.why


# --- AMD and Apple -----------------------------------------------------------------------------


def test_amd_check_never_raises_and_says_why() -> None:
    check = amd_check(BARE_METAL)
    assert check.interface == "amdsmi" and not check.available and check.detail


def test_amd_gpu_on_the_bus_without_amdsmi(monkeypatch, fake_nvml, fake_powercap) -> None:
    monkeypatch.setitem(sys.modules, "amdsmi", None)  # import amdsmi raises ImportError
    on_bus = Environment("linux", gpus_on_pci=("AMD at 0000:02:00.0",))
    check = amd_check(on_bus)
    assert not check.available and "amd-smi list" in check.fix
    gpu = domains(diagnose(on_bus))["gpu"]
    assert gpu.status == ABSENT and "amd-smi list" in gpu.fix
    assert "nothing to do" not in gpu.fix


def test_apple_check_on_macos(fake_apple, monkeypatch) -> None:
    macos = Environment("darwin")
    fake_apple.configure({"CPU Energy": {"profile": [[0, 5.0]]}, "ANE": {"profile": [[0, 1.0]]}})
    check = apple_check(macos)
    assert check.available and check.relevant
    assert "gpu: " in check.detail and "(Neural Engine; IOReport)" in check.detail
    assert "cpu: " in check.detail and "ram: " not in check.detail
    monkeypatch.setitem(sys.modules, "zeus_apple_silicon", None)
    missing = apple_check(macos)
    assert not missing.available and missing.fix == "pip install zeus-apple-silicon"


def test_apple_check_elsewhere_is_not_relevant() -> None:
    check = apple_check(BARE_METAL)
    assert not check.available and not check.relevant and check.fix == ""


def test_doctor_on_apple_silicon_names_ioreport(fake_apple, fake_nvml, fake_powercap) -> None:
    channels = {
        "CPU Energy": {"profile": [[0, 5.0]]},
        "GPU Energy": {"unit": "nJ", "profile": [[0, 9.0]]},
        "ANE": {"profile": [[0, 1.0]]},
        "DRAM": {"profile": [[0, 0.5]]},
    }
    fake_apple.configure(channels)
    found = domains(diagnose(Environment("darwin")))
    for domain in ("gpu", "cpu", "ram"):
        assert (found[domain].method, found[domain].status) == ("apple-ioreport", MEASURED)
        assert "zeus-apple-silicon" in found[domain].why and found[domain].fix == ""
    del channels["DRAM"]  # a chip without a DRAM channel: RAM falls back to the estimate
    fake_apple.configure(channels)
    ram = domains(diagnose(Environment("darwin")))["ram"]
    assert (ram.method, ram.status) == ("estimate-ram-size", ESTIMATED)
