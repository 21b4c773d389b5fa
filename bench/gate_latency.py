"""Latency the budget gate adds to ``set_registered_model_alias`` on a real ``mlflow server``.

Two servers on identical copies of one SQLite database (same runs, models and
versions): ``plain`` with ``--registry-store-uri sqlite:///...`` and ``gated``
with ``--registry-store-uri green+sqlite:///...``. The same
``MlflowClient.set_registered_model_alias`` call goes to each, interleaved
call by call, warm; the medians are compared. Two cases:

* ``budget``: the model has a budget and the version passes it, so the gate
  does all its work (model tags, the version, the run's metrics) before the
  alias is written: the figure reported last;
* ``no-budget``: the gate reads the model's tags and steps aside.

    python bench/gate_latency.py [--quick]

Last line: ``gate_added_ms=<median added latency, budget case>``.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

import _common

from tests.mlflow_server import MlflowServer


def _populate(db: Path) -> None:
    """Runs with green metrics and two models, one with a budget (its version passes it)."""
    from mlflow import MlflowClient

    from mlflow_green.registry.budgets import set_budget

    client = MlflowClient(f"sqlite:///{db}")
    exp = client.create_experiment("gate-latency", artifact_location=(db.parent / "a").as_uri())
    for model, budget in (("budgeted", 1.0), ("free", None)):
        client.create_registered_model(model)
        if budget is not None:
            set_budget(model, max_kwh=budget, max_co2eq_kg=1.0, client=client)
        for energy in (0.2, 0.3):  # two versions: the alias moves between them
            run_id = client.create_run(exp).info.run_id
            client.log_metric(run_id, "green/energy_kwh", energy)
            client.log_metric(run_id, "green/co2eq_kg", energy * 0.056)
            client.log_param(run_id, "lr", "0.1")
            client.set_terminated(run_id)
            client.create_model_version(model, f"runs:/{run_id}/model", run_id=run_id)


def main() -> None:
    parser = _common.parser(__doc__, "150 calls per case")
    args = parser.parse_args()
    calls = 150 if args.quick else 1000
    _common.begin(args)

    from mlflow import MlflowClient

    folder = Path(tempfile.mkdtemp(prefix="mlflow-green-gate-bench-"))
    servers: dict[str, MlflowServer] = {}
    try:
        (folder / "plain").mkdir()
        (folder / "gated").mkdir()
        template = folder / "template.db"
        _populate(template)
        for mode in ("plain", "gated"):
            shutil.copyfile(template, folder / mode / "mlflow.db")
            registry = "sqlite:///{db}" if mode == "plain" else "green+sqlite:///{db}"
            servers[mode] = MlflowServer(folder / mode, registry_store_uri=registry)
            servers[mode].start()
        clients = {}
        for mode, server in servers.items():
            server.wait_healthy()
            clients[mode] = MlflowClient(tracking_uri=server.url, registry_uri=server.url)

        # The gate is really there: an over-budget alias is refused by "gated" only.
        probe = clients["gated"]
        probe.set_registered_model_tag("budgeted", "green.budget_kwh", "0.25")
        try:
            probe.set_registered_model_alias("budgeted", "probe", "2")
            raise SystemExit("the gated server accepted an over-budget alias")
        except Exception as exc:
            if "PERMISSION_DENIED" not in str(getattr(exc, "error_code", "")):
                raise
        probe.set_registered_model_tag("budgeted", "green.budget_kwh", "1.0")

        results: dict[str, dict[str, float]] = {}
        for model in ("budgeted", "free"):
            times: dict[str, list[float]] = {"plain": [], "gated": []}
            for i in range(calls + 10):  # the first 10 of each warm up
                version = str(1 + i % 2)
                order = ("plain", "gated") if i % 2 == 0 else ("gated", "plain")
                for mode in order:
                    start = time.perf_counter()
                    clients[mode].set_registered_model_alias(model, "champion", version)
                    elapsed_ms = (time.perf_counter() - start) * 1000
                    if i >= 10:
                        times[mode].append(elapsed_ms)
            results[model] = {m: statistics.median(t) for m, t in times.items()}

        label = {"budgeted": "budget", "free": "no-budget"}
        print(
            f"set_registered_model_alias through mlflow server (SQLite, 1 worker), "
            f"median of {calls} interleaved calls each:"
        )
        for model, med in results.items():
            added = med["gated"] - med["plain"]
            print(
                f"  {label[model]:10s} plain {med['plain']:7.2f} ms   gated {med['gated']:7.2f} ms"
                f"   added {added:+6.2f} ms"
            )
        added = results["budgeted"]["gated"] - results["budgeted"]["plain"]
        print(f"gate_added_ms={added:.2f}")
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    _common.save("gate_latency", args, {"calls": calls, "median_ms": results})


if __name__ == "__main__":
    main()
