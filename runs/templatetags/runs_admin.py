from django import template
from django.utils.html import format_html

from reportsvc.web.display import moment_html, status_badge
from runs.selectors import worker_status

register = template.Library()


@register.simple_tag
def reportsvc_worker_status():
    return worker_status()


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
