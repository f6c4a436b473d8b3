"""The one owner of Run.status: every status change goes through this module.

``transition_run`` moves one run; ``start_queued_runs`` claims a batch of queued runs;
``tally_finished`` counts the runs that ended (RunTally).
"""

import functools
from collections import defaultdict

from django.db import IntegrityError, connection, transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from runs.models import FINISHED_STATUSES, Run, RunStatus, RunTally

# Target status -> the statuses a run may leave for it.
ALLOWED_SOURCES = {
    RunStatus.RUNNING: (RunStatus.QUEUED,),
    RunStatus.SUCCEEDED: (RunStatus.RUNNING,),
    RunStatus.FAILED: (RunStatus.QUEUED, RunStatus.RUNNING),
    RunStatus.SKIPPED: (RunStatus.QUEUED,),
}

TIMESTAMP_FIELD = {
    RunStatus.RUNNING: "started_at",
    RunStatus.SUCCEEDED: "finished_at",
    RunStatus.FAILED: "finished_at",
    RunStatus.SKIPPED: "finished_at",
}


def transition_run(run, status, **fields):
    """Move ``run`` to ``status`` (setting ``fields`` too) if its stored status allows it.

    A single conditional UPDATE, so two processes racing for the same run cannot both
    win: returns True when this call made the change (and updates ``run`` in memory),
    False when the stored run was no longer in a status it may leave. The winner of a
    move to a final status tallies it, in the same transaction: once per run.
    """
    fields.setdefault(TIMESTAMP_FIELD[status], timezone.now())
    movable = Run.objects.filter(pk=run.pk, status__in=ALLOWED_SOURCES[status])
    if status in FINISHED_STATUSES:
        with transaction.atomic(savepoint=False):
            changed = movable.update(status=status, **fields)
            if changed:
                tally_finished(
                    run.report_id,
                    status,
                    started_at=fields.get("started_at", run.started_at),
                    finished_at=fields["finished_at"],
                )
    else:
        changed = movable.update(status=status, **fields)
    if changed:
        run.status = status
        for name, value in fields.items():
            setattr(run, name, value)
    return bool(changed)


def tally_finished(report_id, status, runs=1, *, started_at=None, finished_at=None):
    """Add ``runs`` runs of a report that ended in ``status`` to its tally (RunTally);
    ``started_at``/``finished_at``: the run's, when it started, kept if it ended last.

    Call it in the transaction that records those runs' final status, so a tally moves
    exactly when its runs do. A tally's first run makes its row; two making it at once
    both count (the loser of the insert adds to the winner's row).
    """
    tally = RunTally.objects.filter(report_id=report_id, status=status)
    changes = {"count": F("count") + runs}
    if started_at is not None and finished_at is not None:
        newest = Q(last_finished_at__isnull=True) | Q(last_finished_at__lt=finished_at)
        for name, value in (("last_started_at", started_at), ("last_finished_at", finished_at)):
            changes[name] = Case(When(newest, then=Value(value)), default=F(name))
    if tally.update(**changes):
        return
    try:
        with transaction.atomic():  # a savepoint: a lost race must not end the caller's
            RunTally.objects.create(
                report_id=report_id,
                status=status,
                count=runs,
                last_started_at=started_at if finished_at else None,
                last_finished_at=finished_at if started_at else None,
            )
    except IntegrityError:
        tally.update(**changes)


TALLY_BATCH = 500  # report ids per statement, well within SQLite's parameter limit


def tally_runs_that_never_started(status, counts):
    """``tally_finished`` for many reports at once, ``{report_id: runs}``, for runs born
    in a final status (fires recorded as skipped): a statement per batch of reports, not
    one per report, inside the scheduler's pass."""
    by_runs = defaultdict(list)
    for report_id, runs in counts.items():
        by_runs[runs].append(report_id)
    for runs, report_ids in sorted(by_runs.items()):
        report_ids.sort()
        for start in range(0, len(report_ids), TALLY_BATCH):
            batch = report_ids[start : start + TALLY_BATCH]
            tallies = RunTally.objects.filter(report_id__in=batch, status=status)
            existing = set(tallies.values_list("report_id", flat=True))
            tallies.filter(report_id__in=existing).update(count=F("count") + runs)
            missing = [report_id for report_id in batch if report_id not in existing]
            if not missing:
                continue
            try:
                with transaction.atomic():
                    RunTally.objects.bulk_create(
                        RunTally(report_id=report_id, status=status, count=runs)
                        for report_id in missing
                    )
            except IntegrityError:  # made meanwhile: one at a time, each safe on its own
                for report_id in missing:
                    tally_finished(report_id, status, runs)


# The next queued run that may start (due, and its report not running), oldest first,
# moved to running in one statement: no transaction to open and commit, which is most
# of a claim's cost when runs are short. PostgreSQL locks the candidate with SKIP
# LOCKED, so workers claiming at the same moment never wait for or take each other's
# runs.
START_NEXT_RUN_SQL = """
UPDATE runs_run
SET status = %s, worker = %s, started_at = %s, heartbeat_at = %s,
    sql = (SELECT report.sql FROM reports_report AS report WHERE report.id = runs_run.report_id)
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
    report's SQL as it is at the start.
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
