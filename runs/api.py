import csv
import io
from datetime import UTC

from django import forms
from django_filters import rest_framework as filters
from django_filters.fields import IsoDateTimeField
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotAcceptable, NotFound, ValidationError
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.pagination import CursorPagination
from rest_framework.renderers import BaseRenderer, JSONRenderer

from reports.permissions import CanViewReports
from runs.downloads import OCTET_STREAM, output_download_response, output_media_type
from runs.models import RunStatus, RunTrigger
from runs.selectors import runs_with_report
from runs.serializers import RunSerializer
from runs.services.formats import output_formats

ERROR = inline_serializer("Error", fields={"detail": serializers.CharField()})
# The component is added by reportsvc.openapi (a map drf-spectacular cannot derive).
VALIDATION_ERROR = OpenApiResponse(
    {"$ref": "#/components/schemas/ValidationError"},
    description="Invalid input: each field (or header) with its messages.",
)


class CSVRenderer(BaseRenderer):
    """For ``Accept: text/csv``. Files are streamed as they are; only an error (a
    ``{"detail": …}`` body) is rendered here, as a one-row CSV."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if not isinstance(data, dict):
            return data
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(data.keys())
        writer.writerow(str(value) for value in data.values())
        return text.getvalue().encode()


class DownloadContentNegotiation(DefaultContentNegotiation):
    """Downloads never answer 406: the file comes in its format's media type, or as
    application/octet-stream to clients that prefer that (see output_download_response);
    errors come as CSV to clients that accept CSV but not JSON (where the view renders
    CSV), else as JSON."""

    def select_renderer(self, request, renderers, format_suffix=None):
        try:
            return super().select_renderer(request, renderers, format_suffix)
        except NotAcceptable:
            return renderers[0], renderers[0].media_type


class RunCursorPagination(CursorPagination):
    """Newest first; a page stays the same while new runs arrive."""

    ordering = ("-queued_at", "-id")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.cursor_query_param:
                parameter["description"] = (
                    "Opaque position, taken from the `next` or `previous` link of a page "
                    "(400 if it is not one of those)."
                )
            elif parameter["name"] == self.page_size_query_param:
                parameter["description"] = (
                    f"Runs per page: 1 to {self.max_page_size} (default {self.page_size}); "
                    f"a larger number gives {self.max_page_size}."
                )
                parameter["schema"] = {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": self.max_page_size,
                }
        return parameters

    def get_paginated_response_schema(self, schema):
        result = super().get_paginated_response_schema(schema)
        result["required"] = ["next", "previous", "results"]  # always sent, null at the ends
        for name, direction in (("next", "older"), ("previous", "newer")):
            result["properties"][name].pop("example", None)
            result["properties"][name]["description"] = (
                f"The page of {direction} runs, with the same filters; null if there is none."
            )
        return result

    def decode_cursor(self, request):
        try:
            return super().decode_cursor(request)
        except NotFound:  # DRF answers a bad cursor with 404; it is bad input
            raise ValidationError(
                {self.cursor_query_param: ["Invalid cursor: use the next/previous links."]}
            ) from None


class UTCIsoDateTimeField(IsoDateTimeField):
    """An ISO 8601 moment, in UTC: PostgreSQL refuses the offsets beyond ±15:59 that
    ISO 8601 (and Python) allow, e.g. ``-21:58``."""

    def to_python(self, value):
        value = super().to_python(value)
        try:
            return value.astimezone(UTC) if value is not None else None
        except OverflowError:
            raise forms.ValidationError("Out of range.", code="invalid") from None


class UTCDateTimeFilter(filters.IsoDateTimeFilter):
    field_class = UTCIsoDateTimeField


class RunFilter(filters.FilterSet):
    report = filters.CharFilter(field_name="report__slug", help_text="Report slug.")
    status = filters.ChoiceFilter(choices=RunStatus.choices)
    trigger = filters.ChoiceFilter(choices=RunTrigger.choices)
    created_after = UTCDateTimeFilter(
        field_name="queued_at", lookup_expr="gte", help_text="Queued at or after (ISO 8601)."
    )
    created_before = UTCDateTimeFilter(
        field_name="queued_at", lookup_expr="lt", help_text="Queued before (ISO 8601)."
    )


def _file_response(output_formats):
    kinds = "; ".join(
        f"{output_format.label}: `{output_media_type(output_format)}`"
        for output_format in output_formats
    )
    return OpenApiResponse(
        OpenApiTypes.BINARY,
        description=f"The file, a header row first, streamed ({kinds}); or "
        f"`{OCTET_STREAM}` to clients whose Accept header prefers that: the bytes are "
        "the same.",
    )


def download_responses(output_formats):
    """OpenAPI responses of a download that serves files of ``output_formats``."""
    file = _file_response(output_formats)
    # Binary first: clients that read the first listed type (openapi-python-client) then
    # read bytes; text/* would make them decode the file as text.
    files = {(200, OCTET_STREAM): file}
    files.update({(200, output_format.media_type): file for output_format in output_formats})
    return {
        **files,
        304: OpenApiResponse(description="Not modified: If-None-Match matched the ETag."),
        404: ERROR,
        409: OpenApiResponse(ERROR, description="There is no output (yet, or any more)."),
    }


def _renders_csv_errors(output_formats):
    return any(
        output_format.media_type == CSVRenderer.media_type for output_format in output_formats
    )


def download_view_options(output_formats):
    """View options of an endpoint that streams files of ``output_formats``: errors in
    JSON, or as CSV where the files can be CSV (for clients that accept only that)."""
    renderers = (
        [JSONRenderer, CSVRenderer] if _renders_csv_errors(output_formats) else [JSONRenderer]
    )
    return {"renderer_classes": renderers, "content_negotiation_class": DownloadContentNegotiation}


ETAG = OpenApiParameter(
    "ETag",
    str,
    OpenApiParameter.HEADER,
    response=[200, 304],
    required=True,
    description='The SHA-256 of the file (the run\'s `output_sha256`) in double quotes: `"<hex>"`.',
)


def download_parameters(output_formats):
    """OpenAPI parameters of a download that serves files of ``output_formats``."""
    if _renders_csv_errors(output_formats):
        error_format = OpenApiParameter(
            "format",
            str,
            OpenApiParameter.QUERY,
            enum=["json", "csv"],
            description="Only changes how errors are written: `json` (the default) or "
            "`csv` (the one-row CSV that clients accepting only text/csv get). The file is "
            "the same either way.",
        )
    else:
        error_format = OpenApiParameter(
            "format",
            str,
            OpenApiParameter.QUERY,
            enum=["json"],
            description="Only changes how errors are written: `json`, the only way here. "
            "The file is the same either way.",
        )
    extensions = " or ".join(f"`{output_format.suffix}`" for output_format in output_formats)
    return [
        error_format,
        OpenApiParameter(
            "If-None-Match",
            str,
            OpenApiParameter.HEADER,
            description="ETags of copies you have (or `*`): if one is the file's, the answer "
            "is 304 with no body.",
        ),
        ETAG,
        OpenApiParameter(
            "Content-Disposition",
            str,
            OpenApiParameter.HEADER,
            response=[200],
            required=True,
            description="`attachment`, with a readable file name: "
            '`attachment; filename="<report>_<YYYY-MM-DD_HHMM>_run<id><extension>"`, the '
            f"extension {extensions}.",
        ),
        OpenApiParameter(
            "Content-Length", int, OpenApiParameter.HEADER, response=[200], description="Bytes."
        ),
    ]


ALL_FORMATS = list(output_formats().values())


@extend_schema_view(
    list=extend_schema(
        description="Runs, newest first, cursor-paginated: follow `next` and `previous`. "
        "Needs view_report.",
        responses={200: RunSerializer(many=True), 400: VALIDATION_ERROR},
    ),
    retrieve=extend_schema(
        description="Every recorded field of one run. Needs view_report.",
        responses={200: RunSerializer},
    ),
)
class RunViewSet(viewsets.ReadOnlyModelViewSet):
    """Run history: newest first, filterable, cursor-paginated."""

    serializer_class = RunSerializer
    permission_classes = [CanViewReports]
    pagination_class = RunCursorPagination
    filterset_class = RunFilter

    def get_queryset(self):
        return runs_with_report()

    @extend_schema(
        responses=download_responses(ALL_FORMATS), parameters=download_parameters(ALL_FORMATS)
    )
    @action(detail=True, methods=["get"], **download_view_options(ALL_FORMATS))
    def download(self, request, pk=None):
        """Stream the run's file, in its report's format (ETag = its SHA-256). Needs
        view_report."""
        return output_download_response(request, self.get_object())
