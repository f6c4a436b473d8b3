"""How the admin shows run statuses, moments and messages: one way, everywhere."""

import json

from django.core.serializers.json import DjangoJSONEncoder
from django.utils.html import format_html
from django.utils.safestring import mark_safe
from django.utils.text import Truncator

from reportsvc.moments import moment
from reportsvc.text import escaped


def status_badge(status, label=None):
    """A coloured pill for a run status (colours in templates/admin/base_site.html)."""
    if not status:
        return mark_safe('<span class="rs-badge rs-none">never run</span>')
    return format_html('<span class="rs-badge rs-{}">{}</span>', status, label or status)


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
