"""The data interval a run covers: the period its ``{{ interval_start }}`` and
``{{ interval_end }}`` stand for.

- A scheduled fire covers the schedule's previous fire time up to its own.
- A run on request of a scheduled report covers the latest complete interval as of
  the request: from the fire before the latest fire up to that fire.
- A report without a schedule gets the previous calendar day in its time zone.
Given bounds win; a bound given alone gets its partner from the schedule (or the day).
"""

from datetime import datetime, time, timedelta

from reports import parameters as params
from reports.cron import next_fire_time, previous_fire_time
from reports.services.schedules import InvalidSchedule, parsed_schedule
from reports.services.statements import report_zone

MICROSECOND = timedelta(microseconds=1)


def _schedule_of(report):
    if not report.schedule.strip():
        return None
    try:
        return parsed_schedule(report.schedule, report.timezone)
    except InvalidSchedule:
        return None


def _local_midnight(day, zone):
    return datetime.combine(day, time(0), tzinfo=zone)


def calendar_day_containing(moment, zone):
    """Midnight to midnight (local) of the day ``moment`` falls on: 23, 24 or 25 hours."""
    day = moment.astimezone(zone).date()
    return _local_midnight(day, zone), _local_midnight(day + timedelta(days=1), zone)


def interval_ending_at(report, end):
    """The interval whose end is ``end``: from the previous fire (or the same wall time a
    calendar day earlier, for reports without a schedule)."""
    schedule = _schedule_of(report)
    if schedule is not None:
        start = previous_fire_time(*schedule, end)
        if start is not None:
            return start, end
    zone = report_zone(report)
    local = end.astimezone(zone)
    day_before = datetime.combine(local.date() - timedelta(days=1), local.time(), tzinfo=zone)
    return day_before, end


def interval_starting_at(report, start):
    schedule = _schedule_of(report)
    if schedule is not None:
        end = next_fire_time(*schedule, start)
        if end is not None:
            return start, end
    zone = report_zone(report)
    local = start.astimezone(zone)
    return start, datetime.combine(local.date() + timedelta(days=1), local.time(), tzinfo=zone)


def default_interval(report, now):
    """The interval a run of ``report`` requested at ``now`` covers, unless told otherwise."""
    schedule = _schedule_of(report)
    if schedule is not None:
        latest = previous_fire_time(*schedule, now + MICROSECOND)  # a fire at now counts
        if latest is not None:
            return interval_ending_at(report, latest)
    zone = report_zone(report)
    today = now.astimezone(zone).date()
    return _local_midnight(today - timedelta(days=1), zone), _local_midnight(today, zone)


def requested_interval(report, given, now):
    """The interval for a run on request: ``interval_start``/``interval_end`` from the
    ``given`` values (ISO 8601; naive ones in the report's zone), else the default.

    Raises ParameterError naming the bound that is wrong.
    """
    zone = report_zone(report)
    bounds = {
        name: params.parse_timestamp(name, given[name], zone)
        for name in params.BUILT_IN_NAMES
        if given.get(name) not in (None, "")
    }
    start, end = bounds.get(params.INTERVAL_START), bounds.get(params.INTERVAL_END)
    if start is None and end is None:
        interval = default_interval(report, now)
    elif start is None:
        interval = interval_ending_at(report, end)
    elif end is None:
        interval = interval_starting_at(report, start)
    else:
        interval = (start, end)
    if not interval[0] < interval[1]:
        raise params.ParameterError(
            params.INTERVAL_END,
            "The interval must end after it starts (interval_end > interval_start).",
        )
    return tuple(bound.astimezone(params.UTC) for bound in interval)


def given_without_bounds(given):
    """The given values other than the interval's bounds (those go on the run itself)."""
    return {
        name: value for name, value in (given or {}).items() if name not in params.BUILT_IN_NAMES
    }


def intervals_in_range(report, start, end, limit):
    """The intervals of the fire times in ``[start, end)``, oldest first: one per fire of
    the schedule, or one per calendar day (local midnight) for a report without one.

    Returns ``(intervals, total)``; stops listing after ``limit`` intervals and stops
    counting after ``count_limit`` (then ``total`` is a lower bound)."""
    schedule = _schedule_of(report)
    intervals, total = [], 0
    count_limit = limit * 100
    if schedule is not None:
        fire = next_fire_time(*schedule, start - MICROSECOND)
        previous = previous_fire_time(*schedule, fire) if fire is not None else None
        while fire is not None and fire < end and total <= count_limit:
            total += 1
            if len(intervals) < limit and previous is not None:
                intervals.append((previous, fire))
            elif previous is None:
                total -= 1  # the very first fire of a schedule has no interval
            previous, fire = fire, next_fire_time(*schedule, fire)
        return intervals, total
    zone = report_zone(report)
    day = start.astimezone(zone).date()
    if _local_midnight(day, zone) < start:
        day += timedelta(days=1)
    while _local_midnight(day, zone) < end and total <= count_limit:
        total += 1
        if len(intervals) < limit:
            intervals.append(
                (_local_midnight(day - timedelta(days=1), zone), _local_midnight(day, zone))
            )
        day += timedelta(days=1)
    return intervals, total
