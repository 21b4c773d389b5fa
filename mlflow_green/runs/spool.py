"""Reports that could not reach the tracking server wait here for ``mlflow-green sync``.

One JSON file per run session in ``MLFLOW_GREEN_SPOOL_DIR`` (default
``~/.mlflow-green/spool``), named ``<run id>-<milliseconds>.json``: the tracking
URI the run was measured for, the run id, the exact metrics (with their original
timestamps and steps) and tags that were to be logged, whether artifacts were
wanted, the full report (for the artifacts), and what went wrong last. Uploading
is idempotent: a file whose upload failed halfway can be synced again.

Each report goes back to its own tracking URI (local store paths are saved
absolute), never to whatever ``MLFLOW_TRACKING_URI`` says at sync time, unless the
caller names another URI. A report whose run was deleted (or whose experiment
was) can never be uploaded: sync says so and keeps it until it is discarded.
"""

from __future__ import annotations

import os
import tempfile
import time
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow_green.runs._spool_delivery import is_transport_failure, undeliverable_reason
from mlflow_green.runs._spool_files import error_text, note_failure, read_payload, temp_json

if TYPE_CHECKING:
    from mlflow_green.measure.report import EnergyReport


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
    *,
    error: BaseException | str | None = None,
    page: dict[str, Any] | None = None,
    chart_only: bool = False,
) -> Path:
    """Save what could not be logged; return the file. Raises ``OSError`` if the disk refuses.

    Local work only (no network, no MLflow import): a run ending against a dead
    server spools at once. ``error`` is why logging failed, shown by ``sync --list``.
    """
    folder = spool_dir()
    folder.mkdir(parents=True, exist_ok=True)
    now_ms = int(time.time() * 1000)
    payload = {
        "tracking_uri": absolute_uri(str(tracking_uri)),
        "run_id": run_id,
        "log_artifacts": bool(log_artifacts),
        "spooled_at_ms": now_ms,
        "last_error": error_text(error) if error is not None else "",
        "attempts": 0,
        "undeliverable": "",
        # Original timestamps and steps: the run's values stay those measured at its end.
        "metrics": [
            [m.key, m.value, m.timestamp, m.step, getattr(m, "model_id", None)] for m in metrics
        ],
        "tags": {t.key: t.value for t in tags},
        "report": report.to_dict(),
        "page": page or {},
        "chart_only": bool(chart_only),
    }
    # Write then rename: a full disk leaves no half-written report for sync to choke on.
    tmp = temp_json(folder, run_id, payload)
    try:
        # A resumed run may be spooled once per session: never overwrite an earlier file.
        stamp = now_ms
        while (path := folder / f"{run_id}-{stamp}.json").exists():
            stamp += 1
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def absolute_uri(uri: str) -> str:
    """``uri`` with a relative local store path (``sqlite:///mlflow.db``, ``mlruns``) made absolute.

    MLflow resolves those against the working directory; a sync started elsewhere
    must still reach the store the run was measured for, not create a new one.
    """
    if uri.startswith("sqlite:///"):
        path, sep, query = uri[len("sqlite:///") :].partition("?")
        if path and path != ":memory:" and not os.path.isabs(path):
            return "sqlite:///" + os.path.abspath(path) + sep + query
        return uri
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "" and uri and not os.path.isabs(uri):
        return os.path.abspath(uri)
    if parsed.scheme == "file" and not parsed.netloc and not os.path.isabs(parsed.path):
        return Path(parsed.path).resolve().as_uri()
    return uri


@dataclass(frozen=True)
class SpooledReport:
    """One report waiting in the spool, as ``mlflow-green sync --list`` shows it."""

    path: Path
    run_id: str
    #: The URI the run was measured for ("" when the file cannot be read).
    tracking_uri: str
    spooled_at_ms: int
    size_bytes: int
    #: The latest reason it was not uploaded ("" when none is known).
    last_error: str = ""
    #: Failed ``sync`` attempts so far.
    attempts: int = 0
    #: Why its run can never take it (deleted run or experiment); "" when not known to be so.
    undeliverable: str = ""

    def age_s(self, now_s: float | None = None) -> float:
        """Seconds since the report was spooled."""
        return max(0.0, (time.time() if now_s is None else now_s) - self.spooled_at_ms / 1000)


@dataclass(frozen=True)
class SyncResult:
    """Outcome of handling one spooled report (upload, or the check for undeliverable ones)."""

    path: Path
    run_id: str
    #: Uploaded (``sync``), or checked (``discard_undeliverable``).
    ok: bool
    #: Why not; for an undeliverable report, why its run cannot take it.
    error: str = ""
    tracking_uri: str = ""
    #: The run is deleted or gone (or its experiment is): the report can never be uploaded.
    undeliverable: bool = False
    #: The file was removed without being uploaded.
    discarded: bool = False


def pending() -> list[Path]:
    """Spooled reports waiting to be uploaded."""
    folder = spool_dir()
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.json") if not p.name.startswith("."))


def pending_reports() -> list[SpooledReport]:
    """Every spooled report with its run, URI, age, size and last error; reads files only."""
    out = []
    for path in pending():
        run_id, _, stamp = path.stem.rpartition("-")
        named_ms = int(stamp) if stamp.isdigit() else 0
        size = 0
        try:
            size = path.stat().st_size
            payload = read_payload(path)
        except FileNotFoundError:
            continue  # uploaded or discarded meanwhile
        except (OSError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
            error = f"unreadable spool file: {error_text(exc)}"
            out.append(SpooledReport(path, run_id or path.stem, "", named_ms, size, error))
            continue
        out.append(
            SpooledReport(
                path=path,
                run_id=payload["run_id"],
                tracking_uri=payload["tracking_uri"],
                # Files from before these fields carry the time in their name only.
                spooled_at_ms=int(payload.get("spooled_at_ms") or named_ms),
                size_bytes=size,
                last_error=payload.get("last_error") or "",
                attempts=int(payload.get("attempts") or 0),
                undeliverable=payload.get("undeliverable") or "",
            )
        )
    return out


def discard(run_ids: Iterable[str]) -> list[SpooledReport]:
    """Delete every spooled report of these runs without uploading it; return what was deleted.

    Raises ``ValueError`` naming any run id that has no spooled report; nothing is
    deleted then.
    """
    wanted = list(dict.fromkeys(run_ids))
    reports = pending_reports()
    known = {r.run_id for r in reports}
    unknown = [r for r in wanted if r not in known]
    if unknown:
        names = ", ".join(repr(r) for r in unknown)
        accepted = ", ".join(sorted(known)) or "none"
        raise ValueError(
            f"no spooled report for run {names} in {spool_dir()}; "
            f"runs with spooled reports: {accepted}"
        )
    removed = [r for r in reports if r.run_id in wanted]
    for r in removed:
        r.path.unlink(missing_ok=True)
    return removed


def sync(tracking_uri: str | None = None, log_artifacts: bool = True) -> list[SyncResult]:
    """Upload every spooled report to its run; delete each file once uploaded.

    Each report goes to the tracking URI it was measured for; ``tracking_uri``
    sends them all to another one instead (e.g. a server that moved).
    ``log_artifacts=False`` skips the artifacts even where the report wanted them.
    A file that fails stays for the next sync, with the error noted in it. A
    report whose run is deleted or gone comes back with ``undeliverable=True``
    and stays until :func:`discard` or :func:`discard_undeliverable` removes it.
    A server that cannot be reached is probed once and costs no wait per file.
    """
    return _visit(tracking_uri, upload=True, log_artifacts=log_artifacts)


def discard_undeliverable(tracking_uri: str | None = None) -> list[SyncResult]:
    """Delete the reports whose run no longer exists, or is deleted; upload nothing.

    Each report's run is looked up where :func:`sync` would send it. One result per
    report: ``discarded`` for the removed ones, ``ok=False`` where the server could
    not answer (such reports are kept: an unreachable server is no evidence).
    """
    return _visit(tracking_uri, upload=False, log_artifacts=False)


def _visit(tracking_uri: str | None, *, upload: bool, log_artifacts: bool) -> list[SyncResult]:
    from mlflow.tracking._tracking_service.client import TrackingServiceClient

    results = []
    clients: dict[str, Any] = {}
    # One probe per server, and a server that fails one report is not tried for the others:
    # a dead server costs one wait per sync, not one per file.
    down: dict[str, str | None] = {}
    for path in pending():
        run_id = path.stem.rsplit("-", 1)[0]
        uri = tracking_uri or ""
        payload: dict[str, Any] | None = None
        try:
            try:
                payload = read_payload(path)
            except FileNotFoundError:
                continue  # another sync took it meanwhile
            run_id = payload["run_id"]
            uri = tracking_uri or payload["tracking_uri"]
            if uri not in down:
                down[uri] = _unavailable(uri)
            if (reason := down[uri]) is not None:
                if upload:
                    note_failure(path, payload, reason)
                results.append(SyncResult(path, run_id, False, reason, uri))
                continue
            if uri not in clients:
                clients[uri] = TrackingServiceClient(uri)
            client = clients[uri]
            gone = undeliverable_reason(client, uri, run_id)
            if gone is not None:
                if upload:
                    note_failure(path, payload, gone, undeliverable=gone)
                else:
                    path.unlink(missing_ok=True)
                results.append(SyncResult(path, run_id, not upload, gone, uri, True, not upload))
                continue
            if upload:
                _upload(client, run_id, payload, log_artifacts)
                path.unlink(missing_ok=True)
            results.append(SyncResult(path, run_id, True, "", uri))
        except Exception as exc:
            error = error_text(exc)
            if is_transport_failure(exc) and down.get(uri) is None:
                down[uri] = f"not tried: {uri} failed for run {run_id} ({error})"
            if payload is not None and upload:
                note_failure(path, payload, error)
            results.append(SyncResult(path, run_id, False, error, uri))
    return results


def _upload(client: Any, run_id: str, payload: dict[str, Any], log_artifacts: bool) -> None:
    from mlflow.entities import Metric, RunTag

    from mlflow_green.runs import artifacts

    # The timestamps and steps are those measured when the run ended, not the sync's.
    metrics = [
        Metric(k, v, ts, step, model_id=mid, run_id=run_id if mid else None)
        for k, v, ts, step, mid in payload["metrics"]
    ]
    tags = [RunTag(k, v) for k, v in payload["tags"].items()]
    artifacts.log_batches(client, run_id, metrics, tags)
    if log_artifacts and payload.get("log_artifacts", True):
        info = artifacts.PageInfo.from_dict(payload.get("page"))
        report = _report_from_dict(payload["report"])
        if payload.get("chart_only"):  # the run has the rest (a distributed job's page too)
            with tempfile.TemporaryDirectory(prefix="mlflow-green-") as folder:
                artifacts.log_chart(client, run_id, report, info, f"{folder}/power.png")
        else:
            artifacts.log_artifacts(client, run_id, report, info=info)


def _unavailable(uri: str) -> str | None:
    """Why the store at ``uri`` cannot be used now (server down, database file gone), or None."""
    from mlflow_green._tracking import unreachable_message

    return unreachable_message(uri) or missing_local_store(uri)


def missing_local_store(uri: str) -> str | None:
    """Why the local store ``uri`` names does not exist, or None (also for remote stores).

    MLflow would create an empty store there, and every run would look deleted.
    """
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///") :].partition("?")[0]
        if path and path != ":memory:" and not os.path.exists(path):
            return f"no SQLite database at {os.path.abspath(path)} (tracking URI {uri})"
        return None
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme in ("", "file") and not parsed.netloc:
        path = parsed.path if parsed.scheme else uri
        if not os.path.isdir(path):
            return f"no MLflow file store at {os.path.abspath(path)} (tracking URI {uri})"
    return None


def _report_from_dict(data: dict[str, Any]) -> EnergyReport:
    from dataclasses import fields

    from mlflow_green.measure.footprint import Footprint
    from mlflow_green.measure.report import EnergyReport, TimelinePoint

    names = {f.name for f in fields(EnergyReport)}
    kwargs = {k: v for k, v in data.items() if k in names}
    # report.json's footprint holds its settings and the figures computed from them.
    kwargs["footprint"] = Footprint.from_dict((data.get("footprint") or {}).get("settings"))
    kwargs["timeline"] = [
        TimelinePoint(p["t_s"], {k[:-2]: v for k, v in p.items() if k.endswith("_w")})
        for p in data.get("timeline", [])
    ]
    return EnergyReport(**kwargs)
