from django import template
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from runs.selectors import worker_status

register = template.Library()


@register.simple_tag
def reportsvc_worker_status():
    return worker_status()


@register.simple_tag
def run_status_badge(status):
    return status_badge(status)


def status_badge(status, label=None):
    """A coloured pill for a run status (colours in templates/admin/base_site.html)."""
    if not status:
        return mark_safe('<span class="rs-badge rs-none">never run</span>')
    return format_html('<span class="rs-badge rs-{}">{}</span>', status, label or status)
