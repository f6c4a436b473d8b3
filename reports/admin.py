import math

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import F
from django.db.models.functions import Substr
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from datasources.sandbox import without_statement_text
from reports import forms as report_forms
from reports.cron import CronError, describe_crontab, next_fire_times
from reports.history import recorded
from reports.models import REPORT_SETTINGS_FIELDS, Report
from reports.parameters import (
    BUILT_IN_NAMES,
    INTERVAL_END,
    INTERVAL_START,
    ParameterError,
)
from reports.services import history
from reports.services.schedules import parsed_schedule, save_report, set_enabled
from reports.services.statements import declared_of
from reports.services.validation import check_report
from reports.services.webhook_secrets import rotate_webhook_secret
from reports.targets import redacted_emails, redacted_targets, redacted_webhooks
from reports.throttling import run_trigger_wait
from reports.zones import report_zone
from reportsvc.web.display import (
    SQL_HIDDEN,
    first_line,
    hidden_note,
    moment,
    moment_html,
    named_moment,
    status_badge,
)
from reportsvc.web.permissions import NOBODY, can_run_reports, visibility_of
from runs.models import Delivery, Run, RunStatus, RunTrigger
from runs.selectors import (
    NEWEST_FIRST,
    freshness_of,
    latest_successful_output,
    latest_successful_run_id,
    with_freshness,
    with_last_run,
)
from runs.services.domain.backfill import plan_backfill, queue_backfill
from runs.services.domain.intervals import default_interval
from runs.services.domain.queue import QueueFull, request_run, validated_request
from runs.services.formats import format_of_file

RECENT_RUNS = 20
VERSIONS_PER_PAGE = 20


class ReportForm(forms.ModelForm):
    # Set by ReportAdmin.get_form for users without view_report_sql, as in the API: they
    # may replace the SQL but not read it. The field starts empty; left empty, the
    # stored SQL stays and is checked against the other changes.
    sql_hidden = False

    class Meta:
        model = Report
        fields = list(REPORT_SETTINGS_FIELDS)  # the webhook secret is rotated, not typed
        widgets = {
            "targets": forms.Textarea(attrs={"class": "rs-sql", "rows": 4}),
            "notify_emails": forms.Textarea(attrs={"rows": 2}),
            "notify_webhooks": forms.Textarea(attrs={"rows": 2}),
            "sql": report_forms.SQLTextarea(),
            "description": forms.Textarea(attrs={"rows": 3}),
        }

    sql_warning = None  # saved, but the SQL was checked less than usual

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Parameters as rows, the data source as a choice (reports.forms).
        self.parameter_rows = report_forms.parameter_rows(
            self.data if self.is_bound else None, self.initial.get("parameters")
        )
        if "parameters" in self.fields:
            self.fields["parameters"].widget = report_forms.ParameterRowsWidget(self.parameter_rows)
            self.fields["parameters"].help_text = ""
            self.fields["parameters"].show_hidden_initial = False
        if "data_source" in self.fields:
            self.fields["data_source"] = report_forms.data_source_field(
                self.fields["data_source"], self.instance.data_source if self.instance.pk else None
            )
        if self.sql_hidden and "sql" in self.fields:
            self.initial["sql"] = ""  # never the stored SQL
            field = self.fields["sql"]
            field.required, field.label = False, "Replace the SQL"
            field.help_text = (
                f"{SQL_HIDDEN} Type a statement to replace it; leave this empty to keep it."
            )

    def clean_sql(self):
        sql = self.cleaned_data["sql"]
        if self.sql_hidden and not sql.strip():
            return self.instance.sql
        return sql

    def clean_parameters(self):
        if self.parameter_rows.is_bound:
            return self.parameter_rows.declarations()
        return self.cleaned_data["parameters"]

    def clean_data_source(self):
        return report_forms.clean_data_source(self.cleaned_data["data_source"])

    def full_clean(self):
        super().full_clean()
        if self.parameter_rows.is_bound and "parameters" in self._errors:
            # The model's word on a declaration goes to its row too.
            marked = self.parameter_rows.mark(self._errors["parameters"])
            self._errors["parameters"] = self.error_class(marked)
        kept = self.sql_hidden and not self.data.get(self.add_prefix("sql"), "").strip()
        if kept and "sql" in self._errors:
            # What is wrong with SQL the user may not see, without the lines quoting it.
            self._errors["sql"] = self.error_class(
                [without_statement_text(message) for message in self._errors["sql"]]
            )

    def _post_clean(self):
        super()._post_clean()  # the instance, with the fields' and the model's checks
        if not self._errors.keys() & {"sql", "parameters", "data_source", "timezone"}:
            try:
                self.sql_warning = check_report(self.instance, model_checked=True)
            except ValidationError as error:
                self.add_error(None, error)


class RunWithParametersForm(forms.Form):
    """A field per declared parameter (defaults filled in), and the interval's bounds."""

    def __init__(self, report, *args, **kwargs):
        super().__init__(*args, **kwargs)
        zone = report_zone(report)
        start, end = default_interval(report, timezone.now())
        for name, bound in ((INTERVAL_START, start), (INTERVAL_END, end)):
            self.fields[name] = forms.CharField(
                label=name.replace("_", " ").capitalize(),
                initial=report_forms.local_text(bound, zone),
                widget=report_forms.moment_input(zone),
                help_text=f"{report_forms.moment_help(zone)} Filled in: the latest complete "
                "interval.",
            )
        for parameter in declared_of(report):
            self.fields[parameter.name] = _parameter_field(parameter, zone)


def _parameter_field(parameter, zone):
    """The field of the parameter's type, its default filled in (a bound of the
    interval, left blank: the run fills it in); times in the report's zone."""
    options = {"label": parameter.label, "required": not parameter.has_default}
    initial, note = parameter.default_text, ""
    moments = parameter.kind.sql_type == "timestamp"
    if initial in BUILT_IN_NAMES:
        initial, note = None, f" (default: from {initial})"
        options["required"] = False
    elif moments and parameter.has_default:
        initial = report_forms.local_text(parameter.default, zone)
    field = parameter.kind.form_field(parameter, initial=initial, note=note, **options)
    if moments:
        field.widget = report_forms.moment_input(zone)
        field.help_text = f"{report_forms.moment_help(zone)}{note}"
    return field


class BackfillForm(forms.Form):
    start = forms.DateTimeField(help_text="The first fire time counted")
    end = forms.DateTimeField(help_text="Fire times before this are counted")
    rerun = forms.BooleanField(
        required=False, help_text="Also run fire times that already have a succeeded run."
    )
    confirmed = forms.BooleanField(required=False, widget=forms.HiddenInput)

    def __init__(self, zone, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in ("start", "end"):  # read in the report's zone, which they name
            field = self.fields[name]
            field.widget = report_forms.moment_input(zone)
            field.help_text = (
                f"{field.help_text}: a date, or a date and time, in {zone.key} (e.g. "
                "2026-11-16 or 2026-11-16 06:00)."
            )


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


class StaleFilter(admin.SimpleListFilter):
    title = "freshness"
    parameter_name = "stale"

    def lookups(self, request, model_admin):
        return [("yes", "Stale"), ("no", "Fresh"), ("none", "No expectation")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(stale=True)
        if self.value() == "no":
            return queryset.filter(stale=False, expect_success_within__isnull=False)
        if self.value() == "none":
            return queryset.filter(expect_success_within__isnull=True)
        return queryset


def _stale_badge(report):
    """A Stale badge beside the last run's status, when no run succeeded within the
    report's expect_success_within (the list's freshness filter finds them all)."""
    if not getattr(report, "stale", False):
        return ""
    last = report.last_success_at
    return format_html(
        ' <span class="rs-badge rs-stale" title="{}">stale</span>',
        f"No success within {report.expect_success_within}; last: "
        + (moment(last) if last else "never"),
    )


@admin.register(Report)
class ReportAdmin(admin.ModelAdmin):
    empty_value_display = "—"  # the dash the other columns use
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
    list_filter = ("enabled", StaleFilter, "data_source", LastStatusFilter)
    search_fields = ("name", "slug", "sql")
    prepopulated_fields = {"slug": ("name",)}
    readonly_fields = (
        "sql_hidden",
        "current_version",
        "next_fire_times",
        "next_run_at_moment",
        "created_at_moment",
        "updated_at_moment",
        "webhook_signing_secret",
        "notify_emails_redacted",
        "notify_webhooks_redacted",
        "freshness_details",
        "parameters_table",
        "targets_redacted",
    )
    actions = ["run_now", "enable_reports", "disable_reports", "rotate_webhook_secrets"]
    fieldsets = (
        (
            "Definition",
            {"fields": ("name", "slug", "description", "sql", "parameters", "data_source")},
        ),
        (
            "Schedule",
            {
                "fields": (
                    "schedule",
                    "timezone",
                    "enabled",
                    "expect_success_within",
                    "freshness_details",
                    "next_fire_times",
                )
            },
        ),
        ("Output", {"fields": ("output_format", "escape_formulas", "csv_bom")}),
        ("Limits", {"fields": ("timeout_seconds", "max_rows", "max_retries", "retention_days")}),
        (
            "Notifications",
            {
                "fields": (
                    "targets",
                    "notify_emails",
                    "notify_webhooks",
                    "notify_when",
                    "notify_repeat_after",
                    "inline_rows",
                    "alert_condition",
                    "alert_threshold",
                    "webhook_signing_secret",
                )
            },
        ),
        (
            "History",
            {
                "fields": (
                    "current_version",
                    "next_run_at_moment",
                    "created_at_moment",
                    "updated_at_moment",
                )
            },
        ),
    )
    # What someone who may not change the report sees instead of its targets and secret.
    REDACTED_FIELDS = {
        "notify_emails": "notify_emails_redacted",
        "notify_webhooks": "notify_webhooks_redacted",
        "targets": "targets_redacted",
        "webhook_signing_secret": None,
    }

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None or self.has_change_permission(request, obj):
            return fieldsets  # the form hides the SQL itself (get_form)
        redacted = {**self.REDACTED_FIELDS, "parameters": "parameters_table"}  # rows, read
        if not visibility_of(request).sql:
            redacted["sql"] = "sql_hidden"
        return [
            (
                name,
                {
                    **options,
                    "fields": [
                        redacted.get(field, field)
                        for field in options["fields"]
                        if redacted.get(field, field)
                    ],
                },
            )
            for name, options in fieldsets
        ]

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        if obj is not None and not visibility_of(request).sql:
            form = type(form.__name__, (form,), {"sql_hidden": True})
        return form

    def get_object(self, request, object_id, from_field=None):
        report = super().get_object(request, object_id, from_field)
        if report is not None:
            report.visibility = visibility_of(request)  # what the page's fields may show
        return report

    def get_search_fields(self, request):
        # A search in the SQL would tell, one guess at a time, what it says.
        if visibility_of(request).sql:
            return self.search_fields
        return tuple(field for field in self.search_fields if field != "sql")

    def get_list_display(self, request):
        visibility = visibility_of(request)

        @admin.display(description="Last run", ordering="last_run_started")
        def last_run(report):
            return self.last_run(report, visibility)

        shown = self.list_display
        if not visibility.outputs:
            shown = tuple(name for name in shown if name != "download")
        return tuple(last_run if name == "last_run" else name for name in shown)

    def save_model(self, request, obj, form, change):
        # A changed schedule moves next_run_at at once; the version names the user.
        save_report(obj, by=request.user, via="admin")
        if getattr(form, "sql_warning", None):
            messages.warning(request, form.sql_warning)

    def delete_model(self, request, obj):
        with recorded(request.user, "admin"):
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        with recorded(request.user, "admin"):
            for report in queryset:  # one deletion, and one version, per report
                report.delete()

    def get_queryset(self, request):
        return with_freshness(with_last_run(super().get_queryset(request))).annotate(
            last_run_id=F("last_run__id"),
            last_run_status=F("last_run__status"),
            last_run_started=F("last_run__started_at"),
            last_run_finished=F("last_run__finished_at"),
            last_run_rows=F("last_run__row_count"),
            last_run_error=Substr("last_run__error", 1, 500),
            last_success_id=latest_successful_run_id(),
            last_success_output=latest_successful_output(),
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
        return _when(report.next_run_at, report) if report.next_run_at else "—"

    @admin.display(description="Last run", ordering="last_run_started")
    def last_run(self, report, visibility=NOBODY):
        """Status, when and how long; a failure's first line below, as the user may see
        it (each request's own visibility: get_list_display)."""
        if not report.last_run_id:
            return format_html("{}{}", status_badge(None), _stale_badge(report))
        url = reverse("admin:runs_run_change", args=[report.last_run_id])
        when = report.last_run_finished or report.last_run_started
        details = _when(when, report) if when else ""
        if report.last_run_started and report.last_run_finished:
            seconds = (report.last_run_finished - report.last_run_started).total_seconds()
            details = format_html("{} · {} s", details, f"{seconds:.1f}")
        error = visibility.error(getattr(report, "last_run_error", None) or "")
        return format_html(
            '<a href="{}">{}</a>{} <span class="rs-muted">{}</span>{}',
            url,
            status_badge(report.last_run_status),
            _stale_badge(report),
            details,
            format_html('<div class="rs-error-line rs-last-error">{}</div>', first_line(error))
            if error
            else "",
        )

    @admin.display(description="Freshness")
    def freshness_details(self, report):
        if report.pk is None or report.expect_success_within is None:
            return "No expectation: the report is never stale."
        stale, last = freshness_of(report_ids=[report.pk]).get(report.pk, (False, None))
        alerts = Delivery.objects.filter(report=report, run__isnull=True).order_by("-id")[:10]
        visibility = getattr(report, "visibility", NOBODY)  # set by get_object
        return format_html(
            "{} Last success: {}{}",
            mark_safe('<span class="rs-badge rs-stale">stale</span>')
            if stale
            else mark_safe('<span class="rs-muted">fresh</span>'),
            moment(last) if last else "never",
            format_html(
                "<table class='rs-table' id='freshness-alerts'><tr><th>When</th><th>Alert</th>"
                "<th>Channel</th><th>Target</th><th>Status</th><th>Error</th></tr>{}</table>",
                format_html_join(
                    "",
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    (
                        (
                            moment(d.created_at),
                            d.reason,
                            d.channel,
                            visibility.target(d),
                            status_badge(d.status),
                            visibility.delivery_error(d),
                        )
                        for d in alerts
                    ),
                ),
            )
            if alerts
            else "",
        )

    @admin.display(description="Rows")
    def rows(self, report):
        return f"{report.last_run_rows:,}" if report.last_run_rows is not None else "—"

    @admin.display(description="Output")
    def download(self, report):
        if not report.last_success_id:
            return "—"
        url = reverse("run-download", args=[report.last_success_id])
        kind = format_of_file(report.last_success_output or "").extension.upper()
        return format_html('<a href="{}">⬇ {}</a>', url, kind)

    # Moments as the rest of the admin shows them (reportsvc.web.display), also where
    # the admin's zone does not reach them (Django's own display would fail there).
    # A report's page shows every time in the report's zone (the one its schedule is
    # read in), and names it.
    @admin.display(description="Next run")
    def next_run_at_moment(self, report):
        if report.next_run_at is None:
            if not report.schedule:
                return "— (manual runs only)"
            return "—" if report.enabled else "— (disabled)"
        return named_moment(report.next_run_at, report_zone(report))

    @admin.display(description="Created at")
    def created_at_moment(self, report):
        return named_moment(report.created_at, report_zone(report))

    @admin.display(description="Updated at")
    def updated_at_moment(self, report):
        return named_moment(report.updated_at, report_zone(report))

    @admin.display(description="Next five runs")
    def next_fire_times(self, report):
        if not report.schedule:
            return "Manual runs only."
        try:
            schedule, zone = parsed_schedule(report.schedule, report.timezone)
            fires = next_fire_times(schedule, zone, timezone.now(), 5)
        except (CronError, ValueError, KeyError):
            return "—"
        return format_html(
            "{}, in {}:<ul class='rs-fires'>{}</ul>",
            describe_crontab(report.schedule),
            zone.key,
            format_html_join(
                "",
                "<li>{}</li>",
                ((moment(fire, zone, weekday=True),) for fire in fires),
            ),
        )

    @admin.display(description="Parameters")
    def parameters_table(self, report):
        """The declared parameters as the rows show them, for those who may not edit."""
        rows = report_forms.rows_initial(report.parameters)
        if not rows:
            return "— (none declared)"
        return format_html(
            '<table class="rs-table" id="parameters-table"><tr><th>Name</th><th>Type</th>'
            "<th>Label</th><th>Default</th><th>Choices</th></tr>{}</table>",
            format_html_join(
                "",
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                (
                    (
                        row["name"],
                        row["type"],
                        row["label"],
                        row["default"] or "—",
                        ", ".join(row["choices"].splitlines()) or "—",
                    )
                    for row in rows
                ),
            ),
        )

    @admin.display(description="SQL")
    def sql_hidden(self, report):
        return hidden_note(SQL_HIDDEN)

    @admin.display(description="Version")
    def current_version(self, report):
        if report.pk is None:
            return "—"
        version = history.versions_of(report.pk).first()
        if version is None:
            return "— (no version recorded)"
        return format_html(
            '<a href="{}">Version {}</a> <span class="rs-muted">{}{}</span> · '
            '<a href="{}">all versions</a>',
            reverse("admin:reports_report_version", args=[report.pk, version.history_version]),
            version.history_version,
            named_moment(version.history_date, report_zone(report)),
            f" by {version.history_user.get_username()}" if version.history_user else "",
            reverse("admin:reports_report_history", args=[report.pk]),
        )

    @admin.display(description="Notify emails")
    def notify_emails_redacted(self, report):
        return redacted_emails(report.notify_emails) or "—"

    @admin.display(description="Notify webhooks")
    def notify_webhooks_redacted(self, report):
        return format_html(
            "{}<div class='help'>Shown as scheme and host: only users who may change the "
            "report see the full addresses.</div>",
            redacted_webhooks(report.notify_webhooks) or "—",
        )

    @admin.display(description="Targets")
    def targets_redacted(self, report):
        shown = [
            f"{target['channel']}: {target['address']}"
            for target in redacted_targets(report.targets)
        ]
        return format_html(
            "{}<div class='help'>URLs as scheme and host, addresses as their domain: only "
            "users who may change the report see them in full.</div>",
            "; ".join(shown) or "—",
        )

    @admin.display(description="Webhook secret")
    def webhook_signing_secret(self, report):
        if report.pk is None:
            return "A random secret is made when the report is saved."
        return format_html(
            "<code id='webhook-secret'>{}</code><div class='help'>Key of the "
            "X-Reportsvc-Signature HMAC-SHA256 header on webhooks. Replace it with "
            "“Rotate webhook secret” under Dangerous actions, below.</div>",
            report.webhook_secret,
        )

    # --- Enable, disable ----------------------------------------------------------

    @admin.action(description="Enable selected reports", permissions=["change"])
    def enable_reports(self, request, queryset):
        self._set_enabled(request, queryset, True)

    @admin.action(description="Disable selected reports", permissions=["change"])
    def disable_reports(self, request, queryset):
        self._set_enabled(request, queryset, False)

    def _set_enabled(self, request, queryset, enabled):
        reports = list(queryset)
        changed = set_enabled(reports, enabled, by=request.user, via="admin")
        word = "Enabled" if enabled else "Disabled"
        for report in changed:
            self.log_change(request, report, f"{word}.")
        already = len(reports) - len(changed)
        messages.success(
            request,
            f"{word} {len(changed)} report(s)"
            + (f"; {already} already {word.lower()}." if already else "."),
        )

    # --- Webhook secret ----------------------------------------------------------

    @admin.action(description="Rotate webhook secret", permissions=["change"])
    def rotate_webhook_secrets(self, request, queryset):
        reports = list(queryset)
        for report in reports:
            self._rotate(request, report)
        messages.success(
            request,
            f"New webhook secret for {len(reports)} report(s); give it to their receivers.",
        )

    def rotate_view(self, request, report_id):
        report = get_object_or_404(Report, pk=report_id)
        if request.method != "POST" or not self.has_change_permission(request, report):
            messages.error(request, "You are not allowed to change this report.")
        else:
            self._rotate(request, report)
            messages.success(
                request,
                "New webhook secret; webhooks are signed with it from now on: give it to "
                "their receivers.",
            )
        return redirect("admin:reports_report_change", report_id)

    def _rotate(self, request, report):
        rotate_webhook_secret(report, by=request.user, via="admin")
        self.log_change(request, report, "Rotated the webhook secret.")

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
        rotate = self.admin_site.admin_view(self.rotate_view)
        run_with = self.admin_site.admin_view(self.run_with_parameters_view)
        backfill = self.admin_site.admin_view(self.backfill_view)
        version = self.admin_site.admin_view(self.version_view)
        revert = self.admin_site.admin_view(self.revert_view)
        return [
            path(
                "<int:report_id>/history/<int:number>/",
                version,
                name="reports_report_version",
            ),
            path(
                "<int:report_id>/history/<int:number>/revert/",
                revert,
                name="reports_report_revert",
            ),
            path("<int:report_id>/run/", run, name="reports_report_run"),
            path(
                "<int:report_id>/run-with-parameters/",
                run_with,
                name="reports_report_run_with_parameters",
            ),
            path("<int:report_id>/backfill/", backfill, name="reports_report_backfill"),
            path(
                "<int:report_id>/rotate-webhook-secret/",
                rotate,
                name="reports_report_rotate_webhook_secret",
            ),
            *super().get_urls(),
        ]

    def run_view(self, request, report_id):
        report = get_object_or_404(Report, pk=report_id)
        if request.method != "POST" or not can_run_reports(request.user):
            messages.error(request, "You are not allowed to run reports.")
        else:
            self._queue_run(request, report)
        return redirect("admin:reports_report_change", report_id)

    def _page(self, request, report, title, template, **context):
        return TemplateResponse(
            request,
            template,
            {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "original": report,
                "report_zone": report_zone(report),
                "title": title,
                **context,
            },
        )

    def run_with_parameters_view(self, request, report_id):
        report = get_object_or_404(Report, pk=report_id)
        if not can_run_reports(request.user):
            messages.error(request, "You are not allowed to run reports.")
            return redirect("admin:reports_report_change", report_id)
        try:
            form = RunWithParametersForm(report, request.POST or None)
        except ParameterError as error:
            messages.error(request, f"The report's parameters are invalid: {error.message}")
            return redirect("admin:reports_report_change", report_id)
        if request.method == "POST" and form.is_valid():
            given = {name: value for name, value in form.cleaned_data.items() if value != ""}
            try:
                parameters, interval = validated_request(report, given)
            except ParameterError as error:
                field_name = error.field if error.field in form.fields else None
                form.add_error(field_name, error.message)
            else:
                if self._queue_run(request, report, parameters=parameters, interval=interval):
                    return redirect("admin:reports_report_change", report_id)
        return self._page(
            request,
            report,
            f"Run “{report.name}” with parameters",
            "admin/reports/report/run_with_parameters.html",
            form=form,
        )

    def backfill_view(self, request, report_id):
        report = get_object_or_404(Report, pk=report_id)
        if not can_run_reports(request.user):
            messages.error(request, "You are not allowed to run reports.")
            return redirect("admin:reports_report_change", report_id)
        zone = report_zone(report)
        form, plan, status = BackfillForm(zone, request.POST or None), None, 200
        wait = run_trigger_wait(request) if request.method == "POST" else None
        if wait is not None:
            # Planning a range costs CPU: the API's run-trigger throttle counts it too.
            form.add_error(
                None,
                f"Too many run requests from you: try again in {math.ceil(wait)} s "
                "(API_RUN_THROTTLE_RATE, shared with the API).",
            )
            status = 429
        elif request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            start, end = (
                timezone.make_aware(data[name].replace(tzinfo=None), zone)
                for name in ("start", "end")
            )
            try:
                if data["confirmed"]:
                    runs, skipped, _ = queue_backfill(
                        report, start, end, rerun=data["rerun"], requested_by=request.user
                    )
                    listed = ""
                    if runs:  # where they can be followed, and cancelled together
                        url = reverse("admin:runs_run_changelist")
                        listed = format_html(
                            ' <a href="{}?backfill_id={}" id="backfill-runs">See its runs</a>.',
                            url,
                            runs[0].backfill_id,
                        )
                    messages.success(
                        request,
                        format_html(
                            "Backfill of “{}”: queued {} run(s), oldest first; skipped {} "
                            "already covered.{}",
                            report.name,
                            len(runs),
                            skipped,
                            listed,
                        ),
                    )
                    return redirect("admin:reports_report_change", report_id)
                plan = plan_backfill(report, start, end, rerun=data["rerun"])
            except ParameterError as error:
                form.add_error(error.field if error.field in form.fields else None, error.message)
            except QueueFull as error:
                form.add_error(None, str(error))
        page = self._page(
            request,
            report,
            f"Backfill “{report.name}”",
            "admin/reports/report/backfill.html",
            form=form,
            plan=plan,
            zone=zone.key,
            schedule=describe_crontab(report.schedule) if report.schedule else "",
        )
        page.status_code = status
        return page

    def _queue_run(self, request, report, **values):
        try:
            run, _ = request_run(report, RunTrigger.MANUAL, requested_by=request.user, **values)
        except QueueFull as error:
            messages.error(request, str(error))
            return None
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
        return run

    # --- History ---------------------------------------------------------------------

    def _viewable_report(self, request, report_id):
        report = self.get_object(request, unquote(str(report_id)))
        if report is None:
            return None
        if not self.has_view_or_change_permission(request, report):
            raise PermissionDenied
        return report

    def history_view(self, request, object_id, extra_context=None):
        """Every version of the report, newest first, each with what it changed."""
        report = self._viewable_report(request, object_id)
        if report is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        shows = visibility_of(request)
        page = Paginator(history.versions_of(report.pk), VERSIONS_PER_PAGE).get_page(
            request.GET.get("p")
        )
        versions = list(page)
        before, budget = history.previous_versions(versions), history.DiffBudget()
        entries = [
            (
                version,
                history.version_changes(
                    version, before.get(version.history_version - 1), shows, budget
                ),
            )
            for version in versions
        ]
        return self._page(
            request,
            report,
            f"History of “{report.name}”",
            "admin/reports/report/history.html",
            entries=entries,
            page=page,
            page_range=page.paginator.get_elided_page_range(page.number),
            sql_hidden=not shows.sql,
        )

    def version_view(self, request, report_id, number, errors=None):
        """One version: what it changed, its settings, and (with change_report) what
        reverting to it would change."""
        report = self._viewable_report(request, report_id)
        version = history.version_of(report_id, number) if report is not None else None
        if version is None:
            messages.error(request, f"Report {report_id} has no version {number}.")
            return redirect("admin:reports_report_changelist")
        shows = visibility_of(request)
        previous = history.version_of(report.pk, number - 1) if number > 1 else None
        newest = history.newest_version_number(report.pk)
        can_revert = self.has_change_permission(request, report)
        return self._page(
            request,
            report,
            f"Version {number} of “{report.name}”",
            "admin/reports/report/version.html",
            version=version,
            kind=history.kind_of(version),
            newest=newest,
            changes=history.version_changes(version, previous, shows),
            settings=[
                (history.label_of(name), *history.setting_shown(name, value))
                for name, value in history.version_settings(version, shows).items()
            ],
            sql_hidden=not shows.sql,
            can_revert=can_revert,
            revert_changes=history.revert_changes(report, version, shows) if can_revert else [],
            webhooks_stay=history.webhooks_stay(report, version),
            errors=errors or [],
        )

    def revert_view(self, request, report_id, number):
        """Give the report the settings of one of its versions (POST, change_report)."""
        report = self._viewable_report(request, report_id)
        version = history.version_of(report_id, number) if report is not None else None
        if version is None:
            messages.error(request, f"Report {report_id} has no version {number}.")
            return redirect("admin:reports_report_changelist")
        if request.method != "POST" or not self.has_change_permission(request, report):
            raise PermissionDenied
        try:
            created = history.revert_report(report, version, by=request.user, via="admin")
        except ValidationError as error:
            shows = visibility_of(request)
            errors = [
                (history.label_of(name) if name in history.FIELD_ORDER else "", shows.error(text))
                for name, texts in error.message_dict.items()
                for text in texts
            ]
            messages.error(
                request, "The report was not reverted: this version does not pass today's checks."
            )
            return self.version_view(request, report_id, number, errors=errors)
        if created is None:
            messages.info(request, f"“{report.name}” has the settings of version {number} already.")
        else:
            self.log_change(request, report, f"Reverted to version {number}.")
            messages.success(
                request,
                f"Reverted “{report.name}” to the settings of version {number}: this is "
                f"version {created.history_version}.",
            )
        return redirect("admin:reports_report_history", report.pk)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        recent = (
            Run.objects.filter(report_id=object_id).order_by(*NEWEST_FIRST)[:RECENT_RUNS]
            if str(object_id).isdigit()
            else []
        )
        visibility = visibility_of(request)
        for run in recent:
            run.shown_error = visibility.error(run.error)
        extra_context = {
            **(extra_context or {}),
            "recent_runs": recent,
            "can_run": can_run_reports(request.user),
            "can_change": self.has_change_permission(request),
            # Delete stands with the other dangerous actions, apart from Save.
            "show_delete": False,
        }
        if str(object_id).isdigit():
            report = Report.objects.filter(pk=object_id).only("timezone").first()
            extra_context["report_zone"] = report_zone(report) if report else None
        return super().change_view(request, object_id, form_url, extra_context)


def _when(value, report):
    """A moment in the report's own zone (the one its schedule is read in)."""
    return moment_html(value, report_zone(report))
