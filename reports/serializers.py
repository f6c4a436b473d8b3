import operator
from datetime import UTC

from django.core.exceptions import ValidationError as ModelValidationError
from django.db import models
from django.utils import timezone
from django.utils.duration import duration_string
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from datasources.parameters import TYPES
from reports.cron import describe_crontab
from reports.models import REPORT_SETTINGS_FIELDS, Report
from reports.services import history
from reports.services.validation import check_report
from reports.targets import redacted_emails, redacted_targets, redacted_webhooks
from reports.validators import validate_email_list, validate_webhook_list
from reportsvc.moments import span_text
from reportsvc.text import shown
from reportsvc.web.links import api_links, iso_datetime, iso_writer, latest_output_link
from reportsvc.web.permissions import visibility_of
from runs.selectors import freshness_of
from runs.serializers import (
    RunSummarySerializer,
    context_visibility,
    run_summary_writer,
    summarize_run,
)
from runs.services.notifications.channels import channel_choices

TARGET_FIELDS = (("targets", []), ("notify_emails", ""), ("notify_webhooks", ""))
REDACTED_HELP = (
    "In full only for users with change_report; others see {} (user, password, path "
    "and query of URLs can be secrets)."
)


DURATION_FIELDS = ("expect_success_within", "notify_repeat_after")


class ParameterDeclarationSerializer(serializers.Serializer):
    """How a declared parameter reads in the schema (validated by reports.parameters)."""

    name = serializers.CharField(help_text="Used in the SQL as {{ name }}.")
    type = serializers.ChoiceField(choices=TYPES)
    label = serializers.CharField(required=False, help_text="Shown in forms.")
    default = serializers.CharField(
        required=False,
        allow_null=True,
        help_text="A value of the type as text (numbers and true/false are accepted too), "
        "or for date and timestamp interval_start or "
        "interval_end; null: none (a value must be given, and the report cannot be "
        "scheduled).",
    )
    choices = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="The allowed values (choice)."
    )


@extend_schema_field(ParameterDeclarationSerializer(many=True))
class ParameterDeclarationsField(serializers.JSONField):
    pass


class TargetSerializer(serializers.Serializer):
    """How a notification target reads in the schema (checked by its channel's module)."""

    channel = serializers.ChoiceField(choices=channel_choices())
    address = serializers.CharField(
        help_text="email: an address; webhook: an http(s) URL; slack: an incoming-webhook "
        "URL (https://hooks.slack.com/services/…) or, with SLACK_BOT_TOKEN, a channel id "
        "(C…); teams: a Workflows URL. " + REDACTED_HELP.format("…@domain and scheme://host/…")
    )
    options = serializers.DictField(required=False, help_text="Channel options (none yet).")


@extend_schema_field(TargetSerializer(many=True))
class TargetsField(serializers.JSONField):
    pass


DEPRECATED_VIEW = (
    " Deprecated: a view of the {} targets in `targets` (reading and writing it still "
    "works; writing it replaces those targets)."
)


@extend_schema_field({"type": "string", "deprecated": True})
class DeprecatedTextField(serializers.CharField):
    pass


class ReportListSerializer(serializers.ListSerializer):
    """Reports, each written by one ``ReportSerializer.writer``."""

    def to_representation(self, data):
        reports = data.all() if isinstance(data, models.manager.BaseManager) else data
        write = self.child.writer()
        return [write(report) for report in reports]


class ReportSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    parameters = ParameterDeclarationsField(
        required=False,
        help_text="Declared parameters (replaced as a whole on write). interval_start and "
        "interval_end are built in.",
    )
    schedule_description = serializers.SerializerMethodField()
    last_run = serializers.SerializerMethodField()
    latest_csv_url = serializers.SerializerMethodField(
        help_text="…/latest.csv: the newest output, for reports whose format is CSV "
        "(409 for others). latest_output_url follows the report's format."
    )
    latest_output_url = serializers.SerializerMethodField(
        help_text="…/latest.<extension> of the report's output format: its newest output."
    )
    stale = serializers.SerializerMethodField(
        help_text="True when the report declares expect_success_within and no run has "
        "succeeded within it (since it was created, if none ever has); the worker then "
        "sends one stale alert, and one 'fresh' when a run succeeds again."
    )
    last_success_at = serializers.SerializerMethodField(
        help_text="When a run of the report last succeeded (kept after retention deletes "
        "the run); null if none ever has."
    )
    targets = TargetsField(
        required=False,
        help_text="Where notifications go, in order (replaced as a whole on write).",
    )
    notify_emails = DeprecatedTextField(
        required=False,
        allow_blank=True,
        validators=[validate_email_list],
        help_text="Addresses, comma-separated. "
        + REDACTED_HELP.format("…@domain")
        + DEPRECATED_VIEW.format("email"),
    )
    notify_webhooks = DeprecatedTextField(
        required=False,
        allow_blank=True,
        validators=[validate_webhook_list],
        help_text="URLs, one per line; Slack and Teams webhook URLs become slack and teams "
        "targets. " + REDACTED_HELP.format("scheme://host/…") + DEPRECATED_VIEW.format("webhook"),
    )

    class Meta:
        model = Report
        list_serializer_class = ReportListSerializer
        fields = [
            "url",
            *REPORT_SETTINGS_FIELDS,
            "schedule_description",
            "next_run_at",
            "last_run",
            "latest_csv_url",
            "latest_output_url",
            "stale",
            "last_success_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["next_run_at", "created_at", "updated_at"]
        extra_kwargs = {
            "sql": {
                "help_text": "One read-only statement: SELECT, WITH … SELECT, VALUES or TABLE."
            },
            "expect_success_within": {
                "help_text": "The report is stale when no run has succeeded for this long "
                "(since it was created, if none ever has): '[DD] [HH:[MM:]]ss', e.g. "
                "'1 00:00:00' for a day, or ISO 8601 ('P1D', 'PT6H'). Positive, at most a "
                "year; null: no expectation."
            },
            "notify_repeat_after": {
                "help_text": "While the report keeps failing (notify_when 'failure'), a "
                "reminder at most this often: '[DD] [HH:[MM:]]ss' or ISO 8601 ('PT1H'). "
                "From a minute to 30 days; null: NOTIFY_REPEAT_AFTER (an hour by default)."
            },
        }

    def validate(self, attrs):
        """What the admin refuses is refused here too: the model's rules, then the
        database's own check of the SQL on its data source."""
        current = self._current_settings()
        report = Report(**{**current, **attrs})
        # What the request changes wins: targets, else the deprecated views of it.
        report._targets_seen = (
            tuple(current.get(name, default) for name, default in TARGET_FIELDS)
            if self.instance is not None
            else tuple(default for _, default in TARGET_FIELDS)
        )
        try:
            self.sql_warning = check_report(report)  # the view sends it as a Warning header
        except ModelValidationError as error:
            errors = error.message_dict
            if "sql" in errors:
                errors["sql"] = [self._shown_problem(message, attrs) for message in errors["sql"]]
            raise serializers.ValidationError(errors) from None
        if "parameters" in attrs:
            attrs["parameters"] = report.parameters  # normalised by clean()
        if {name for name, _ in TARGET_FIELDS} & set(attrs):
            for name, _ in TARGET_FIELDS:
                attrs[name] = getattr(report, name)  # in step, as clean() left them
        return attrs

    def _shown_problem(self, problem, attrs):
        """The database's objection to the SQL. A user who may not see the SQL and did
        not send it (a changed data source, say) gets it without the statement's lines."""
        request = self.context.get("request")
        if "sql" in attrs or request is None:
            return problem
        return visibility_of(request).error(problem)

    def _current_settings(self):
        if self.instance is None:
            return {}
        return {name: getattr(self.instance, name) for name in REPORT_SETTINGS_FIELDS}

    def get_url(self, report) -> str:
        return api_links(self.context).report(report.slug)

    def get_schedule_description(self, report) -> str:
        return describe_crontab(report.schedule)

    @extend_schema_field(RunSummarySerializer(allow_null=True))
    def get_last_run(self, report):
        run = self.context.get("last_runs", {}).get(getattr(report, "last_run_id", None))
        if run is None:
            return None
        return summarize_run(run, self.context, timezone.get_current_timezone())

    def get_latest_csv_url(self, report) -> str:
        return api_links(self.context).latest_csv(report.slug)

    def get_latest_output_url(self, report) -> str:
        return latest_output_link(api_links(self.context), report)

    def _freshness(self, report):
        if hasattr(report, "stale"):  # a row of reports_with_last_run
            return report.stale, report.last_success_at
        # A report just written, not read with its freshness.
        return freshness_of(report_ids=[report.id]).get(report.id, (False, None))

    def get_stale(self, report) -> bool:
        return self._freshness(report)[0]

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_last_success_at(self, report):
        return iso_datetime(self._freshness(report)[1])

    def to_representation(self, report):
        return self.writer()(report)

    def writer(self):
        """A function of the report that writes it, with what every report of a response
        shares worked out once: the links, the zone, what the user may see, the lookup
        of last runs. Written out by hand: the generic field loop made a list of 500
        reports take 60 ms (bench/api.py); tests check that the output is the fields'
        own, keys in the order of Meta.fields."""
        links, visibility = api_links(self.context), context_visibility(self.context)
        moment = iso_writer(timezone.get_current_timezone())
        summary = run_summary_writer(self.context, moment)
        last_runs = self.context.get("last_runs", {})
        shown = tuple(name for name in REPORT_SETTINGS_FIELDS if name != "sql" or visibility.sql)
        settings_of = operator.attrgetter(*shown)
        report_link, csv_link = links.report, links.latest_csv

        def write(report):
            data = {"url": report_link(report.slug)}
            data.update(zip(shown, settings_of(report), strict=True))
            for name in DURATION_FIELDS:
                if data[name] is not None:  # as DRF writes durations
                    data[name] = duration_string(data[name])
            if not visibility.targets:
                data["notify_emails"] = redacted_emails(report.notify_emails)
                data["notify_webhooks"] = redacted_webhooks(report.notify_webhooks)
                data["targets"] = redacted_targets(report.targets)
            stale, last_success_at = self._freshness(report)
            run = last_runs.get(getattr(report, "last_run_id", None))
            data.update(
                schedule_description=describe_crontab(report.schedule),
                next_run_at=moment(report.next_run_at),
                last_run=summary(run) if run is not None else None,
                latest_csv_url=csv_link(report.slug),
                latest_output_url=latest_output_link(links, report),
                stale=stale,
                last_success_at=moment(last_success_at),
                created_at=moment(report.created_at),
                updated_at=moment(report.updated_at),
            )
            return data

        return write


class WebhookSecretSerializer(serializers.Serializer):
    webhook_secret = serializers.CharField(
        read_only=True,
        help_text="The new key of the X-Reportsvc-Signature HMAC-SHA256 header. The API "
        "shows it in this response only; the admin shows it to users with change_report.",
    )


@extend_schema_field(
    {
        "type": "object",
        "additionalProperties": {},
        # Valid for every report: no values, so the defaults and the latest interval.
        # What values look like is in the descriptions (a report's own names).
        "example": {},
    }
)
class ParameterValuesField(serializers.JSONField):
    """Values by parameter name; checked against the report's parameters by the services
    (errors name ``parameters.<name>``)."""


class RunRequestSerializer(serializers.Serializer):
    parameters = ParameterValuesField(
        required=False,
        help_text="Values by parameter name: declared parameters (missing ones take their "
        "default) and interval_start / interval_end (ISO 8601; default: the latest "
        "complete interval of the schedule, or yesterday for reports without one), e.g. "
        '`{"status": "refunded", "interval_end": "2026-11-26T06:00:00+01:00"}`.',
    )


class RangeBoundField(serializers.DateTimeField):
    """DRF's DateTimeField, refusing a moment past either end of the calendar with the
    value and the range (the report's zone is checked by the backfill's plan)."""

    def to_internal_value(self, value):
        try:
            return super().to_internal_value(value)
        except serializers.ValidationError as error:
            if "overflow" not in error.get_codes():
                raise
            raise serializers.ValidationError(
                f"'{shown(value, 64)}' is out of range: time stamps run from {span_text(UTC)}."
            ) from None


class BackfillRequestSerializer(serializers.Serializer):
    start = RangeBoundField(help_text="ISO 8601: the first fire time counted.")
    end = RangeBoundField(help_text="ISO 8601: fire times before this are counted.")
    rerun = serializers.BooleanField(
        default=False, help_text="Also queue fire times that already have a succeeded run."
    )
    parameters = ParameterValuesField(
        required=False,
        help_text="Values of declared parameters for every run (missing ones take their default).",
    )


# --- History ---------------------------------------------------------------------


class ReportChangeSerializer(serializers.Serializer):
    """One setting a version changed, as the user may see it."""

    field = serializers.CharField(
        help_text="The setting (a field of the report; webhook_secret for a new secret)."
    )
    label = serializers.CharField(help_text="The setting's name as the admin shows it.")
    before = serializers.CharField(
        allow_null=True,
        help_text='The value before, as text (true/false, "" for none, parameters as '
        "JSON); null for a new report, and when it is not for you (note says why). Cut "
        f"after {history.VALUE_SHOWN_CHARS:,} characters: the version's settings have it whole.",
    )
    after = serializers.CharField(allow_null=True, help_text="The value after, likewise.")
    diff = serializers.CharField(
        allow_null=True,
        help_text="A unified line diff of before and after (sql, description, parameters; "
        f"at most {history.DIFF_SHOWN_LINES} lines, a last line saying what was left out); "
        "null for other settings and when the values are not for you.",
    )
    note = serializers.CharField(
        help_text="What you do not see and why (the SQL without view_report_sql, a secret, "
        "webhook URLs kept as scheme and host), or empty."
    )

    def to_representation(self, change):
        return {
            "field": change.field,
            "label": str(change.label),
            "before": change.before,
            "after": change.after,
            "diff": change.diff.as_text() if change.diff is not None else None,
            "note": change.note,
        }


class ReportVersionSerializer(serializers.Serializer):
    """A version of a report: who changed it, when, how, and what changed."""

    version = serializers.IntegerField(help_text="1 for the oldest version kept, then 2, …")
    url = serializers.URLField(help_text="This version, with its settings.")
    kind = serializers.ChoiceField(
        choices=list(history.KINDS.values()),
        help_text="created, changed or deleted (a report that existed before history began "
        "starts with a changed version that changed nothing).",
    )
    changed_at = serializers.DateTimeField()
    changed_by = serializers.CharField(
        allow_null=True, help_text="The user's name; null for commands and deleted users."
    )
    via = serializers.CharField(
        help_text="How: admin, API, manage.py seed_demo, “reverted to version N (admin)”, "
        "“history began”; empty when not known."
    )
    changed_fields = serializers.ListField(
        child=serializers.CharField(), help_text="The settings in `changes`, in order."
    )
    changes = ReportChangeSerializer(many=True)

    def to_representation(self, version):
        changes = self.context["changes"][version.history_version]
        user = version.history_user
        return {
            "version": version.history_version,
            "url": api_links(self.context).report_version(
                self.context["slug"], version.history_version
            ),
            "kind": history.kind_of(version),
            "changed_at": iso_datetime(version.history_date),
            "changed_by": user.get_username() if user is not None else None,
            "via": version.history_change_reason or "",
            "changed_fields": [change.field for change in changes],
            "changes": ReportChangeSerializer(changes, many=True).data,
        }


class ReportVersionSettingsSerializer(serializers.ModelSerializer):
    """A report's settings as they were at a version, as the user may see them."""

    parameters = ParameterDeclarationsField(help_text="Declared parameters.")

    class Meta:
        model = Report
        fields = list(REPORT_SETTINGS_FIELDS)
        read_only_fields = fields
        extra_kwargs = {
            "notify_emails": {"help_text": REDACTED_HELP.format("…@domain")},
            "notify_webhooks": {
                "help_text": "As the history keeps them: scheme and host (scheme://host/…)."
            },
        }

    def to_representation(self, settings):
        return settings  # already as the user may see them (history.version_settings)


class ReportVersionDetailSerializer(ReportVersionSerializer):
    settings = ReportVersionSettingsSerializer(
        help_text="Every setting as it was at this version (no webhook secret: it is never kept)."
    )

    def to_representation(self, version):
        data = super().to_representation(version)
        data["settings"] = history.version_settings(version, context_visibility(self.context))
        return data
