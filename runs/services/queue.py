"""The run queue: how runs enter (manual, scheduled fires, retries) and get claimed."""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from reports.models import Report
from reports.sql import ReportSQLError, executable_statement
from runs.models import Run, RunStatus, RunTrigger
from runs.services.transitions import transition_run

logger = logging.getLogger(__name__)

ACTIVE_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)


def enqueue_run(report, trigger, *, requested_by=None, scheduled_for=None):
    """Record a queued run of ``report``; a worker (or ``execute_run``) picks it up."""
    return Run.objects.create(
        report=report,
        trigger=trigger,
        status=RunStatus.QUEUED,
        requested_by=requested_by,
        scheduled_for=scheduled_for,
    )


def record_scheduled_fire(report_id, scheduled_for):
    """Turn one schedule fire into one run; None if it was recorded already.

    ``(report, scheduled_for)`` is unique, so a second scheduler firing the same moment
    records nothing. A fire while the report's previous run is still queued or running
    is recorded as ``skipped`` instead of piling up or overlapping.
    """
    report = Report.objects.filter(pk=report_id, enabled=True).exclude(schedule="").first()
    if report is None:
        return None
    busy = (
        Run.objects.filter(report=report, status__in=ACTIVE_STATUSES).order_by("queued_at").first()
    )
    try:
        with transaction.atomic():
            run = enqueue_run(report, RunTrigger.SCHEDULE, scheduled_for=scheduled_for)
    except IntegrityError:
        logger.info("fire of %s at %s was already recorded", report.slug, scheduled_for)
        return None
    if busy is not None:
        transition_run(
            run,
            RunStatus.SKIPPED,
            error=f"Skipped: the previous run ({busy.pk}) was still {busy.status} "
            "at this fire time.",
        )
    return run


def claim_runs(limit, worker):
    """Claim up to ``limit`` queued runs for ``worker``, oldest first; they are running.

    On PostgreSQL ``FOR UPDATE SKIP LOCKED`` lets several workers claim at once without
    waiting on or double-claiming each other's rows; on SQLite the write transaction
    serialises claims. A run whose report is already running waits its turn.
    """
    now = timezone.now()
    report_running = Run.objects.filter(report=OuterRef("report"), status=RunStatus.RUNNING)
    with transaction.atomic():
        candidates = list(
            Run.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("report")
            .filter(status=RunStatus.QUEUED)
            .filter(Q(not_before__isnull=True) | Q(not_before__lte=now))
            .exclude(Exists(report_running))
            .order_by("queued_at", "id")[:limit]
        )
        claimed, reports = [], set()
        for run in candidates:
            if run.report_id not in reports and claim_run(run, worker, now=now):
                claimed.append(run)
                reports.add(run.report_id)
        return claimed


def claim_run(run, worker, *, now=None):
    """Move one queued run to running for ``worker``; False if someone else has it."""
    now = now or timezone.now()
    try:
        statement = executable_statement(run.report.sql)
    except ReportSQLError:
        statement = run.report.sql  # recorded as written; the run fails with the reason
    return transition_run(
        run, RunStatus.RUNNING, sql=statement, worker=worker, started_at=now, heartbeat_at=now
    )


def schedule_retry(run):
    """Queue the next attempt of a failed scheduled run, if its report allows more."""
    report = run.report
    if run.trigger != RunTrigger.SCHEDULE or run.attempt > report.max_retries:
        return None
    delay = settings.RETRY_BACKOFF_SECONDS * 2 ** (run.attempt - 1)
    retry = Run.objects.create(
        report=report,
        trigger=RunTrigger.SCHEDULE,
        status=RunStatus.QUEUED,
        attempt=run.attempt + 1,
        retry_of_id=run.retry_of_id or run.pk,
        not_before=timezone.now() + timedelta(seconds=delay),
    )
    logger.info(
        "run %s of %s failed; attempt %s queued in %s s", run.pk, report.slug, retry.attempt, delay
    )
    return retry
