from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from reports.permissions import can_change_reports
from reports.targets import shown_target
from runs.models import Run, WorkerHeartbeat
from runs.services.preview import preview_rows
from runs.templatetags.runs_admin import status_badge


def human_bytes(size):
    if size is None:
        return "—"
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return ""


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "report",
        "badge",
        "trigger",
        "scheduled_for",
        "started_at",
        "duration",
        "rows",
        "size",
        "worker",
    )
    list_display_links = ("id", "badge")
    list_filter = ("status", "trigger", "report", ("queued_at", admin.DateFieldListFilter))
    list_select_related = ("report",)
    search_fields = ("=id", "report__slug", "error")
    ordering = ("-queued_at", "-id")
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER  # counting facets over millions of runs is slow
    list_per_page = 50
    fieldsets = (
        (None, {"fields": ("report", "badge", "trigger", "attempt", "retry_of", "download")}),
        (
            "Timing",
            {
                "fields": (
                    "scheduled_for",
                    "interval_start",
                    "interval_end",
                    "queued_at",
                    "started_at",
                    "finished_at",
                    "duration",
                )
            },
        ),
        ("Result", {"fields": ("rows", "size", "output_sha256", "error_block", "sql_block")}),
        ("Where", {"fields": ("worker", "heartbeat_at", "requested_by")}),
        ("Notifications", {"fields": ("deliveries_table",)}),
    )
    readonly_fields = (
        "report",
        "badge",
        "trigger",
        "attempt",
        "retry_of",
        "download",
        "scheduled_for",
        "interval_start",
        "interval_end",
        "queued_at",
        "started_at",
        "finished_at",
        "duration",
        "rows",
        "size",
        "output_sha256",
        "error_block",
        "sql_block",
        "worker",
        "heartbeat_at",
        "requested_by",
        "deliveries_table",
    )

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False  # runs are records: viewable, never editable

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser

    @admin.display(description="Status", ordering="status")
    def badge(self, run):
        return status_badge(run.status)

    @admin.display(description="Duration")
    def duration(self, run):
        seconds = run.duration_seconds
        return f"{seconds:.2f} s" if seconds is not None else "—"

    @admin.display(description="Rows", ordering="row_count")
    def rows(self, run):
        return f"{run.row_count:,}" if run.row_count is not None else "—"

    @admin.display(description="Size", ordering="output_bytes")
    def size(self, run):
        return human_bytes(run.output_bytes)

    @admin.display(description="Output")
    def download(self, run):
        if not run.output:
            return "—"
        url = reverse("run-download", args=[run.pk])
        return format_html('<a class="button" href="{}">⬇ Download CSV</a>', url)

    @admin.display(description="Error")
    def error_block(self, run):
        return format_html('<pre class="rs-error">{}</pre>', run.error) if run.error else "—"

    @admin.display(description="SQL executed")
    def sql_block(self, run):
        return format_html('<pre class="rs-sql">{}</pre>', run.sql) if run.sql else "—"

    @admin.display(description="Deliveries")
    def deliveries_table(self, run):
        deliveries = list(run.deliveries.all())
        if not deliveries:
            return "None sent."
        return format_html(
            "<table class='rs-table'><tr><th>Channel</th><th>Target</th><th>Why</th>"
            "<th>Status</th><th>Attempts</th><th>Error</th></tr>{}</table>",
            format_html_join(
                "",
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                (
                    (
                        d.channel,
                        shown_target(d, getattr(run, "targets_visible", False)),
                        d.reason,
                        status_badge(d.status),
                        d.attempts,
                        d.last_error,
                    )
                    for d in deliveries
                ),
            ),
        )

    def get_object(self, request, object_id, from_field=None):
        run = super().get_object(request, object_id, from_field)
        if run is not None:
            # Email addresses in full only for those who may change reports.
            run.targets_visible = can_change_reports(request.user)
        return run

    def change_view(self, request, object_id, form_url="", extra_context=None):
        run = self.get_object(request, object_id)
        extra_context = {**(extra_context or {}), "preview": preview_rows(run) if run else None}
        return super().change_view(request, object_id, form_url, extra_context)


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin):
    list_display = ("name", "is_leader", "running_runs", "last_seen_at", "started_at", "version")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
