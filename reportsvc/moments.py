"""The moments a time zone can hold.

Python's datetimes run from year 1 to year 9999 in every zone, UTC too. Near either end
a moment that exists in UTC may not exist in a report's zone: 0001-01-01T00:00Z is
still year 0 in New York, 9999-12-31T12:00Z already year 10000 in Kiritimati. A value
is taken only if it exists in both, so every conversion between them succeeds.
"""

import functools
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from django.utils import timezone

EARLIEST_UTC = datetime.min.replace(tzinfo=UTC)
LATEST_UTC = datetime.max.replace(tzinfo=UTC)


def zone_name(zone):
    return getattr(zone, "key", None) or str(zone)


def named_zone(name):
    """The time zone called ``name`` (an IANA name); None when there is none by that
    name, e.g. a report's zone written to the database without validation."""
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError, TypeError):
        return None


@functools.lru_cache(maxsize=1024)
def zone_bounds(zone):
    """``(earliest, latest)``: the first and last moments (aware, UTC) that exist both
    in UTC and in ``zone``."""
    try:
        earliest = max(EARLIEST_UTC, datetime.min.replace(tzinfo=zone).astimezone(UTC))
    except OverflowError:  # the zone is ahead of UTC: its year 1 starts before UTC's
        earliest = EARLIEST_UTC
    try:
        latest = min(LATEST_UTC, datetime.max.replace(tzinfo=zone).astimezone(UTC))
    except OverflowError:  # behind UTC: its year 9999 ends after UTC's
        latest = LATEST_UTC
    return earliest, latest


def representable(value, zone):
    """Whether the aware datetime ``value`` exists in UTC and in ``zone``."""
    earliest, latest = zone_bounds(zone)
    try:
        return earliest <= value <= latest
    except (OverflowError, TypeError):
        return False


def in_zone(value, zone):
    """``value`` in ``zone``, or None where the zone's calendar ends before it."""
    try:
        return value.astimezone(zone)
    except (OverflowError, ValueError):
        return None


def _iso(value):
    return value.replace(microsecond=0, tzinfo=None).isoformat() + "Z"


def span_text(zone):
    """``0001-01-01T04:56:02Z to 9999-12-31T23:59:59Z``: the moments ``zone`` holds."""
    earliest, latest = zone_bounds(zone)
    return f"{_iso(earliest)} to {_iso(latest)}"


def range_text(zone):
    """The moments ``zone`` holds, for a message: ``in the report's time zone
    (America/New_York) time stamps run from 0001-01-01T04:56:02Z to 9999-12-31T23:59:59Z``.
    """
    return f"in the report's time zone ({zone_name(zone)}) time stamps run from {span_text(zone)}"


def out_of_range_message(text, zone):
    """What a user reads when the moment ``text`` (as given) is not in ``zone``."""
    return f"'{text}' is out of range: {range_text(zone)}."


def utc_text(value):
    """``value`` as ISO 8601 in UTC (``…Z``), for a message; as given where UTC ends."""
    moment = in_zone(value, UTC) or value
    text = moment.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


# The one way pages and messages show a moment: "2026-11-26 09:26:44 UTC". Django's own
# rendering of dates (the admin's read-only fields, lists) uses the same pattern:
# reportsvc/formats.
MOMENT_FORMAT = "%Y-%m-%d %H:%M:%S"


def moment(value, zone=None, *, weekday=False):
    """``value`` as "2026-11-26 09:26:44 UTC" in ``zone`` (default: the current zone).

    The zone's abbreviation comes from the moment itself, so it is right in the hour
    that repeats when clocks fall back too.
    """
    if value is None:
        return "—"
    # Near year 1 or 9999 the zone's calendar may not reach the moment: then UTC.
    local = in_zone(value, zone or timezone.get_current_timezone()) or in_zone(value, UTC)
    # MOMENT_FORMAT, with the year in four digits (strftime writes year 1 as "1").
    text = f"{local.date().isoformat()} {local:%H:%M:%S} {local.tzname()}"
    return f"{local:%a} {text}" if weekday else text
