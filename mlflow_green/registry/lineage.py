"""Which run's energy counts for a model version: the run that produced its artifacts.

A version's ``run_id`` is a claim its creator made; the gate does not take it on
trust. The run whose energy counts is found from where the artifacts are:

* source ``models:/<model_id>``, or a version with a ``model_id``: that
  LoggedModel's ``source_run_id``, read from the tracking store; the run must be in
  the LoggedModel's experiment, and any other source must lie under the
  LoggedModel's artifact location. The version's ``run_id`` is ignored;
* any other source is judged by the version's artifact location (its download
  URI: for a copy, ``models:/<name>/<version>``, the location of the artifacts it
  was copied from, recorded by the store at copy time; otherwise the source):

  - ``runs:/<run_id>/<path>``: that run;
  - under the claimed ``run_id``'s ``artifact_uri``, a run's artifact folder
    (``.../<run_id>/artifacts``) or a LoggedModel's (``.../models/<model_id>/artifacts``,
    each checked against the entity itself): the innermost of them, since artifact
    folders can nest (an experiment's location may lie inside a run's artifacts);
    for a LoggedModel, its source run.

  "Under" is compared segment by segment, as written: no prefix tricks
  (``.../artifacts-evil``), no ``.``/``..`` or encoded ``/`` segments, no query or
  fragment; scheme and host case-insensitively.

Otherwise the energy is unknown and the gate fails closed, saying why. A run
that is deleted (``lifecycle_stage`` deleted) is no evidence either.

The reads go through a :class:`Reader`: :class:`ClientReader` (an ``MlflowClient``)
for the client check, the gated store's own reader on the server.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Any, Protocol

from mlflow.exceptions import MlflowException

from mlflow_green.registry.rule import GATE_METRICS, take_values

_DELETED = "deleted"  # mlflow.entities.LifecycleStage.DELETED


@dataclass(frozen=True)
class VersionRecord:
    """What the gate reads of a model version (``location``: its download URI)."""

    source: str | None
    run_id: str | None
    model_id: str | None
    location: str | None


@dataclass(frozen=True)
class RunRecord:
    """What the gate reads of a run."""

    run_id: str
    experiment_id: str
    artifact_uri: str | None
    lifecycle_stage: str


@dataclass(frozen=True)
class LoggedModelRecord:
    """What the gate reads of a LoggedModel."""

    model_id: str
    experiment_id: str
    artifact_location: str | None
    source_run_id: str | None


@dataclass(frozen=True)
class Evidence:
    """The run whose energy counts and the values taken from it, or why there are none.

    ``metrics`` maps each gate metric logged to the run to the value the gate
    takes (:func:`mlflow_green.registry.rule.gate_value`); ``None`` with ``why`` when
    the energy is unknown.
    """

    run_id: str | None
    metrics: dict[str, float] | None
    why: str | None = None


class Reader(Protocol):
    """Reads for :func:`evidence`. Each raises ``MlflowException`` when the entity is absent."""

    def version(self, name: str, version: str) -> VersionRecord: ...

    def run(self, run_id: str) -> RunRecord: ...

    def logged_model(self, model_id: str) -> LoggedModelRecord: ...

    def metrics(self, run_id: str) -> dict[str, float]: ...


class _Unknown(Exception):
    """The energy is unknown; the message says why."""


# ---------------------------------------------------------------------------
# URIs
# ---------------------------------------------------------------------------


def _unquote_fully(text: str) -> str:
    while (unquoted := urllib.parse.unquote(text)) != text:
        text = unquoted
    return text


def _uri_parts(uri: str | None) -> tuple[str, str, list[str]] | None:
    """(scheme, authority, path segments as written) of a location; ``None`` unless plain.

    A plain location has no query or fragment, no backslash or NUL, and no segment
    that is, once percent-decoded (repeatedly), ``.``, ``..`` or holds a ``/``: each
    of those could name a place outside the prefix it seems to lie under. A path
    without scheme is a local file (``file``).
    """
    if not isinstance(uri, str) or not uri or "\\" in uri or "\x00" in uri:
        return None
    try:
        parts = urllib.parse.urlsplit(uri, allow_fragments=True)
    except ValueError:  # e.g. an unbalanced "[" in the host
        return None
    if parts.query or parts.fragment or "?" in uri or "#" in uri:
        return None
    scheme, netloc = parts.scheme.lower(), parts.netloc.lower()
    if scheme in ("", "file"):
        scheme, netloc = "file", "" if netloc == "localhost" else netloc
    segments = parts.path.split("/")
    for segment in segments:
        decoded = _unquote_fully(segment)
        if decoded in (".", "..") or "/" in decoded or "\\" in decoded or "\x00" in decoded:
            return None
    return scheme, netloc, segments


def is_within(source: str | None, root: str | None) -> bool:
    """Whether location ``source`` lies under the folder ``root`` (or is it).

    Compared as written, segment by segment (``…/artifacts-evil`` is not under
    ``…/artifacts``), scheme and authority case-insensitively, one trailing ``/``
    of either ignored. Spellings that differ (an encoded character, a proxy URL
    for an ``mlflow-artifacts:`` root) do not match: the gate then fails closed.
    """
    src, base = _uri_parts(source), _uri_parts(root)
    if src is None or base is None or src[:2] != base[:2]:
        return False
    src_segments, base_segments = src[2], base[2]
    if src_segments and src_segments[-1] == "":
        src_segments = src_segments[:-1]
    if base_segments and base_segments[-1] == "":
        base_segments = base_segments[:-1]
    if not any(base_segments):  # a root of "/" or "" would hold everything
        return False
    return src_segments[: len(base_segments)] == base_segments


def _parse_models_uri(source: str) -> Any:
    """MLflow's own reading of a ``models:/`` URI (the one its stores use), or ``_Unknown``."""
    from mlflow.store.artifact.utils.models import _parse_model_uri

    try:
        return _parse_model_uri(source)
    except (MlflowException, ValueError):
        raise _Unknown(f"its source {source} is not a valid models:/ URI") from None


def _scheme(source: str | None) -> str:
    try:
        return urllib.parse.urlsplit(source).scheme.lower() if isinstance(source, str) else ""
    except ValueError:
        return ""


def _runs_uri_run(source: str) -> str:
    """The run of a ``runs:/<run_id>/<path>`` source, whose path must be plain."""
    parts = _uri_parts(source)
    segments = parts[2] if parts is not None else []
    if parts is None or parts[1] or len(segments) < 2 or segments[0] != "" or not segments[1]:
        raise _Unknown(f"its source {source} is not a plain runs:/<run_id>/<path> URI")
    run_id = segments[1]
    if urllib.parse.unquote(run_id) != run_id:
        raise _Unknown(f"its source {source} is not a plain runs:/<run_id>/<path> URI")
    return run_id


# ---------------------------------------------------------------------------
# Lineage
# ---------------------------------------------------------------------------


def _read_run(reader: Reader, run_id: str) -> RunRecord:
    try:
        return reader.run(run_id)
    except MlflowException as exc:
        raise _Unknown(f"its run {run_id} could not be read: {exc.message}") from None


def _read_logged_model(reader: Reader, model_id: str) -> LoggedModelRecord:
    try:
        return reader.logged_model(model_id)
    except MlflowException as exc:
        raise _Unknown(f"its LoggedModel {model_id} could not be read: {exc.message}") from None


def _source_run(reader: Reader, model: LoggedModelRecord) -> RunRecord:
    """The run LoggedModel ``model`` names as its source, if it is one of its experiment."""
    if not model.source_run_id:
        raise _Unknown(f"its LoggedModel {model.model_id} has no source run")
    run = _read_run(reader, model.source_run_id)
    if str(run.experiment_id) != str(model.experiment_id):
        # Anyone may create a LoggedModel naming any run; log_model names its own run.
        raise _Unknown(
            f"its LoggedModel {model.model_id} (experiment {model.experiment_id}) names run "
            f"{run.run_id} of experiment {run.experiment_id} as its source"
        )
    return run


def _model_id_named(source: str) -> str | None:
    """The LoggedModel a ``models:/<model_id>`` source names (MLflow's reading); else ``None``."""
    if _scheme(source) != "models":
        return None
    return _parse_models_uri(source).model_id


def _depth(root: str | None) -> int:
    parts = _uri_parts(root)
    segments = parts[2] if parts is not None else []
    return len(segments) - (1 if segments and segments[-1] == "" else 0)


def _absent(read: Any, key: str) -> Any:
    """``read(key)``, or ``None`` when no such entity exists; any other failure is ``_Unknown``
    (an owner that cannot be read might be the one that counts: fail closed)."""
    try:
        return read(key)
    except MlflowException as exc:
        # No such entity, or a name that cannot be an id: not an owner.
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        why = f"the owner {key} of its artifacts could not be read: {exc.message}"
        raise _Unknown(why) from None


def _innermost_producer(reader: Reader, location: str, claimed: RunRecord | None) -> Any:
    """The run whose artifacts hold ``location`` most closely, or ``None``.

    Artifact folders nest: an experiment's artifact location may be set inside
    another run's (or LoggedModel's) artifacts, so a location can lie under
    several owners at once. The innermost one produced what is there; an outer,
    cheaper one must not answer for it. Candidates: the claimed run, every
    ``.../<run_id>/artifacts`` and every ``.../models/<model_id>/artifacts`` on
    the path (each checked against the entity itself).
    """
    best: tuple[int, Any] | None = None

    def consider(root: str | None, producer: Any) -> None:
        nonlocal best
        if is_within(location, root) and (best is None or _depth(root) > best[0]):
            best = (_depth(root), producer)

    if claimed is not None:
        consider(claimed.artifact_uri, lambda: claimed)
    parts = _uri_parts(location)
    segments = parts[2] if parts is not None else []
    for i in range(len(segments) - 1):
        if segments[i + 1] != "artifacts" or not segments[i]:
            continue
        run = _absent(reader.run, segments[i])
        if run is not None:
            consider(run.artifact_uri, lambda run=run: run)
        if i >= 1 and segments[i - 1] == "models":
            model = _absent(reader.logged_model, segments[i])
            if model is not None:
                consider(model.artifact_location, lambda model=model: _source_run(reader, model))
    return best[1]() if best is not None else None


def producing_run(reader: Reader, name: str, version: str) -> RunRecord:
    """The run that produced the artifacts of version ``version`` of ``name``.

    Raises ``_Unknown`` (why) when no run can be trusted, and MLflow's
    ``MlflowException`` when the version itself does not exist.
    """
    record = reader.version(name, version)  # MLflow's own error when the version is absent
    source = record.source or ""
    named_id = _model_id_named(source)
    if named_id and record.model_id and named_id != record.model_id:
        raise _Unknown(
            f"its source {source} and its model_id {record.model_id} name different LoggedModels"
        )
    location = record.location or source
    where = source if location == source else f"{source} (artifacts at {location})"
    if named_id or record.model_id:
        model = _read_logged_model(reader, named_id or record.model_id)
        if not named_id and not is_within(location, model.artifact_location):
            raise _Unknown(
                f"its source {where} is not under the artifacts of its LoggedModel "
                f"{model.model_id} ({model.artifact_location})"
            )
        return _source_run(reader, model)
    if _scheme(location) == "models":
        raise _Unknown(f"the artifacts of its source {where} cannot be located")
    if _scheme(location) == "runs":
        run = _read_run(reader, _runs_uri_run(location))
        if not run.artifact_uri:
            return run
        # The path inside the run may lead into artifacts another run nested there.
        path = "/".join(_uri_parts(location)[2][2:])  # type: ignore[index]
        inner = f"{run.artifact_uri.rstrip('/')}/{path}" if path else run.artifact_uri
        return _innermost_producer(reader, inner, run) or run
    run, unread = None, None
    if record.run_id:
        try:
            run = _read_run(reader, record.run_id)
        except _Unknown as exc:
            unread = exc
    producer = _innermost_producer(reader, location, run)
    if producer is not None:
        return producer
    if unread is not None:
        raise unread
    if run is None:
        raise _Unknown("it has no source run")
    raise _Unknown(
        f"its source {where or '(none)'} is not under the artifacts of its run "
        f"{record.run_id} ({run.artifact_uri})"
    )


def evidence(reader: Reader, name: str, version: str) -> Evidence:
    """The run whose energy counts for the version, and its values; or why there are none."""
    try:
        run = producing_run(reader, name, str(version))
    except _Unknown as exc:
        return Evidence(None, None, str(exc))
    if run.lifecycle_stage == _DELETED:
        return Evidence(run.run_id, None, f"its run {run.run_id} was deleted")
    return Evidence(run.run_id, reader.metrics(run.run_id))


# ---------------------------------------------------------------------------
# The client's reader
# ---------------------------------------------------------------------------


class ClientReader:
    """:class:`Reader` through MLflow's public methods: of an ``MlflowClient`` (the client
    check; any tracking/registry URI), or of a tracking store and a registry store (the
    gated store, where its fast SQL reads find nothing)."""

    def __init__(self, tracking: Any, registry: Any = None) -> None:
        self.tracking = tracking
        self.registry = tracking if registry is None else registry

    def version(self, name: str, version: str) -> VersionRecord:
        mv = self.registry.get_model_version(name, version)
        location = self.registry.get_model_version_download_uri(name, mv.version)
        model_id = getattr(mv, "model_id", None) or None
        return VersionRecord(mv.source, mv.run_id or None, model_id, location)

    def run(self, run_id: str) -> RunRecord:
        info = self.tracking.get_run(run_id).info
        return RunRecord(
            info.run_id, str(info.experiment_id), info.artifact_uri, info.lifecycle_stage
        )

    def logged_model(self, model_id: str) -> LoggedModelRecord:
        model = self.tracking.get_logged_model(model_id)
        return LoggedModelRecord(
            model.model_id, str(model.experiment_id), model.artifact_location, model.source_run_id
        )

    def metrics(self, run_id: str) -> dict[str, float]:
        out = {}
        for key in GATE_METRICS:
            value = take_values([m.value for m in self.tracking.get_metric_history(run_id, key)])
            if value is not None:
                out[key] = value
        return out
