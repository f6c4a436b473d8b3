"""Retention: old runs and their outputs, old scheduler history, departed workers, and
on S3 what dead uploads left."""

import logging
from datetime import timedelta

from django.utils import timezone
from django_apscheduler.models import DjangoJobExecution

from reports.models import Report
from runs.models import Run, WorkerHeartbeat
from runs.services.domain.queue import ACTIVE_STATUSES
from runs.services.infrastructure.output_storage import remove_stray_objects

logger = logging.getLogger(__name__)

JOB_EXECUTION_MAX_AGE_DAYS = 7
BRIEF_HISTORY = timedelta(hours=1)
DEPARTED_WORKER_AGE = timedelta(days=1)
DELETE_BATCH = 500


def purge_expired_runs(now=None):
    """Delete finished runs (and their files) older than their report's retention."""
    now = now or timezone.now()
    deleted = 0
    for report in Report.objects.only("pk", "retention_days"):
        cutoff = now - timedelta(days=report.effective_retention_days)
        expired = Run.objects.filter(report=report, queued_at__lt=cutoff).exclude(
            status__in=ACTIVE_STATUSES
        )
        # Files go with their rows (runs.signals), in batches to bound memory.
        while batch := list(expired.values_list("pk", flat=True)[:DELETE_BATCH]):
            deleted += Run.objects.filter(pk__in=batch).delete()[1].get("runs.Run", 0)
    return deleted


def purge_scheduler_history(brief_history_jobs=(), now=None):
    """Scheduler job history older than a week; of ``brief_history_jobs``, than an hour."""
    max_age = JOB_EXECUTION_MAX_AGE_DAYS * 24 * 3600
    DjangoJobExecution.objects.delete_old_job_executions(max_age)
    cutoff = (now or timezone.now()) - BRIEF_HISTORY
    DjangoJobExecution.objects.filter(job_id__in=brief_history_jobs, run_time__lt=cutoff).delete()


def purge_departed_workers(now=None):
    now = now or timezone.now()
    WorkerHeartbeat.objects.filter(last_seen_at__lt=now - DEPARTED_WORKER_AGE).delete()


def clean_up_object_storage(now=None):
    """Unfinished uploads and unrecorded objects on S3 (a no-op on the filesystem). An
    unreachable storage is logged and tried again at the next pass."""
    try:
        aborted, deleted = remove_stray_objects(now)
    except Exception:
        logger.exception("housekeeping could not clean up the output bucket")
        return
    if aborted or deleted:
        logger.info(
            "housekeeping aborted %s unfinished uploads and deleted %s unrecorded objects",
            aborted,
            deleted,
        )


def run_housekeeping(brief_history_jobs=()):
    deleted = purge_expired_runs()
    purge_scheduler_history(brief_history_jobs)
    purge_departed_workers()
    clean_up_object_storage()
    if deleted:
        logger.info("housekeeping deleted %s expired runs", deleted)
    return deleted
