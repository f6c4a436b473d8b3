import uuid
from urllib.parse import urlencode

from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response
from rest_framework.reverse import reverse

from reports.history import recorded
from reports.models import Report
from reports.serializers import (
    BackfillRequestSerializer,
    ReportSerializer,
    ReportVersionDetailSerializer,
    ReportVersionSerializer,
    RunRequestSerializer,
    WebhookSecretSerializer,
)
from reports.services import history as report_history
from reports.services import webhook_secrets
from reports.services.schedules import save_report
from reportsvc.web.pagination import LinkHeaderPages, NewestFirstCursorPagination
from reportsvc.web.permissions import (
    CanChangeReports,
    CanRunReports,
    ReportModelPermissions,
    visibility_of,
)
from reportsvc.web.renderers import download_view_options
from reportsvc.web.schema import (
    ERROR,
    VALIDATION_ERROR,
    download_parameters,
    download_responses,
)
from runs.downloads import output_download_response
from runs.models import RunTrigger
from runs.naming import output_format_of
from runs.run_requests import (
    BACKFILL_PARAMETERS,
    QUEUE_FULL,
    QUEUING_ACTION_OPTIONS,
    RUN_EXAMPLES,
    RUN_PARAMETERS,
    THROTTLED,
    idempotency_key,
    queued_run_response,
)
from runs.selectors import (
    latest_successful_run,
    reports_with_last_run,
    runs_with_report,
)
from runs.serializers import BackfillCancelSerializer, BackfillSerializer, RunSerializer
from runs.services.domain.backfill import queue_backfill
from runs.services.domain.cancelling import cancel_backfill
from runs.services.domain.queue import request_run, validated_request

READ = "Needs view_report."
SQL_WARNING = OpenApiParameter(
    "Warning",
    location=OpenApiParameter.HEADER,
    response=[200, 201],
    description='`199 - "…"` when the SQL was saved checked by the parser only: every login '
    "of its data source was in use by runs. Runs check it on the database.",
)


class VersionCursorPagination(NewestFirstCursorPagination):
    ordering = ("-history_version",)
    page_size = 20
    max_page_size = 100
    items = "versions"


class ReportPages(LinkHeaderPages):
    max_page_size = 500
    items = "reports"


@extend_schema_view(
    list=extend_schema(
        description=f"All reports, by name, each with its last run; in pages with "
        f"`page_size` (the next page's address in the `Link` header). {READ}",
        parameters=ReportPages.schema_parameters(),
        responses={200: ReportSerializer(many=True), 400: VALIDATION_ERROR},
    ),
    retrieve=extend_schema(description=f"One report, with its last run. {READ}"),
    create=extend_schema(
        description="Create a report (validated like the admin). Needs add_report.",
        parameters=[SQL_WARNING],
        responses={201: ReportSerializer, 400: VALIDATION_ERROR},
    ),
    update=extend_schema(
        description="Replace a report's settings. Needs change_report.",
        parameters=[SQL_WARNING],
        responses={200: ReportSerializer, 400: VALIDATION_ERROR},
    ),
    partial_update=extend_schema(
        description="Change some of a report's settings; null clears a nullable one. "
        "Needs change_report.",
        parameters=[SQL_WARNING],
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

    sql_warning = None

    def perform_create(self, serializer):
        serializer.instance = save_report(
            Report(**serializer.validated_data), by=self.request.user, via="API"
        )
        self.sql_warning = getattr(serializer, "sql_warning", None)

    def perform_update(self, serializer):
        save_report(serializer.instance, serializer.validated_data, by=self.request.user, via="API")
        self.sql_warning = getattr(serializer, "sql_warning", None)

    def perform_destroy(self, instance):
        with recorded(self.request.user, "API"):
            instance.delete()

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        if self.sql_warning:
            text = self.sql_warning.replace("\\", "\\\\").replace('"', '\\"')
            response["Warning"] = f'199 - "{text}"'
        return response

    def list(self, request, *args, **kwargs):
        pages = ReportPages(request)
        if not pages.requested:
            return Response(self._represent(*reports_with_last_run()))
        reports, last_runs = reports_with_last_run(after=pages.after, limit=pages.size + 1)
        response = Response(self._represent(reports[: pages.size], last_runs))
        if len(reports) > pages.size:
            last = reports[pages.size - 1]
            response["Link"] = pages.next_link((last.name, last.id))
        return response

    def retrieve(self, request, *args, **kwargs):
        self.get_object()  # 404 and permission checks
        slug = kwargs["slug"]
        return Response(self._represent(*reports_with_last_run(slug=slug))[0])

    @extend_schema(
        request=RunRequestSerializer,
        parameters=RUN_PARAMETERS,
        examples=RUN_EXAMPLES,
        responses={
            202: OpenApiResponse(
                RunSerializer,
                description="The queued run; with a used Idempotency-Key, the run that "
                "key queued (whatever its status now).",
            ),
            400: OpenApiResponse(
                {"$ref": "#/components/schemas/ValidationError"},
                description="Invalid input: an unknown, missing or ill-typed parameter "
                "(`parameters.<name>`), or a bad Idempotency-Key.",
            ),
            409: QUEUE_FULL,
            429: THROTTLED,
        },
    )
    @action(**QUEUING_ACTION_OPTIONS)
    def run(self, request, slug=None):
        """Queue a run of the report for the worker; 202 with the run, Location its URL.

        Needs view_report and run_report. Poll the run until its status is succeeded,
        failed, skipped or cancelled.
        """
        report = self.get_object()
        key = idempotency_key(request)
        body = RunRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        parameters, interval = validated_request(report, body.validated_data.get("parameters"))
        run, created = request_run(
            report,
            RunTrigger.API,
            requested_by=request.user,
            idempotency_key=key,
            parameters=parameters,
            interval=interval,
        )
        return queued_run_response(request, run, created, self.get_serializer_context())

    @extend_schema(
        request=BackfillRequestSerializer,
        parameters=BACKFILL_PARAMETERS,
        responses={
            202: OpenApiResponse(
                BackfillSerializer,
                description="The queued runs, oldest interval first (none if every fire "
                "time in the range is covered already); with a used Idempotency-Key, the "
                "runs that key queued.",
            ),
            400: OpenApiResponse(
                {"$ref": "#/components/schemas/ValidationError"},
                description="Invalid input: a bad range (`start`, `end`; more fire times "
                "than BACKFILL_MAX_RUNS says how many), a bad parameter "
                "(`parameters.<name>`) or Idempotency-Key.",
            ),
            409: OpenApiResponse(
                ERROR,
                description="The report has too many backfilled runs waiting already "
                "(BACKFILL_MAX_RUNS).",
            ),
            429: THROTTLED,
        },
    )
    @action(**QUEUING_ACTION_OPTIONS)
    def backfill(self, request, slug=None):
        """Queue one run per fire time of the schedule in [start, end), oldest first,
        each over its own data interval; 202 with the runs, Location lists them.

        Fire times with a succeeded run are skipped unless `rerun` is true; those with
        a run waiting or running always are, so the same backfill twice queues nothing
        the second time. A report without a schedule gets one run per calendar day (in
        its time zone). Needs view_report and run_report.
        """
        report = self.get_object()
        key = idempotency_key(request)
        body = BackfillRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        runs, skipped, created = queue_backfill(
            report,
            data["start"],
            data["end"],
            rerun=data["rerun"],
            given=data.get("parameters"),
            requested_by=request.user,
            idempotency_key=key,
        )
        batch = runs[0].backfill_id if runs else None
        query = urlencode(
            {"report": report.slug, "backfill": batch} if batch else {"report": report.slug}
        )
        location = f"{reverse('run-list', request=request)}?{query}"
        context = self.get_serializer_context()
        response = Response(
            {
                "backfill_id": str(batch) if batch else None,
                "queued": len(runs) if created else 0,
                "skipped": skipped,
                "runs": RunSerializer(runs, many=True, context=context).data,
            },
            status=status.HTTP_202_ACCEPTED,
            headers={"Location": location},
        )
        if not created:
            response["Idempotent-Replayed"] = "true"
        return response

    @extend_schema(
        request=None,
        parameters=[
            OpenApiParameter(
                "backfill_id",
                {"type": "string", "format": "uuid"},
                OpenApiParameter.PATH,
                description="The backfill's id (`backfill_id` of its runs).",
            )
        ],
        responses={
            202: OpenApiResponse(
                BackfillCancelSerializer,
                description="What was cancelled: the waiting runs at once, the running "
                "one (if any) is being stopped on the database server. A backfill whose "
                "runs have all ended answers the same with nothing cancelled.",
            ),
            403: OpenApiResponse(ERROR, description="Without the run_report permission."),
            404: OpenApiResponse(ERROR, description="The report has no such backfill."),
        },
    )
    @action(
        detail=True,
        methods=["post"],
        url_path=r"backfill/(?P<backfill_id>[0-9a-fA-F-]{32,36})/cancel",
        permission_classes=[CanRunReports],
    )
    def cancel_backfill(self, request, slug=None, backfill_id=None):
        """Cancel the runs of one backfill that have not ended: those waiting at once,
        the one running stopped on the database server; 202. Needs view_report and
        run_report."""
        report = self.get_object()
        try:
            batch = uuid.UUID(backfill_id)
        except ValueError:
            raise NotFound(f"Report '{report.slug}' has no backfill {backfill_id}.") from None
        if not report.runs.filter(backfill_id=batch).exists():
            raise NotFound(f"Report '{report.slug}' has no backfill {batch}.")
        outcome = cancel_backfill(report, batch, request.user)
        context = self.get_serializer_context()
        ids = [*outcome.cancelled, *outcome.stopping]
        runs = runs_with_report().filter(pk__in=ids).order_by("queued_at", "id") if ids else []
        return Response(
            {
                "backfill_id": str(batch),
                "cancelled": len(outcome.cancelled),
                "stopping": len(outcome.stopping),
                "runs": RunSerializer(runs, many=True, context=context).data,
            },
            status=status.HTTP_202_ACCEPTED,
        )

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
        secret = webhook_secrets.rotate_webhook_secret(report, by=request.user, via="API")
        return Response(
            WebhookSecretSerializer({"webhook_secret": secret}).data,
            headers={"Cache-Control": "no-store"},
        )

    def _versions_context(self, report, versions):
        shows = visibility_of(self.request)
        before = report_history.previous_versions(versions)
        budget = report_history.DiffBudget()
        changes = {
            version.history_version: report_history.version_changes(
                version, before.get(version.history_version - 1), shows, budget
            )
            for version in versions
        }
        return {**self.get_serializer_context(), "changes": changes, "slug": report.slug}

    @extend_schema(responses={200: ReportVersionSerializer(many=True), 400: VALIDATION_ERROR})
    @action(
        detail=True,
        methods=["get"],
        url_path="history",
        url_name="history",
        pagination_class=VersionCursorPagination,
    )
    def history(self, request, slug=None):
        """The report's versions, newest first, each with who changed it, when, how and
        what changed (a line diff for the SQL, the description and the parameters).

        Needs view_report; the SQL's values and diffs need view_report_sql too (others
        learn that it changed). Cursor-paginated: follow `next` and `previous`.
        """
        report = self.get_object()
        page = self.paginate_queryset(report_history.versions_of(report.pk))
        context = self._versions_context(report, page)
        return self.get_paginated_response(
            ReportVersionSerializer(page, many=True, context=context).data
        )

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "number",
                {"type": "integer", "minimum": 1},
                OpenApiParameter.PATH,
                description="The version's number (1 is the oldest).",
            )
        ],
        responses={200: ReportVersionDetailSerializer},
    )
    @action(
        detail=True,
        methods=["get"],
        url_path=r"history/(?P<number>[0-9]+)",
        url_name="history-version",
    )
    def history_version(self, request, slug=None, number=None):
        """One version of the report: what it changed, and every setting as it was
        (the SQL only with view_report_sql). Needs view_report.
        """
        report = self.get_object()
        number = int(number)
        version = report_history.version_of(report.pk, number)
        if version is None:
            raise NotFound(f"Report '{report.slug}' has no version {number}.")
        context = self._versions_context(report, [version])
        return Response(ReportVersionDetailSerializer(version, context=context).data)


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
