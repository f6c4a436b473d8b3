"""Crontab schedules: cronsim computes the fire times; this wrapper adds what it lacks.

Five fields: minute (0-59), hour (0-23), day of month (1-31), month (1-12 or jan-dec),
day of week (0-7 or sun-sat; 0 and 7 are both Sunday). Each field is a comma-separated
list of ``*``, ``N``, ``N-M`` with an optional ``/step`` after ``*`` or a range; names
work in ranges and lists too (``mon-fri``), in any case. When both day fields are
restricted (neither starts with ``*``) a day matches if *either* does, as in cron.

Fire times are wall-clock times in the report's time zone, and across daylight-saving
changes they follow cron (Vixie cron / cronie), as cronsim does: a *fixed-time*
schedule (neither the minute nor the hour field starts with ``*``) whose time is skipped
when clocks spring forward fires at the moment of the change, and fires once when
clocks fall back; a *wildcard* schedule (``*/15 * * * *``) follows the clock.

cronsim also accepts what cron does not (seconds, ``L``, ``#``, ``5/15``); the syntax
check here refuses that first, with a message that says what is wrong, and adds the
``@daily``-style shortcuts and the description for people (cron-descriptor).
"""

import functools
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cronsim import CronSim, CronSimError

from reportsvc.moments import zone_bounds

MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

# label, lowest value, highest value, names (the first name stands for ``name_base``)
FIELDS = (
    ("minute", 0, 59, (), 0),
    ("hour", 0, 23, (), 0),
    ("day of month", 1, 31, (), 0),
    ("month", 1, 12, MONTH_NAMES, 1),
    ("day of week", 0, 7, DAY_NAMES, 0),
)

_ITEM = re.compile(r"(?P<range>[^/]*)(?:/(?P<step>.*))?", re.DOTALL)


class CronError(ValueError):
    """A crontab expression that cron would not accept; the message says why."""


@dataclass(frozen=True)
class CronSchedule:
    """A checked schedule: ``expression`` is the five fields cronsim evaluates."""

    expression: str

    @property
    def is_fixed_time(self):
        """Neither minute nor hour starts with ``*``: cron's rules for clock changes."""
        minute, hour = self.expression.split(" ", 2)[:2]
        return not (minute.startswith("*") or hour.startswith("*"))


def _value(text, field):
    label, low, high, names, name_base = field
    if text.lower() in names:
        return names.index(text.lower()) + name_base
    if not (text.isascii() and text.isdigit()):  # "²".isdigit() is True
        allowed = f"{low}-{high}" + (f" or {names[0]}-{names[-1]}" if names else "")
        raise CronError(f"{label}: '{text}' is not a valid value (use {allowed})")
    if not low <= int(text) <= high:
        raise CronError(f"{label}: {int(text)} is out of range {low}-{high}")
    return int(text)


def _check_field(text, field):
    """``text`` as cronsim reads it the same as cron, or CronError."""
    label, high = field[0], field[2]
    items = []
    for item in text.split(","):
        if not item:
            raise CronError(f"{label}: empty item in the list '{text}'")
        parts = _ITEM.fullmatch(item)
        range_text, step = parts["range"], parts["step"]
        if step is not None and not (step.isascii() and step.isdigit() and int(step) > 0):
            raise CronError(f"{label}: step '{step}' must be a positive number")
        start, dash, end = range_text.partition("-")
        if range_text == "*":
            pass
        elif dash:
            if _value(start, field) > _value(end, field):
                raise CronError(f"{label}: range '{range_text}' runs backwards")
            if step is not None and _value(start, field) == _value(end, field):
                item = start  # cronsim reads a one-value range with a step as "N/step"
        else:
            _value(start, field)
            if step is not None:
                raise CronError(
                    f"{label}: '{item}' is not standard cron; write a range with the step, "
                    f"e.g. '{start}-{high}/{step}'"
                )
        items.append(item)
    return ",".join(items)


def parse_crontab(expression):
    """Check a crontab expression; a :class:`CronSchedule`, or CronError saying why not."""
    text = " ".join(expression.split())
    if text.startswith("@"):
        if text.lower() == "@reboot":
            raise CronError("@reboot has no meaning for a report; use a time schedule")
        if text.lower() not in MACROS:
            raise CronError(f"unknown shortcut '{text}'; use one of {', '.join(MACROS)}")
        text = MACROS[text.lower()]
    fields = text.split(" ")
    if len(fields) != 5:
        raise CronError(
            f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}"
        )
    return CronSchedule(
        " ".join(_check_field(text, field) for text, field in zip(fields, FIELDS, strict=True))
    )


def fires_after(schedule, zone, after):
    """The fire times strictly after the aware datetime ``after``, in order, in UTC.

    Ends after 50 years without a fire (a schedule such as ``0 0 30 2 *`` never fires),
    and where the calendar ends: no fire is after year 9999, in UTC or in ``zone``.
    """
    try:
        after = max(after.astimezone(UTC), zone_bounds(zone)[0])
        if schedule.is_fixed_time:
            yield from _fixed_time_fires(schedule.expression, zone, after)
        else:
            yield from _wildcard_fires(schedule.expression, zone, after)
    except OverflowError:
        return


def _fixed_time_fires(expression, zone, after):
    # cronsim reads these on the wall clock, with cron's rules for skipped and repeated
    # times. The wall clock does not say in which pass of a repeated hour ``after`` lies,
    # so a first pass may be past. (Compared in UTC: two times in one zone compare by
    # wall clock alone.)
    try:
        fires = CronSim(expression, after.astimezone(zone))
    except CronSimError:  # after the syntax check: a day that no month of it has
        return
    for fire in fires:
        if (fire := fire.astimezone(UTC)) > after:
            yield fire


def _wildcard_fires(expression, zone, after):
    # A wildcard schedule fires whenever the clock shows a matching time. cronsim's own
    # time zone stepping misses fires where clocks change by half an hour, at midnight
    # or at a quarter to the hour (Lord Howe, Havana, Chatham), so it reads one UTC
    # offset at a time: up to the next change of offset, then on from there.
    offset = _offset_at(zone, after)
    while True:
        try:
            wall = next(CronSim(expression, (after + offset).replace(tzinfo=None)), None)
        except CronSimError:
            return
        if wall is None:
            return
        fire = (wall - offset).replace(tzinfo=UTC)
        change = _offset_change(zone, offset, after, fire)
        if change is None:
            yield fire
            after = fire
        else:
            after, offset = change - timedelta(microseconds=1), _offset_at(zone, change)


def _offset_at(zone, instant):
    return instant.astimezone(zone).utcoffset()


_PROBE_SECONDS = 6 * 3600  # no zone changes its offset twice within six hours


def _offset_change(zone, offset, after, until):
    """The first instant in (``after``, ``until``] whose UTC offset is not ``offset``."""
    low, end = int(after.timestamp()), int(until.timestamp())
    while low < end:
        high = min(low + _PROBE_SECONDS, end)
        if _offset_at(zone, datetime.fromtimestamp(high, UTC)) != offset:
            while high - low > 1:  # tz changes fall on whole seconds
                middle = (low + high) // 2
                if _offset_at(zone, datetime.fromtimestamp(middle, UTC)) == offset:
                    low = middle
                else:
                    high = middle
            return datetime.fromtimestamp(high, UTC)
        low = high
    return None


@functools.lru_cache(maxsize=4096)  # reports sharing a schedule share their fire times
def next_fire_time(schedule, zone, after):
    """The first fire strictly after the aware datetime ``after``, in UTC; None if never."""
    return next(fires_after(schedule, zone, after), None)


def next_fire_times(schedule, zone, after, count):
    """The next ``count`` fire times after ``after`` (fewer if the schedule ends)."""
    fires = fires_after(schedule, zone, after)
    return [fire for fire, _ in zip(fires, range(count), strict=False)]


@functools.lru_cache(maxsize=4096)
def previous_fire_time(schedule, zone, before):
    """The last fire strictly before the aware datetime ``before``, in UTC; None if none.

    Searched forwards, in windows that double from two minutes back, so only the forward
    evaluation (the one cron and the scheduler use) decides what a fire is.
    """
    earliest = zone_bounds(zone)[0]
    window = timedelta(minutes=2)
    while window < timedelta(days=366 * 50):
        start = before - window if before - earliest > window else earliest
        previous = None
        for fire in fires_after(schedule, zone, start):
            if fire >= before:
                break
            previous = fire
        if previous is not None or start == earliest:
            return previous
        window *= 2
    return None


@functools.lru_cache(maxsize=4096)  # cron_descriptor reads its locale files on every call
def describe_crontab(expression):
    """The schedule in words, e.g. "At 06:00, Monday through Friday"; "" if blank."""
    from cron_descriptor import Options, get_description

    text = " ".join(expression.split())
    if not text:
        return ""
    options = Options()
    options.use_24hour_time_format = True
    options.day_of_week_start_index_zero = True
    return get_description(MACROS.get(text.lower(), text), options)
