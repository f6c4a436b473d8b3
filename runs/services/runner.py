"""Execute runs: export the report's query into storage and record the outcome."""

import contextlib
import logging
import os
import socket
import tempfile
import threading
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import DatabaseError, connections
from django.utils import timezone

from reports.datasources import connection_for_source
from reports.sql import ReportSQLError, read_only_statement
from runs.models import Run, RunStatus, RunTrigger, output_upload_path
from runs.services.exporter import ExportFailed, export_query_to_csv
from runs.services.queue import claim_run, schedule_retry, start_run_in_this_process
from runs.services.transitions import transition_run

logger = logging.getLogger(__name__)


def worker_identity():
    return f"{socket.gethostname()}:{os.getpid()}"


def run_report_now(report, *, trigger=RunTrigger.CLI, requested_by=None):
    """Run ``report`` in this process, with heartbeats so workers see it is alive."""
    run = start_run_in_this_process(report, trigger, worker_identity(), requested_by=requested_by)
    with heartbeat_while_running([run]):
        perform_run(run)
    notify_safely(run)
    return run


def notify_safely(run):
    """Notifications for a finished run; their failure is logged, never raised."""
    from runs.services.notifier import notify_finished_run

    try:
        notify_finished_run(run)
    except Exception:
        logger.exception("notifications for run %s failed", run.pk)


def touch_runs(run_ids):
    """Refresh the heartbeat of runs this process is executing."""
    if run_ids:
        Run.objects.filter(pk__in=run_ids, status=RunStatus.RUNNING).update(
            heartbeat_at=timezone.now()
        )


@contextlib.contextmanager
def heartbeat_while_running(runs):
    """Keep the runs' heartbeat fresh from a background thread until the block ends."""
    done = threading.Event()

    def beat():
        while not done.wait(settings.WORKER_HEARTBEAT_SECONDS):
            try:
                touch_runs([run.pk for run in runs])
            except DatabaseError:
                logger.warning("could not refresh the heartbeat of %s", runs)
                connections.close_all()  # reconnect on the next beat
        connections.close_all()  # this thread's own connections end with it

    thread = threading.Thread(target=beat, name="run-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def execute_run(run):
    """Claim a queued run for this process and execute it; False if it was not queued."""
    if not claim_run(run, worker_identity()):
        return False
    perform_run(run)
    return True


def fail_run(run, error, **fields):
    """Record a failure of a queued or running run and queue its retry, if any."""
    failed = transition_run(run, RunStatus.FAILED, error=error, **fields)
    if failed:
        schedule_retry(run)
    return failed


def perform_run(run):
    """Execute a run this process has claimed (status running) and record the outcome.

    A failed run keeps no output file, not even a partial one. The run records the
    statement it executed (the report's SQL as it was when the run started).
    """
    report = run.report
    try:
        connection = connection_for_source(report.data_source)
    except KeyError:
        return fail_run(run, f"Unknown data source '{report.data_source}': it is not configured.")
    try:
        statement = read_only_statement(report.sql, connection.vendor)
    except ReportSQLError as error:
        return fail_run(run, str(error))
    file_name = f"{report.slug}_{run.started_at:%Y%m%dT%H%M%SZ}_run{run.pk}.csv"
    try:
        output_name, result = _export_to_storage(
            connection, statement, output_upload_path(run, file_name), run
        )
    except ExportFailed as error:
        logger.info("run %s of %s failed: %s", run.pk, report.slug, error)
        return fail_run(run, str(error), sql=statement)
    except Exception as error:
        logger.exception("run %s of %s failed unexpectedly", run.pk, report.slug)
        return fail_run(run, f"Internal error ({type(error).__name__}): {error}", sql=statement)
    try:
        succeeded = transition_run(
            run,
            RunStatus.SUCCEEDED,
            sql=statement,
            output=output_name,
            row_count=result.row_count,
            output_bytes=result.output_bytes,
            output_sha256=result.output_sha256,
        )
    except BaseException:
        default_storage.delete(output_name)  # unrecorded, it would never be cleaned up
        raise
    if not succeeded:
        # Someone gave up on this run meanwhile (worker stop, lost heartbeat): its record
        # says failed, so the file must not outlive it.
        default_storage.delete(output_name)
    else:
        logger.info(
            "run %s of %s succeeded: %s rows, %s bytes",
            run.pk,
            report.slug,
            result.row_count,
            result.output_bytes,
        )
    return succeeded


def partial_file_prefix(run):
    return f".partial-run{run.pk}-"


def remove_partial_files(run):
    """Delete temp files a run left behind (its process died mid-export)."""
    try:
        folder = Path(default_storage.path(run.report.slug))
    except NotImplementedError:
        return []
    removed = []
    for path in folder.glob(f"{partial_file_prefix(run)}*"):
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _export_to_storage(connection, statement, name, run):
    """Export into a temp file next to the destination, then move it into place.

    The move is an atomic rename on filesystem storage, so readers only ever see a
    complete file; any failure removes the temp file.
    """
    report = run.report
    name = default_storage.get_available_name(name)
    try:
        destination = Path(default_storage.path(name))
    except NotImplementedError:  # remote storage: no path to rename into
        destination = None
    temp_dir = destination.parent if destination else None
    if temp_dir:
        temp_dir.mkdir(parents=True, exist_ok=True)
    handle, temp_path = tempfile.mkstemp(
        prefix=partial_file_prefix(run), suffix=".csv", dir=temp_dir
    )
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
