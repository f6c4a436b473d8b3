from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.reverse import reverse

from reports.cron import describe_crontab
from reports.models import Report
from reports.permissions import can_view_sql
from runs.serializers import RunSummarySerializer


class ReportSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="report-detail", lookup_field="slug")
    schedule_description = serializers.SerializerMethodField()
    last_run = serializers.SerializerMethodField()
    latest_csv_url = serializers.SerializerMethodField()

    class Meta:
        model = Report
        fields = [
            "url",
            "slug",
            "name",
            "description",
            "sql",
            "data_source",
            "schedule",
            "schedule_description",
            "timezone",
            "enabled",
            "timeout_seconds",
            "max_rows",
            "max_retries",
            "retention_days",
            "next_run_at",
            "last_run",
            "latest_csv_url",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["next_run_at", "created_at", "updated_at"]
        extra_kwargs = {"sql": {"help_text": "Shown to staff and holders of view_report_sql."}}

    def get_schedule_description(self, report) -> str:
        return describe_crontab(report.schedule)

    @extend_schema_field(RunSummarySerializer(allow_null=True))
    def get_last_run(self, report):
        last_runs = self.context.get("last_runs", {})
        run = last_runs.get(getattr(report, "last_run_id", None))
        return RunSummarySerializer(run, context=self.context).data if run else None

    def get_latest_csv_url(self, report) -> str:
        return reverse(
            "report-latest-csv", kwargs={"slug": report.slug}, request=self.context.get("request")
        )

    def to_representation(self, report):
        data = super().to_representation(report)
        request = self.context.get("request")
        if request is None or not can_view_sql(request.user):
            data.pop("sql")
        return data
