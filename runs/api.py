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

from reports.parameters import ParameterError
from reports.permissions import CanRunReports, CanViewReports
from reports.throttling import SharedScopedRateThrottle
from runs.downloads import csv_download_response
from runs.models import RunStatus, RunTrigger
from runs.run_requests import (
    RUN_PARAMETERS,
    ReportQueueFull,
    idempotency_key,
    parameter_error,
    queued_run_response,
)
from runs.selectors import runs_with_report
from runs.serializers import RunSerializer
from runs.services.queue import QueueFull, request_rerun

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
    """Downloads never answer 406: the file comes as text/csv, or as
    application/octet-stream to clients that prefer that (see csv_download_response);
    errors come as CSV to clients that accept CSV but not JSON, else as JSON."""

    def select_renderer(self, request, renderers, format_suffix=None):
        try:
            return super().select_renderer(request, renderers, format_suffix)
        except NotAcceptable:
            return renderers[0], renderers[0].media_type


# View options of the endpoints that stream run outputs.
DOWNLOAD_VIEW_OPTIONS = {
    "renderer_classes": [JSONRenderer, CSVRenderer],
    "content_negotiation_class": DownloadContentNegotiation,
}


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
    backfill = filters.UUIDFilter(
        field_name="backfill_id", help_text="The runs one backfill queued (its backfill_id)."
    )


CSV_FILE = OpenApiResponse(
    OpenApiTypes.BINARY,
    description="The CSV file (UTF-8, a header row first), streamed. `text/csv; "
    "charset=utf-8`, or `application/octet-stream` to clients whose Accept header "
    "prefers that; the bytes are the same.",
)
# Binary first: clients that read the first listed type (openapi-python-client) then
# read bytes; text/* would make them decode the file as text.
CSV_DOWNLOAD_RESPONSES = {
    (200, "application/octet-stream"): CSV_FILE,
    (200, "text/csv"): CSV_FILE,
    304: OpenApiResponse(description="Not modified: If-None-Match matched the ETag."),
    404: ERROR,
    409: OpenApiResponse(ERROR, description="There is no output (yet, or any more)."),
}
ETAG = OpenApiParameter(
    "ETag",
    str,
    OpenApiParameter.HEADER,
    response=[200, 304],
    required=True,
    description='The SHA-256 of the file (the run\'s `output_sha256`) in double quotes: `"<hex>"`.',
)
CSV_DOWNLOAD_PARAMETERS = [
    OpenApiParameter(
        "format",
        str,
        OpenApiParameter.QUERY,
        enum=["json", "csv"],
        description="Only changes how errors are written: `json` (the default) or "
        "`csv` (the one-row CSV that clients accepting only text/csv get). The file is "
        "the same either way.",
    ),
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
        '`attachment; filename="<report>_<YYYY-MM-DD_HHMM>_run<id>.csv"`, or for a run '
        'whose SQL uses its data interval `filename="<report>_<interval start date>.csv"`.',
    ),
    OpenApiParameter(
        "Content-Length", int, OpenApiParameter.HEADER, response=[200], description="Bytes."
    ),
]


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
    throttle_scope = None  # set for the rerun action only
    pagination_class = RunCursorPagination
    filterset_class = RunFilter

    def get_queryset(self):
        return runs_with_report()

    @extend_schema(
        request=None,
        parameters=RUN_PARAMETERS,
        responses={
            202: OpenApiResponse(
                RunSerializer,
                description="The new run, with rerun_of naming this one; with a used "
                "Idempotency-Key, the run that key queued.",
            ),
            400: OpenApiResponse(
                {"$ref": "#/components/schemas/ValidationError"},
                description="The run's values no longer fit the report's parameters "
                "(`parameters.<name>`), or a bad Idempotency-Key.",
            ),
            409: OpenApiResponse(
                ERROR, description="The report has REPORT_MAX_QUEUED_RUNS runs waiting already."
            ),
            429: OpenApiResponse(
                ERROR, description="Too many triggers from this user (API_RUN_THROTTLE_RATE)."
            ),
        },
    )
    @action(
        detail=True,
        methods=["post"],
        permission_classes=[CanRunReports],
        throttle_classes=[SharedScopedRateThrottle],
        throttle_scope="report-runs",
    )
    def rerun(self, request, pk=None):
        """Queue a new run of the same report with this run's parameter values and data
        interval, linked to it (rerun_of); 202 with the run, Location its URL.

        Over unchanged data it gives the same bytes. Needs view_report and run_report.
        """
        original = self.get_object()
        key = idempotency_key(request)
        try:
            run, created = request_rerun(
                original, RunTrigger.API, requested_by=request.user, idempotency_key=key
            )
        except ParameterError as error:
            raise parameter_error(error) from None
        except QueueFull as error:
            raise ReportQueueFull(str(error)) from error
        return queued_run_response(request, run, created, self.get_serializer_context())

    @extend_schema(responses=CSV_DOWNLOAD_RESPONSES, parameters=CSV_DOWNLOAD_PARAMETERS)
    @action(detail=True, methods=["get"], **DOWNLOAD_VIEW_OPTIONS)
    def download(self, request, pk=None):
        """Stream the run's CSV (ETag = its SHA-256). Needs view_report."""
        return csv_download_response(request, self.get_object())
