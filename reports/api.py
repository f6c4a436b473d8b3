from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response
from rest_framework.reverse import reverse

from reports.models import Report
from reports.serializers import ReportSerializer, WebhookSecretSerializer
from reports.services import webhook_secrets
from reports.services.schedules import save_report
from reports.throttling import SharedScopedRateThrottle
from reportsvc.web.permissions import CanChangeReports, CanRunReports, ReportModelPermissions
from reportsvc.web.renderers import download_view_options
from reportsvc.web.schema import (
    ERROR,
    VALIDATION_ERROR,
    download_parameters,
    download_responses,
)
from runs.downloads import output_download_response, output_format_of
from runs.models import RunTrigger
from runs.selectors import latest_successful_run, reports_with_last_run
from runs.serializers import RunSerializer
from runs.services.queue import QueueFull, request_run

IDEMPOTENCY_KEY_MAX_LENGTH = 255
RUN_PARAMETERS = [
    OpenApiParameter(
        "Idempotency-Key",
        {"type": "string", "maxLength": IDEMPOTENCY_KEY_MAX_LENGTH},
        OpenApiParameter.HEADER,
        description="Makes retrying safe. A key already used for this report in the last "
        "24 hours (by anyone) gets the run it queued back, with `Idempotent-Replayed: "
        "true`, instead of a new run. At most 255 characters; spaces around it are "
        "ignored; without a key every request queues a run.",
    ),
    OpenApiParameter(
        "Location",
        {"type": "string", "format": "uri"},
        OpenApiParameter.HEADER,
        response=[202],
        required=True,
        description="The run's URL (`/api/runs/{id}/`, absolute): poll it.",
    ),
    OpenApiParameter(
        "Idempotent-Replayed",
        {"type": "string", "enum": ["true"]},
        OpenApiParameter.HEADER,
        response=[202],
        description="`true` when the Idempotency-Key was used before and the run is the "
        "one that request queued; absent for a new run.",
    ),
    OpenApiParameter(
        "Retry-After",
        int,
        OpenApiParameter.HEADER,
        response=[429],
        description="Seconds to wait before asking again.",
    ),
]
READ = "Needs view_report."


class ReportQueueFull(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "queue_full"


@extend_schema_view(
    list=extend_schema(description=f"All reports, by name, each with its last run. {READ}"),
    retrieve=extend_schema(description=f"One report, with its last run. {READ}"),
    create=extend_schema(
        description="Create a report (validated like the admin). Needs add_report.",
        responses={201: ReportSerializer, 400: VALIDATION_ERROR},
    ),
    update=extend_schema(
        description="Replace a report's settings. Needs change_report.",
        responses={200: ReportSerializer, 400: VALIDATION_ERROR},
    ),
    partial_update=extend_schema(
        description="Change some of a report's settings; null clears a nullable one. "
        "Needs change_report.",
        responses={200: ReportSerializer, 400: VALIDATION_ERROR},
    ),
    destroy=extend_schema(
        description="Delete a report with its runs and their files. Needs delete_report.",
        responses={204: None},
    ),
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
        parameters=RUN_PARAMETERS,
        responses={
            202: OpenApiResponse(
                RunSerializer,
                description="The queued run; with a used Idempotency-Key, the run that "
                "key queued (whatever its status now).",
            ),
            400: VALIDATION_ERROR,
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
    def run(self, request, slug=None):
        """Queue a run of the report for the worker; 202 with the run, Location its URL.

        Needs view_report and run_report. Poll the run until its status is succeeded,
        failed or skipped.
        """
        report = self.get_object()
        key = request.headers.get("Idempotency-Key", "").strip()
        if len(key) > IDEMPOTENCY_KEY_MAX_LENGTH:
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

    @extend_schema(
        request=None,
        responses={200: WebhookSecretSerializer},
        parameters=[
            OpenApiParameter(
                "Cache-Control",
                {"type": "string", "enum": ["no-store"]},
                OpenApiParameter.HEADER,
                response=[200],
                required=True,
                description="`no-store`: the secret is kept by no cache.",
            )
        ],
    )
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


class LatestOutputView(GenericAPIView):
    """``/api/reports/{slug}/latest.<extension>``: the report's newest successful output,
    when it is a file of this view's format (``output_format``, set per format)."""

    permission_classes = [ReportModelPermissions]
    queryset = Report.objects.all()
    lookup_field = "slug"
    output_format = None

    def get(self, request, slug=None):
        report = self.get_object()
        run = latest_successful_run(report)
        if run is None:
            return Response(
                {"detail": f"Report '{report.slug}' has no successful run with an output yet."},
                status=status.HTTP_404_NOT_FOUND,
            )
        problem = latest_output_mismatch(run, self.output_format, request)
        if problem:
            return Response({"detail": problem}, status=status.HTTP_409_CONFLICT)
        return output_download_response(request, run)


def latest_output_mismatch(run, output_format, request):
    """Why the run's file cannot be served as ``output_format`` (it is another one), with
    the URL that serves it; None when it can."""
    actual = output_format_of(run)
    if actual == output_format:
        return None
    url = reverse(f"report-latest-{actual.name}", args=[run.report.slug], request=request)
    return (
        f"The latest output of report '{run.report.slug}' is a {actual.suffix} file, not "
        f"{output_format.suffix}: fetch it from {url}"
    )


def latest_output_view(output_format):
    """The view of ``latest.<extension>`` for one format, with its own OpenAPI operation."""
    name = output_format.name

    @extend_schema(
        operation_id=f"reports_latest_{name}_retrieve",
        description=f"Stream the newest successful output of the report, a {output_format.label} "
        f"file (`{output_format.suffix}`), or on object storage redirect to it. Needs "
        "view_report. If the newest output is in "
        "another format (the report's format changed), 409 says which URL serves it.",
        parameters=download_parameters([output_format]),
        responses={
            **download_responses([output_format]),
            404: OpenApiResponse(ERROR, description="No report, or no successful run yet."),
            409: OpenApiResponse(
                ERROR,
                description="The newest output is in another format (the message names "
                "its URL), or its file is gone.",
            ),
        },
    )
    def get(self, request, slug=None):
        return LatestOutputView.get(self, request, slug)

    view_class = type(
        f"Latest{name.title().replace('_', '')}View",
        (LatestOutputView,),
        {"output_format": output_format, "get": get, **download_view_options([output_format])},
    )
    return view_class.as_view()
