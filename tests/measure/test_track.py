"""``mlflow_green.track()`` end to end: configuration, the report, and never breaking user code.

The hardware is this machine's (no fakes) or the fakes of tests/conftest.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

import mlflow_green
from mlflow_green.measure.meters.base import MeterUnavailable
from mlflow_green.measure.meters.rapl import ROOT_ENV
from mlflow_green.measure.report import J_PER_KWH
from tests.fakes.powercap import NOBODY_GID, NOBODY_UID, PowercapTree, world_traversable_tmpdir
from tests.workloads import busy_for

REPO = Path(__file__).resolve().parents[2]
UUID = "GPU-aaaa1111-0000-0000-0000-000000000000"
FRA_G_PER_KWH = 56.039


def machine_has_energy_counters() -> bool:
    """Whether this machine has NVML GPUs or RAPL zones (then the estimate test does not apply)."""
    from mlflow_green.measure.meters.nvml import open_nvml_meters
    from mlflow_green.measure.meters.rapl import open_rapl_meters

    for opener in (open_nvml_meters, open_rapl_meters):
        try:
            meters = opener()
        except MeterUnavailable:
            continue
        for meter in meters:
            meter.close()
        if meters:
            return True
    return False


# --- Must-show: this machine, no counters, estimates -------------------------------------


def test_busy_loop_on_this_machine_is_estimated_and_priced_in_france(monkeypatch) -> None:
    monkeypatch.delenv(ROOT_ENV, raising=False)
    if machine_has_energy_counters():
        pytest.skip("this machine has GPU or RAPL counters: the estimate path is not taken")
    with mlflow_green.track(country="FRA") as t:
        busy_for(2.0)
    report = t.report
    assert report is not None
    assert report.energy_kwh > 0
    assert report.methods == {"gpu": "none", "cpu": "estimate-tdp", "ram": "estimate-ram-size"}
    assert report.carbon_intensity_g_per_kwh == FRA_G_PER_KWH
    assert report.co2eq_kg == report.energy_kwh * FRA_G_PER_KWH / 1000  # exact, as promised
    assert report.country == "FRA"
    assert report.duration_s == pytest.approx(2.0, abs=0.5)
    assert report.energy_j_by_domain["gpu"] == 0.0
    assert report.energy_j_by_domain["cpu"] > 0 and report.energy_j_by_domain["ram"] > 0
    assert report.energy_kwh == sum(report.energy_j_by_domain.values()) / J_PER_KWH
    # The CPU estimate lies between 10% (idle) and 100% of the TDP it names (give or take the
    # few ms between a meter's read and the window's timestamp, on a loaded machine).
    match = re.search(r"TDP ([0-9.]+) W", report.hardware["cpu"])
    assert match, report.hardware
    tdp_w = float(match.group(1))
    assert 0.1 * tdp_w * 0.95 <= report.mean_power_w["cpu"] <= tdp_w * 1.05


def test_pue_scales_the_facility_energy_not_the_device_energy(fake_powercap) -> None:
    zones = fake_powercap.add_package(0, energy_uj=7_000_000)
    with mlflow_green.track(carbon_intensity=500.0, pue=1.5) as t:
        fake_powercap.advance(zones.package, 36.0)
        fake_powercap.advance(zones.dram, 18.0)
    report = t.report
    assert report.energy_j_by_domain == {"gpu": 0.0, "cpu": 36.0, "ram": 18.0}
    assert report.energy_kwh == pytest.approx(54.0 * 1.5 / J_PER_KWH, rel=1e-12)
    assert report.co2eq_kg == report.energy_kwh * 500.0 / 1000
    assert report.intensity_source == "user-supplied"


# --- Configuration errors, raised at the call -------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"country": "XYZ"}, "XYZ"),
        ({"pue": 0.5}, "pue=0.5"),
        ({"carbon_intensity": -1.0}, "carbon_intensity=-1.0"),
        ({"sample_interval_s": 0}, "sample_interval_s=0"),
        ({"sample_interval_s": -2.5}, "sample_interval_s=-2.5"),
        ({"scope": "galaxy"}, "galaxy"),
    ],
)
def test_bad_configuration_raises_value_error_naming_it(kwargs: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError) as info:
        mlflow_green.track(**kwargs)
    assert named in str(info.value)


def test_bad_configuration_from_the_environment_is_rejected_too(monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_GREEN_COUNTRY", "XYZ")
    with pytest.raises(ValueError, match="XYZ"):
        mlflow_green.track()


# --- Never break the user's job ----------------------------------------------------------


class UserError(Exception):
    pass


def test_exception_in_the_block_propagates_unchanged_and_the_window_closes(fake_powercap) -> None:
    zones = fake_powercap.add_package(0, energy_uj=1_000_000, dram=False)
    error = UserError("boom")
    with pytest.raises(UserError) as info, mlflow_green.track() as t:
        fake_powercap.advance(zones.package, 4.0)
        raise error
    assert info.value is error
    assert t.report is not None and t.report.energy_j_by_domain["cpu"] == 4.0


def test_gpu_lost_mid_window_warns_once_and_the_user_code_runs_on(fake_nvml, fake_powercap) -> None:
    fake_nvml.configure([{"uuid": UUID, "profile": [[0.0, 200.0]], "lost_at_s": 5.0}])
    zones = fake_powercap.add_package(0, energy_uj=3_000_000, dram=False)
    fake_nvml.advance(1.0)
    steps = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with mlflow_green.track(sample_interval_s=30) as t:
            t_open = fake_nvml.now()
            fake_nvml.advance(3.0)
            t_good = fake_nvml.now()
            assert t.report.failures == {}  # a live read, the last good one
            steps.append("before")
            fake_nvml.advance(2.0)  # the GPU is lost at 5 s
            fake_powercap.advance(zones.package, 9.0)
            live = t.report  # the read that meets the lost GPU
            steps.append("after")
            fake_nvml.advance(1.0)
            fake_powercap.advance(zones.package, 1.0)
    assert steps == ["before", "after"]
    runtime = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(runtime) == 1, [str(w.message) for w in caught]
    assert "gpu" in str(runtime[0].message) and "GPU is lost" in str(runtime[0].message)
    report = t.report
    assert report is not None
    assert set(report.failures) == {"gpu"}
    assert "nvml-energy-counter" in report.failures["gpu"]
    assert "GpuIsLost" in report.failures["gpu"]
    assert live.failures == report.failures
    expected = fake_nvml.counter_integral_j(UUID, t_open, t_good)
    assert expected > 0
    assert report.energy_j_by_device["gpu"][UUID] == pytest.approx(expected, abs=1e-9)
    # The other meters keep counting.
    assert report.energy_j_by_domain["cpu"] == pytest.approx(10.0, abs=1e-9)
    assert report.methods["gpu"] == "nvml-energy-counter"


# --- Import cost --------------------------------------------------------------------------

_HEAVY = ("pynvml", "pandas", "matplotlib", "codecarbon")

_IMPORT_PROBE = """
import json, sys
import mlflow_green
after_import = sorted(m for m in sys.modules if m.split(".")[0] in {heavy})
with mlflow_green.track(country="FRA") as t:
    pass
after_track = sorted(m for m in sys.modules if m.split(".")[0] in {heavy})
print(json.dumps([after_import, after_track, t.report.methods["cpu"]]))
"""


def test_import_mlflow_green_imports_nothing_heavy() -> None:
    script = _IMPORT_PROBE.format(heavy=set(_HEAVY))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_GREEN_")}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    after_import, after_track, _ = json.loads(result.stdout)
    assert after_import == []
    # Measuring looks for NVML, but needs no data frames, plots or CodeCarbon's tracker.
    assert [m for m in after_track if m.split(".")[0] != "pynvml"] == []


# --- RAPL permission denied ---------------------------------------------------------------


def _track_in_forked_child(as_nobody: bool) -> dict[str, Any]:
    """Measure an empty block in a forked child (as user nobody if asked); what it saw."""
    # Everything the child needs from the venv is loaded here: nobody may not read it.
    from mlflow_green.measure.meters import _cpuinfo, discover, estimate, nvml, rapl  # noqa: F401
    from mlflow_green.measure.monitor import get_monitor  # noqa: F401

    estimate.lookup_tdp_w(_cpuinfo.cpu_model_name())
    estimate.lookup_tdp_w("no such CPU model")
    mlflow_green.track(carbon_intensity=100.0)

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 0
        try:
            os.close(read_end)
            if as_nobody:
                os.setgroups([])
                os.setgid(NOBODY_GID)
                os.setuid(NOBODY_UID)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                with mlflow_green.track(carbon_intensity=100.0) as t:
                    pass
            out = {
                "warnings": [[w.category.__name__, str(w.message)] for w in caught],
                "methods": t.report.methods,
                "energy_j": t.report.energy_j_by_domain,
            }
        except BaseException as exc:
            out, status = {"error": repr(exc)}, 1
        with os.fdopen(write_end, "w") as f:
            f.write(json.dumps(out))
        os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        text = f.read()
    _, status = os.waitpid(pid, 0)
    result = json.loads(text)
    assert os.waitstatus_to_exitcode(status) == 0, result
    return result


def test_rapl_permission_denied_falls_back_to_estimate_with_one_warning(
    fake_nvml, monkeypatch
) -> None:
    if not hasattr(os, "fork") or not hasattr(os, "geteuid"):
        pytest.skip("needs fork and POSIX users")
    root = world_traversable_tmpdir()  # the unprivileged reader must reach the tree
    try:
        tree = PowercapTree(root)
        zones = tree.add_package(0, energy_uj=12_345_678)
        tree.deny_energy_access()
        monkeypatch.setenv(ROOT_ENV, str(tree.path))
        result = _track_in_forked_child(as_nobody=os.geteuid() == 0)
    finally:
        shutil.rmtree(root)
    # The fake NVML has no driver: no GPU, silently. RAPL denied: the estimates, and why.
    assert result["methods"] == {"gpu": "none", "cpu": "estimate-tdp", "ram": "estimate-ram-size"}
    assert len(result["warnings"]) == 1, result["warnings"]
    category, message = result["warnings"][0]
    assert category == "UserWarning"
    assert message.startswith("mlflow-green: CPU/RAM energy falls back to an estimate: ")
    assert str(tree.path / zones.package / "energy_uj") in message
    assert "readable by root only" in message and "CVE-2020-8694" in message


def test_readable_rapl_tree_is_used_by_the_same_child(fake_nvml, monkeypatch) -> None:
    """The control: the same unprivileged child measures with RAPL when it may read it."""
    if not hasattr(os, "fork") or not hasattr(os, "geteuid"):
        pytest.skip("needs fork and POSIX users")
    root = world_traversable_tmpdir()
    try:
        tree = PowercapTree(root)
        tree.add_package(0, energy_uj=12_345_678)
        monkeypatch.setenv(ROOT_ENV, str(tree.path))
        result = _track_in_forked_child(as_nobody=os.geteuid() == 0)
    finally:
        shutil.rmtree(root)
    assert result["warnings"] == []
    assert result["methods"] == {"gpu": "none", "cpu": "rapl", "ram": "rapl"}
