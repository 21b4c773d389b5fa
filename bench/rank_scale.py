"""Ranking at registry scale: ``rank_models`` vs a naive per-version ``get_run`` loop.

Creates N model versions (default 10,000, spread over registered models of 100
versions each) whose runs hold ``accuracy``, ``green/energy_kwh`` and
``green/co2eq_kg``, written straight into a fresh SQLite database through
MLflow's own SQLAlchemy stores' sessions and ORM classes (one transaction each
for runs and versions: creating 10,000 versions over HTTP would take minutes).
Then starts a real ``mlflow server`` on 127.0.0.1 (free port, own process group,
stopped at the end; MLflow's default of 4 worker processes) on that database and
times, through it, after one untimed call that warms the server's workers up:

* ``mlflow_green.registry.rank.rank_models()`` (median of 3 calls): paged registry
  searches, then ``search_runs`` over ``attributes.run_id IN (...)`` batches;
* the naive way: the same paged ``search_model_versions``, then one
  ``MlflowClient.get_run`` per version. It is run on a sample (default 500
  versions, in slices between the timed ``rank_models`` calls so that both meet
  the same machine) and extrapolated to N: ``list time + N x mean get_run time``.

The server runs under gunicorn (``--gunicorn-opts``), not MLflow's default uvicorn:
uvicorn with more than one worker leaves Nagle's algorithm on for keep-alive
connections (uvicorn issue #3149), so each request of the naive loop would wait
~43 ms for a delayed ACK (52 ms per ``get_run`` here instead of ~9 ms), which
would flatter the speed-up five-fold; uvicorn with one worker serialises the
server. ``--server uvicorn --workers 1`` measures that configuration.

HTTP requests are counted at MLflow's HTTP boundary
(``mlflow.utils.rest_utils.http_request``). Last line:
``rank_s=<x> naive_s=<y> speedup=<z> requests=<n> naive_requests=<m>``.

    python bench/rank_scale.py            # 10,000 versions, ~2 minutes on 2 cores
    python bench/rank_scale.py --quick    # 1,000 versions, under a minute
"""

from __future__ import annotations

import random
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import _common

from tests.mlflow_server import MlflowServer

VERSIONS_PER_MODEL = 100


def populate(db: Path, versions: int, seed: int = 0) -> float:
    """Create the schema and ``versions`` model versions with their runs; returns seconds."""
    from mlflow.store.model_registry.dbmodels.models import SqlModelVersion, SqlRegisteredModel
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlRun
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingStore

    start = time.perf_counter()
    uri = f"sqlite:///{db}"
    artifacts = db.parent / "artifacts"
    tracking = TrackingStore(uri, artifacts.as_uri())  # creates and migrates the schema
    registry = RegistryStore(uri)
    experiment_id = tracking.create_experiment("rank-scale")
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    runs, metrics, models, model_versions = [], [], [], []
    for i in range(versions):
        run_id = uuid.uuid4().hex
        accuracy = rng.uniform(0.6, 0.99)
        energy_kwh = rng.lognormvariate(-6.0, 1.5)
        runs.append(
            SqlRun(
                run_uuid=run_id,
                name=f"run-{i}",
                source_type="LOCAL",
                source_name="",
                entry_point_name="",
                user_id="bench",
                status="FINISHED",
                start_time=now,
                end_time=now + 1000,
                source_version="",
                lifecycle_stage="active",
                artifact_uri=f"{artifacts.as_uri()}/{experiment_id}/{run_id}/artifacts",
                experiment_id=int(experiment_id),
            )
        )
        for key, value in (
            ("accuracy", accuracy),
            ("green/energy_kwh", energy_kwh),
            ("green/co2eq_kg", energy_kwh * 0.056),
        ):
            for table in (SqlMetric, SqlLatestMetric):
                metrics.append(
                    table(
                        key=key, value=value, timestamp=now, step=0, is_nan=False, run_uuid=run_id
                    )
                )
        model, version = divmod(i, VERSIONS_PER_MODEL)
        name = f"model-{model:04d}"
        if version == 0:
            models.append(SqlRegisteredModel(name=name, creation_time=now, last_updated_time=now))
        model_versions.append(
            SqlModelVersion(
                name=name,
                version=version + 1,
                creation_time=now,
                last_updated_time=now,
                current_stage="None",
                source=f"models:/{name}/{version + 1}",
                storage_location=f"models:/{name}/{version + 1}",
                run_id=run_id,
                status="READY",
            )
        )
    with tracking.ManagedSessionMaker() as session:
        session.add_all(runs)
        session.flush()  # runs before the metrics that reference them
        session.add_all(metrics)
    with registry.ManagedSessionMaker() as session:
        session.add_all(models)
        session.flush()
        session.add_all(model_versions)
    tracking.engine.dispose()
    registry.engine.dispose()
    return time.perf_counter() - start


class RequestCounter:
    """Counts calls of MLflow's ``http_request``, through which every REST store call goes."""

    def __init__(self) -> None:
        from mlflow.utils import rest_utils

        self.count = 0
        self._module = rest_utils
        self._original = rest_utils.http_request

        def counting(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return self._original(*args, **kwargs)

        rest_utils.http_request = counting

    def take(self) -> int:
        n, self.count = self.count, 0
        return n

    def close(self) -> None:
        self._module.http_request = self._original


class Naive:
    """The naive way: paged ``search_model_versions``, then one ``get_run`` per version."""

    def __init__(self, url: str) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient(url, registry_uri=url)
        self.list_s = 0.0
        self.pages = 0
        self.versions: list[Any] = []
        self.get_run_s: list[float] = []

    def list_versions(self) -> None:
        start = time.perf_counter()
        token = None
        while True:
            page = self.client.search_model_versions(max_results=10_000, page_token=token)
            self.pages += 1
            self.versions += page
            token = page.token
            if not token:
                break
        self.list_s = time.perf_counter() - start

    def get_runs(self, versions: list[Any]) -> None:
        for v in versions:
            start = time.perf_counter()
            run = self.client.get_run(v.run_id)
            run.data.metrics.get("accuracy"), run.data.metrics.get("green/energy_kwh")
            self.get_run_s.append(time.perf_counter() - start)


def main() -> None:
    parser = _common.parser(__doc__, "1,000 versions, sample 200")
    parser.add_argument("--versions", type=int, default=None, help="default 10,000")
    parser.add_argument("--naive-sample", type=int, default=None, help="default 500")
    parser.add_argument(
        "--server",
        choices=["gunicorn", "uvicorn"],
        default="gunicorn",
        help="mlflow server's HTTP server (see the module docstring)",
    )
    parser.add_argument(
        "--workers", type=int, default=4, help="server worker processes (mlflow's default: 4)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed rank_models calls")
    args = parser.parse_args()
    versions = args.versions or (1_000 if args.quick else 10_000)
    sample = args.naive_sample or (200 if args.quick else 500)

    _common.begin(args)

    root = Path(tempfile.mkdtemp(prefix="mlflow-green-rank-scale-"))
    server = None
    try:
        db = root / "mlflow.db"
        print(f"creating {versions} model versions in {db} ...", flush=True)
        print(f"  populated in {populate(db, versions):.1f} s", flush=True)
        server = MlflowServer(root, workers=args.workers, gunicorn=args.server == "gunicorn")
        server.start()
        print(f"  server healthy at {server.url} after {server.wait_healthy():.1f} s", flush=True)

        from mlflow_green.registry.rank import rank_models

        counter = RequestCounter()
        naive = Naive(server.url)
        naive.list_versions()  # also warms the server's workers up for get_run
        naive_list_requests = counter.take()
        # One untimed call first: each server worker process pays its first-request
        # costs (lazy imports, connections) once; the naive loop runs on warm workers too.
        rank_models("accuracy", tracking_uri=server.url)
        counter.take()
        # Timed calls alternate with slices of the naive sample, so that both meet
        # the same machine (other load on a small machine shifts either).
        picked = random.Random(1).sample(naive.versions, min(sample, len(naive.versions)))
        slices = [picked[i :: args.repeats] for i in range(args.repeats)]
        times, naive_requests_sampled = [], 0
        for i in range(args.repeats):
            start = time.perf_counter()
            frame = rank_models("accuracy", tracking_uri=server.url)
            times.append(time.perf_counter() - start)
            if i == 0:
                requests = counter.take()
            counter.take()
            naive.get_runs(slices[i])
            naive_requests_sampled += counter.take()
        counter.close()
        rank_s = statistics.median(times)
        ranked = int(frame["rank"].notna().sum())
        if len(frame) != versions or ranked != versions:
            raise SystemExit(f"expected {versions} ranked rows, got {len(frame)} ({ranked} ranked)")
        print(
            f"rank_models: {len(frame)} versions ranked in "
            f"{', '.join(f'{t:.2f}' for t in times)} s (median {rank_s:.2f} s), "
            f"{requests} requests each, {int(frame['pareto'].sum())} on the Pareto front"
        )
        found, sampled = len(naive.versions), len(naive.get_run_s)
        assert naive_requests_sampled == sampled, (naive_requests_sampled, sampled)
        per_run_s = statistics.mean(naive.get_run_s)
        naive_s = naive.list_s + per_run_s * found
        naive_requests = naive_list_requests + found
        print(
            f"naive loop: listing {found} versions {naive.list_s:.2f} s "
            f"({naive_list_requests} requests); get_run measured on a sample of {sampled} "
            f"(median {statistics.median(naive.get_run_s) * 1000:.2f} ms, "
            f"mean {per_run_s * 1000:.2f} ms); extrapolated to all {found}: "
            f"{naive_s:.1f} s, {naive_requests} requests"
        )
        print(
            f"rank_s={rank_s:.2f} naive_s={naive_s:.1f} speedup={naive_s / rank_s:.1f} "
            f"requests={requests} naive_requests={naive_requests}"
        )
        results = {
            "versions": versions,
            "server": f"{args.server}, {args.workers} workers",
            "rank_s": times,
            "rank_median_s": rank_s,
            "requests": requests,
            "naive_sample": sampled,
            "naive_get_run_median_ms": statistics.median(naive.get_run_s) * 1000,
            "naive_s": naive_s,
            "naive_requests": naive_requests,
            "speedup": naive_s / rank_s,
        }
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
    _common.save("rank_scale", args, results)


if __name__ == "__main__":
    main()
