"""Runs whose worker is gone: detect them by heartbeat and close them as failed."""

import logging
from datetime import timedelta

from django.utils import timezone

from runs.models import Run, RunStatus
from runs.services.infrastructure.output_storage import remove_unfinished_output
from runs.services.runtime.runner import fail_run

logger = logging.getLogger(__name__)


def fail_lost_runs(lost_after_seconds, *, exclude_ids=()):
    """Fail running runs without a heartbeat for ``lost_after_seconds``; return them.

    ``exclude_ids``: runs the caller is executing itself, alive whatever their heartbeat
    says (it may not have reached the database yet).
    """
    cutoff = timezone.now() - timedelta(seconds=lost_after_seconds)
    lost = []
    stale = Run.objects.filter(status=RunStatus.RUNNING, heartbeat_at__lt=cutoff)
    if exclude_ids:
        stale = stale.exclude(pk__in=exclude_ids)
    for run in stale.select_related("report"):
        last_seen = run.heartbeat_at.strftime("%Y-%m-%d %H:%M:%S UTC")
        error = (
            f"Worker lost: {run.worker or 'the worker'} stopped sending heartbeats "
            f"(last at {last_seen}); the run did not finish."
        )
        failed = fail_run(run, error)
        if run.status == RunStatus.CANCELLED:  # someone had cancelled it: so it ends
            remove_unfinished_output(run)
        if failed:
            removed = remove_unfinished_output(run)
            logger.warning("run %s of %s: %s", run.pk, run.report.slug, error)
            if removed:
                logger.info("removed what run %s left unfinished: %s", run.pk, removed)
            lost.append(run)
    return lost


def abandon_runs(runs, reason):
    """Fail runs this worker is giving up on (stopping past its grace time); one
    someone cancelled ends cancelled."""
    for run in runs:
        if fail_run(run, reason) or run.status == RunStatus.CANCELLED:
            remove_unfinished_output(run)
