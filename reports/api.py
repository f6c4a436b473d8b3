from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.response import Response
from rest_framework.reverse import reverse

from reports.models import Report
from reports.permissions import CanChangeReports, CanRunReports, ReportModelPermissions
from reports.serializers import ReportSerializer, WebhookSecretSerializer
from reports.services import webhook_secrets
from reports.services.schedules import save_report
from reports.throttling import SharedScopedRateThrottle
from runs.api import CSV_DOWNLOAD_RESPONSES, ERROR, VALIDATION_ERROR
from runs.downloads import csv_download_response
from runs.models import RunTrigger
from runs.selectors import latest_successful_run, reports_with_last_run
from runs.serializers import RunSerializer
from runs.services.queue import QueueFull, request_run

IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    description="Repeat a request with the same key within 24 h to get the same run back.",
)


class ReportQueueFull(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "queue_full"


@extend_schema_view(
    create=extend_schema(responses={201: ReportSerializer, 400: VALIDATION_ERROR}),
    update=extend_schema(responses={200: ReportSerializer, 400: VALIDATION_ERROR}),
    partial_update=extend_schema(responses={200: ReportSerializer, 400: VALIDATION_ERROR}),
    destroy=extend_schema(responses={204: None}),
)
class ReportViewSet(viewsets.ModelViewSet):
    """Reports: read with view_report; create/update/delete with the model permissions."""

    serializer_class = ReportSerializer
    permission_classes = [ReportModelPermissions]
    throttle_scope = None  # set for the run action only
    lookup_field = "slug"
    lookup_value_regex = "[-a-zA-Z0-9_]+"

    queryset = Report.objects.all()

    def _represent(self, reports, last_runs):
        context = {**self.get_serializer_context(), "last_runs": last_runs}
        return self.get_serializer(reports, many=True, context=context).data

    def perform_create(self, serializer):
        serializer.instance = save_report(Report(**serializer.validated_data))

    def perform_update(self, serializer):
        save_report(serializer.instance, serializer.validated_data)

    def list(self, request, *args, **kwargs):
        return Response(self._represent(*reports_with_last_run()))

    def retrieve(self, request, *args, **kwargs):
        self.get_object()  # 404 and permission checks
        return Response(self._represent(*reports_with_last_run(slug=kwargs["slug"]))[0])

    @extend_schema(
        request=None,
        parameters=[IDEMPOTENCY_KEY],
        responses={
            202: RunSerializer,
            400: VALIDATION_ERROR,
            409: OpenApiResponse(
                ERROR, description="The report has REPORT_MAX_QUEUED_RUNS runs waiting already."
            ),
            429: OpenApiResponse(ERROR, description="Too many triggers from this user."),
        },
    )
    @action(
        detail=True,
        methods=["post"],
        permission_classes=[CanRunReports],
        throttle_classes=[SharedScopedRateThrottle],
        throttle_scope="report-runs",
    )
    def run(self, request, slug=None):
        """Queue a run of the report for the worker; 202 with the run, Location its URL."""
        report = self.get_object()
        key = request.headers.get("Idempotency-Key", "").strip()
        if len(key) > 255:
            raise ValidationError({"Idempotency-Key": ["Use at most 255 characters."]})
        try:
            run, created = request_run(
                report, RunTrigger.API, requested_by=request.user, idempotency_key=key
            )
        except QueueFull as error:
            raise ReportQueueFull(str(error)) from error
        location = reverse("run-detail", args=[run.pk], request=request)
        response = Response(
            RunSerializer(run, context=self.get_serializer_context()).data,
            status=status.HTTP_202_ACCEPTED,
            headers={"Location": location},
        )
        if not created:
            response["Idempotent-Replayed"] = "true"
        return response

    @extend_schema(request=None, responses={200: WebhookSecretSerializer})
    @action(
        detail=True,
        methods=["post"],
        url_path="rotate-webhook-secret",
        permission_classes=[CanChangeReports],
    )
    def rotate_webhook_secret(self, request, slug=None):
        """Replace the report's webhook secret with a new random one and return it.

        Needs change_report. This response is the only place the API shows the secret:
        keep it, and give it to the receivers that check X-Reportsvc-Signature.
        """
        report = self.get_object()
        secret = webhook_secrets.rotate_webhook_secret(report, by=request.user)
        return Response(
            WebhookSecretSerializer({"webhook_secret": secret}).data,
            headers={"Cache-Control": "no-store"},
        )

    @extend_schema(
        responses={
            **CSV_DOWNLOAD_RESPONSES,
            404: OpenApiResponse(ERROR, description="No report, or no successful run yet."),
        }
    )
    def latest_csv(self, request, slug=None):
        """Stream the newest successful output of the report."""
        report = self.get_object()
        run = latest_successful_run(report)
        if run is None:
            return Response(
                {"detail": f"Report '{report.slug}' has no successful run with an output yet."},
                status=status.HTTP_404_NOT_FOUND,
            )
        return csv_download_response(request, run)
