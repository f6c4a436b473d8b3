"""When a report fires next: ``Report.next_run_at`` is the one stored answer.

Saving a report through the admin or the API (``save_report``) recomputes it when the
schedule, the time zone or ``enabled`` changed; the leader's fire pass moves it on after
each fire (runs.services.runtime.fires), and its repair pass corrects reports changed any other
way (a shell, a bulk update) within SCHEDULE_SYNC_SECONDS.
"""

import functools
from zoneinfo import ZoneInfo

from django.db import transaction
from django.utils import timezone

from reports.cron import CronError, next_fire_time, parse_crontab
from reports.history import recorded
from reports.models import Report

# What next_run_at follows; any other field can change without moving it.
SCHEDULE_FIELDS = ("schedule", "timezone", "enabled")


class InvalidSchedule(ValueError):
    """A stored schedule or time zone that does not parse (saved without validation)."""


@functools.lru_cache(maxsize=4096)
def parsed_schedule(expression, zone_name):
    """``(CronSchedule, ZoneInfo)`` of a report's schedule; InvalidSchedule says why not."""
    try:
        return parse_crontab(expression), ZoneInfo(zone_name)
    except (CronError, ValueError, KeyError) as error:
        raise InvalidSchedule(f"{expression!r} in {zone_name!r}: {error}") from error


def upcoming_fire(expression, zone_name, enabled=True, *, after=None):
    """The first fire strictly after ``after`` (now) of a schedule; None if it has none."""
    if not enabled or not expression.strip():
        return None
    schedule, zone = parsed_schedule(expression, zone_name)
    return next_fire_time(schedule, zone, after or timezone.now())


def save_report(report, changes=None, *, by=None, via=""):
    """Save ``report`` (with ``changes``, field name -> value, applied first).

    A new report, or one whose schedule, time zone or enabled flag changed, gets the
    next fire time of its schedule from now; any other edit keeps the stored one, which
    the leader may have moved on since ``report`` was read. The version this writes
    names ``by`` (a user) and ``via`` (admin, API, …).
    """
    for name, value in (changes or {}).items():
        setattr(report, name, value)
    with recorded(by, via), transaction.atomic():
        stored = (
            Report.objects.select_for_update()
            .filter(pk=report.pk)
            .values(*SCHEDULE_FIELDS, "next_run_at")
            .first()
            if report.pk is not None
            else None
        )
        if stored is None or any(stored[name] != getattr(report, name) for name in SCHEDULE_FIELDS):
            try:
                report.next_run_at = upcoming_fire(report.schedule, report.timezone, report.enabled)
            except InvalidSchedule:
                report.next_run_at = None  # validation refuses these; a shell may not
        else:
            report.next_run_at = stored["next_run_at"]
        report.save()
    return report


def set_enabled(reports, enabled, *, by=None, via=""):
    """Enable (or disable) ``reports``, each through ``save_report`` (a version naming
    ``by``, next_run_at following); those already so are left alone. The changed ones."""
    changed = []
    for report in reports:
        if report.enabled != enabled:
            changed.append(save_report(report, {"enabled": enabled}, by=by, via=via))
    return changed
