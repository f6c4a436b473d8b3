"""The data interval a run covers: the period its ``{{ interval_start }}`` and
``{{ interval_end }}`` stand for.

- A scheduled fire covers the schedule's previous fire time up to its own.
- A run on request of a scheduled report covers the latest complete interval as of
  the request: from the fire before the latest fire up to that fire.
- A report without a schedule gets the previous calendar day in its time zone.
Given bounds win; a bound given alone gets its partner from the schedule (or the day).

Every bound exists in the report's zone (reportsvc.moments): an interval whose partner
would fall off either end of the calendar is refused, and a range near year 1 or 9999
simply holds fewer fire times.
"""

from datetime import UTC, datetime, time, timedelta

from datasources.parameters.timestamp import parse_timestamp
from reports import parameters as params
from reports.cron import next_fire_time, previous_fire_time
from reports.services.schedules import InvalidSchedule, parsed_schedule
from reports.zones import report_zone
from reportsvc.moments import range_text, representable, zone_bounds

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
        name: parse_timestamp(name, given[name], zone)
        for name in params.BUILT_IN_NAMES
        if given.get(name) not in (None, "")
    }
    start, end = bounds.get(params.INTERVAL_START), bounds.get(params.INTERVAL_END)
    try:
        if start is None and end is None:
            interval = default_interval(report, now)
        elif start is None:
            interval = interval_ending_at(report, end)
        elif end is None:
            interval = interval_starting_at(report, start)
        else:
            interval = (start, end)
    except OverflowError:  # the partner would be before year 1 or after year 9999
        interval = None
    if interval is None or not all(representable(bound, zone) for bound in interval):
        given_bound = params.INTERVAL_END if start is None else params.INTERVAL_START
        partner = params.INTERVAL_START if start is None else params.INTERVAL_END
        raise params.ParameterError(
            given_bound,
            f"The interval's {partner} would fall outside the calendar: {range_text(zone)}. "
            f"Give {partner} too, or a {given_bound} further from the calendar's end.",
        )
    if not interval[0] < interval[1]:
        raise params.ParameterError(
            params.INTERVAL_END,
            "The interval must end after it starts (interval_end > interval_start).",
        )
    return tuple(bound.astimezone(UTC) for bound in interval)


def given_without_bounds(given):
    """The given values other than the interval's bounds (those go on the run itself)."""
    return {
        name: value for name, value in (given or {}).items() if name not in params.BUILT_IN_NAMES
    }


# Counting stops this far past the limit: a fire time costs tens of microseconds, and
# a range of centuries holds millions of them.
COUNT_LIMIT_FACTOR = 10


def intervals_in_range(report, start, end, limit):
    """The intervals of the fire times in ``[start, end)``, oldest first: one per fire of
    the schedule, or one per calendar day (local midnight) for a report without one.

    Returns ``(intervals, total)``; stops listing after ``limit`` intervals and stops
    counting after ``limit * COUNT_LIMIT_FACTOR`` (then ``total`` is a lower bound), so
    a range of any length costs at most that many fire times."""
    intervals, total = [], 0
    for interval in _fire_intervals(report, start, end):
        total += 1
        if total <= limit:
            intervals.append(interval)
        if total > limit * COUNT_LIMIT_FACTOR:
            break
    return intervals, total


def _fire_intervals(report, start, end):
    """Each fire time in ``[start, end)`` with its interval, oldest first. The calendar's
    ends (year 1, year 9999 in the report's zone) end the series; an interval that would
    start before year 1 is left out."""
    schedule = _schedule_of(report)
    zone = report_zone(report)
    try:
        if schedule is not None:
            after = start - MICROSECOND if start > zone_bounds(zone)[0] else start
            fire = next_fire_time(*schedule, after)
            previous = previous_fire_time(*schedule, fire) if fire is not None else None
            while fire is not None and fire < end:
                if previous is not None:  # the very first fire of a schedule has no interval
                    yield previous, fire
                previous, fire = fire, next_fire_time(*schedule, fire)
            return
        day = start.astimezone(zone).date()
        if _local_midnight(day, zone) < start:
            day += timedelta(days=1)
        while _local_midnight(day, zone) < end:
            interval = _day_before(day, zone)
            if interval is not None:
                yield interval
            day += timedelta(days=1)
    except OverflowError:
        return


def _day_before(day, zone):
    """The calendar day before ``day``, midnight to midnight; None before year 1."""
    try:
        interval = (_local_midnight(day - timedelta(days=1), zone), _local_midnight(day, zone))
    except OverflowError:
        return None
    return interval if all(representable(bound, zone) for bound in interval) else None
