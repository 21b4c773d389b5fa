"""Serving settings from the environment: flush interval, experiment, Prometheus port, folder.

A serving worker has no caller to raise to: a bad value costs one warning that
names the variable, the value and what is accepted, and the setting falls back
(no Prometheus exporter for a bad port; metering off for a bad measuring setting).
Serving itself is never affected.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlflow_green._warnings import warn
from mlflow_green.measure._env import shown
from mlflow_green.measure.config import AutologConfig, MeasureConfig

EXPERIMENT_ENV = "MLFLOW_GREEN_SERVING_EXPERIMENT"
PROMETHEUS_PORT_ENV = "MLFLOW_GREEN_PROMETHEUS_PORT"
DIR_ENV = "MLFLOW_GREEN_SERVING_DIR"
DEFAULT_EXPERIMENT = "mlflow-green-serving"
# Handed by the `mlflow models serve` process to its workers (see hook.add_session_env).
MODEL_URI_ENV = "_MLFLOW_GREEN_SERVING_MODEL_URI"
PORT_ENV = "_MLFLOW_GREEN_SERVING_PORT"
SESSION_ENV = "_MLFLOW_GREEN_SERVING_SESSION"
#: MLflow's scoring server finds the model's local copy here (set for its workers only).
MODEL_PATH_ENV = "__pyfunc_model_path__"

_PORT = re.compile(r"[0-9]{1,5}")


@dataclass(frozen=True)
class ServingSettings:
    """What one serving worker needs to know; see :func:`from_env`."""

    measure: MeasureConfig
    flush_interval_s: float
    experiment: str
    prometheus_port: int | None
    folder: Path
    """This serving session's shared folder (counts, state); the lock file is beside it."""
    key_folder: Path
    """Every session of this model and port (older sessions' folders are cleaned up here)."""
    model_uri: str
    session: str
    notes: tuple[str, ...] = ()
    """Tolerated problems (an unknown location): said once by the host meter."""


def _warn(message: str) -> None:
    warn(f"mlflow-green: {message}", RuntimeWarning, stacklevel=3)


def prometheus_port() -> int | None:
    """``MLFLOW_GREEN_PROMETHEUS_PORT`` as a port; None when unset, blank or bad (one warning)."""
    raw = os.environ.get(PROMETHEUS_PORT_ENV, "")
    if not raw.strip():
        return None
    if _PORT.fullmatch(raw.strip()) and 1 <= int(raw) <= 65535:
        return int(raw)
    _warn(
        f"{PROMETHEUS_PORT_ENV}={shown(raw)} is not a port: expected a whole number from 1 to "
        "65535; the Prometheus exporter is off (serving and its metering go on)"
    )
    return None


def _session_of_parent() -> str:
    # Without the serve command's hand-over (uvicorn started by hand): the workers'
    # common parent, with its start time against pid reuse.
    ppid = os.getppid()
    try:
        start = Path(f"/proc/{ppid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        start = "0"
    return f"ppid-{ppid}-{start}"


def safe_name(text: str) -> str:
    """``text`` as a folder name: letters, digits, ``_.-`` (others become ``_``), 40 at most."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:40]


def from_env() -> ServingSettings | None:
    """The serving settings of this worker; None (after one warning) when metering cannot run."""
    try:
        config = AutologConfig.build(unknown_location_ok=True)
    except ValueError as exc:
        _warn(f"{exc}; the served model is not metered (serving goes on)")
        return None
    # A serving host's energy is the machine's, idle time included: process scope would
    # give the share of one worker, which says nothing about the host.
    measure = dataclasses.replace(config.measure, scope="machine")
    model_uri = os.environ.get(MODEL_URI_ENV) or os.environ.get(MODEL_PATH_ENV, "model")
    port = os.environ.get(PORT_ENV, "")
    session = os.environ.get(SESSION_ENV) or _session_of_parent()
    given = os.environ.get(DIR_ENV, "").strip()
    # Per user: a shared name in /tmp could be planted by another user beforehand.
    root = Path(given or tempfile.gettempdir()) / f"mlflow-green-serving-{os.geteuid()}"
    digest = hashlib.sha256(f"{model_uri}\0{port}".encode()).hexdigest()[:16]
    key_folder = root / f"{safe_name(model_uri)}-{port or 'noport'}-{digest}"
    folder = key_folder / safe_name(session)
    from mlflow_green.serving.shared import prepare

    try:
        prepare(root, key_folder, folder)
    except OSError as exc:  # UnsafeFolder, or a folder that cannot be made
        where = f" ({DIR_ENV}={shown(given)})" if given else ""
        _warn(
            f"the serving metering folder is unsafe or unusable{where}: {exc}; the served "
            "model is not metered (serving goes on)"
        )
        return None
    return ServingSettings(
        measure=measure,
        flush_interval_s=config.flush_interval_s,
        experiment=os.environ.get(EXPERIMENT_ENV, "").strip() or DEFAULT_EXPERIMENT,
        prometheus_port=prometheus_port(),
        folder=folder,
        key_folder=key_folder,
        model_uri=model_uri,
        session=session,
        notes=config.warnings,
    )
