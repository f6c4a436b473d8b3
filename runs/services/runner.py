"""Queue and execute runs: claim → mark running → export → record the outcome."""

import logging
import os
import socket
import tempfile
from pathlib import Path

from django.core.files import File
from django.core.files.storage import default_storage
from django.utils import timezone

from reports.datasources import connection_for_source
from reports.sql import ReportSQLError, executable_statement
from runs.models import Run, RunStatus, RunTrigger, output_upload_path
from runs.services.exporter import ExportFailed, export_query_to_csv
from runs.services.transitions import transition_run

logger = logging.getLogger(__name__)


def worker_identity():
    return f"{socket.gethostname()}:{os.getpid()}"


def enqueue_run(report, trigger, *, requested_by=None, scheduled_for=None):
    """Record a queued run of ``report``; the worker (or ``execute_run``) picks it up."""
    return Run.objects.create(
        report=report,
        trigger=trigger,
        status=RunStatus.QUEUED,
        requested_by=requested_by,
        scheduled_for=scheduled_for,
    )


def run_report_now(report, *, trigger=RunTrigger.CLI, requested_by=None):
    """Queue a run of ``report`` and execute it in this process."""
    run = enqueue_run(report, trigger, requested_by=requested_by)
    execute_run(run)
    return run


def execute_run(run):
    """Execute a queued run and record its outcome on it.

    Returns False (doing nothing) when the run is no longer queued, e.g. because another
    worker claimed it first. A failed run keeps no output file, not even a partial one.
    """
    report = run.report
    try:
        statement = executable_statement(report.sql)
    except ReportSQLError as error:
        return transition_run(run, RunStatus.FAILED, sql=report.sql, error=str(error))
    now = timezone.now()
    claimed = transition_run(
        run,
        RunStatus.RUNNING,
        sql=statement,
        worker=worker_identity(),
        started_at=now,
        heartbeat_at=now,
    )
    if not claimed:
        return False
    try:
        connection = connection_for_source(report.data_source)
    except KeyError:
        return transition_run(
            run,
            RunStatus.FAILED,
            error=f"Unknown data source '{report.data_source}': it is not configured.",
        )
    file_name = f"{report.slug}_{now:%Y%m%dT%H%M%SZ}_run{run.pk}.csv"
    try:
        output_name, result = _export_to_storage(
            connection, statement, output_upload_path(run, file_name), report
        )
    except ExportFailed as error:
        logger.info("run %s of %s failed: %s", run.pk, report.slug, error)
        return transition_run(run, RunStatus.FAILED, error=str(error))
    except Exception as error:
        logger.exception("run %s of %s failed unexpectedly", run.pk, report.slug)
        return transition_run(
            run, RunStatus.FAILED, error=f"Internal error ({type(error).__name__}): {error}"
        )
    return transition_run(
        run,
        RunStatus.SUCCEEDED,
        output=output_name,
        row_count=result.row_count,
        output_bytes=result.output_bytes,
        output_sha256=result.output_sha256,
    )


def _export_to_storage(connection, statement, name, report):
    """Export into a temp file next to the destination, then move it into place.

    The move is an atomic rename on filesystem storage, so readers only ever see a
    complete file; any failure removes the temp file.
    """
    name = default_storage.get_available_name(name)
    try:
        destination = Path(default_storage.path(name))
    except NotImplementedError:  # remote storage: no path to rename into
        destination = None
    temp_dir = destination.parent if destination else None
    if temp_dir:
        temp_dir.mkdir(parents=True, exist_ok=True)
    handle, temp_path = tempfile.mkstemp(prefix=".partial-", suffix=".csv", dir=temp_dir)
    try:
        with os.fdopen(handle, "wb", buffering=0) as file:
            result = export_query_to_csv(
                connection,
                statement,
                file,
                timeout_seconds=report.effective_timeout_seconds,
                max_rows=report.effective_max_rows,
            )
        if destination:
            os.replace(temp_path, destination)
        else:
            with open(temp_path, "rb") as file:
                name = default_storage.save(name, File(file))
    finally:
        if os.path.exists(temp_path):
            os.unlink(temp_path)
    return name, result
