"""Turn due reports into runs: the reports table is the schedule.

A report is due when its ``next_run_at`` has come. The leader's fire pass claims due
reports (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), records one run per fire and moves
``next_run_at`` to the next fire after now, all in one transaction per batch: a fire is
recorded exactly when its report moves on, whoever else runs a pass at the same time.
Each such transaction first proves that its caller holds the scheduler lease
(runs.services.runtime.leadership.fence): a former leader records nothing.
"""

import logging
import time
from collections import defaultdict
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from reports.cron import next_fire_time, previous_fire_time
from reports.models import Report
from reports.services.schedules import InvalidSchedule, parsed_schedule, upcoming_fire
from runs.services.domain.queue import record_scheduled_fires
from runs.services.runtime.leadership import fence

logger = logging.getLogger(__name__)

FIRE_BATCH = 1000
UPDATE_BATCH = 500  # ids per UPDATE … WHERE id IN (…), well within SQLite's 999 parameters
MICROSECOND = timedelta(microseconds=1)


def fire_due_reports(lease, *, now=None, time_budget=None):
    """Record the fires of every report due at ``now``; the number of fires recorded.

    Batches of FIRE_BATCH reports, each its own transaction, fenced by ``lease``
    (LeaseLost if it is not held); with ``time_budget`` (seconds) no new batch starts
    after it is spent, and the next pass goes on.
    """
    now = now or timezone.now()
    deadline = None if time_budget is None else time.monotonic() + time_budget
    recorded = 0
    while deadline is None or time.monotonic() < deadline:
        with transaction.atomic():
            fence(lease, fire_pass=True)
            due = list(
                Report.objects.select_for_update(skip_locked=True)
                .filter(enabled=True, next_run_at__lte=now)
                .exclude(schedule="")
                .order_by("next_run_at")
                .values_list("pk", "schedule", "timezone", "next_run_at")[:FIRE_BATCH]
            )
            fires, moves = _fires_and_moves(due, now)
            record_scheduled_fires(fires)
            for next_run_at, report_ids in moves.items():
                for start in range(0, len(report_ids), UPDATE_BATCH):
                    Report.objects.filter(pk__in=report_ids[start : start + UPDATE_BATCH]).update(
                        next_run_at=next_run_at
                    )
        recorded += len(fires)
        if len(due) < FIRE_BATCH:
            break
    return recorded


def _fires_and_moves(due, now):
    """The fires to record, ``(report_id, fire, previous fire)``, and the new next_run_at
    of each report (new value -> report ids).

    Missed fires coalesce: only the newest fire up to ``now`` is recorded, and only if it
    is at most SCHEDULE_MISFIRE_GRACE_SECONDS old.
    """
    oldest_allowed = now - timedelta(seconds=settings.SCHEDULE_MISFIRE_GRACE_SECONDS)
    fires, moves = [], defaultdict(list)
    for report_id, expression, zone_name, next_run_at in due:
        try:
            schedule, zone = parsed_schedule(expression, zone_name)
        except InvalidSchedule as error:
            logger.error("report %s not scheduled: %s", report_id, error)
            moves[None].append(report_id)
            continue
        newest, fire = (
            None,
            next_fire_time(schedule, zone, max(next_run_at, oldest_allowed) - MICROSECOND),
        )
        while fire is not None and fire <= now:
            newest, fire = fire, next_fire_time(schedule, zone, fire)
        if newest is not None:
            fires.append((report_id, newest, previous_fire_time(schedule, zone, newest)))
        moves[fire].append(report_id)
    return fires, moves


def repair_next_runs(lease, *, now=None):
    """Make ``next_run_at`` agree with each report's schedule where it does not.

    The admin and the API keep it right on save; this catches reports changed any other
    way. A due report (``next_run_at`` passed) is left to the fire pass. Each correction
    is conditional on the row being as read, so a concurrent save or fire wins. The
    corrections are written in one transaction fenced by ``lease``.
    """
    now = now or timezone.now()
    unscheduled = Q(enabled=False) | Q(schedule="")
    rows = (
        Report.objects.exclude(unscheduled)
        .exclude(next_run_at__lte=now)
        .values_list("pk", "schedule", "timezone", "next_run_at")
    )
    corrections = defaultdict(list)  # (schedule, zone, stored, expected) -> report ids
    for report_id, expression, zone_name, stored in rows:
        try:
            expected = upcoming_fire(expression, zone_name, after=now)
        except InvalidSchedule as error:
            logger.error("report %s not scheduled: %s", report_id, error)
            expected = None
        if stored != expected:
            corrections[expression, zone_name, stored, expected].append(report_id)
    with transaction.atomic():
        fence(lease)
        repaired = Report.objects.filter(unscheduled, next_run_at__isnull=False).update(
            next_run_at=None
        )
        for (expression, zone_name, stored, expected), report_ids in corrections.items():
            for start in range(0, len(report_ids), UPDATE_BATCH):
                repaired += Report.objects.filter(
                    pk__in=report_ids[start : start + UPDATE_BATCH],
                    schedule=expression,
                    timezone=zone_name,
                    enabled=True,
                    next_run_at=stored,
                ).update(next_run_at=expected)
    return repaired
