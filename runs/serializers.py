from django.db import models
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from reportsvc.web.links import MomentField, api_links, iso_writer
from reportsvc.web.permissions import NOBODY, visibility_of
from runs.models import Delivery, Run, RunStatus
from runs.selectors import report_version_number

# null until the run succeeded with an output
DOWNLOAD_URL_FIELD = serializers.URLField(allow_null=True)


def context_visibility(context):
    """What the serializer's request user may see (nothing special without a request)."""
    request = context.get("request")
    return visibility_of(request) if request is not None else NOBODY


def run_download_url(run, context):
    if run.status != RunStatus.SUCCEEDED or not run.output:
        return None
    return api_links(context).run_download(run.id)


class RunLinksMixin(serializers.Serializer):
    url = serializers.SerializerMethodField()
    download_url = serializers.SerializerMethodField()

    def get_url(self, run) -> str:
        return api_links(self.context).run(run.pk)

    @extend_schema_field(DOWNLOAD_URL_FIELD)
    def get_download_url(self, run):
        return run_download_url(run, self.context)


# A moment the current zone cannot hold (a run stored before bounds were checked) is
# written in UTC instead of failing the list.
MOMENT_FIELD_MAPPING = {
    **serializers.ModelSerializer.serializer_field_mapping,
    models.DateTimeField: MomentField,
}


class DeliverySerializer(serializers.ModelSerializer):
    serializer_field_mapping = MOMENT_FIELD_MAPPING

    class Meta:
        model = Delivery
        fields = [
            "channel",
            "target",
            "reason",
            "status",
            "attempts",
            "last_error",
            "note",
            "sent_at",
        ]
        read_only_fields = fields
        extra_kwargs = {
            "target": {
                "help_text": "Webhooks as scheme://host/… always; email addresses in full "
                "only for users with change_report (others see …@domain)."
            },
            "status": {
                "help_text": "sent; failed (last_error says why); suppressed: kept quiet on "
                "purpose, a repeat failure between reminders (note says until when)."
            },
            "last_error": {
                "help_text": "Why the last attempt failed. In full only for users with "
                "change_report; others see its URLs as scheme://host/… and its email "
                "addresses as …@domain."
            },
        }

    def to_representation(self, delivery):
        data = super().to_representation(delivery)
        visibility = context_visibility(self.context)
        data["target"] = visibility.target(delivery)
        data["last_error"] = visibility.delivery_error(delivery)
        return data


class RunSerializer(RunLinksMixin, serializers.ModelSerializer):
    serializer_field_mapping = MOMENT_FIELD_MAPPING
    report = serializers.SlugRelatedField(
        slug_field="slug", read_only=True, help_text="The report's slug."
    )
    report_name = serializers.CharField(source="report.name", read_only=True)
    duration_seconds = serializers.FloatField(read_only=True, allow_null=True)
    requested_by = serializers.SlugRelatedField(
        slug_field="username",
        read_only=True,
        allow_null=True,
        help_text="Who asked for the run (API, admin); null for scheduled and command-line "
        "runs, and once the user is deleted.",
    )
    sql = serializers.CharField(read_only=True, help_text="The exact statement executed.")
    report_version = serializers.SerializerMethodField(
        help_text="The number of the report's version the run ran (its settings and SQL as "
        "they were when it started); null while queued, and for runs started before reports "
        "had versions."
    )
    report_version_url = serializers.SerializerMethodField(
        help_text="That version in the report's history (…/history/{version}/); null with it."
    )
    cancelled_by = serializers.SlugRelatedField(
        slug_field="username",
        read_only=True,
        allow_null=True,
        help_text="Who cancelled the run; null if nobody did, and once the user is deleted.",
    )
    deliveries = DeliverySerializer(many=True, read_only=True)

    class Meta:
        model = Run
        fields = [
            "id",
            "url",
            "report",
            "report_name",
            "report_version",
            "report_version_url",
            "status",
            "trigger",
            "scheduled_for",
            "interval_start",
            "interval_end",
            "parameters",
            "queued_at",
            "started_at",
            "finished_at",
            "duration_seconds",
            "sql",
            "row_count",
            "output_bytes",
            "output_sha256",
            "error",
            "worker",
            "heartbeat_at",
            "attempt",
            "retry_of",
            "rerun_of",
            "backfill_id",
            "requested_by",
            "cancelled_at",
            "cancelled_by",
            "download_url",
            "deliveries",
        ]
        read_only_fields = fields
        extra_kwargs = {
            "error": {
                "help_text": "Why the run failed (or was skipped, or who cancelled it), as "
                "the database or worker said it; empty otherwise. For users who may not "
                "see the SQL, without the lines quoting the statement."
            },
            "output_sha256": {"help_text": "SHA-256 (hex) of the output; empty without one."},
            "cancelled_at": {
                "help_text": "When someone asked to cancel the run; a running run with it "
                "set is being stopped and ends cancelled."
            },
            "parameters": {
                "help_text": "Parameter values by name: those given while the run waits; once "
                "it started, every value its statement used (interval_start and "
                "interval_end too when the SQL uses them). Dates as YYYY-MM-DD, time "
                "stamps as ISO 8601 in UTC, decimals as text."
            },
        }

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_report_version(self, run):
        return report_version_number(run)

    @extend_schema_field(serializers.URLField(allow_null=True))
    def get_report_version_url(self, run):
        number = report_version_number(run)
        if number is None:
            return None
        return api_links(self.context).report_version(run.report.slug, number)

    def to_representation(self, run):
        data = super().to_representation(run)
        visibility = context_visibility(self.context)
        if not visibility.sql:
            data.pop("sql")
            data["error"] = visibility.error(run.error)
        return data


class BackfillSerializer(serializers.Serializer):
    backfill_id = serializers.UUIDField(
        allow_null=True,
        help_text="Names this backfill's runs (the runs filter `backfill`); null when it "
        "queued none.",
    )
    queued = serializers.IntegerField(help_text="Runs queued by this request (0 for a replay).")
    skipped = serializers.IntegerField(
        help_text="Fire times left out: a run over their interval succeeded, waits or runs."
    )
    runs = RunSerializer(many=True, help_text="The runs, oldest interval first.")


class BackfillCancelSerializer(serializers.Serializer):
    backfill_id = serializers.UUIDField()
    cancelled = serializers.IntegerField(help_text="Waiting runs cancelled now.")
    stopping = serializers.IntegerField(
        help_text="Running runs being stopped on the database server (0 or 1): poll them."
    )
    runs = RunSerializer(many=True, help_text="Those runs, oldest first.")


class RunSummarySerializer(RunLinksMixin, serializers.ModelSerializer):
    """A report's last run, in brief; null while the report has never run."""

    # Represented by summarize_run, written out by hand: one per report in lists.

    class Meta:
        model = Run
        fields = ["id", "url", "status", "queued_at", "finished_at", "row_count", "download_url"]
        read_only_fields = fields

    def to_representation(self, run):
        return summarize_run(run, self.context, timezone.get_current_timezone())


def summarize_run(run, context, zone):
    """RunSummarySerializer's output for a run (model or row)."""
    return run_summary_writer(context, iso_writer(zone))(run)


def run_summary_writer(context, moment):
    """summarize_run as a function of the run, for one per report in lists: the links
    looked up once, ``moment`` writing datetimes (``iso_writer``)."""
    links = api_links(context)
    run_link, download_link = links.run, links.run_download

    def summary(run):
        downloadable = run.status == RunStatus.SUCCEEDED and run.output  # as run_download_url
        return {
            "id": run.id,
            "url": run_link(run.id),
            "status": run.status,
            "queued_at": moment(run.queued_at),
            "finished_at": moment(run.finished_at),
            "row_count": run.row_count,
            "download_url": download_link(run.id) if downloadable else None,
        }

    return summary
