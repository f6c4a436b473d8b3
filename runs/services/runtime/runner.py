"""Execute runs: export the report's query into storage and record the outcome."""

import contextlib
import logging
import threading
import time

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connections
from django.utils import timezone

from datasources.backends import database_errors
from datasources.parameters import ParameterError
from datasources.placeholders import TemplateError
from datasources.safety import DataSourceRefused
from datasources.sandbox import ExportFailed, ReportSQLError
from reports.services.logins import (
    SourceUnavailable,
    leased_connection,
    renew_leases,
    run_holder,
)
from reports.services.statements import statement_for_run
from reports.zones import report_zone
from reportsvc.text import escaped
from runs.models import Run, RunStatus, RunTrigger
from runs.naming import output_name
from runs.services.domain.cancelling import CANCEL_POLL_SECONDS, RunControl, stop_cancelled_runs
from runs.services.domain.intervals import default_interval
from runs.services.domain.queue import schedule_retry, start_run_in_this_process
from runs.services.domain.transitions import transition_run
from runs.services.formats import WriterOptions, output_media_type, report_format
from runs.services.infrastructure import output_storage
from runs.services.infrastructure.exporter import export_query
from runs.services.runtime.heartbeats import worker_name

logger = logging.getLogger(__name__)


def run_report_now(
    report, *, trigger=RunTrigger.CLI, requested_by=None, parameters=None, interval=None
):
    """Run ``report`` in this process, with heartbeats so workers see it is alive; the
    run ends whatever breaks (runs.services.runtime.guard)."""
    from runs.services.runtime.guard import execute_claimed_run  # the guard builds on this module

    run = start_run_in_this_process(
        report,
        trigger,
        worker_name(),
        requested_by=requested_by,
        parameters=parameters,
        interval=interval,
    )
    control = RunControl()
    with heartbeat_while_running({run.pk: control}):
        execute_claimed_run(run, control=control)
    notify_safely(run)
    return run


def notify_safely(run):
    """Notifications for a finished run; their failure is logged, never raised."""
    from runs.services.notifications.notifier import notify_finished_run

    try:
        notify_finished_run(run)
    except Exception:
        logger.exception("notifications for run %s failed", run.pk)


def touch_runs(run_ids):
    """Refresh the heartbeat of runs this process is executing, and their logins' leases."""
    if run_ids:
        Run.objects.filter(pk__in=run_ids, status=RunStatus.RUNNING).update(
            heartbeat_at=timezone.now()
        )
        renew_leases([run_holder(run_id) for run_id in run_ids])


@contextlib.contextmanager
def heartbeat_while_running(controls):
    """Keep the runs' heartbeat fresh from a background thread until the block ends,
    and stop those someone cancels (``controls``: run id -> RunControl)."""
    done = threading.Event()
    run_ids = list(controls)

    def beat():
        interval = settings.WORKER_HEARTBEAT_SECONDS
        next_beat = time.monotonic() + interval
        while not done.wait(min(interval, CANCEL_POLL_SECONDS)):
            try:
                stop_cancelled_runs(controls)
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + interval
                    touch_runs(run_ids)
            except DatabaseError:
                logger.warning("could not refresh the heartbeat of runs %s", run_ids)
                connections.close_all()  # reconnect on the next beat
        connections.close_all()  # this thread's own connections end with it

    thread = threading.Thread(target=beat, name="run-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def fail_run(run, error, *, stop_waiting=None, **fields):
    """Record a failure of a queued or running run and queue its retry, if any.

    ``stop_waiting``: see :func:`record_outcome`. The message is stored with escapes for
    what no database stores (it may quote a value).
    """
    error = escaped(error)
    failed = record_outcome(run, RunStatus.FAILED, stop_waiting=stop_waiting, error=error, **fields)
    if failed:
        schedule_retry(run)
    return failed


RECORD_BACKOFF_MAX_SECONDS = 5


def record_outcome(run, status, *, stop_waiting=None, **fields):
    """``transition_run`` to a final status; with ``stop_waiting`` (an Event), waiting
    out a lost database connection until the database answers or the event is set.

    A restart of the database server ends every session, the one that records a run's
    outcome too. Each failed attempt closes the connection, waits (0.5 s, doubling up to
    5 s) and tries again: the run records what happened to it (the database's own
    message) as soon as the database is back, instead of staying running until recovery
    calls its live worker lost. An attempt whose update was applied but whose answer
    was lost is recognised by its ``finished_at``.
    """
    fields.setdefault("finished_at", timezone.now())
    delay, attempts = 0.5, 0
    while True:
        try:
            changed = transition_run(run, status, **fields)
            break
        except (OperationalError, InterfaceError) as error:
            if stop_waiting is None or stop_waiting.is_set():
                raise
            attempts += 1
            logger.warning(
                "run %s: cannot record that it %s yet (%s); retrying in %.1f s",
                run.pk,
                status,
                str(error).strip().partition("\n")[0],
                delay,
            )
            connections["default"].close()
            stop_waiting.wait(delay)
            delay = min(delay * 2, RECORD_BACKOFF_MAX_SECONDS)
    if changed or not attempts:
        return changed
    applied = Run.objects.filter(
        pk=run.pk, status=status, finished_at=fields["finished_at"]
    ).exists()
    if applied:
        run.status = status
        for name, value in fields.items():
            setattr(run, name, value)
    return applied


def perform_run(run, *, stop_waiting=None, control=None):
    """Execute a run this process has claimed (status running) and record the outcome.

    Fails the run for the reasons it expects; executors call it through
    ``runs.services.runtime.guard``, which ends the run whatever else raises here.
    A failed run keeps no output file, not even a partial one. The run records the
    statement it executed (the report's SQL as it was when the run started). If the
    database connection is lost, recording the outcome waits for the database to be
    back until ``stop_waiting`` (an Event) is set; without one it waits indefinitely.

    The run holds a login of its data source alone until its outcome is recorded
    (reports.services.logins), waiting for a free one up to the report's timeout.

    ``control`` (a RunControl) lets another thread stop the run's statement on the
    server: a run someone cancelled then ends cancelled (runs.services.domain.transitions),
    one stopped by a shutdown fails with the control's message.
    """
    stop_waiting = stop_waiting or threading.Event()
    control = control or RunControl()
    with contextlib.ExitStack() as lease:
        return _perform_run(run, stop_waiting, lease, control)


def _perform_run(run, stop_waiting, lease, control):
    report = run.report

    def fail(error, **fields):
        if control.shutting_down:  # the shutdown, not what it caused, is the reason
            error = control.message
        return fail_run(run, error, stop_waiting=stop_waiting, **fields)

    try:
        connection = lease.enter_context(
            leased_connection(
                report.data_source,
                run_holder(run.pk),
                wait_seconds=report.effective_timeout_seconds,
                stop=control.stopping,  # a cancel, or the worker's grace ending
            )
        )
    except KeyError:
        return fail(f"Unknown data source '{report.data_source}': it is not configured.")
    except (SourceUnavailable, DataSourceRefused) as error:
        return fail(str(error))
    lease.enter_context(control.statements_on(connection))
    if control.stopping.is_set():  # stopped while it waited for a login
        return fail("The run was stopped before its statement started.")
    if run.interval_start is None or run.interval_end is None:  # queued before runs had one
        run.interval_start, run.interval_end = default_interval(report, run.queued_at)
    interval = {"interval_start": run.interval_start, "interval_end": run.interval_end}
    try:
        statement, values = statement_for_run(
            report, connection, run.parameters, (run.interval_start, run.interval_end)
        )
    except ParameterError as error:
        return fail(f"Parameter {error.field}: {error.message}", **interval)
    except (ReportSQLError, TemplateError) as error:
        return fail(str(error), **interval)
    except database_errors() as error:
        return fail(str(error).strip() or type(error).__name__, **interval)
    recorded = {"sql": statement, "parameters": values, **interval}
    run.sql, run.parameters = statement, values  # the output's name and the guard read them
    try:
        stored_name, result = _export_to_storage(
            connection, statement, output_name(run, report_format(report)), run
        )
    except ExportFailed as error:
        logger.info("run %s of %s failed: %s", run.pk, report.slug, error)
        failed = fail(str(error), **recorded)
        output_storage.remove_failed_upload(error)  # a PUT given up on may land after all
        return failed
    try:
        succeeded = record_outcome(
            run,
            RunStatus.SUCCEEDED,
            stop_waiting=stop_waiting,
            **recorded,
            output=stored_name,
            row_count=result.row_count,
            output_bytes=result.output_bytes,
            output_sha256=result.output_sha256,
        )
    except BaseException:
        output_storage.remove_output(stored_name)  # unrecorded, nothing would remove it
        raise
    if not succeeded:
        # Someone gave up on this run meanwhile (worker stop, lost heartbeat) or
        # cancelled it: its record says failed or cancelled, so the file must not
        # outlive it.
        output_storage.remove_output(stored_name)
    else:
        logger.info(
            "run %s of %s succeeded: %s rows, %s bytes",
            run.pk,
            report.slug,
            result.row_count,
            result.output_bytes,
        )
    return succeeded


def writer_options(report, scratch_dir=None):
    """What the format's writer needs to know of the report, and where it may keep
    temp files (the run's scratch directory)."""
    return WriterOptions(
        escape_formulas=report.escape_formulas,
        csv_bom=report.csv_bom,
        timezone=report_zone(report),
        scratch_dir=scratch_dir,
    )


def _export_to_storage(connection, statement, name, run):
    """Export into a staging file, then put the complete file into storage.

    Everything the export writes locally (the staging file, the writer's temp files)
    is in the run's scratch directory, removed when this ends, however it ends. On the
    filesystem that directory is on the outputs' filesystem and the staging file is
    moved into place with an atomic rename; on S3 it is uploaded once complete.
    Readers only ever see a complete output.
    """
    report = run.report
    output_format = report_format(report)
    name = output_storage.available_name(name)
    with output_storage.run_scratch(run, suffix=output_format.suffix) as scratch:
        with scratch.open_staging_file() as file:
            result = export_query(
                connection,
                statement,
                file,
                timeout_seconds=report.effective_timeout_seconds,
                max_rows=report.effective_max_rows,
                output_format=output_format,
                options=writer_options(report, scratch_dir=scratch.directory),
            )
        name = output_storage.store_finished_file(
            scratch.staging_path, name, content_type=output_media_type(output_format)
        )
    return name, result
