import csv
import io
from datetime import UTC

from django import forms
from django_filters import rest_framework as filters
from django_filters.fields import IsoDateTimeField
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.renderers import BaseRenderer, JSONRenderer

from reports.permissions import CanViewReports
from runs.downloads import csv_download_response
from runs.models import RunStatus, RunTrigger
from runs.selectors import runs_with_report
from runs.serializers import RunSerializer

ERROR = inline_serializer("Error", fields={"detail": serializers.CharField()})
VALIDATION_ERROR = OpenApiResponse(
    OpenApiTypes.OBJECT, description="Field name -> list of messages."
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


class RunCursorPagination(CursorPagination):
    """Newest first; a page stays the same while new runs arrive."""

    ordering = ("-queued_at", "-id")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

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


CSV_DOWNLOAD_RESPONSES = {
    (200, "text/csv"): OpenApiResponse(OpenApiTypes.BINARY, description="The CSV file."),
    304: OpenApiResponse(description="Not modified (If-None-Match matched the ETag)."),
    404: ERROR,
    409: OpenApiResponse(ERROR, description="There is no output (yet, or any more)."),
}


@extend_schema_view(
    list=extend_schema(responses={200: RunSerializer(many=True), 400: VALIDATION_ERROR}),
    retrieve=extend_schema(responses={200: RunSerializer}),
)
class RunViewSet(viewsets.ReadOnlyModelViewSet):
    """Run history: newest first, filterable, cursor-paginated."""

    serializer_class = RunSerializer
    permission_classes = [CanViewReports]
    pagination_class = RunCursorPagination
    filterset_class = RunFilter

    def get_queryset(self):
        return runs_with_report()

    @extend_schema(responses=CSV_DOWNLOAD_RESPONSES)
    @action(detail=True, methods=["get"], renderer_classes=[JSONRenderer, CSVRenderer])
    def download(self, request, pk=None):
        """Stream the run's CSV (ETag = its SHA-256)."""
        return csv_download_response(request, self.get_object())
