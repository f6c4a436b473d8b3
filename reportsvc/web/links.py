"""Absolute API URLs, resolved once per request.

``reverse()`` costs tens of microseconds; a list of 500 reports needs four URLs each.
Each builder reverses once with a marker and then only formats strings.
"""

from datetime import UTC, timedelta

from django.utils import timezone
from rest_framework import serializers
from rest_framework.reverse import reverse

from reportsvc.moments import in_zone
from runs.services.formats import DEFAULT_FORMAT, output_formats

_MARKER = "ZZMARKERZZ"


def _builder(name, request, **kwargs):
    key = next(iter(kwargs))
    url = reverse(name, kwargs={key: _MARKER}, request=request)
    prefix, suffix = url.split(_MARKER)
    return lambda value: f"{prefix}{value}{suffix}"


class ApiLinks:
    def __init__(self, request):
        self.report = _builder("report-detail", request, slug=0)
        self.latest_csv = _builder("report-latest-csv", request, slug=0)
        self.latest_output = {
            name: _builder(f"report-latest-{name}", request, slug=0) for name in output_formats()
        }
        self.run = _builder("run-detail", request, pk=0)
        self.run_download = _builder("run-download", request, pk=0)
        self.report_version = _version_builder(request)


def _version_builder(request):
    """``…/reports/{slug}/history/{number}/``, reversed once."""
    marker_slug, marker_number = _MARKER, 987654321
    url = reverse(
        "report-history-version",
        kwargs={"slug": marker_slug, "number": marker_number},
        request=request,
    )
    prefix, rest = url.split(marker_slug)
    middle, suffix = rest.split(str(marker_number))
    return lambda slug, number: f"{prefix}{slug}{middle}{number}{suffix}"


def latest_output_link(links, report):
    """``latest.<extension>`` of the report's format."""
    builder = links.latest_output.get(report.output_format) or links.latest_output[DEFAULT_FORMAT]
    return builder(report.slug)


def api_links(context):
    """The ApiLinks of a serializer context (made on first use, then shared)."""
    if "api_links" not in context:
        context["api_links"] = ApiLinks(context.get("request"))
    return context["api_links"]


ZERO = timedelta(0)


def iso_datetime(value, zone=None):
    """A datetime as DRF's DateTimeField writes it (current time zone, "Z" for UTC)."""
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite's rows read by a plain cursor: stored in UTC
        value = value.replace(tzinfo=UTC)
    zone = zone or timezone.get_current_timezone()
    if getattr(zone, "key", None) == "UTC" and value.utcoffset() == ZERO:
        local = value  # already so (the default zone, and how databases hand them over)
    else:
        # Near year 1 or 9999 the zone's calendar may not reach the moment: then UTC.
        local = in_zone(value, zone) or in_zone(value, UTC)
    text = local.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def iso_writer(zone):
    """``iso_datetime`` in ``zone`` as a function of the value, for writing many: in UTC
    (the default zone, and the one databases hand moments over in) a value needs no
    conversion, only its text."""
    if getattr(zone, "key", None) != "UTC":
        return lambda value: iso_datetime(value, zone)

    def write(value):
        if value is None:
            return None
        if value.tzinfo is None:  # SQLite's rows read by a plain cursor: stored in UTC
            return value.isoformat() + "Z"
        if value.utcoffset() == ZERO:
            return value.isoformat()[:-6] + "Z"
        return iso_datetime(value, zone)

    return write


class MomentField(serializers.DateTimeField):
    """DRF's DateTimeField for output, written by ``iso_datetime``: a moment the current
    zone cannot hold is written in UTC rather than failing the response."""

    def to_representation(self, value):
        if not value or isinstance(value, str):
            return super().to_representation(value)
        return iso_datetime(value)
