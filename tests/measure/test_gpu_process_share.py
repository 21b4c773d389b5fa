"""Per-process GPU energy on shared GPUs (``scope="process"``), on the NVML stand-in.

Two processes share one stand-in GPU: this test process and another (its parent, a pid
that exists here but is no descendant). The stand-in samples their SM utilisation as
the driver does (every 1/6 s, whole percents, only samples newer than the caller's
cursor, ``NVMLError_NotFound`` when there are none), so the attribution is checked
against scripted activity with exact counter energies (``counter_integral_j``). Time
is the stand-in's manual clock; the meters read it too where they are opened here.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient

import mlflow_green
from mlflow_green.measure.meters.nvml import open_nvml_meters
from mlflow_green.runs.spool import _report_from_dict

GPU = "GPU-aaaa1111-0000-0000-0000-000000000000"
A100 = "NVIDIA A100-SXM4-40GB"
ME, OTHER = os.getpid(), os.getppid()
#: A pid no process has here (above Linux's largest pid_max, 2**22).
NOWHERE = 2**22 + 12345
#: Longer than any test: the sampler thread never reads on its own.
QUIET_S = 30.0
POWER_W = 400.0
#: Energy of one 100 ms counter update at that power: the counter's step.
STEP_J = 0.1 * POWER_W


def proc(pid: int, sm: list[list[float]] | float, memory_mib: float | None = 1024) -> dict:
    steps = [[0.0, sm]] if isinstance(sm, int | float) else sm
    return {"pid": pid, "used_memory_mib": memory_mib, "sm": steps}


def shared_gpu(processes: list[dict], **extra: Any) -> dict[str, Any]:
    return {
        "uuid": GPU,
        "name": A100,
        "profile": [[0.0, POWER_W]],
        "processes": processes,
        **extra,
    }


def attribute(fake_nvml: Any, pids: set[int], steps: list[float]) -> list[tuple[float, float]]:
    """Open a meter, then read it after each step (seconds); per interval (joules, share)."""
    [meter] = open_nvml_meters(clock=fake_nvml.clock)
    try:
        last = meter.read()[GPU]
        shares = meter.process_shares(pids)
        out = []
        for dt in steps:
            fake_nvml.advance(dt)
            energy = meter.read()[GPU]
            shares = meter.process_shares(pids)
            out.append((energy - last, 1.0 if shares is None else shares[GPU]))
            last = energy
        return out
    finally:
        meter.close()


def attributed_j(intervals: list[tuple[float, float]]) -> float:
    return sum(j * share for j, share in intervals)


IRREGULAR = [0.77, 0.1, 1.3, 0.05, 2.0, 0.45, 1.0, 0.33, 3.1, 0.6] * 2  # some below 1/6 s


# --- Must show 1: two processes at 75 % / 25 % ----------------------------------------------


def test_two_processes_get_their_activity_share_and_add_up_to_the_whole_gpu(fake_nvml) -> None:
    def run(ours: int) -> tuple[float, list[tuple[float, float]], float]:
        fake_nvml.configure([shared_gpu([proc(ME, 75), proc(OTHER, 25)])])  # epoch: now
        t0 = fake_nvml.advance(1.03)
        intervals = attribute(fake_nvml, {ours}, IRREGULAR)
        return t0, intervals, fake_nvml.now()

    # The same reads at the same instants, once with this process as "ours" and once with
    # the other: what two programs sharing the GPU would each measure.
    t0, mine, t1 = run(ME)
    assert run(OTHER)[::2] == (t0, t1)
    theirs = run(OTHER)[1]

    whole = fake_nvml.counter_integral_j(GPU, t0, t1)
    assert sum(j for j, _ in mine) == pytest.approx(whole, abs=1e-9)
    a, b = attributed_j(mine), attributed_j(theirs)
    # Each its share of the counter energy, to within the counter's step of the truth...
    truth = fake_nvml.integral_j(GPU, t0, t1)
    assert a == pytest.approx(0.75 * whole, abs=1e-9)
    assert b == pytest.approx(0.25 * whole, abs=1e-9)
    assert abs(a - 0.75 * truth) <= STEP_J and abs(b - 0.25 * truth) <= STEP_J
    # ... and together the whole GPU's energy, interval by interval.
    for (_, s_mine), (_, s_theirs) in zip(mine, theirs, strict=True):
        assert s_mine + s_theirs == pytest.approx(1.0, abs=1e-12)
    assert a + b == pytest.approx(whole, abs=1e-9)


def test_process_scope_window_reports_the_share_the_tag_and_the_whole_gpu(fake_nvml) -> None:
    fake_nvml.configure([shared_gpu([proc(ME, 75), proc(OTHER, 25)])])
    fake_nvml.advance(1.03)
    process = mlflow_green.track("p", scope="process", sample_interval_s=QUIET_S).start()
    machine = mlflow_green.track("m", scope="machine", sample_interval_s=QUIET_S).start()
    t0 = fake_nvml.now()
    fake_nvml.advance(2.5)
    so_far = process.report  # a read mid-way: an interval of its own, the same split
    assert so_far.energy_j_by_domain["gpu"] == pytest.approx(
        0.75 * so_far.gpu_whole_j_by_device[GPU], abs=1e-9
    )
    fake_nvml.advance(4.2)
    t1 = fake_nvml.now()
    m, p = machine.stop(), process.stop()
    whole = fake_nvml.counter_integral_j(GPU, t0, t1)
    assert m.energy_j_by_device["gpu"] == {GPU: pytest.approx(whole, abs=1e-9)}
    assert p.energy_j_by_device["gpu"] == {GPU: pytest.approx(0.75 * whole, abs=1e-9)}
    assert p.methods["gpu"] == "nvml-energy-counter+process-share"
    assert m.methods["gpu"] == "nvml-energy-counter"
    # The report keeps the whole GPU beside the attribution; a machine report needs none.
    assert p.gpu_whole_j_by_device == {GPU: pytest.approx(whole, abs=1e-9)}
    assert m.gpu_whole_j_by_device == {}
    assert p.to_dict()["gpu_whole_j_by_device"] == p.gpu_whole_j_by_device
    # ... and report.json's reader (the spool) gets it back.
    again = _report_from_dict(json.loads(p.to_json()))
    assert again.gpu_whole_j_by_device == p.gpu_whole_j_by_device
    assert again.methods == p.methods


def test_a_gpu_without_per_process_data_counts_whole_with_one_warning(fake_nvml) -> None:
    fake_nvml.configure([shared_gpu([proc(ME, 75), proc(OTHER, 25)], process_util=False)])
    fake_nvml.advance(1.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        process = mlflow_green.track("p", scope="process", sample_interval_s=QUIET_S).start()
        t0 = fake_nvml.now()
        for _ in range(3):
            fake_nvml.advance(1.5)
            assert process.report.methods["gpu"] == "nvml-energy-counter"  # reads the meters
        report = process.stop()
    whole = fake_nvml.counter_integral_j(GPU, t0, fake_nvml.now())
    assert report.energy_j_by_device["gpu"] == {GPU: pytest.approx(whole, abs=1e-9)}
    assert report.methods["gpu"] == "nvml-energy-counter"  # no attribution: no "+process-share"
    said = [str(w.message) for w in caught if GPU in str(w.message)]
    assert len(said) == 1, said
    assert "NOT_SUPPORTED" in said[0] and "whole" in said[0]


def test_a_transient_nvml_error_keeps_the_split_and_is_retried(fake_nvml) -> None:
    # One NVML_ERROR_UNKNOWN at one read: that interval keeps the previous split, the next
    # read queries again; no warning, the tag stays right, and later windows are split too.
    unknown = fake_nvml.pynvml.NVML_ERROR_UNKNOWN
    glitch = {"process_util_errors": [[2.0, 2.5, unknown]]}
    fake_nvml.configure([shared_gpu([proc(ME, 25), proc(OTHER, 75)], **glitch)])
    fake_nvml.advance(1.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            process = mlflow_green.track("p", scope="process", sample_interval_s=QUIET_S).start()
            t0 = fake_nvml.now()
            for _ in range(3):
                fake_nvml.advance(1.2)
                process.report  # noqa: B018 - reads the meters (the first read fails once)
            report = process.stop()
            whole = fake_nvml.counter_integral_j(GPU, t0, fake_nvml.now())
            assert report.energy_j_by_device["gpu"] == {GPU: pytest.approx(0.25 * whole, abs=1e-9)}
            assert report.methods["gpu"] == "nvml-energy-counter+process-share"
            assert "gpu" not in report.failures
    assert not [str(w.message) for w in caught if GPU in str(w.message)]


def test_repeated_nvml_errors_turn_whole_once_and_the_tag_stops_claiming_a_split(
    fake_nvml,
) -> None:
    unknown = fake_nvml.pynvml.NVML_ERROR_UNKNOWN
    broken = {"process_util_errors": [[2.0, 1e9, unknown]]}
    fake_nvml.configure([shared_gpu([proc(ME, 25), proc(OTHER, 75)], **broken)])
    fake_nvml.advance(1.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        process = mlflow_green.track("p", scope="process", sample_interval_s=QUIET_S).start()
        times = [fake_nvml.now()]
        for _ in range(4):  # reads at 2.2, 3.2 (kept split), 4.2 (third failure), 5.2
            times.append(fake_nvml.advance(1.0 if times[1:] else 1.2))
            process.report  # noqa: B018
        first = process.stop()
        later = mlflow_green.track("q", scope="process", sample_interval_s=QUIET_S).start()
        t0 = fake_nvml.now()
        fake_nvml.advance(2.0)
        second = later.stop()
    split, whole = times[2], times[-1]
    expected = 0.25 * fake_nvml.counter_integral_j(GPU, times[0], split)
    expected += fake_nvml.counter_integral_j(GPU, split, whole)
    assert first.energy_j_by_device["gpu"] == {GPU: pytest.approx(expected, abs=1e-9)}
    # Split for part of the window: the tag says how, the failures say the rest was whole.
    assert first.methods["gpu"] == "nvml-energy-counter+process-share"
    assert "part of the window" in first.failures["gpu"]
    # A window with no split at all claims none.
    assert second.methods["gpu"] == "nvml-energy-counter"
    assert second.energy_j_by_device["gpu"] == {
        GPU: pytest.approx(fake_nvml.counter_integral_j(GPU, t0, fake_nvml.now()), abs=1e-9)
    }
    said = [str(w.message) for w in caught if GPU in str(w.message)]
    assert len(said) == 1 and "3 times in a row" in said[0] and "whole" in said[0], said


# --- The idle rule, activity that moves, the fall-backs -------------------------------------


def test_activity_that_moves_between_processes_and_idle_time_split_by_memory(fake_nvml) -> None:
    # This process computes for 4 s, the other for the next 4 s, then both sit idle holding
    # 3 GiB and 1 GiB: the idle energy goes 3:1.
    gpu = shared_gpu(
        [
            proc(ME, [[0.0, 80.0], [4.0, 0.0]], memory_mib=3072),
            proc(OTHER, [[0.0, 0.0], [4.0, 40.0], [8.0, 0.0]], memory_mib=1024),
        ]
    )
    fake_nvml.configure([gpu])
    mine = attribute(fake_nvml, {ME}, [0.5] * 40)
    fake_nvml.configure([gpu])
    theirs = attribute(fake_nvml, {OTHER}, [0.5] * 40)
    for (_, s_mine), (_, s_theirs) in zip(mine, theirs, strict=True):
        assert s_mine + s_theirs == pytest.approx(1.0, abs=1e-12)
    # Reads every 0.5 s: up to 4 s all mine, up to 8 s all theirs; the read at 8.5 s finds
    # no new sample 0.5 s after the last one (a driver sampling once a second could have
    # taken none yet) and keeps the split; from the read at 9 s on, idle, split by memory.
    shares = [s for _, s in mine]
    assert shares[:8] == [1.0] * 8
    assert shares[8:17] == [0.0] * 9
    assert shares[17:] == [0.75] * 23


def test_idle_gpu_shares_equally_without_memory_figures_and_is_nobodys_when_empty(
    fake_nvml,
) -> None:
    fake_nvml.configure([shared_gpu([proc(ME, 0, None), proc(OTHER, 0, None), proc(7, 0, None)])])
    fake_nvml.advance(1.0)
    shares = [s for _, s in attribute(fake_nvml, {ME, 7}, [1.2] * 3)]
    assert shares == [pytest.approx(2 / 3)] * 3
    fake_nvml.configure([shared_gpu([])])
    fake_nvml.advance(1.0)
    assert [s for _, s in attribute(fake_nvml, {ME}, [1.2] * 3)] == [0.0] * 3


def test_processes_none_of_which_is_visible_here_mean_the_whole_gpu(fake_nvml) -> None:
    # NVML lists host pids; in a container with its own PID namespace none of them exists
    # here, and nothing can be matched: whole GPU, one warning, rather than 0 J.
    fake_nvml.configure([shared_gpu([proc(NOWHERE, 60), proc(NOWHERE + 1, 30)])])
    fake_nvml.advance(1.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        shares = [s for _, s in attribute(fake_nvml, {ME}, [1.0] * 3)]
    assert shares == [1.0] * 3
    said = [str(w.message) for w in caught if GPU in str(w.message)]
    assert len(said) == 1 and "PID namespace" in said[0]


def test_mig_gpu_is_attributed_by_the_slices_of_this_tree_instances(fake_nvml) -> None:
    mig = {
        "enabled": True,
        "total_slices": 7,
        "instances": [
            {"slices": 3, "processes": [{"pid": ME, "used_memory_mib": 512}]},
            {"slices": 2, "processes": [{"pid": OTHER, "used_memory_mib": 512}]},
            {"slices": 2, "processes": []},
        ],
    }
    fake_nvml.configure([shared_gpu([], mig=mig)])
    fake_nvml.advance(1.0)
    process = mlflow_green.track("p", scope="process", sample_interval_s=QUIET_S).start()
    t0 = fake_nvml.now()
    fake_nvml.advance(3.3)
    report = process.stop()
    whole = fake_nvml.counter_integral_j(GPU, t0, fake_nvml.now())
    assert report.energy_j_by_device["gpu"] == {GPU: pytest.approx(3 / 7 * whole, abs=1e-9)}
    assert report.methods["gpu"] == "nvml-energy-counter+mig-slice-share"
    assert report.gpu_whole_j_by_device == {GPU: pytest.approx(whole, abs=1e-9)}


# --- The stand-in behaves as NVML does -------------------------------------------------------


def test_a_mig_device_in_cuda_visible_devices_is_its_slice_share_of_the_parent(
    fake_nvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What Kubernetes/Slurm set for a MIG job: the parent's counter times 3/7, both scopes.
    mig = {"enabled": True, "total_slices": 7, "instances": [
        {"slices": 3, "uuid": "MIG-1111", "processes": [proc(ME, 0)]},
        {"slices": 4, "uuid": "MIG-2222", "processes": [proc(OTHER, 0)]}]}  # fmt: skip
    fake_nvml.configure([shared_gpu([], mig=mig)])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-1111")
    fake_nvml.advance(1.0)
    process = mlflow_green.track("p", scope="process", sample_interval_s=QUIET_S).start()
    machine = mlflow_green.track("m", scope="machine", sample_interval_s=QUIET_S).start()
    t0 = fake_nvml.now()
    fake_nvml.advance(3.3)
    m, p = machine.stop(), process.stop()
    share = 3 / 7 * fake_nvml.counter_integral_j(GPU, t0, fake_nvml.now())
    for report in (m, p):
        assert report.energy_j_by_device["gpu"] == {"MIG-1111": pytest.approx(share, abs=1e-9)}
        assert report.methods["gpu"] == "nvml-energy-counter+mig-slice-share"


def test_stand_in_samples_only_newer_than_the_cursor_and_not_found_when_none(fake_nvml) -> None:
    nvml = fake_nvml.pynvml
    fake_nvml.configure([shared_gpu([proc(ME, [[0.0, 90.0], [1.0, 30.0]]), proc(OTHER, 0)])])
    nvml.nvmlInit()
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(0)
        with pytest.raises(nvml.NVMLError_NotFound):  # no sample period has ended yet
            nvml.nvmlDeviceGetProcessUtilization(handle, 0)
        fake_nvml.advance(2.0)
        [entry] = nvml.nvmlDeviceGetProcessUtilization(handle, 0)  # OTHER is idle: no entry
        assert entry.pid == ME and entry.smUtil == 60  # the mean of 6 x 90 % and 6 x 30 %
        fake_nvml.advance(0.5)
        [newer] = nvml.nvmlDeviceGetProcessUtilization(handle, entry.timeStamp)
        assert newer.smUtil == 30
        assert abs(newer.timeStamp - entry.timeStamp - 500_000) <= 1  # microseconds
        with pytest.raises(nvml.NVMLError_NotFound):  # nothing newer than the newest
            nvml.nvmlDeviceGetProcessUtilization(handle, newer.timeStamp)
        procs = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
        assert [(p.pid, p.usedGpuMemory) for p in procs] == [(ME, 2**30), (OTHER, 2**30)]
        with pytest.raises(nvml.NVMLError_NotSupported):  # MIG queries on a GPU without MIG
            nvml.nvmlDeviceGetMigMode(handle)
    finally:
        nvml.nvmlShutdown()


# --- An autologged run ----------------------------------------------------------------------


@pytest.fixture
def client(experiment_client: MlflowClient) -> MlflowClient:
    return experiment_client


def test_autologged_run_with_process_scope_tags_the_attribution(client, fake_nvml) -> None:
    fake_nvml.configure([shared_gpu([proc(ME, 75), proc(OTHER, 25)])])
    fake_nvml.advance(1.0)
    mlflow_green.autolog(country="FRA", scope="process", flush_interval_s=86400)
    with mlflow.start_run() as run:
        fake_nvml.advance(5.0)
    tags = client.get_run(run.info.run_id).data.tags
    assert tags["green.gpu_meter"] == "nvml-energy-counter+process-share"
    assert tags["green.scope"] == "process"
    report = json.loads(
        Path(client.download_artifacts(run.info.run_id, "green/report.json")).read_text()
    )
    [whole] = report["gpu_whole_j_by_device"].values()
    assert set(report["gpu_whole_j_by_device"]) == {GPU}
    # The run's window: about the 5 s of the run at 400 W (it opens and closes on the
    # stand-in's clock, give or take a counter step at each end).
    assert abs(whole - 5.0 * POWER_W) <= 2 * STEP_J
    assert report["energy_j_by_device"]["gpu"][GPU] == pytest.approx(0.75 * whole, abs=1e-9)
