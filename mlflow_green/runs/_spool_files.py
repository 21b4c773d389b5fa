"""The spool's files on disk: atomic JSON writes, reading one back, noting a failed attempt.

Every file is written to a hidden temporary name and renamed into place, so a
full disk or a crash never leaves half a report for ``sync`` to choke on.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

#: Longest error text kept in a spooled file (server answers can be whole HTML pages).
MAX_ERROR_CHARS = 2000


def note_failure(path: Path, payload: dict[str, Any], error: str, undeliverable: str = "") -> None:
    """Record the failure in the report's file for ``--list``; best effort."""
    payload = {
        **payload,
        "last_error": error,
        "last_attempt_ms": int(time.time() * 1000),
        "attempts": int(payload.get("attempts") or 0) + 1,
        "undeliverable": undeliverable,
    }
    try:
        tmp = temp_json(path.parent, path.stem, payload)
        try:
            if path.exists():  # not uploaded by a concurrent sync meanwhile
                os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    except OSError:
        pass  # a read-only spool still syncs; only the note is lost


def temp_json(folder: Path, stem: str, payload: dict[str, Any]) -> str:
    """``payload`` written to a new hidden file in ``folder`` (``.<stem>-*.tmp``), to be
    renamed into place by the caller; nothing is left behind when writing fails."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{stem}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(payload, f)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def read_payload(path: Path) -> dict[str, Any]:
    """The spooled payload in ``path``; raises ``ValueError`` if it is not a spooled report."""
    payload = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(payload, dict) or not payload.get("run_id") or "tracking_uri" not in payload:
        raise ValueError(f"{path} is not a spooled mlflow-green report")
    return payload


def error_text(error: BaseException | str) -> str:
    """``error`` as the text a spooled file keeps (at most :data:`MAX_ERROR_CHARS`)."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."
