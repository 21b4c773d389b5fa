"""Reports that could not reach the tracking server wait here for ``mlflow-green sync``.

One JSON file per run session in ``MLFLOW_GREEN_SPOOL_DIR`` (default
``~/.mlflow-green/spool``), named ``<run id>-<milliseconds>.json``: the tracking
URI, the run id, the exact metrics and tags that were to be logged, whether
artifacts were wanted, and the full report (for the artifacts). Uploading is
idempotent: a file whose upload failed halfway can be synced again.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow_green.report import EnergyReport


def spool_dir() -> Path:
    """The spool folder (``MLFLOW_GREEN_SPOOL_DIR`` or ``~/.mlflow-green/spool``)."""
    return Path(os.environ.get("MLFLOW_GREEN_SPOOL_DIR") or Path.home() / ".mlflow-green" / "spool")


def write(
    tracking_uri: str,
    run_id: str,
    report: EnergyReport,
    metrics: list,
    tags: list,
    log_artifacts: bool = True,
) -> Path:
    """Save what could not be logged; return the file. Raises ``OSError`` if the disk refuses."""
    folder = spool_dir()
    folder.mkdir(parents=True, exist_ok=True)
    payload = {
        "tracking_uri": str(tracking_uri),
        "run_id": run_id,
        "log_artifacts": bool(log_artifacts),
        "metrics": [
            [m.key, m.value, m.timestamp, m.step, getattr(m, "model_id", None)] for m in metrics
        ],
        "tags": {t.key: t.value for t in tags},
        "report": report.to_dict(),
    }
    # Write then rename: a full disk leaves no half-written report for sync to choke on.
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{run_id}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(payload, f)
        # A resumed run may be spooled once per session: never overwrite an earlier file.
        stamp = int(time.time() * 1000)
        while (path := folder / f"{run_id}-{stamp}.json").exists():
            stamp += 1
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@dataclass(frozen=True)
class SyncResult:
    """Outcome of uploading one spooled report."""

    path: Path
    run_id: str
    ok: bool
    error: str = ""


def pending() -> list[Path]:
    """Spooled reports waiting to be uploaded."""
    folder = spool_dir()
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.json") if not p.name.startswith("."))


def sync(tracking_uri: str | None = None, log_artifacts: bool = True) -> list[SyncResult]:
    """Upload every spooled report to its run; delete each file once uploaded.

    ``tracking_uri`` overrides the URI saved with each report (e.g. a server
    that moved). ``log_artifacts=False`` skips the artifacts even where the
    report wanted them. A file that fails stays for the next sync.
    """
    from mlflow.entities import Metric, RunTag
    from mlflow.tracking._tracking_service.client import TrackingServiceClient

    from mlflow_green._tracking import unreachable_reason
    from mlflow_green.hooks import _log_artifacts, _log_batches

    results = []
    down: dict[str, str | None] = {}  # one probe per server, not one wait per file
    for path in pending():
        run_id = path.stem.rsplit("-", 1)[0]
        try:
            payload: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            run_id = payload["run_id"]
            uri = tracking_uri or payload["tracking_uri"]
            if uri not in down:
                down[uri] = unreachable_reason(uri)
            if down[uri] is not None:
                raise ConnectionError(f"tracking server {uri} is unreachable: {down[uri]}")
            client = TrackingServiceClient(uri)
            metrics = [
                Metric(k, v, ts, step, model_id=mid, run_id=run_id if mid else None)
                for k, v, ts, step, mid in payload["metrics"]
            ]
            tags = [RunTag(k, v) for k, v in payload["tags"].items()]
            _log_batches(client, run_id, metrics, tags)
            if log_artifacts and payload.get("log_artifacts", True):
                _log_artifacts(client, run_id, _report_from_dict(payload["report"]))
            path.unlink()
            results.append(SyncResult(path, run_id, True))
        except Exception as exc:
            results.append(SyncResult(path, run_id, False, f"{type(exc).__name__}: {exc}"))
    return results


def _report_from_dict(data: dict[str, Any]) -> EnergyReport:
    from dataclasses import fields

    from mlflow_green.report import EnergyReport, TimelinePoint

    names = {f.name for f in fields(EnergyReport)}
    kwargs = {k: v for k, v in data.items() if k in names}
    kwargs["timeline"] = [
        TimelinePoint(p["t_s"], {k[:-2]: v for k, v in p.items() if k.endswith("_w")})
        for p in data.get("timeline", [])
    ]
    return EnergyReport(**kwargs)
