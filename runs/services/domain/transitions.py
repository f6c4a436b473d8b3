"""The one owner of Run.status: every status change goes through this module.

``transition_run`` moves one run; ``start_queued_runs`` claims a batch of queued runs;
``cancel_run`` cancels one for a person; ``tally_finished`` counts the runs that ended
(RunTally).

A cancel accepted while a run was running is kept: such a run ends ``cancelled``
whichever way its executor or anyone else ends it (its statement was stopped, it
finished a moment too late, its worker stopped or was lost), and keeps no output.
"""

import functools

from django.db import connection, transaction
from django.utils import timezone

from reportsvc.moments import moment
from runs.models import FINISHED_STATUSES, Run, RunStatus, RunTally

# Target status -> the statuses a run may leave for it.
ALLOWED_SOURCES = {
    RunStatus.RUNNING: (RunStatus.QUEUED,),
    RunStatus.SUCCEEDED: (RunStatus.RUNNING,),
    RunStatus.FAILED: (RunStatus.QUEUED, RunStatus.RUNNING),
    RunStatus.SKIPPED: (RunStatus.QUEUED,),
    # A running run ends cancelled only through a cancel request (cancel_run), once its
    # executor stopped the statement: the record never says cancelled while it runs.
    RunStatus.CANCELLED: (RunStatus.QUEUED,),
}

TIMESTAMP_FIELD = {
    RunStatus.RUNNING: "started_at",
    RunStatus.SUCCEEDED: "finished_at",
    RunStatus.FAILED: "finished_at",
    RunStatus.SKIPPED: "finished_at",
    RunStatus.CANCELLED: "finished_at",
}
# What a run someone cancelled keeps of what its executor would have recorded: what ran
# and over which values, never an output.
KEPT_WHEN_CANCELLED = ("sql", "parameters", "interval_start", "interval_end")


def transition_run(run, status, **fields):
    """Move ``run`` to ``status`` (setting ``fields`` too) if its stored status allows it.

    A single conditional UPDATE, so two processes racing for the same run cannot both
    win: returns True when this call made the change (and updates ``run`` in memory),
    False when the stored run was no longer in a status it may leave. The winner of a
    move to a final status tallies it, in the same transaction: once per run.
    """
    fields.setdefault(TIMESTAMP_FIELD[status], timezone.now())
    movable = Run.objects.filter(pk=run.pk, status__in=ALLOWED_SOURCES[status])
    if status in (RunStatus.SUCCEEDED, RunStatus.FAILED):
        # Someone asked to cancel this run: it ends cancelled instead (below).
        movable = movable.filter(cancelled_at__isnull=True)
    if status in FINISHED_STATUSES:
        with transaction.atomic(savepoint=False):
            changed = _finish(movable, run, status, fields)
            if not changed and status in (RunStatus.SUCCEEDED, RunStatus.FAILED):
                _end_cancel_requested(run, fields)
                return False
    else:
        changed = movable.update(status=status, **fields)
    if changed:
        run.status = status
        for name, value in fields.items():
            setattr(run, name, value)
    return bool(changed)


def _finish(movable, run, status, fields):
    """Move the runs of ``movable`` (one at most) to the final ``status`` and tally it."""
    changed = movable.update(status=status, **fields)
    if changed:
        tally_finished(
            run.report_id,
            status,
            started_at=fields.get("started_at", run.started_at),
            finished_at=fields["finished_at"],
        )
    return changed


def _end_cancel_requested(run, fields):
    """End ``run`` cancelled if it is running with a cancel request (what else it was
    about to record is dropped but for KEPT_WHEN_CANCELLED); the run in memory follows."""
    kept = {name: fields[name] for name in KEPT_WHEN_CANCELLED if name in fields}
    kept["finished_at"] = fields["finished_at"]
    requested = Run.objects.filter(pk=run.pk, status=RunStatus.RUNNING, cancelled_at__isnull=False)
    if _finish(requested, run, RunStatus.CANCELLED, kept):
        run.status = RunStatus.CANCELLED
        for name, value in kept.items():
            setattr(run, name, value)
        run.refresh_from_db(fields=["cancelled_at", "cancelled_by", "error"])


class RunNotCancellable(Exception):
    """The run ended otherwise (succeeded, failed, skipped); ``str()`` says how."""


def cancel_queued_runs(runs, user, now=None):
    """Cancel at once the queued runs among ``runs`` (a queryset) for ``user``, in one
    statement (a backfill's hundreds, a selection in the admin); their ids.

    They are locked first: a worker claiming at the same moment skips them
    (SKIP LOCKED), so none starts after this call counted it cancelled.
    """
    now = now or timezone.now()
    requested = {
        "cancelled_at": now,
        "cancelled_by": user,
        "error": _cancel_message(user, now),
        "finished_at": now,
    }
    with transaction.atomic():
        queued = Run.objects.filter(pk__in=runs.order_by().values("pk"), status=RunStatus.QUEUED)
        ids = list(queued.order_by("pk").select_for_update().values_list("pk", flat=True))
        if not ids:
            return []
        Run.objects.filter(pk__in=ids, status=RunStatus.QUEUED).update(
            status=RunStatus.CANCELLED, **requested
        )
        done = list(
            Run.objects.filter(pk__in=ids, status=RunStatus.CANCELLED, cancelled_at=now)
            .order_by("pk")
            .values_list("pk", "report_id")
        )
        counts = {}
        for _, report_id in done:
            counts[report_id] = counts.get(report_id, 0) + 1
        tally_runs_that_never_started(RunStatus.CANCELLED, counts)
    return [pk for pk, _ in done]


def _cancel_message(user, now):
    name = user.get_username() if user is not None else "someone"
    return f"Cancelled by {name} at {moment(now)}."


def cancel_run(run, user, now=None):
    """Cancel ``run`` for ``user`` (who must have been allowed to: run_report).

    A queued run ends ``cancelled`` at once. For a running run the request is recorded
    (``cancelled_at``, ``cancelled_by``): its executor sees it within a second or two,
    stops the statement on the database server and ends the run cancelled; nothing
    else can end it otherwise from then on. Returns True when this call cancelled or
    asked, False when someone had already (idempotent: the first request is kept).
    Raises RunNotCancellable for a run that ended otherwise. ``run`` is reloaded.
    """
    now = now or timezone.now()
    requested = {"cancelled_at": now, "cancelled_by": user, "error": _cancel_message(user, now)}
    with transaction.atomic(savepoint=False):
        queued = Run.objects.filter(pk=run.pk, status=RunStatus.QUEUED)
        done = _finish(queued, run, RunStatus.CANCELLED, {**requested, "finished_at": now})
    if not done:
        done = Run.objects.filter(
            pk=run.pk, status=RunStatus.RUNNING, cancelled_at__isnull=True
        ).update(**requested)
    run.refresh_from_db()
    if done or run.status == RunStatus.CANCELLED:
        return bool(done)
    if run.status == RunStatus.RUNNING:  # asked before: its executor is stopping it
        return False
    raise RunNotCancellable(not_cancellable_message(run))


def not_cancellable_message(run):
    how = "was skipped" if run.status == RunStatus.SKIPPED else run.status
    when = f" at {moment(run.finished_at)}" if run.finished_at else ""
    return (
        f"Run {run.pk} has already ended: it {how}{when}. Only queued and running runs "
        "can be cancelled."
    )


def runs_to_stop(run_ids):
    """Of the running runs ``run_ids``, those someone asked to cancel."""
    if not run_ids:
        return []
    return list(
        Run.objects.filter(
            pk__in=run_ids, status=RunStatus.RUNNING, cancelled_at__isnull=False
        ).values_list("pk", flat=True)
    )


# One statement, on PostgreSQL and SQLite alike: a tally's first run makes its row, later
# ones add to it; two first runs at once both count (the second insert waits for the
# first and updates instead). The newest run that started keeps its times. Written as
# SQL: the ORM took a millisecond of the worker's CPU per run to compile it.
TALLY_SQL = """
INSERT INTO {table} (report_id, status, count, last_started_at, last_finished_at)
VALUES {values}
ON CONFLICT (report_id, status) DO UPDATE SET
    count = {table}.count + excluded.count,
    last_started_at = CASE WHEN {newer} THEN excluded.last_started_at
                           ELSE {table}.last_started_at END,
    last_finished_at = CASE WHEN {newer} THEN excluded.last_finished_at
                            ELSE {table}.last_finished_at END
"""
TALLY_NEWER = (
    "excluded.last_finished_at IS NOT NULL AND ({table}.last_finished_at IS NULL "
    "OR {table}.last_finished_at < excluded.last_finished_at)"
)
TALLY_BATCH = 500  # rows per statement: 2,500 parameters, within SQLite's limit


@functools.cache
def _tally_sql(rows):
    table = connection.ops.quote_name(RunTally._meta.db_table)
    return TALLY_SQL.format(
        table=table,
        values=", ".join(["(%s, %s, %s, %s, %s)"] * rows),
        newer=TALLY_NEWER.format(table=table),
    )


def tally_finished(report_id, status, runs=1, *, started_at=None, finished_at=None):
    """Add ``runs`` runs of a report that ended in ``status`` to its tally (RunTally);
    ``started_at``/``finished_at``: the run's, if it started, kept if it ended last.

    Call it in the transaction that records those runs' final status, so a tally moves
    exactly when its runs do.
    """
    _tally([(report_id, status, runs, started_at, finished_at)])


def tally_runs_that_never_started(status, counts):
    """``tally_finished`` for many reports at once, ``{report_id: runs}``, for runs born
    in a final status (fires recorded as skipped): a statement per batch of reports."""
    _tally([(report_id, status, runs, None, None) for report_id, runs in sorted(counts.items())])


def _tally(rows):
    adapt = connection.ops.adapt_datetimefield_value
    for start in range(0, len(rows), TALLY_BATCH):
        batch = rows[start : start + TALLY_BATCH]
        params = []
        for report_id, status, runs, started_at, finished_at in batch:
            if started_at is None or finished_at is None:
                started_at = finished_at = None
            params += [report_id, str(status), runs, adapt(started_at), adapt(finished_at)]
        with connection.cursor() as cursor:
            cursor.execute(_tally_sql(len(batch)), params)


# The next queued run that may start (due, and its report not running), oldest first,
# moved to running in one statement: no transaction to open and commit, which is most
# of a claim's cost when runs are short. PostgreSQL locks the candidate with SKIP
# LOCKED, so workers claiming at the same moment never wait for or take each other's
# runs. The report's SQL and its newest version are read by the same statement: a
# report and its version are saved in one transaction, so they always agree.
START_NEXT_RUN_SQL = """
UPDATE runs_run
SET status = %s, worker = %s, started_at = %s, heartbeat_at = %s,
    sql = (SELECT report.sql FROM reports_report AS report WHERE report.id = runs_run.report_id),
    report_version_id = (
        SELECT version.history_id FROM reports_historicalreport AS version
        WHERE version.id = runs_run.report_id
        ORDER BY version.history_version DESC
        LIMIT 1
    )
WHERE runs_run.id = (
    SELECT queued.id
    FROM runs_run AS queued
    WHERE queued.status = %s
      AND (queued.not_before IS NULL OR queued.not_before <= %s)
      AND NOT EXISTS (
          SELECT 1 FROM runs_run AS running
          WHERE running.report_id = queued.report_id AND running.status = %s
      )
    ORDER BY queued.queued_at, queued.id
    LIMIT 1
    {lock}
)
RETURNING {columns}
"""


@functools.cache
def _start_next_run_sql(vendor):
    columns = ", ".join(connection.ops.quote_name(f.column) for f in Run._meta.concrete_fields)
    lock = "FOR UPDATE SKIP LOCKED" if vendor == "postgresql" else ""
    return START_NEXT_RUN_SQL.format(lock=lock, columns=columns)


def start_queued_runs(limit, worker, now=None):
    """Move up to ``limit`` startable queued runs to running for ``worker``; oldest first.

    One at a time, so a report whose run this call started is running for the next
    pick: a claim never starts two runs of the same report. Each run records the
    report's SQL as it is at the start, and the report's version.
    """
    now = now or timezone.now()
    queued, running = RunStatus.QUEUED, RunStatus.RUNNING
    sql = _start_next_run_sql(connection.vendor)
    params = [running, worker, now, now, queued, now, running]
    started = []
    while len(started) < limit:
        runs = list(Run.objects.raw(sql, params))
        if not runs:
            break
        started.extend(runs)
    return started
