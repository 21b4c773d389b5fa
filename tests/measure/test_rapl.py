"""RAPL meters against a fake powercap tree (tests/fakes/powercap.py)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from mlflow_green.measure.meters import _cpuinfo, rapl
from mlflow_green.measure.meters.base import Meter, MeterUnavailable
from mlflow_green.measure.meters.rapl import ROOT_ENV, open_rapl_meters
from tests.fakes.powercap import (
    PowercapTree,
    run_python_unprivileged,
    unprivileged_python,
    world_traversable_tmpdir,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tree(tmp_path: Path) -> PowercapTree:
    return PowercapTree(tmp_path)


@pytest.fixture
def pauses(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the mirror probe's pauses instead of sleeping."""
    calls: list[float] = []
    monkeypatch.setattr(rapl, "_pause", calls.append)
    return calls


def by_domain(meters: list[Meter]) -> dict[str, Meter]:
    assert all(m.method == "rapl" for m in meters)
    return {m.domain: m for m in meters}


def test_energy_is_the_advanced_joules_for_packages_and_dram(tree: PowercapTree) -> None:
    p0 = tree.add_package(0, energy_uj=5_000_000)
    p1 = tree.add_package(1, energy_uj=9_000_000)
    meters = by_domain(open_rapl_meters(tree.path))
    cpu, ram = meters["cpu"], meters["ram"]
    assert cpu.devices == ["package-0", "package-1"]
    assert ram.devices == ["dram-0", "dram-1"]
    assert cpu.read() == {"package-0": 0.0, "package-1": 0.0}

    tree.advance(p0.package, 12.5)
    tree.advance(p1.package, 0.25)
    tree.advance(p0.dram, 3.0)
    tree.advance(p1.dram, 7.125)
    assert cpu.read() == {"package-0": 12.5, "package-1": 0.25}
    assert ram.read() == {"dram-0": 3.0, "dram-1": 7.125}

    tree.advance(p0.package, 1.5)
    assert cpu.read() == {"package-0": 14.0, "package-1": 0.25}  # cumulative since open


def test_wrap_between_two_reads_is_counted_once(tree: PowercapTree) -> None:
    max_uj = 50_000_000_000
    zones = tree.add_package(0, energy_uj=max_uj - 2_000_000, max_energy_range_uj=max_uj)
    (cpu, ram) = open_rapl_meters(tree.path)
    tree.advance(zones.package, 1.0)
    assert cpu.read() == {"package-0": 1.0}
    tree.advance(zones.package, 5.0)  # passes max: the counter restarts from zero
    assert tree.energy_uj(zones.package) == 4_000_000
    assert cpu.read() == {"package-0": 6.0}
    tree.advance(zones.dram, 2.5)  # wraps before the first read
    assert ram.read() == {"dram-0": 2.5}


def test_poll_interval_lets_no_counter_wrap_twice(tree: PowercapTree) -> None:
    # 40,000 J range: a wrap takes at least 40 s at 1000 W; poll at half that.
    tree.add_package(0, max_energy_range_uj=40_000_000_000, dram=False)
    (cpu,) = open_rapl_meters(tree.path)
    assert cpu.poll_interval_s == pytest.approx(20.0)


@pytest.mark.parametrize(("max_uj", "expected_s"), [(10**9, 1.0), (262143328850, 60.0)])
def test_poll_interval_is_bounded(tmp_path: Path, max_uj: int, expected_s: float) -> None:
    tree = PowercapTree(tmp_path)
    tree.add_package(0, max_energy_range_uj=max_uj, dram=False)
    (cpu,) = open_rapl_meters(tree.path)
    assert cpu.poll_interval_s == expected_s


def test_subzone_nested_and_symlinked_is_counted_once(tree: PowercapTree) -> None:
    zones = tree.add_package(0, core=False)
    # The fake is faithful: the dram zone is both nested and a top-level symlink.
    assert (tree.path / zones.dram).is_symlink()
    assert (tree.path / zones.package / zones.dram / "energy_uj").is_file()
    (_, ram) = open_rapl_meters(tree.path)
    tree.advance(zones.dram, 4.0)
    assert ram.devices == ["dram-0"]
    assert ram.read() == {"dram-0": 4.0}


def test_mmio_mirror_is_counted_once(tree: PowercapTree) -> None:
    zones = tree.add_package(0, mmio_mirror=True, dram=False)
    assert (tree.path / zones.mmio / "name").read_text().strip() == "package-0"
    (cpu,) = open_rapl_meters(tree.path)
    tree.advance(zones.package, 8.0)
    assert tree.energy_uj(zones.mmio) == tree.energy_uj(zones.package)
    assert cpu.read() == {"package-0": 8.0}


def test_multi_die_mirrored_packages_counted_once(tree: PowercapTree, pauses) -> None:
    dies = tree.set_mirrored_packages(4)
    (cpu,) = open_rapl_meters(tree.path)
    assert pauses == [rapl.MIRROR_PROBE_S]
    assert cpu.devices == ["package-0-die-0"]
    assert "mirror package-0-die-0" in cpu.hardware()
    tree.advance(dies[2], 10.0)  # any die: all show the socket counter
    assert cpu.read() == {"package-0-die-0": 10.0}


def test_mirror_confirmed_by_identical_advance(tree: PowercapTree, monkeypatch) -> None:
    dies = tree.set_mirrored_packages(2)
    # The socket draws power during the probe: both zones advance alike.
    monkeypatch.setattr(rapl, "_pause", lambda seconds: tree.advance(dies[0], 1.0))
    (cpu,) = open_rapl_meters(tree.path)
    assert cpu.devices == ["package-0-die-0"]
    tree.advance(dies[0], 2.0)
    assert cpu.read() == {"package-0-die-0": 3.0}  # joules since open, probe included


def test_equal_readings_of_independent_packages_are_both_kept(tree, monkeypatch) -> None:
    p0 = tree.add_package(0, energy_uj=77_000_000, dram=False)
    p1 = tree.add_package(1, energy_uj=77_000_000, dram=False)

    def pause(seconds: float) -> None:
        assert seconds <= 0.05
        tree.advance(p0.package, 1.0)
        tree.advance(p1.package, 3.0)

    monkeypatch.setattr(rapl, "_pause", pause)
    (cpu,) = open_rapl_meters(tree.path)
    assert cpu.devices == ["package-0", "package-1"]
    assert "mirror" not in cpu.hardware()
    tree.advance(p1.package, 1.0)
    assert cpu.read() == {"package-0": 1.0, "package-1": 4.0}


def test_distinct_packages_cost_no_probe(tree: PowercapTree, pauses) -> None:
    tree.add_package(0, energy_uj=10_000_000)
    tree.add_package(1, energy_uj=90_000_000)
    tree.add_package(2, energy_uj=0)  # zero counters are never suspects
    tree.add_package(3, energy_uj=0)
    (cpu, _) = open_rapl_meters(tree.path)
    assert pauses == []
    assert cpu.devices == ["package-0", "package-1", "package-2", "package-3"]


def test_core_uncore_psys_are_ignored(tree: PowercapTree) -> None:
    zones = tree.add_package(0, core=True, uncore=True, dram=False)
    psys = tree.add_psys(1)
    (cpu,) = open_rapl_meters(tree.path)
    tree.advance(zones.core, 5.0)
    tree.advance(zones.uncore, 7.0)
    tree.advance(psys, 11.0)
    tree.advance(zones.package, 2.0)
    assert cpu.devices == ["package-0"]
    assert cpu.read() == {"package-0": 2.0}


def test_no_dram_gives_the_cpu_meter_only(tree: PowercapTree) -> None:
    tree.add_package(0, dram=False)
    meters = open_rapl_meters(tree.path)
    assert [m.domain for m in meters] == ["cpu"]


def test_only_psys_is_unavailable(tree: PowercapTree) -> None:
    tree.add_psys(0)
    with pytest.raises(MeterUnavailable, match="no RAPL powercap zones under"):
        open_rapl_meters(tree.path)


def test_empty_or_missing_root_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(MeterUnavailable, match=f"no RAPL powercap zones under {tmp_path}"):
        open_rapl_meters(tmp_path)
    missing = tmp_path / "missing"
    with pytest.raises(MeterUnavailable, match=f"no RAPL powercap zones under {missing}"):
        open_rapl_meters(missing)


def test_a_configured_root_without_zones_is_a_fault_to_hear_of(tmp_path: Path, monkeypatch) -> None:
    # The default root missing is absence (a VM); a root the user set and got wrong is a fault.
    assert not open_rapl_unavailable(tmp_path).warn
    monkeypatch.setenv(ROOT_ENV, str(tmp_path))
    exc = open_rapl_unavailable(None)
    assert exc.warn and str(exc).startswith(f"{ROOT_ENV}={str(tmp_path)!r}: no RAPL")


def open_rapl_unavailable(root: Path | None) -> MeterUnavailable:
    with pytest.raises(MeterUnavailable) as caught:
        open_rapl_meters(root)
    return caught.value


def test_env_var_names_the_root(tree: PowercapTree, monkeypatch) -> None:
    tree.add_package(7, dram=False)  # a package index no real machine here has
    monkeypatch.setenv(ROOT_ENV, str(tree.path))
    (cpu,) = open_rapl_meters()
    assert cpu.devices == ["package-7"]


def test_default_root_without_env_var(monkeypatch) -> None:
    monkeypatch.delenv(ROOT_ENV, raising=False)
    seen: list[Path] = []
    monkeypatch.setattr(rapl, "_scan", lambda root: seen.append(root) or [])
    with pytest.raises(MeterUnavailable):
        open_rapl_meters()
    assert seen == [Path("/sys/class/powercap")]


def test_broken_dram_zone_leaves_the_cpu_meter(tree: PowercapTree) -> None:
    zones = tree.add_package(0)
    (tree.zone_dir(zones.dram) / "energy_uj").write_text("not a number\n")
    meters = open_rapl_meters(tree.path)
    assert [m.domain for m in meters] == ["cpu"]


# --- permission denied (Linux >= 5.10) ----------------------------------------------------

# Imports the meter modules alone: the package's __init__ may need the venv (mlflow),
# whose interpreter nobody may not be able to run.
_IMPORT_AS_SUBPROCESS = """
import json, os, sys, types
repo = os.environ["PYTHONPATH"]
for name in ("mlflow_green", "mlflow_green.measure", "mlflow_green.measure.meters"):
    module = types.ModuleType(name)
    module.__path__ = [os.path.join(repo, *name.split("."))]
    sys.modules[name] = module
from mlflow_green.measure.meters.base import MeterUnavailable
from mlflow_green.measure.meters.rapl import open_rapl_meters
"""
_OPEN_AS_SUBPROCESS = (
    _IMPORT_AS_SUBPROCESS
    + """
try:
    meters = open_rapl_meters(sys.argv[1])
except MeterUnavailable as exc:
    print(json.dumps({"unavailable": str(exc)}))
else:
    print(json.dumps({"devices": [m.devices for m in meters]}))
"""
)


@pytest.fixture
def open_unprivileged():
    """``(tree, open)``: a tree nobody can traverse, and open_rapl_meters as an unprivileged user.

    ``open()`` returns ``{"devices": [...]}`` or ``{"unavailable": message}``.
    """
    if not hasattr(os, "geteuid"):
        pytest.skip("file permissions are POSIX-only")
    root = world_traversable_tmpdir()
    tree = PowercapTree(root)
    if os.geteuid() != 0:

        def open_meters() -> dict:
            try:
                return {"devices": [m.devices for m in open_rapl_meters(tree.path)]}
            except MeterUnavailable as exc:
                return {"unavailable": str(exc)}

    else:
        # Root reads any file: only another user sees PermissionError.
        if unprivileged_python() is None:
            shutil.rmtree(root)
            pytest.skip("running as root and no Python >= 3.10 can be run as user nobody")
        probe = run_python_unprivileged(_IMPORT_AS_SUBPROCESS, REPO_ROOT)
        if probe.returncode != 0:
            shutil.rmtree(root)
            pytest.skip(f"user nobody cannot import the meters from {REPO_ROOT}: {probe.stderr}")

        def open_meters() -> dict:
            result = run_python_unprivileged(_OPEN_AS_SUBPROCESS, REPO_ROOT, [str(tree.path)])
            assert result.returncode == 0, result.stderr
            return json.loads(result.stdout)

    yield tree, open_meters
    shutil.rmtree(root)


def test_unprivileged_reader_opens_a_readable_tree(open_unprivileged) -> None:
    tree, open_meters = open_unprivileged
    tree.add_package(0)
    assert open_meters() == {"devices": [["package-0"], ["dram-0"]]}


def test_permission_denied_names_the_file_and_the_fix(open_unprivileged) -> None:
    tree, open_meters = open_unprivileged
    zones = tree.add_package(0, dram=False)
    tree.deny_energy_access(zones.package)
    message = open_meters()["unavailable"]
    assert message.startswith(f"{tree.path / zones.package / 'energy_uj'} is readable by root only")
    assert "readable by root only" in message
    assert "CVE-2020-8694" in message
    assert f"sudo chmod -R a+r {tree.path}/*" in message
    assert "run as root" in message


def test_denied_dram_still_gives_the_cpu_meter(open_unprivileged) -> None:
    tree, open_meters = open_unprivileged
    zones = tree.add_package(0)
    tree.deny_energy_access(zones.dram)
    assert open_meters() == {"devices": [["package-0"]]}


# --- CPU model ----------------------------------------------------------------------------


def test_cpu_model_and_sockets_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    blocks = [
        f"processor\t: {i}\nmodel name\t: Intel(R) Xeon(R) Gold 6338\nphysical id\t: {i % 2}\n"
        for i in range(4)
    ]
    cpuinfo.write_text("\n".join(blocks))
    assert _cpuinfo.cpu_model_name(str(cpuinfo)) == "Intel(R) Xeon(R) Gold 6338"
    assert _cpuinfo.cpu_socket_count(str(cpuinfo)) == 2
    assert _cpuinfo.cpu_description(str(cpuinfo)) == "2 x Intel(R) Xeon(R) Gold 6338"


def test_cpu_model_falls_back_without_cpuinfo(tmp_path: Path, monkeypatch) -> None:
    missing = str(tmp_path / "missing")
    monkeypatch.setattr(_cpuinfo.platform, "processor", lambda: "")
    assert _cpuinfo.cpu_model_name(missing) == "unknown CPU"
    assert _cpuinfo.cpu_description(missing) == "unknown CPU"
    monkeypatch.setattr(_cpuinfo.platform, "processor", lambda: "arm")
    assert _cpuinfo.cpu_model_name(missing) == "arm"


def test_cpu_meter_hardware_names_the_cpu_model(tree: PowercapTree) -> None:
    tree.add_package(0, dram=False)
    (cpu,) = open_rapl_meters(tree.path)
    assert cpu.hardware() == _cpuinfo.cpu_description()


def test_broken_package_zone_is_unavailable(tree: PowercapTree) -> None:
    zones = tree.add_package(0, dram=False)
    (tree.zone_dir(zones.package) / "energy_uj").write_text("\n")
    with pytest.raises(
        MeterUnavailable, match=f"cannot read RAPL zone {tree.path / zones.package}"
    ):
        open_rapl_meters(tree.path)
