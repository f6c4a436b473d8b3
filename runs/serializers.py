from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.reverse import reverse

from reports.permissions import can_view_sql
from runs.models import Run, RunStatus

# null until the run succeeded with an output
DOWNLOAD_URL_FIELD = serializers.URLField(allow_null=True)


def run_download_url(run, request):
    if run.status != RunStatus.SUCCEEDED or not run.output:
        return None
    return reverse("run-download", args=[run.pk], request=request)


class RunSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="run-detail")
    report = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    report_name = serializers.CharField(source="report.name", read_only=True)
    duration_seconds = serializers.FloatField(read_only=True, allow_null=True)
    requested_by = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )
    download_url = serializers.SerializerMethodField()
    sql = serializers.CharField(
        read_only=True, help_text="Only for staff and holders of view_report_sql."
    )

    class Meta:
        model = Run
        fields = [
            "id",
            "url",
            "report",
            "report_name",
            "status",
            "trigger",
            "scheduled_for",
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
            "requested_by",
            "download_url",
        ]
        read_only_fields = fields

    @extend_schema_field(DOWNLOAD_URL_FIELD)
    def get_download_url(self, run):
        return run_download_url(run, self.context.get("request"))

    def to_representation(self, run):
        data = super().to_representation(run)
        request = self.context.get("request")
        if request is None or not can_view_sql(request.user):
            data.pop("sql")
        return data


class RunSummarySerializer(serializers.ModelSerializer):
    """A report's last run, in brief."""

    url = serializers.HyperlinkedIdentityField(view_name="run-detail")
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = Run
        fields = ["id", "url", "status", "queued_at", "finished_at", "row_count", "download_url"]
        read_only_fields = fields

    @extend_schema_field(DOWNLOAD_URL_FIELD)
    def get_download_url(self, run):
        return run_download_url(run, self.context.get("request"))
