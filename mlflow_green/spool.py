"""Reports that could not reach the tracking server wait here for ``mlflow-green sync``.

One JSON file per run in ``MLFLOW_GREEN_SPOOL_DIR`` (default
``~/.mlflow-green/spool``): the tracking URI, the run id, the exact metrics and
tags that were to be logged, and the full report (for the artifacts).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow_green.report import EnergyReport


def spool_dir() -> Path:
    """The spool folder (``MLFLOW_GREEN_SPOOL_DIR`` or ``~/.mlflow-green/spool``)."""
    return Path(os.environ.get("MLFLOW_GREEN_SPOOL_DIR") or Path.home() / ".mlflow-green" / "spool")


def write(tracking_uri: str, run_id: str, report: EnergyReport, metrics: list, tags: list) -> Path:
    """Save what could not be logged; return the file. Raises ``OSError`` if the disk refuses."""
    folder = spool_dir()
    folder.mkdir(parents=True, exist_ok=True)
    payload = {
        "tracking_uri": str(tracking_uri),
        "run_id": run_id,
        "metrics": [
            [m.key, m.value, m.timestamp, m.step, getattr(m, "model_id", None)] for m in metrics
        ],
        "tags": {t.key: t.value for t in tags},
        "report": report.to_dict(),
    }
    # Write then rename: a full disk leaves no half-written report for sync to choke on.
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{run_id}-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(payload, f)
        path = folder / f"{run_id}.json"
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
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def sync(tracking_uri: str | None = None, log_artifacts: bool = True) -> list[SyncResult]:
    """Upload every spooled report to its run; delete each file once uploaded.

    ``tracking_uri`` overrides the URI saved with each report (e.g. a server
    that moved).
    """
    from mlflow.entities import Metric, RunTag
    from mlflow.tracking._tracking_service.client import TrackingServiceClient

    from mlflow_green.autolog import _log_artifacts, _log_batches

    results = []
    for path in pending():
        run_id = path.stem
        try:
            payload: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            run_id = payload["run_id"]
            client = TrackingServiceClient(tracking_uri or payload["tracking_uri"])
            metrics = [
                Metric(k, v, ts, step, model_id=mid, run_id=run_id if mid else None)
                for k, v, ts, step, mid in payload["metrics"]
            ]
            tags = [RunTag(k, v) for k, v in payload["tags"].items()]
            _log_batches(client, run_id, metrics, tags)
            if log_artifacts:
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
