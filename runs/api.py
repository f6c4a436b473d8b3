from datetime import UTC

from django import forms
from django_filters import rest_framework as filters
from django_filters.fields import IsoDateTimeField
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.reverse import reverse

from reportsvc.web.pagination import NewestFirstCursorPagination
from reportsvc.web.permissions import CanRunReports, CanViewReports
from reportsvc.web.renderers import download_view_options
from reportsvc.web.schema import (
    ERROR,
    VALIDATION_ERROR,
    download_parameters,
    download_responses,
)
from runs.downloads import output_download_response
from runs.models import RunStatus, RunTrigger
from runs.run_requests import (
    QUEUE_FULL,
    QUEUING_ACTION_OPTIONS,
    RUN_PARAMETERS,
    THROTTLED,
    idempotency_key,
    queued_run_response,
)
from runs.selectors import runs_with_report
from runs.serializers import RunSerializer
from runs.services.domain.queue import request_rerun
from runs.services.domain.transitions import cancel_run
from runs.services.formats import output_formats


class RunCursorPagination(NewestFirstCursorPagination):
    ordering = ("-queued_at", "-id")
    page_size = 50
    max_page_size = 500
    items = "runs"


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


ALL_FORMATS = list(output_formats().values())


CANCEL_RESPONSES = {
    202: OpenApiResponse(
        RunSerializer,
        description="The run: `cancelled` if it was waiting; still `running`, with "
        "`cancelled_at` and `cancelled_by`, while its worker stops the statement on the "
        "database server (it is `cancelled` within seconds: poll it). A run cancelled "
        "before answers the same, keeping who cancelled it first.",
    ),
    403: OpenApiResponse(ERROR, description="Without the run_report permission."),
    404: OpenApiResponse(ERROR, description="No such run."),
    409: OpenApiResponse(
        ERROR, description="The run ended otherwise (succeeded, failed or skipped): says how."
    ),
}


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
            409: QUEUE_FULL,
            429: THROTTLED,
        },
    )
    @action(**QUEUING_ACTION_OPTIONS)
    def rerun(self, request, pk=None):
        """Queue a new run of the same report with this run's parameter values and data
        interval, linked to it (rerun_of); 202 with the run, Location its URL.

        Over unchanged data it gives the same bytes. Needs view_report and run_report.
        """
        original = self.get_object()
        key = idempotency_key(request)
        run, created = request_rerun(
            original, RunTrigger.API, requested_by=request.user, idempotency_key=key
        )
        return queued_run_response(request, run, created, self.get_serializer_context())

    @extend_schema(request=None, responses=CANCEL_RESPONSES)
    @action(detail=True, methods=["post"], permission_classes=[CanRunReports])
    def cancel(self, request, pk=None):
        """Cancel a queued or running run; 202 with the run, Location its URL.

        A queued run is cancelled at once. A running run's statement is stopped on the
        database server and the run ends `cancelled`, keeping no output and never
        retried. Idempotent. Needs view_report and run_report.
        """
        run = self.get_object()
        cancel_run(run, request.user)
        return Response(
            RunSerializer(run, context=self.get_serializer_context()).data,
            status=status.HTTP_202_ACCEPTED,
            headers={"Location": reverse("run-detail", args=[run.pk], request=request)},
        )

    @extend_schema(
        responses=download_responses(ALL_FORMATS), parameters=download_parameters(ALL_FORMATS)
    )
    @action(detail=True, methods=["get"], **download_view_options(ALL_FORMATS))
    def download(self, request, pk=None):
        """Stream the run's file, in its report's format (ETag = its SHA-256), or on
        object storage redirect to it. Needs view_report."""
        return output_download_response(request, self.get_object())
