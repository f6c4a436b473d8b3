"""Crontab expressions with the semantics of crontab(5).

Five fields: minute (0-59), hour (0-23), day of month (1-31), month (1-12 or jan-dec),
day of week (0-7 or sun-sat; 0 and 7 are both Sunday). Each field is a comma-separated
list of ``*``, ``N``, ``N-M`` with an optional ``/step`` after ``*`` or a range.
Names are accepted in ranges and lists too (``mon-fri``), case-insensitively.

When both day fields are restricted (neither starts with ``*``) a day matches if
*either* matches, exactly as cron does; ``@hourly``, ``@daily``/``@midnight``,
``@weekly``, ``@monthly`` and ``@yearly``/``@annually`` are accepted.

Fire times are wall-clock times in the report's time zone. Across daylight-saving
changes they follow cron (Vixie cron / cronie): a *fixed-time* schedule (neither the
minute nor the hour field starts with ``*``) whose time is skipped when clocks spring
forward fires at the moment of the change, and fires once, not twice, when clocks fall
back; a *wildcard* schedule (``*/15 * * * *``, ``0 * * * *``) simply follows the clock,
so it has no skipped-hour fires and fires in both passes of a repeated hour.
"""

import functools
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

MONTH_NAMES = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAY_NAMES = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


@dataclass(frozen=True)
class _FieldSpec:
    label: str
    low: int
    high: int
    names: tuple = ()
    name_base: int = 0


FIELD_SPECS = (
    _FieldSpec("minute", 0, 59),
    _FieldSpec("hour", 0, 23),
    _FieldSpec("day of month", 1, 31),
    _FieldSpec("month", 1, 12, tuple(MONTH_NAMES), 1),
    _FieldSpec("day of week", 0, 7, tuple(DAY_NAMES), 0),
)


class CronError(ValueError):
    """A crontab expression that cron would not accept; the message says why."""


@dataclass(frozen=True)
class CronSchedule:
    minutes: frozenset
    hours: frozenset
    days_of_month: frozenset
    months: frozenset
    days_of_week: frozenset  # 0 = Sunday … 6 = Saturday (7 folded into 0)
    day_of_month_star: bool
    day_of_week_star: bool
    minute_star: bool = False
    hour_star: bool = False

    @property
    def is_fixed_time(self):
        return not (self.minute_star or self.hour_star)

    def matches_day(self, year_day):
        """``year_day`` is a date; the day-of-month / day-of-week rule of cron."""
        dom_match = year_day.day in self.days_of_month
        dow_match = (year_day.isoweekday() % 7) in self.days_of_week
        if self.day_of_month_star or self.day_of_week_star:
            return dom_match and dow_match
        return dom_match or dow_match

    def matches(self, wall_time):
        """Does this schedule fire at ``wall_time`` (a naive or aware local datetime)?"""
        return (
            wall_time.minute in self.minutes
            and wall_time.hour in self.hours
            and wall_time.month in self.months
            and self.matches_day(wall_time.date())
        )


def _parse_value(text, spec):
    lowered = text.lower()
    if spec.names and lowered in spec.names:
        return spec.names.index(lowered) + spec.name_base
    if not (text.isascii() and text.isdigit()):  # "²".isdigit() is True
        allowed = f"{spec.low}-{spec.high}"
        if spec.names:
            allowed += f" or {spec.names[0]}-{spec.names[-1]}"
        raise CronError(f"{spec.label}: '{text}' is not a valid value (use {allowed})")
    value = int(text)
    if not spec.low <= value <= spec.high:
        raise CronError(f"{spec.label}: {value} is out of range {spec.low}-{spec.high}")
    return value


def _parse_field(text, spec):
    values = set()
    if not text:
        raise CronError(f"{spec.label}: empty field")
    for item in text.split(","):
        if not item:
            raise CronError(f"{spec.label}: empty item in the list '{text}'")
        range_part, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not (step_text.isascii() and step_text.isdigit()) or int(step_text) == 0:
                raise CronError(f"{spec.label}: step '{step_text}' must be a positive number")
            step = int(step_text)
        if range_part == "*":
            low, high = spec.low, spec.high
        elif "-" in range_part:
            start_text, _, end_text = range_part.partition("-")
            low, high = _parse_value(start_text, spec), _parse_value(end_text, spec)
            if low > high:
                raise CronError(f"{spec.label}: range '{range_part}' runs backwards")
        elif slash:
            raise CronError(
                f"{spec.label}: '{item}' is not standard cron; write a range with the step, "
                f"e.g. '{range_part}-{spec.high}/{step_text}'"
            )
        else:
            low = high = _parse_value(range_part, spec)
        values.update(range(low, high + 1, step))
    return values


def parse_crontab(expression):
    """Parse a crontab expression into a :class:`CronSchedule`; raise CronError if invalid."""
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
    minutes, hours, days_of_month, months, days_of_week = (
        _parse_field(field, spec) for field, spec in zip(fields, FIELD_SPECS, strict=True)
    )
    if 7 in days_of_week:
        days_of_week = (days_of_week - {7}) | {0}
    return CronSchedule(
        minutes=frozenset(minutes),
        hours=frozenset(hours),
        days_of_month=frozenset(days_of_month),
        months=frozenset(months),
        days_of_week=frozenset(days_of_week),
        day_of_month_star=fields[2].startswith("*"),
        day_of_week_star=fields[4].startswith("*"),
        minute_star=fields[0].startswith("*"),
        hour_star=fields[1].startswith("*"),
    )


# The largest daylight-saving shift in the tz database is two hours.
_MAX_SHIFT = timedelta(hours=2)
# Schedules like "0 0 29 2 mon" fire rarely; beyond this they never fire.
_SEARCH_DAYS = 366 * 30


def _wall_times_from(schedule, start):
    """Matching naive wall-clock minutes at or after ``start``, in order."""
    hours, minutes = sorted(schedule.hours), sorted(schedule.minutes)
    day = start.date()
    for _ in range(_SEARCH_DAYS):
        if day.month in schedule.months and schedule.matches_day(day):
            for hour in hours:
                for minute in minutes:
                    wall = datetime.combine(day, time(hour, minute))
                    if wall >= start:
                        yield wall
        day += timedelta(days=1)


def _exists(aware):
    local = aware.astimezone(UTC).astimezone(aware.tzinfo)
    return local.replace(tzinfo=None) == aware.replace(tzinfo=None)


def _instants_of(wall, zone, fixed_time):
    """The UTC instants at which a matching wall time fires (0, 1 or 2 of them)."""
    first, second = wall.replace(tzinfo=zone, fold=0), wall.replace(tzinfo=zone, fold=1)
    if _exists(first):
        if first.utcoffset() != second.utcoffset() and not fixed_time:
            return [first.astimezone(UTC), second.astimezone(UTC)]  # repeated hour
        return [first.astimezone(UTC)]
    if not fixed_time:
        return []  # skipped by the clock change
    later = wall
    while not _exists(later.replace(tzinfo=zone)):
        later += timedelta(minutes=1)
    return [later.replace(tzinfo=zone).astimezone(UTC)]  # the moment of the change


def _near_clock_change(zone, instant):
    return (instant - _MAX_SHIFT).astimezone(zone).utcoffset() != (instant + _MAX_SHIFT).astimezone(
        zone
    ).utcoffset()


def next_fire_time(schedule, zone, after):
    """The first fire strictly after the aware datetime ``after``, in UTC; None if never."""
    after = after.astimezone(UTC)
    start = after.astimezone(zone).replace(tzinfo=None, second=0, microsecond=0)
    if _near_clock_change(zone, after):
        start -= _MAX_SHIFT  # a repeated hour can put later instants at earlier wall times
    best, horizon = None, None
    for wall in _wall_times_from(schedule, start):
        if horizon is not None and wall > horizon:
            break
        for instant in _instants_of(wall, zone, schedule.is_fixed_time):
            if instant > after and (best is None or instant < best):
                if horizon is None and not _near_clock_change(zone, instant):
                    return instant  # away from clock changes wall order is time order
                best, horizon = instant, wall + 2 * _MAX_SHIFT
    return best


def next_fire_times(schedule, zone, after, count):
    """The next ``count`` fire times after ``after`` (fewer if the schedule ends)."""
    times = []
    while len(times) < count and (after := next_fire_time(schedule, zone, after)):
        times.append(after)
    return times


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
