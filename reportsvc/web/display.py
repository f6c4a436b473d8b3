"""How the admin shows run statuses, moments and messages: one way, everywhere."""

import json
from datetime import UTC

from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import mark_safe
from django.utils.text import Truncator

from reportsvc.moments import in_zone
from reportsvc.text import escaped

# The one way the admin shows a moment: "2026-11-26 09:26:44 UTC". Django's own
# rendering of dates (read-only fields, lists) uses the same pattern: reportsvc/formats.
MOMENT_FORMAT = "%Y-%m-%d %H:%M:%S"


def status_badge(status, label=None):
    """A coloured pill for a run status (colours in templates/admin/base_site.html)."""
    if not status:
        return mark_safe('<span class="rs-badge rs-none">never run</span>')
    return format_html('<span class="rs-badge rs-{}">{}</span>', status, label or status)


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


def moment_html(value, zone=None):
    """``moment`` for tables: may wrap between the date and the time, nowhere else."""
    if value is None:
        return "—"
    date, rest = moment(value, zone).split(" ", 1)
    return format_html(
        '<span class="rs-when">{}</span> <span class="rs-when">{}</span>', date, rest
    )


def named_moment(value, zone):
    """``moment`` in ``zone``, the zone named: ``2026-11-26 06:00:00 CET (Europe/Berlin)``
    (a report's pages show every time in the report's zone)."""
    if value is None:
        return "—"
    shown = moment(value, zone)
    if shown.endswith(f" {zone.key}"):  # UTC: named already
        return shown
    return format_html('{} <span class="rs-zone">({})</span>', shown, zone.key)


def first_line(text, length=100):
    """The first non-empty line of ``text``, shortened to ``length`` characters."""
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return Truncator(line).chars(length)


# What stands where a user may not see something (reportsvc.web.permissions.Visibility).
ROWS_HIDDEN = "Hidden: output rows and downloads need the view_report permission."
SQL_HIDDEN = "Hidden: the SQL needs the view_report_sql permission."


def hidden_note(text):
    return format_html('<span class="rs-muted rs-hidden">{}</span>', text)


def shown_json(value):
    """A stored JSON value as text for a page; what no page can encode (a lone surrogate
    stored before values were checked) is written as its escape."""
    return escaped(json.dumps(value, ensure_ascii=False, cls=DjangoJSONEncoder))
