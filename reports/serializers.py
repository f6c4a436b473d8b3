from django.core.exceptions import ValidationError as ModelValidationError
from django.utils import timezone
from django.utils.duration import duration_string
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from reports import parameters as params
from reports.cron import describe_crontab
from reports.models import REPORT_SETTINGS_FIELDS, Report
from reports.services.sql_check import sql_problem
from reports.services.statements import declared_of, report_zone
from reports.targets import redacted_emails, redacted_webhooks
from reportsvc.web.links import api_links, iso_datetime, latest_output_link
from reportsvc.web.permissions import visibility_of
from runs.serializers import RunSummarySerializer, context_visibility, summarize_run

REDACTED_HELP = (
    "In full only for users with change_report; others see {} (user, password, path "
    "and query of URLs can be secrets)."
)


class ParameterDeclarationSerializer(serializers.Serializer):
    """How a declared parameter reads in the schema (validated by reports.parameters)."""

    name = serializers.CharField(help_text="Used in the SQL as {{ name }}.")
    type = serializers.ChoiceField(choices=params.TYPES)
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

    class Meta:
        model = Report
        fields = [
            "url",
            *REPORT_SETTINGS_FIELDS,
            "schedule_description",
            "next_run_at",
            "last_run",
            "latest_csv_url",
            "latest_output_url",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["next_run_at", "created_at", "updated_at"]
        extra_kwargs = {
            "sql": {
                "help_text": "One read-only statement: SELECT, WITH … SELECT, VALUES or TABLE."
            },
            "notify_emails": {"help_text": REDACTED_HELP.format("…@domain")},
            "notify_webhooks": {"help_text": REDACTED_HELP.format("scheme://host/…")},
            "expect_success_within": {
                "help_text": "The report is stale when no run has succeeded for this long "
                "(since it was created, if none ever has): '[DD] [HH:[MM:]]ss', e.g. "
                "'1 00:00:00' for a day, or ISO 8601 ('P1D', 'PT6H'). Positive, at most a "
                "year; null: no expectation."
            },
        }

    def validate(self, attrs):
        """What the admin refuses is refused here too: the model's rules, then the
        database's own check of the SQL on its data source."""
        report = Report(**{**self._current_settings(), **attrs})
        try:
            report.clean()
        except ModelValidationError as error:
            errors = error.message_dict
            if "sql" in errors:
                errors["sql"] = [self._shown_problem(message, attrs) for message in errors["sql"]]
            raise serializers.ValidationError(errors) from None
        if "parameters" in attrs:
            attrs["parameters"] = report.parameters  # normalised by clean()
        problem = sql_problem(
            report.data_source, report.sql, declared_of(report), report_zone(report)
        )
        if problem:
            raise serializers.ValidationError({"sql": [self._shown_problem(problem, attrs)]})
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
    def get_last_run(self, report, zone=None):
        run = self.context.get("last_runs", {}).get(getattr(report, "last_run_id", None))
        if run is None:
            return None
        return summarize_run(run, self.context, zone or timezone.get_current_timezone())

    def get_latest_csv_url(self, report) -> str:
        return api_links(self.context).latest_csv(report.slug)

    def get_latest_output_url(self, report) -> str:
        return latest_output_link(api_links(self.context), report)

    def to_representation(self, report):
        # Written out by hand: the generic field loop made a list of 500 reports take
        # 60 ms (bench/api.py); tests check the keys match Meta.fields.
        links, zone = api_links(self.context), timezone.get_current_timezone()
        visibility = context_visibility(self.context)
        data = {"url": links.report(report.slug)}
        for name in REPORT_SETTINGS_FIELDS:
            if name != "sql" or visibility.sql:
                data[name] = getattr(report, name)
        if data["expect_success_within"] is not None:  # as DRF writes durations
            data["expect_success_within"] = duration_string(data["expect_success_within"])
        if not visibility.targets:
            data["notify_emails"] = redacted_emails(report.notify_emails)
            data["notify_webhooks"] = redacted_webhooks(report.notify_webhooks)
        data.update(
            schedule_description=describe_crontab(report.schedule),
            next_run_at=iso_datetime(report.next_run_at, zone),
            last_run=self.get_last_run(report, zone),
            latest_csv_url=links.latest_csv(report.slug),
            latest_output_url=latest_output_link(links, report),
            created_at=iso_datetime(report.created_at, zone),
            updated_at=iso_datetime(report.updated_at, zone),
        )
        return data


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
        "example": {"region": "EU", "interval_end": "2026-11-26T06:00:00+01:00"},
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
        "complete interval of the schedule, or yesterday for reports without one).",
    )


class BackfillRequestSerializer(serializers.Serializer):
    start = serializers.DateTimeField(help_text="ISO 8601: the first fire time counted.")
    end = serializers.DateTimeField(help_text="ISO 8601: fire times before this are counted.")
    rerun = serializers.BooleanField(
        default=False, help_text="Also queue fire times that already have a succeeded run."
    )
    parameters = ParameterValuesField(
        required=False,
        help_text="Values of declared parameters for every run (missing ones take their default).",
    )
