"""The one owner of Run.status: every status change goes through this module.

``transition_run`` moves one run; ``start_queued_runs`` claims a batch of queued runs.
"""

import functools

from django.db import connection
from django.utils import timezone

from runs.models import Run, RunStatus

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
    False when the stored run was no longer in a status it may leave.
    """
    fields.setdefault(TIMESTAMP_FIELD[status], timezone.now())
    changed = Run.objects.filter(pk=run.pk, status__in=ALLOWED_SOURCES[status]).update(
        status=status, **fields
    )
    if changed:
        run.status = status
        for name, value in fields.items():
            setattr(run, name, value)
    return bool(changed)


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
