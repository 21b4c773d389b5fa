"""``mlflow-green doctor``: text and JSON, exit 0 whatever it finds, on scripted hardware (the
fake powercap tree and the fake NVML) and, as a user runs it, on this machine (issue 17's
Must-show 3: without GPU or RAPL it names the CPU estimate and how to get RAPL).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlflow_green.cli import main
from mlflow_green.cli.doctor import render_text
from mlflow_green.measure.diagnose import Diagnosis, DomainDiagnosis, Environment, rapl_check
from mlflow_green.measure.meters.rapl import DEFAULT_ROOT, open_rapl_meters

REPO = Path(__file__).resolve().parents[2]
#: What a RAPL fix says, whichever applies to the machine (VM, container, driver, permission).
RAPL_FIX_MARKS = ("bare metal", "docker run -v", "sudo modprobe intel_rapl_msr", "sudo chmod")


def doctor(*args: str) -> str:
    result = CliRunner().invoke(main, ["doctor", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_text_names_each_domain_method_and_fix(fake_powercap, fake_nvml) -> None:
    fake_powercap.add_package(0)
    out = doctor()
    assert out.startswith("mlflow-green doctor: how autolog would measure energy on this machine")
    assert "\ngpu: none (absent)\n" in out
    assert "\ncpu: rapl (measured)" in out and "\nram: rapl (measured)" in out
    assert "NVML: no NVIDIA driver (NVML library not found)" in out


def test_json_has_every_domain_with_its_fields(fake_powercap, fake_nvml) -> None:
    fake_nvml.configure([{"uuid": "GPU-a", "name": "NVIDIA A100-SXM4-40GB"}])
    data = json.loads(doctor("--format", "json"))
    assert [d["domain"] for d in data["domains"]] == ["gpu", "cpu", "ram"]
    for domain in data["domains"]:
        assert set(domain) == {"domain", "method", "hardware", "status", "why", "fix"}
    gpu = data["domains"][0]
    assert (gpu["method"], gpu["status"]) == ("nvml-energy-counter", "measured")
    assert {c["interface"] for c in data["checks"]} == {"NVML", "amdsmi", "Apple IOReport", "RAPL"}
    assert set(data["environment"]) == {"platform", "container", "virtual_machine", "gpus_on_pci"}


def test_hidden_gpus_are_a_finding_not_an_error(fake_powercap, fake_nvml, monkeypatch) -> None:
    fake_nvml.configure([{"uuid": "GPU-a"}])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    out = doctor()
    assert "\ngpu: none (absent)\n" in out
    assert "CUDA_VISIBLE_DEVICES='' hides all 1 GPUs from this process" in " ".join(out.split())
    assert "unset CUDA_VISIBLE_DEVICES" in out


def test_commands_in_a_fix_stay_whole_on_their_line(tmp_path: Path) -> None:
    container = Environment("linux", container="Docker: /.dockerenv exists")
    check = rapl_check(container, tmp_path / "missing")
    cpu = DomainDiagnosis("cpu", "estimate-tdp", "", "estimated", check.detail, check.fix)
    ram = DomainDiagnosis("ram", "estimate-ram-size", "", "estimated", check.detail, check.fix)
    lines = render_text(Diagnosis(container, (cpu, ram), (check,))).splitlines()
    commands = [line.strip() for line in lines if line.strip().startswith(("docker", "sudo"))]
    assert commands == [
        "docker run -v /sys/devices/virtual/powercap:/host/powercap:ro "
        "-e MLFLOW_GREEN_POWERCAP_ROOT=/host/powercap/intel-rapl ...",
        "sudo chmod -R a+r /sys/class/powercap/intel-rapl",
    ]
    assert "    fix: as for cpu, above" in lines  # the same fix is not repeated
    assert all(len(line) <= 100 for line in lines if not line.strip().startswith("docker"))


def test_a_bad_format_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["doctor", "--format", "xml"])
    assert result.exit_code == 2 and "'xml'" in result.output


def test_doctor_is_listed_in_the_help() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0 and "doctor" in result.output


def _machine_has_rapl() -> bool:
    try:
        open_rapl_meters(DEFAULT_ROOT)
    except Exception:
        return False
    return True


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_the_real_command_on_this_machine(tmp_path: Path, fmt: str) -> None:
    """As a user runs it: this machine's hardware, no fakes, no MLFLOW_GREEN_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_GREEN_")}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-m", "mlflow_green.cli", "doctor", "--format", fmt],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []  # it creates nothing
    if fmt == "json":
        cpu = json.loads(done.stdout)["domains"][1]
        assert cpu["domain"] == "cpu"
        if not _machine_has_rapl():
            assert (cpu["method"], cpu["status"]) == ("estimate-tdp", "estimated")
            assert "no RAPL powercap zones" in cpu["why"] or "readable by root" in cpu["why"]
            assert any(mark in cpu["fix"] for mark in RAPL_FIX_MARKS), cpu["fix"]
        return
    out = done.stdout
    for domain in ("gpu", "cpu", "ram"):
        assert f"\n{domain}: " in out
    if not _machine_has_rapl():  # Must-show 3: the CPU estimate, and how to get RAPL
        assert "\ncpu: estimate-tdp (estimated)" in out
        assert "an estimate, not a measurement" in out and "RAPL" in out
        assert any(mark in out for mark in RAPL_FIX_MARKS), out
