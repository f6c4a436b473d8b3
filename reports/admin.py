from zoneinfo import ZoneInfo

from django import forms
from django.contrib import admin, messages
from django.db.models import OuterRef, Subquery
from django.shortcuts import get_object_or_404, redirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from reports.cron import CronError, describe_crontab, next_fire_times, parse_crontab
from reports.models import REPORT_SETTINGS_FIELDS, Report
from reports.permissions import can_run_reports
from reports.services.sql_check import sql_problem
from runs.models import Run, RunStatus, RunTrigger
from runs.services.queue import QueueFull, request_run
from runs.templatetags.runs_admin import status_badge

RECENT_RUNS = 20


class ReportForm(forms.ModelForm):
    class Meta:
        model = Report
        fields = [*REPORT_SETTINGS_FIELDS, "webhook_secret"]
        widgets = {
            "notify_emails": forms.Textarea(attrs={"rows": 2}),
            "notify_webhooks": forms.Textarea(attrs={"rows": 2}),
            "sql": forms.Textarea(attrs={"class": "rs-sql", "rows": 14, "spellcheck": "false"}),
            "description": forms.Textarea(attrs={"rows": 3}),
        }

    def clean(self):
        cleaned = super().clean()
        sql, source = cleaned.get("sql"), cleaned.get("data_source")
        if sql and source and "sql" not in self.errors:
            problem = sql_problem(source, sql)
            if problem:
                self.add_error("sql", f"The database rejects this SQL: {problem}")
        return cleaned


class LastStatusFilter(admin.SimpleListFilter):
    title = "last run"
    parameter_name = "last_status"

    def lookups(self, request, model_admin):
        return [*RunStatus.choices, ("never", "Never run")]

    def queryset(self, request, queryset):
        if self.value() == "never":
            return queryset.filter(last_run_status__isnull=True)
        if self.value():
            return queryset.filter(last_run_status=self.value())
        return queryset


def _newest(field, **filters):
    runs = Run.objects.filter(report=OuterRef("pk"), **filters).order_by("-queued_at", "-id")
    return Subquery(runs.values(field)[:1])


@admin.register(Report)
class ReportAdmin(admin.ModelAdmin):
    form = ReportForm
    list_display = (
        "name",
        "data_source",
        "schedule_in_words",
        "enabled",
        "next_run",
        "last_run",
        "rows",
        "download",
    )
    list_filter = ("enabled", "data_source", LastStatusFilter)
    search_fields = ("name", "slug", "sql")
    prepopulated_fields = {"slug": ("name",)}
    readonly_fields = ("next_fire_times", "next_run_at", "created_at", "updated_at")
    actions = ["run_now"]
    fieldsets = (
        ("Definition", {"fields": ("name", "slug", "description", "sql", "data_source")}),
        ("Schedule", {"fields": ("schedule", "timezone", "enabled", "next_fire_times")}),
        ("Limits", {"fields": ("timeout_seconds", "max_rows", "max_retries", "retention_days")}),
        (
            "Notifications",
            {
                "fields": (
                    "notify_emails",
                    "notify_webhooks",
                    "notify_when",
                    "alert_condition",
                    "alert_threshold",
                    "webhook_secret",
                )
            },
        ),
        ("History", {"fields": ("next_run_at", "created_at", "updated_at")}),
    )

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                last_run_id=_newest("pk"),
                last_run_status=_newest("status"),
                last_run_started=_newest("started_at"),
                last_run_finished=_newest("finished_at"),
                last_run_rows=_newest("row_count"),
                last_success_id=_newest("pk", status=RunStatus.SUCCEEDED),
            )
        )

    @admin.display(description="Schedule")
    def schedule_in_words(self, report):
        if not report.schedule:
            return mark_safe('<span class="rs-muted">manual only</span>')
        return format_html(
            "{} ({})<br><code>{}</code>",
            describe_crontab(report.schedule),
            report.timezone,
            report.schedule,
        )

    @admin.display(description="Next run", ordering="next_run_at")
    def next_run(self, report):
        return _when(report.next_run_at, report.timezone) if report.next_run_at else "—"

    @admin.display(description="Last run", ordering="last_run_started")
    def last_run(self, report):
        if not report.last_run_id:
            return status_badge(None)
        url = reverse("admin:runs_run_change", args=[report.last_run_id])
        when = report.last_run_finished or report.last_run_started
        details = _when(when, report.timezone) if when else ""
        if report.last_run_started and report.last_run_finished:
            seconds = (report.last_run_finished - report.last_run_started).total_seconds()
            details += f" · {seconds:.1f} s"
        return format_html(
            '<a href="{}">{}</a> <span class="rs-muted">{}</span>',
            url,
            status_badge(report.last_run_status),
            details,
        )

    @admin.display(description="Rows")
    def rows(self, report):
        return f"{report.last_run_rows:,}" if report.last_run_rows is not None else "—"

    @admin.display(description="Output")
    def download(self, report):
        if not report.last_success_id:
            return "—"
        url = reverse("run-download", args=[report.last_success_id])
        return format_html('<a href="{}">⬇ CSV</a>', url)

    @admin.display(description="Next five runs")
    def next_fire_times(self, report):
        if not report.schedule:
            return "Manual runs only."
        try:
            zone = ZoneInfo(report.timezone)
            fires = next_fire_times(parse_crontab(report.schedule), zone, timezone.now(), 5)
        except (CronError, ValueError, KeyError):
            return "—"
        return format_html(
            "{}<ul class='rs-fires'>{}</ul>",
            describe_crontab(report.schedule),
            format_html_join(
                "",
                "<li>{}</li>",
                ((f"{fire.astimezone(zone):%a %Y-%m-%d %H:%M %Z}",) for fire in fires),
            ),
        )

    # --- Run now -------------------------------------------------------------------

    def get_actions(self, request):
        actions = super().get_actions(request)
        if not can_run_reports(request.user):
            actions.pop("run_now", None)
        return actions

    @admin.action(description="Run now")
    def run_now(self, request, queryset):
        for report in queryset:
            self._queue_run(request, report)

    def get_urls(self):
        run = self.admin_site.admin_view(self.run_view)
        return [path("<int:report_id>/run/", run, name="reports_report_run"), *super().get_urls()]

    def run_view(self, request, report_id):
        report = get_object_or_404(Report, pk=report_id)
        if request.method != "POST" or not can_run_reports(request.user):
            messages.error(request, "You are not allowed to run reports.")
        else:
            self._queue_run(request, report)
        return redirect("admin:reports_report_change", report_id)

    def _queue_run(self, request, report):
        try:
            run, _ = request_run(report, RunTrigger.MANUAL, requested_by=request.user)
        except QueueFull as error:
            messages.error(request, str(error))
            return
        url = reverse("admin:runs_run_change", args=[run.pk])
        messages.success(
            request,
            format_html(
                'Queued <a href="{}">run {}</a> of “{}”; the worker starts it in a moment.',
                url,
                run.pk,
                report.name,
            ),
        )

    def change_view(self, request, object_id, form_url="", extra_context=None):
        recent = (
            Run.objects.filter(report_id=object_id).order_by("-queued_at", "-id")[:RECENT_RUNS]
            if str(object_id).isdigit()
            else []
        )
        extra_context = {
            **(extra_context or {}),
            "recent_runs": recent,
            "can_run": can_run_reports(request.user),
        }
        return super().change_view(request, object_id, form_url, extra_context)


def _when(moment, zone_name):
    try:
        zone = ZoneInfo(zone_name)
    except (ValueError, KeyError):
        zone = timezone.get_current_timezone()
    return f"{moment.astimezone(zone):%Y-%m-%d %H:%M %Z}"
