from datetime import timedelta

from django.contrib import admin, messages
from django.db.models import Exists, OuterRef
from django.db.models.functions import Now
from django.shortcuts import get_object_or_404, redirect
from django.template.defaultfilters import filesizeformat
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django_apscheduler.models import DjangoJob, DjangoJobExecution

from reports.parameters import ParameterError
from reports.services.history import newest_version_number
from reports.zones import report_zone
from reportsvc.moments import in_zone
from reportsvc.text import escaped
from reportsvc.web.display import (
    ROWS_HIDDEN,
    SQL_HIDDEN,
    first_line,
    hidden_note,
    moment,
    moment_html,
    shown_json,
    status_badge,
)
from reportsvc.web.permissions import NOBODY, can_run_reports, visibility_of
from runs.models import Run, RunStatus, RunTrigger, SchedulerLease, WorkerHeartbeat
from runs.naming import output_format_of
from runs.selectors import RECENT_FAILURES_WINDOW, report_version_number
from runs.services.domain.cancelling import cancel_backfill, cancel_runs, unfinished_backfill_runs
from runs.services.domain.queue import QueueFull, request_rerun
from runs.services.infrastructure.preview import preview_rows

# The scheduler's job store is internal: reports show their schedule and next run, runs
# show every fire. Its admin would offer Add/Change (and running jobs in the web process).
for _model in (DjangoJob, DjangoJobExecution):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)


class FinishedFilter(admin.SimpleListFilter):
    """Runs that finished lately: the admin index's "failed in the last 24 hours" links
    here, so the list shows the runs it counted, not every failure ever."""

    title = "finished"
    parameter_name = "finished"
    WINDOWS = {"24h": RECENT_FAILURES_WINDOW, "7d": timedelta(days=7)}

    def lookups(self, request, model_admin):
        return [("24h", "In the last 24 hours"), ("7d", "In the last 7 days")]

    def queryset(self, request, queryset):
        window = self.WINDOWS.get(self.value())
        if window is None:
            return queryset
        return queryset.filter(finished_at__gte=timezone.now() - window)


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    empty_value_display = "—"  # the dash the other columns use
    # Fits 1400 px with the navigation sidebar and the filters open: the trigger and
    # fire time sit under the report, the worker is on the run's page.
    list_display = (
        "id",
        "report_and_trigger",
        "badge",
        "started",
        "duration",
        "rows",
        "size",
        "error_summary",
    )
    list_display_links = ("id", "badge")
    list_filter = (
        "status",
        FinishedFilter,
        "trigger",
        "report",
        ("queued_at", admin.DateFieldListFilter),
    )
    list_select_related = ("report",)
    search_fields = ("=id", "report__slug", "error", "worker")
    ordering = ("-queued_at", "-id")
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER  # counting facets over millions of runs is slow
    list_per_page = 50
    actions = ("cancel_selected_runs",)
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "report",
                    "report_version_link",
                    "badge",
                    "trigger",
                    "attempt",
                    "retry_of",
                    "rerun_of",
                    "backfill_id",
                    "download",
                )
            },
        ),
        (
            "Timing",
            {
                "fields": (
                    "scheduled_for_moment",
                    "interval_start_moment",
                    "interval_end_moment",
                    "queued_at_moment",
                    "started_at_moment",
                    "finished_at_moment",
                    "duration",
                    "cancelled_at_moment",
                )
            },
        ),
        (
            "Result",
            {
                "fields": (
                    "parameters_table",
                    "rows",
                    "size",
                    "output_sha256",
                    "error_block",
                    "sql_block",
                )
            },
        ),
        ("Where", {"fields": ("worker", "heartbeat_at_moment", "requested_by", "cancelled_by")}),
        ("Notifications", {"fields": ("deliveries_table",)}),
    )
    readonly_fields = (
        "report",
        "report_version_link",
        "badge",
        "trigger",
        "attempt",
        "retry_of",
        "rerun_of",
        "backfill_id",
        "download",
        "parameters_table",
        "scheduled_for_moment",
        "interval_start_moment",
        "interval_end_moment",
        "queued_at_moment",
        "started_at_moment",
        "finished_at_moment",
        "duration",
        "cancelled_at_moment",
        "cancelled_by",
        "rows",
        "size",
        "output_sha256",
        "error_block",
        "sql_block",
        "worker",
        "heartbeat_at_moment",
        "requested_by",
        "deliveries_table",
    )

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("report")

    def has_cancel_permission(self, request):
        return can_run_reports(request.user)

    @admin.action(description="Cancel selected runs", permissions=["cancel"])
    def cancel_selected_runs(self, request, queryset):
        """Queued runs end cancelled at once, running ones are stopped on the database
        server; runs that ended otherwise are left as they were, and the message says so."""
        outcome = cancel_runs(queryset, request.user)
        level = messages.WARNING if outcome.ended else messages.SUCCESS
        self.message_user(request, outcome.message(), level)

    def get_fieldsets(self, request, obj=None):
        """A failed run's page starts with why it failed, above the timings."""
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None or obj.status != RunStatus.FAILED:
            return fieldsets
        without_error = [
            (name, {**options, "fields": [f for f in options["fields"] if f != "error_block"]})
            for name, options in fieldsets
        ]
        return [("Why it failed", {"fields": ["error_block"]}), *without_error]

    def get_search_fields(self, request):
        # Searching the error text would tell, one guess at a time, the statement it
        # quotes: only for those who may see the SQL.
        if visibility_of(request).sql:
            return self.search_fields
        return tuple(field for field in self.search_fields if field != "error")

    def get_list_display(self, request):
        visibility = visibility_of(request)

        @admin.display(description="Error")
        def error_summary(run):
            return self.error_summary(run, visibility)

        return tuple(
            error_summary if name == "error_summary" else name for name in self.list_display
        )

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False  # runs are records: viewable, never editable

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser

    @admin.display(description="Status", ordering="status")
    def badge(self, run):
        if run.status == RunStatus.RUNNING and run.cancelled_at is not None:
            return status_badge(run.status, "cancelling")  # its worker is stopping it
        return status_badge(run.status)

    @admin.display(description="Report", ordering="report__name")
    def report_and_trigger(self, run):
        when = format_html(" · {}", moment_html(run.scheduled_for)) if run.scheduled_for else ""
        return format_html(
            '{}<br><span class="rs-muted">{}{}</span>',
            run.report.name,
            run.get_trigger_display(),
            when,
        )

    @admin.display(description="Report version")
    def report_version_link(self, run):
        """The version of the report the run ran, linked to it in the report's history."""
        number = report_version_number(run)
        if number is None:
            if run.started_at is None:
                return "— (recorded when the run starts)"
            return "— (not recorded: the run started before the report had versions)"
        version, newest = run.report_version, newest_version_number(run.report_id)
        if newest in (None, number):
            since = "the current version"
        else:
            since = format_html(
                'changed since: now <a href="{}">version {}</a>', _version_url(run, newest), newest
            )
        by = f" by {version.history_user.get_username()}" if version.history_user else ""
        return format_html(
            '<a href="{}" id="report-version">Version {}</a> '
            '<span class="rs-muted">of {}{} · {}</span>',
            _version_url(run, number),
            number,
            moment(version.history_date),
            by,
            since,
        )

    @admin.display(description="Started", ordering="started_at")
    def started(self, run):
        return moment_html(run.started_at)

    @admin.display(description="Error")
    def error_summary(self, run, visibility=NOBODY):
        """The first line of the error (each request's own visibility: get_list_display)."""
        error = visibility.error(run.error)
        if not error:
            return ""
        return format_html(
            '<span class="rs-error-line" title="{}">{}</span>',
            first_line(error, 500),
            first_line(error),
        )

    @admin.display(description="Scheduled for")
    def scheduled_for_moment(self, run):
        return self._moment_with_report_zone(run, run.scheduled_for)

    @admin.display(description="Interval start")
    def interval_start_moment(self, run):
        return self._moment_with_report_zone(run, run.interval_start)

    @admin.display(description="Interval end")
    def interval_end_moment(self, run):
        return self._moment_with_report_zone(run, run.interval_end)

    @admin.display(description="Queued at")
    def queued_at_moment(self, run):
        return moment(run.queued_at)

    @admin.display(description="Started at")
    def started_at_moment(self, run):
        return moment(run.started_at)

    @admin.display(description="Finished at")
    def finished_at_moment(self, run):
        return moment(run.finished_at)

    @admin.display(description="Cancelled at")
    def cancelled_at_moment(self, run):
        return moment(run.cancelled_at)

    @admin.display(description="Heartbeat at")
    def heartbeat_at_moment(self, run):
        return moment(run.heartbeat_at)

    @staticmethod
    def _moment_with_report_zone(run, value):
        """The fire time in the admin's zone, like the other times on the page, and in
        the report's own zone (the one its schedule is read in) when that differs."""
        if value is None:
            return "— (not a scheduled run)"
        shown = moment(value)
        zone = report_zone(run.report)
        local, here = in_zone(value, zone), in_zone(value, timezone.get_current_timezone())
        if local is None or here is None or local.utcoffset() == here.utcoffset():
            return shown
        return format_html(
            '{} <span class="rs-muted">({} in {})</span>', shown, moment(value, zone), zone.key
        )

    @admin.display(description="Duration")
    def duration(self, run):
        seconds = run.duration_seconds
        return f"{seconds:.2f} s" if seconds is not None else "—"

    @admin.display(description="Rows", ordering="row_count")
    def rows(self, run):
        return f"{run.row_count:,}" if run.row_count is not None else "—"

    @admin.display(description="Size", ordering="output_bytes")
    def size(self, run):
        return filesizeformat(run.output_bytes) if run.output_bytes is not None else "—"

    @admin.display(description="Output")
    def download(self, run):
        if not run.output:
            return "—"
        if not _visibility(run).outputs:
            return hidden_note(ROWS_HIDDEN)
        url = reverse("run-download", args=[run.pk])
        kind = output_format_of(run).extension.upper()
        return format_html('<a class="button" href="{}">⬇ Download {}</a>', url, kind)

    @admin.display(description="Error")
    def error_block(self, run):
        error = _visibility(run).error(run.error)
        return format_html('<pre class="rs-error">{}</pre>', error) if error else "—"

    @admin.display(description="SQL executed")
    def sql_block(self, run):
        if not run.sql:
            return "—"
        if not _visibility(run).sql:
            return hidden_note(SQL_HIDDEN)
        return format_html('<pre class="rs-sql">{}</pre>', run.sql)

    @admin.display(description="Parameters")
    def parameters_table(self, run):
        if not run.parameters:
            return "— (the SQL uses none)"
        if not isinstance(run.parameters, dict):  # stored past the services (a shell)
            return format_html("<pre class='rs-value'>{}</pre>", shown_json(run.parameters))
        return format_html(
            "<table class='rs-table' id='run-parameters'><tr><th>Name</th><th>Value</th></tr>"
            "{}</table>",
            format_html_join(
                "",
                "<tr><td><code>{}</code></td><td><pre class='rs-value'>{}</pre></td></tr>",
                ((escaped(name), shown_json(value)) for name, value in run.parameters.items()),
            ),
        )

    @admin.display(description="Deliveries")
    def deliveries_table(self, run):
        deliveries = list(run.deliveries.all())
        if not deliveries:
            return "None sent."
        visibility = _visibility(run)
        return format_html(
            "<table class='rs-table'><tr><th>Channel</th><th>Target</th><th>Why</th>"
            "<th>Status</th><th>Attempts</th><th>Error or note</th></tr>{}</table>",
            format_html_join(
                "",
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}{}</td></tr>",
                (
                    (
                        d.channel,
                        visibility.target(d),
                        d.reason,
                        status_badge(d.status),
                        d.attempts,
                        visibility.delivery_error(d),
                        d.note,
                    )
                    for d in deliveries
                ),
            ),
        )

    def get_object(self, request, object_id, from_field=None):
        run = super().get_object(request, object_id, from_field)
        if run is not None:
            run.visibility = visibility_of(request)  # what the page's fields may show
        return run

    def change_view(self, request, object_id, form_url="", extra_context=None):
        run = self.get_object(request, object_id)
        show_rows = run is not None and run.visibility.outputs
        can_run = can_run_reports(request.user)
        backfill_left = 0
        if can_run and run is not None and run.backfill_id is not None:
            backfill_left = unfinished_backfill_runs(run.report, run.backfill_id)
        extra_context = {
            **(extra_context or {}),
            "preview": preview_rows(run) if show_rows else None,
            "rows_hidden": "" if show_rows else ROWS_HIDDEN,
            "can_run": can_run,
            "can_cancel": can_run
            and run is not None
            and run.status in (RunStatus.QUEUED, RunStatus.RUNNING),
            "backfill_left": backfill_left,
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<int:run_id>/rerun/", view(self.rerun_view), name="runs_run_rerun"),
            path("<int:run_id>/cancel/", view(self.cancel_view), name="runs_run_cancel"),
            path(
                "<int:run_id>/cancel-backfill/",
                view(self.cancel_backfill_view),
                name="runs_run_cancel_backfill",
            ),
            *super().get_urls(),
        ]

    def cancel_view(self, request, run_id):
        run = get_object_or_404(Run.objects.select_related("report"), pk=run_id)
        if request.method != "POST" or not can_run_reports(request.user):
            messages.error(request, "You are not allowed to cancel runs (needs run_report).")
            return redirect("admin:runs_run_change", run_id)
        outcome = cancel_runs(Run.objects.filter(pk=run.pk), request.user)
        level = messages.WARNING if outcome.ended else messages.SUCCESS
        messages.add_message(request, level, outcome.message())
        return redirect("admin:runs_run_change", run_id)

    def cancel_backfill_view(self, request, run_id):
        run = get_object_or_404(Run.objects.select_related("report"), pk=run_id)
        allowed = request.method == "POST" and can_run_reports(request.user)
        if not allowed or run.backfill_id is None:
            messages.error(request, "You are not allowed to cancel runs (needs run_report).")
            return redirect("admin:runs_run_change", run_id)
        outcome = cancel_backfill(run.report, run.backfill_id, request.user)
        messages.success(request, f"Backfill {run.backfill_id}: {outcome.message()}")
        return redirect("admin:runs_run_change", run_id)

    def rerun_view(self, request, run_id):
        original = get_object_or_404(Run.objects.select_related("report"), pk=run_id)
        if request.method != "POST" or not can_run_reports(request.user):
            messages.error(request, "You are not allowed to run reports.")
            return redirect("admin:runs_run_change", run_id)
        try:
            run, _ = request_rerun(original, RunTrigger.MANUAL, requested_by=request.user)
        except ParameterError as error:
            messages.error(request, f"Cannot rerun: parameter {error.field}: {error.message}")
            return redirect("admin:runs_run_change", run_id)
        except QueueFull as error:
            messages.error(request, str(error))
            return redirect("admin:runs_run_change", run_id)
        messages.success(
            request,
            format_html(
                "Queued run {} with the values and interval of run {}.", run.pk, original.pk
            ),
        )
        return redirect("admin:runs_run_change", run.pk)


def _version_url(run, number):
    return reverse("admin:reports_report_version", args=[run.report_id, number])


def _visibility(run):
    """What the page's user may see, as get_object recorded it; nothing special else."""
    return getattr(run, "visibility", NOBODY)


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin):
    list_display = ("name", "schedules", "running_runs", "last_seen", "started", "version")

    def get_queryset(self, request):
        # Who schedules is the lease's to say: a heartbeat row outlives its worker.
        live_lease = SchedulerLease.objects.filter(holder=OuterRef("name"), expires_at__gt=Now())
        return super().get_queryset(request).annotate(holds_lease=Exists(live_lease))

    @admin.display(description="Schedules", boolean=True, ordering="holds_lease")
    def schedules(self, beat):
        return beat.holds_lease

    @admin.display(description="Last seen", ordering="last_seen_at")
    def last_seen(self, beat):
        return moment_html(beat.last_seen_at)

    @admin.display(description="Started", ordering="started_at")
    def started(self, beat):
        return moment_html(beat.started_at)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
