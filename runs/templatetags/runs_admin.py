from django import template
from django.utils import timezone
from django.utils.html import format_html

from reportsvc.web.display import first_line, moment_html, status_badge
from reportsvc.web.permissions import visibility_of
from runs.selectors import RECENT_FAILURES_WINDOW, failed_since, worker_status

register = template.Library()

RECENT_FAILURES_SHOWN = 10


@register.simple_tag
def reportsvc_worker_status():
    return worker_status()


@register.simple_tag(takes_context=True)
def reportsvc_recent_failures(context):
    """The latest runs failed in the last 24 hours, each with the first line of its
    reason as the user may see it; None for users who may not open runs."""
    visibility = visibility_of(context["request"])
    if not visibility.run_records:
        return None
    runs = (
        failed_since(timezone.now() - RECENT_FAILURES_WINDOW)
        .select_related("report")
        .only("id", "report__name", "finished_at", "error", "trigger")[:RECENT_FAILURES_SHOWN]
    )
    return [(run, first_line(visibility.error(run.error), 160)) for run in runs]


@register.simple_tag
def run_status_badge(status):
    return status_badge(status)


register.simple_tag(moment_html, name="moment")


@register.simple_tag
def preview_cell(cell, tag="td"):
    """One value of a run preview: NULL marked as such, long values cut with their length."""
    if cell.is_null:
        return format_html(
            '<{} class="rs-null"><span class="rs-null-mark" title="NULL (no value)">NULL</span>'
            "</{}>",
            tag,
            tag,
        )
    if not cell.complete:
        note = f"… (more than {cell.length:,} characters; the preview stops here)"
    elif cell.truncated:
        note = f"… ({cell.length:,} characters)"
    else:
        note = ""
    if note:
        return format_html('<{}>{}<span class="rs-cut">{}</span></{}>', tag, cell.text, note, tag)
    if not cell.text:
        return format_html('<{} class="rs-empty" title="empty string"></{}>', tag, tag)
    return format_html("<{}>{}</{}>", tag, cell.text, tag)
