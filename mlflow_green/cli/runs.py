"""``mlflow-green sync``: the spool of reports measured while the tracking server was unreachable.

Lists, uploads or discards what :mod:`mlflow_green.runs.spool` kept.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from mlflow_green.cli._common import TRACKING, BadInput, StoreURI, check_store

if TYPE_CHECKING:
    from mlflow_green.runs.spool import SpooledReport, SyncResult


@click.command()
@click.option(
    "--tracking-uri",
    default=None,
    metavar="URI",
    help="Send every report to URI instead of the server it was measured for "
    "(a server that moved). Default: each report's own URI; MLFLOW_TRACKING_URI is not used.",
)
@click.option("--no-artifacts", is_flag=True, help="Upload metrics and tags only.")
@click.option(
    "--list",
    "list_only",
    is_flag=True,
    help="List the spooled reports (run, age, size, URI, last error); upload nothing.",
)
@click.option(
    "--discard",
    "discard_ids",
    multiple=True,
    metavar="RUN_ID",
    help="Delete the spooled reports of RUN_ID without uploading them (repeatable).",
)
@click.option(
    "--discard-undeliverable",
    is_flag=True,
    help="Delete the reports whose run (or experiment) is deleted or no longer exists, "
    "after asking its server; upload nothing. Unreachable servers keep their reports.",
)
def sync(
    tracking_uri: str | None,
    no_artifacts: bool,
    list_only: bool,
    discard_ids: tuple[str, ...],
    discard_undeliverable: bool,
) -> None:
    """Upload reports spooled while the tracking server was unreachable.

    Each report goes to the tracking URI its run was measured for, with the
    timestamps and steps measured at the run's end. Reports are deleted only once
    uploaded, or with --discard / --discard-undeliverable. Exit status: 0 done,
    1 some reports not uploaded (or not checked), 2 bad input.
    """
    from mlflow_green.runs import spool

    _check_sync_options(tracking_uri, no_artifacts, list_only, discard_ids, discard_undeliverable)
    if list_only:
        _list_spool(spool.pending_reports())
        return
    if discard_ids:
        try:
            removed = spool.discard(discard_ids)
        except ValueError as exc:
            raise BadInput(f"--discard: {exc}") from None
        for report in removed:
            click.echo(f"discarded run {report.run_id} ({report.path})")
        return
    if not spool.pending():
        click.echo(f"Nothing to upload in {spool.spool_dir()}.")
        return
    if discard_undeliverable:
        results = spool.discard_undeliverable(tracking_uri=tracking_uri)
    else:
        results = spool.sync(tracking_uri=tracking_uri, log_artifacts=not no_artifacts)
    sys.exit(_echo_results(results, discarding=discard_undeliverable))


def _check_sync_options(
    tracking_uri: str | None,
    no_artifacts: bool,
    list_only: bool,
    discard_ids: tuple[str, ...],
    discard_undeliverable: bool,
) -> None:
    modes = [
        name
        for name, on in (
            ("--list", list_only),
            ("--discard", bool(discard_ids)),
            ("--discard-undeliverable", discard_undeliverable),
        )
        if on
    ]
    if len(modes) > 1:
        raise BadInput(f"{' and '.join(modes)} cannot be combined; use one at a time")
    if no_artifacts and modes:
        raise BadInput(f"--no-artifacts applies to uploads only, not to {modes[0]}")
    if tracking_uri is not None and modes and modes[0] != "--discard-undeliverable":
        raise BadInput(
            f"--tracking-uri applies to uploads and --discard-undeliverable, not {modes[0]}"
        )
    if tracking_uri is not None:
        if not tracking_uri.strip():
            raise BadInput(
                "--tracking-uri '': expected a tracking URI such as http://127.0.0.1:5000 "
                "or sqlite:///path/to/mlflow.db"
            )
        # Reports go to an MLflow store that exists: MLflow would create an empty one
        # (or its tables in another database), whose runs are all missing.
        check_store(StoreURI(tracking_uri, "--tracking-uri", tracking_uri), TRACKING)
    for run_id in discard_ids:
        if not run_id.strip():
            raise BadInput("--discard '': expected the run id of a spooled report (see --list)")


def _list_spool(reports: list[SpooledReport]) -> None:
    from mlflow_green.runs import spool

    if not reports:
        click.echo(f"Nothing spooled in {spool.spool_dir()}.")
        return
    click.echo(f"{'RUN ID':32}  {'AGE':>7}  {'SIZE':>9}  TRACKING URI")
    for r in reports:
        click.echo(
            f"{r.run_id:32}  {_age(r.age_s()):>7}  {_size(r.size_bytes):>9}  {r.tracking_uri}"
        )
        if r.undeliverable:
            click.echo(f"    undeliverable: {r.undeliverable}")
        elif r.last_error:
            tries = (
                f" ({r.attempts} failed sync{'s' if r.attempts > 1 else ''})" if r.attempts else ""
            )
            click.echo(f"    last error{tries}: {r.last_error}")
    click.echo(f"{len(reports)} report(s) in {spool.spool_dir()}")


def _echo_results(results: list[SyncResult], *, discarding: bool) -> int:
    """Print one line per report; the exit status (1 when any was not uploaded or checked)."""
    failed = undeliverable = 0
    for r in results:
        if r.discarded:
            click.echo(f"discarded run {r.run_id}: {r.error} ({r.path})")
        elif r.ok and discarding:
            click.echo(f"kept run {r.run_id}: its run exists on {r.tracking_uri}")
        elif r.ok:
            click.echo(f"uploaded run {r.run_id} to {r.tracking_uri}")
        elif r.undeliverable:
            undeliverable += 1
            click.echo(f"cannot upload run {r.run_id}: {r.error} (kept {r.path})", err=True)
        else:
            failed += 1
            verb = "could not check" if discarding else "failed"
            click.echo(f"{verb} run {r.run_id}: {r.error} (kept {r.path})", err=True)
    if undeliverable:
        click.echo(
            f"{undeliverable} report(s) can never be uploaded: remove them with "
            "`mlflow-green sync --discard RUN_ID` or `mlflow-green sync --discard-undeliverable`",
            err=True,
        )
    return 1 if failed or undeliverable else 0


def _age(seconds: float) -> str:
    minutes, hours, days = int(seconds // 60), int(seconds // 3600), int(seconds // 86400)
    if days:
        return f"{days}d{hours % 24:02d}h"
    if hours:
        return f"{hours}h{minutes % 60:02d}m"
    return f"{minutes}m" if minutes else f"{int(seconds)}s"


def _size(n_bytes: int) -> str:
    if n_bytes < 1024:
        return f"{n_bytes} B"
    if n_bytes < 1024 * 1024:
        return f"{n_bytes / 1024:.1f} KiB"
    return f"{n_bytes / 1024 / 1024:.1f} MiB"
