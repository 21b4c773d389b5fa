"""Distributed jobs (issue 6): torchrun, two ranks, gloo on the CPU, a real MLflow SQLite store.

Each rank gets its own scripted hardware (tests/dist_job.py): a fake NVML GPU at
constant power and a fake RAPL package driven at constant power, so every node's
ground truth is power x time. ``combine`` is also tested on its own, as the pure
function it is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

import mlflow_green
from mlflow_green.distributed import job as job_module
from mlflow_green.distributed.combine import combine
from mlflow_green.measure.carbon import resolve_intensity
from mlflow_green.measure.meters.estimate import RamSizeMeter
from mlflow_green.runs import autologging
from tests.fakes.powercap import PowercapTree
from tests.mlflow_server import server_fixture

mlflow_server = server_fixture()

ROOT = Path(__file__).resolve().parents[2]
JOB = Path(__file__).parents[1] / "dist_job.py"
J_PER_KWH = 3.6e6
# Per-node power: the fake GPU's constant profile and the driven RAPL package.
NODE_A = {"gpu_w": 120.0, "cpu_w": 45.0}
NODE_B = {"gpu_w": 210.0, "cpu_w": 65.0}


def _ram_w() -> float:
    # RAM is estimated from installed size (constant power); each node estimates its own.
    return RamSizeMeter().power_w


def _gpu_scenario(folder: Path, name: str, gpus: list[tuple[str, float]]) -> str:
    path = folder / f"nvml-{name}.json"
    devices = [{"uuid": uuid, "name": "NVIDIA H100", "profile": [[0, w]]} for uuid, w in gpus]
    path.write_text(json.dumps({"driver": True, "devices": devices}))
    return str(path)


def _cpu_tree(folder: Path, name: str) -> tuple[str, str]:
    """A fake powercap tree with one package (RAM stays estimated); (root, energy_uj path)."""
    root = folder / f"powercap-{name}"
    root.mkdir()
    tree = PowercapTree(root)
    zone = tree.add_package(0, energy_uj=1_000_000, dram=False, core=False).package
    return str(tree.path), str(tree.zone_dir(zone) / "energy_uj")


def _node(folder: Path, node_id: str, gpus: list[tuple[str, float]], cpu_w: float, **env: str):
    root, counter = _cpu_tree(folder, node_id)
    return {
        "env": {
            "MLFLOW_GREEN_NODE_ID": node_id,
            "FAKE_NVML_SCENARIO": _gpu_scenario(folder, node_id, gpus),
            "MLFLOW_GREEN_POWERCAP_ROOT": root,
            **env,
        },
        "drive": [[counter, cpu_w]],
    }


def _torchrun(tmp_path: Path, spec: dict[str, Any], timeout_s: float = 120.0) -> dict[str, Any]:
    """Run tests/dist_job.py on two ranks; returns {"runs": {rank: run_id}, "rc", "output"}."""
    db = tmp_path / "mlflow.db"
    spec = {"tracking_uri": f"sqlite:///{db}", **spec}
    # Create the schema once: two ranks migrating a new SQLite file at once collide.
    MlflowClient(spec["tracking_uri"]).search_experiments()
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    env = {
        **os.environ,
        "DIST_JOB_SPEC": str(spec_path),
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "MLFLOW_GREEN_SILENT": "false",
    }
    for name in ("CUDA_VISIBLE_DEVICES", "MLFLOW_GREEN_NODE_ID", "MLFLOW_GREEN_COUNTRY"):
        env.pop(name, None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        # The launcher binds a free port itself: a port picked here could be taken by
        # another process before torchrun binds it (the ranks would then talk to a stranger).
        "--standalone",
        "--monitor-interval=0.1",
        str(JOB),
    ]
    proc = subprocess.run(
        cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=timeout_s
    )
    output = proc.stdout + proc.stderr
    runs = {
        int(line.split()[1]): line.split()[2]
        for line in proc.stdout.splitlines()
        if line.startswith("RUN ")
    }
    return {"runs": runs, "rc": proc.returncode, "output": output, "uri": spec["tracking_uri"]}


def _run(result: dict[str, Any], rank: int = 0):
    assert rank in result["runs"], result["output"][-4000:]
    return MlflowClient(result["uri"]).get_run(result["runs"][rank])


def _truth_j(node: dict[str, float], duration_s: float, gpus: int = 1) -> float:
    return (node["gpu_w"] * gpus + node["cpu_w"] + _ram_w()) * duration_s


def _tolerance_j(node: dict[str, float]) -> float:
    # The NVML counter moves every 100 ms (one tick at each end of a window), RAPL here
    # every 10 ms, and rank 1 opens its window a few ms after rank 0's run starts.
    return 0.25 * node["gpu_w"] + 0.1 * (node["cpu_w"] + _ram_w())


# -- the job, end to end -----------------------------------------------------------------------


@pytest.mark.parametrize("store", ["sqlite", "server"])
def test_two_nodes_one_run_holds_the_whole_job(tmp_path: Path, request, store: str) -> None:
    uri = request.getfixturevalue("mlflow_server") if store == "server" else None
    spec = {
        **({"tracking_uri": uri} if uri else {}),
        "duration_s": 3.0,
        "exit_barrier": False,  # rank 1 exits while rank 0 ends the run
        "ranks": {
            "0": _node(
                tmp_path,
                "node-a",
                [("GPU-a-0", NODE_A["gpu_w"])],
                NODE_A["cpu_w"],
                MLFLOW_GREEN_COUNTRY="FRA",
            ),
            "1": _node(
                tmp_path,
                "node-b",
                [("GPU-b-0", NODE_B["gpu_w"])],
                NODE_B["cpu_w"],
                MLFLOW_GREEN_COUNTRY="DEU",
            ),
        },
    }
    result = _torchrun(tmp_path, spec)
    assert result["rc"] == 0, result["output"][-4000:]
    run = _run(result)
    m, tags = run.data.metrics, run.data.tags
    duration = m["green/duration_s"]

    # Must show 1: the nodes add up to the job, and there are two of them.
    assert m["green/node/node-a_kwh"] + m["green/node/node-b_kwh"] == pytest.approx(
        m["green/energy_kwh"], rel=1e-12
    )
    assert tags["green.nodes"] == "2"
    assert tags["green.ranks"] == "2"
    assert "green.missing_ranks" not in tags
    # Each node's energy is its scripted ground truth.
    for node_id, node in (("node-a", NODE_A), ("node-b", NODE_B)):
        got_j = m[f"green/node/{node_id}_kwh"] * J_PER_KWH
        assert got_j == pytest.approx(_truth_j(node, duration), abs=_tolerance_j(node))
    # The domains add up too (each GPU once, each node's CPU once).
    gpu_j = m["green/energy/gpu_kwh"] * J_PER_KWH
    assert gpu_j == pytest.approx(
        (NODE_A["gpu_w"] + NODE_B["gpu_w"]) * duration,
        abs=_tolerance_j(NODE_A) + _tolerance_j(NODE_B),
    )
    # Each node's own grid: node-a in France, node-b in Germany.
    fra, deu = (resolve_intensity(country=c).g_per_kwh for c in ("FRA", "DEU"))
    expected_kg = (m["green/node/node-a_kwh"] * fra + m["green/node/node-b_kwh"] * deu) / 1000
    assert m["green/co2eq_kg"] == pytest.approx(expected_kg, rel=1e-9)


def test_the_torchrun_example_runs(tmp_path: Path) -> None:
    # Rank 1 leaves as rank 0 ends its run: neither may crash on the way out (a thread left
    # inside torch's store client when Python finalises aborts the process).
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/m.db",
    }
    MlflowClient(env["MLFLOW_TRACKING_URI"]).search_experiments()
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(ROOT / "examples" / "torchrun_train.py"),
    ]
    for _ in range(2):
        proc = subprocess.run(
            cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        assert "over 1 node(s), 2 ranks" in proc.stdout
        assert "terminate called" not in proc.stderr


def test_two_ranks_on_one_node_count_the_host_once(tmp_path: Path) -> None:
    node = _node(tmp_path, "host-1", [("GPU-h-0", NODE_A["gpu_w"])], NODE_A["cpu_w"])
    shared = {"env": node["env"]}  # rank 1 sees the same GPU and CPU; rank 0 drives the CPU
    spec = {"duration_s": 3.0, "quick_runs": 5, "ranks": {"0": node, "1": shared}}
    result = _torchrun(tmp_path, spec)
    assert result["rc"] == 0, result["output"][-4000:]
    run = _run(result)
    m, tags = run.data.metrics, run.data.tags
    # Must show 2: one host, measured by two ranks, is counted once: what one rank alone
    # would record for a run of that length (not double).
    truth = _truth_j(NODE_A, m["green/duration_s"])
    assert m["green/energy_kwh"] * J_PER_KWH == pytest.approx(truth, abs=_tolerance_j(NODE_A))
    assert m["green/node/host-1_kwh"] == pytest.approx(m["green/energy_kwh"], rel=1e-12)
    assert tags["green.nodes"] == "1"
    assert tags["green.ranks"] == "2"
    # A run that ends as soon as it starts does not wait for the other rank's timeout.
    (quick,) = [line for line in result["output"].splitlines() if line.startswith("QUICK ")]
    assert float(quick.split()[1]) < 2.0


@pytest.mark.parametrize("live_reports", [False, True], ids=["no-report-yet", "live-reports"])
def test_a_rank_killed_mid_run_leaves_the_survivors_energy_and_a_tag(
    tmp_path: Path, live_reports: bool
) -> None:
    flush = {"MLFLOW_GREEN_FLUSH_INTERVAL_S": "1"} if live_reports else {}
    a = _node(tmp_path, "node-a", [("GPU-a-0", NODE_A["gpu_w"])], NODE_A["cpu_w"], **flush)
    b = _node(tmp_path, "node-b", [("GPU-b-0", NODE_B["gpu_w"])], NODE_B["cpu_w"], **flush)
    b["kill_after_s"] = 3.0
    # No collectives: rank 0 keeps working until torchrun stops it (SIGTERM) for rank 1's
    # death, as it does to the survivors of a real job.
    spec = {"duration_s": 60.0, "collectives": False, "ranks": {"0": a, "1": b}}
    started = time.monotonic()
    result = _torchrun(tmp_path, spec)
    assert time.monotonic() - started < 50, "the survivor hung"
    assert result["rc"] != 0  # torchrun reports the failed job
    client = MlflowClient(result["uri"])
    (run,) = client.search_runs(client.search_experiments()[0].experiment_id.split())
    m, tags = run.data.metrics, run.data.tags
    assert run.info.status == "KILLED", result["output"][-4000:]
    assert tags["green.missing_ranks"] == "1"
    assert tags["green.ranks"] == "2"
    truth = _truth_j(NODE_A, m["green/duration_s"])
    assert m["green/node/node-a_kwh"] * J_PER_KWH == pytest.approx(truth, abs=_tolerance_j(NODE_A))
    if not live_reports:  # nothing of rank 1 arrived: the run holds the survivor's energy
        assert tags["green.nodes"] == "1"
        assert "green/node/node-b_kwh" not in m
        assert m["green/energy_kwh"] == pytest.approx(m["green/node/node-a_kwh"], rel=1e-12)
    else:  # rank 1's last live report (about 1-2 s into the run) is kept, not lost
        assert tags["green.nodes"] == "2"
        node_b_j = m["green/node/node-b_kwh"] * J_PER_KWH
        assert _truth_j(NODE_B, 0.5) < node_b_j < _truth_j(NODE_B, 3.0) + _tolerance_j(NODE_B)
        # ... and rank 0's flushes showed the whole job while it ran.
        history = client.get_metric_history(run.info.run_id, "green/energy_kwh")
        assert len(history) >= 2


def test_a_rank_that_ends_early_sends_its_energy_at_exit(tmp_path: Path) -> None:
    a = _node(tmp_path, "node-a", [("GPU-a-0", NODE_A["gpu_w"])], NODE_A["cpu_w"])
    b = _node(tmp_path, "node-b", [("GPU-b-0", NODE_B["gpu_w"])], NODE_B["cpu_w"])
    b["duration_s"] = 1.0  # rank 1 leaves the job 3 s before rank 0 ends its run
    spec = {"duration_s": 4.0, "collectives": False, "ranks": {"0": a, "1": b}}
    result = _torchrun(tmp_path, spec)
    assert result["rc"] == 0, result["output"][-4000:]
    run = _run(result)
    m, tags = run.data.metrics, run.data.tags
    assert "green.missing_ranks" not in tags
    assert tags["green.nodes"] == "2"
    node_b_j = m["green/node/node-b_kwh"] * J_PER_KWH
    # Rank 1's window ran from the run's start to its exit (1 s of work, then shutdown).
    assert _truth_j(NODE_B, 1.0) - _tolerance_j(NODE_B) < node_b_j < _truth_j(NODE_B, 3.0)


def test_a_rank_without_autolog_is_named_not_waited_for(tmp_path: Path) -> None:
    a = _node(tmp_path, "node-a", [("GPU-a-0", NODE_A["gpu_w"])], NODE_A["cpu_w"])
    b = _node(tmp_path, "node-b", [("GPU-b-0", NODE_B["gpu_w"])], NODE_B["cpu_w"])
    b["autolog"] = False  # a common slip: autolog() only where the run is
    result = _torchrun(tmp_path, {"duration_s": 2.0, "ranks": {"0": a, "1": b}})
    assert result["rc"] == 0, result["output"][-4000:]
    run = _run(result)
    assert run.data.tags["green.missing_ranks"] == "1"
    assert run.data.tags["green.nodes"] == "1"
    assert "never joined the job's energy accounting" in result["output"]
    # The run's end waited the short join grace, not the dead-rank timeout.
    end_ms = run.info.end_time - (run.info.start_time + run.data.metrics["green/duration_s"] * 1000)
    assert end_ms < 4000


def test_a_run_on_every_rank_holds_that_ranks_share(tmp_path: Path) -> None:
    # One node, two GPUs, two ranks: torchrun's convention gives rank i the i-th GPU; the
    # host's CPU and RAM belong to the lowest rank.
    gpus = [("GPU-h-0", NODE_A["gpu_w"]), ("GPU-h-1", NODE_B["gpu_w"])]
    node = _node(tmp_path, "host-1", gpus, NODE_A["cpu_w"])
    spec = {"duration_s": 3.0, "runs": "every", "ranks": {"0": node, "1": {"env": node["env"]}}}
    result = _torchrun(tmp_path, spec)
    assert result["rc"] == 0, result["output"][-4000:]
    run0, run1 = _run(result, 0), _run(result, 1)
    m0, m1 = run0.data.metrics, run1.data.metrics
    ram = _ram_w()
    tol = _tolerance_j(NODE_A)
    d0, d1 = m0["green/duration_s"], m1["green/duration_s"]
    assert m0["green/energy_kwh"] * J_PER_KWH == pytest.approx(
        (NODE_A["gpu_w"] + NODE_A["cpu_w"] + ram) * d0, abs=tol
    )
    assert m1["green/energy_kwh"] * J_PER_KWH == pytest.approx(NODE_B["gpu_w"] * d1, abs=tol)
    assert "green/energy/cpu_kwh" not in m1  # counted elsewhere: no meter here, no metric
    assert run1.data.tags["green.rank"] == "1"
    assert run1.data.tags["green.cpu_meter"] == "none"  # counted in rank 0's run


# -- single process ----------------------------------------------------------------------------


def test_without_torch_a_rank_environment_measures_alone(tmp_path, monkeypatch) -> None:
    import mlflow

    for name, value in {
        "RANK": "0",
        "WORLD_SIZE": "2",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "9",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setitem(sys.modules, "torch", None)  # "import torch" fails here
    assert job_module.rank_info() is None
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        mlflow_green.autolog(log_artifacts=False)
        with mlflow.start_run() as run:
            pass
    finally:
        autologging.turn_off()
    got = MlflowClient().get_run(run.info.run_id)
    assert got.data.metrics["green/energy_kwh"] >= 0
    assert "green.nodes" not in got.data.tags


def test_rank_info_reads_torchrun_and_slurm(monkeypatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "4(x2)")
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("MLFLOW_GREEN_NODE_ID", "gpu node/7")
    info = job_module.rank_info()
    assert info is not None
    assert (info.rank, info.world_size, info.local_rank, info.local_world_size) == (5, 8, 1, 4)
    assert info.node_id == "gpu_node_7"  # a safe metric-name part
    assert info.namespace == "mlflow_green/77/0/"
    monkeypatch.setenv("SLURM_NTASKS", "1")
    assert job_module.rank_info() is None  # one task is not a distributed job


# -- combine, the pure function ----------------------------------------------------------------


def _report(rank: int, node: str, energy: dict, final: bool = True, **extra: Any) -> dict:
    return {
        "rank": rank,
        "node": node,
        "final": final,
        "own_runs": False,
        "scope": "machine",
        "energy_j": energy,
        "pue": 1.0,
        "g_per_kwh": 100.0,
        **extra,
    }


def test_combine_counts_each_device_once_and_falls_back_to_a_survivor() -> None:
    cpu = {"package-0": 100.0}
    nodes = {0: {"node": "a", "claims": ["G0"]}, 1: {"node": "a", "claims": ["G1"]}}
    both = {"gpu": {"G0": 10.0, "G1": 20.0}, "cpu": cpu, "ram": {"ram": 5.0}}
    seen_by_1 = {"gpu": {"G0": 11.0, "G1": 21.0}, "cpu": {"package-0": 101.0}, "ram": {"ram": 6.0}}
    job = combine({0: _report(0, "a", both), 1: _report(1, "a", seen_by_1)}, nodes, 2)
    # G0 from its claimant rank 0, G1 from rank 1, the host's CPU/RAM from rank 0.
    assert job.nodes["a"].energy_j_by_domain == {"gpu": 31.0, "cpu": 100.0, "ram": 5.0}
    # Rank 0's report lost: rank 1 stands in for everything it saw.
    job = combine({1: _report(1, "a", seen_by_1)}, nodes, 2)
    assert job.nodes["a"].energy_j_by_domain == {"gpu": 32.0, "cpu": 101.0, "ram": 6.0}
    assert job.missing_ranks == [0]


def test_combine_process_scope_adds_shares_and_skips_ranks_with_own_runs() -> None:
    nodes = {0: {"node": "a", "claims": []}, 1: {"node": "a", "claims": []}}
    r0 = _report(0, "a", {"cpu": {"package-0": 30.0}}, scope="process")
    r1 = _report(1, "a", {"cpu": {"package-0": 50.0}}, scope="process")
    assert combine({0: r0, 1: r1}, nodes, 2).nodes["a"].energy_j_by_domain["cpu"] == 80.0
    r1["own_runs"] = True  # rank 1 logs its share in its own run
    job = combine({0: r0, 1: r1}, nodes, 2)
    assert job.nodes["a"].energy_j_by_domain["cpu"] == 30.0
    assert job.own_run_ranks == [1]
