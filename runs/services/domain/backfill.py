"""Backfills: one queued run per fire time of a report's schedule in a range, each over
its own data interval, oldest first.

A fire time that already has a succeeded run over its interval (with the same given
values) is skipped unless asked to run again; one with a run waiting or running is
always skipped, so the same backfill twice queues nothing the second time.
"""

import uuid
from dataclasses import dataclass, field

from django.conf import settings
from django.utils import timezone

from reports.parameters import ParameterError
from reports.zones import report_zone
from reportsvc.moments import out_of_range_message, representable
from runs.models import Run, RunStatus, RunTrigger
from runs.services.domain.intervals import COUNT_LIMIT_FACTOR, intervals_in_range
from runs.services.domain.queue import QueueFull, checked_values, insert_requested_runs


class BackfillRangeError(ParameterError):
    """The range (``start``/``end``) is wrong, not a parameter."""


@dataclass
class BackfillPlan:
    """What a backfill would do: the intervals it queues and how many it skips."""

    to_queue: list = field(default_factory=list)  # (start, end), oldest first
    skipped: int = 0
    parameters: dict = field(default_factory=dict)

    @property
    def total(self):
        return len(self.to_queue) + self.skipped


def _iso(moment):
    """A moment for a message, with the offset it came with ("Z" for UTC)."""
    text = moment.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def plan_backfill(report, start, end, *, rerun=False, given=None):
    """The runs a backfill of ``report`` over ``[start, end)`` would queue.

    Raises ParameterError naming ``start``, ``end`` or a parameter. Costs at most
    ``BACKFILL_MAX_RUNS * COUNT_LIMIT_FACTOR`` fire times, whatever the range.
    """
    zone = report_zone(report)
    for name, bound in (("start", start), ("end", end)):
        if not representable(bound, zone):
            raise BackfillRangeError(name, out_of_range_message(_iso(bound), zone))
    if not start < end:
        raise BackfillRangeError("end", "The range must end after it starts (end > start).")
    limit = settings.BACKFILL_MAX_RUNS
    intervals, total = intervals_in_range(report, start, end, limit)
    if total > limit:
        most = limit * COUNT_LIMIT_FACTOR
        counted = f"more than {most:,}" if total > most else f"{total:,}"
        raise BackfillRangeError(
            "end",
            f"The range holds {counted} fire times; a backfill queues at most {limit:,} "
            f"runs (BACKFILL_MAX_RUNS). Split it into shorter ranges: the first {limit:,} "
            f"end with the fire time {_iso(intervals[-1][1])}.",
        )
    if not intervals:
        return BackfillPlan(parameters=checked_values(report, given, (start, end)))
    parameters = checked_values(report, given, intervals[0])
    covered = _covered_intervals(report, intervals, parameters, rerun)
    plan = BackfillPlan(parameters=parameters)
    for interval in intervals:
        if interval in covered:
            plan.skipped += 1
        else:
            plan.to_queue.append(interval)
    return plan


def _covered_intervals(report, intervals, parameters, rerun):
    """The intervals that already have a run waiting, running or (unless ``rerun``)
    succeeded, with the given values."""
    statuses = [RunStatus.QUEUED, RunStatus.RUNNING]
    if not rerun:
        statuses.append(RunStatus.SUCCEEDED)
    existing = Run.objects.filter(
        report=report,
        status__in=statuses,
        interval_end__gte=intervals[0][1],
        interval_end__lte=intervals[-1][1],
    ).values_list("interval_start", "interval_end", "parameters")
    return {
        (start, end)
        for start, end, recorded in existing
        if all((recorded or {}).get(name) == value for name, value in parameters.items())
    }


def queue_backfill(
    report, start, end, *, rerun=False, given=None, requested_by=None, idempotency_key=""
):
    """Queue the runs of a backfill; ``(runs, skipped, created)``.

    With an idempotency key, a repeat within 24 hours returns the runs the first
    request queued (``created`` False); a key that queued a run of another kind is
    refused. The report's waiting backfilled runs may not exceed BACKFILL_MAX_RUNS
    (QueueFull). Backfills of one report take turns on its row, so two at once cannot
    queue the same interval twice.
    """

    def replay(earlier):
        if earlier.backfill_id is None:
            raise BackfillRangeError(
                "Idempotency-Key",
                "This key was used for a run of this report that is not a backfill; use a new key.",
            )
        return list(Run.objects.filter(backfill_id=earlier.backfill_id).order_by("id")), 0

    def insert(key):
        plan = plan_backfill(report, start, end, rerun=rerun, given=given)
        if not plan.to_queue:
            return [], plan.skipped
        _check_backfill_room(report, len(plan.to_queue))
        batch, now = uuid.uuid4(), timezone.now()
        Run.objects.bulk_create(
            Run(
                report=report,
                trigger=RunTrigger.BACKFILL,
                requested_by=requested_by,
                parameters=plan.parameters,
                interval_start=interval_start,
                interval_end=interval_end,
                backfill_id=batch,
                queued_at=now,  # one time stamp: the worker takes them by id, oldest first
                idempotency_key=key if index == 0 else "",
            )
            for index, (interval_start, interval_end) in enumerate(plan.to_queue)
        )
        return list(Run.objects.filter(backfill_id=batch).order_by("id")), plan.skipped

    (runs, skipped), created = insert_requested_runs(report, idempotency_key, insert, replay)
    return runs, skipped, created


def _check_backfill_room(report, adding):
    limit = settings.BACKFILL_MAX_RUNS
    waiting = Run.objects.filter(
        report=report, status=RunStatus.QUEUED, trigger=RunTrigger.BACKFILL
    ).count()
    if waiting + adding > limit:
        raise QueueFull(
            f"Report '{report.slug}' has {waiting} backfilled runs waiting; {adding} more "
            f"would pass BACKFILL_MAX_RUNS ({limit}). Queue them once some have run."
        )
