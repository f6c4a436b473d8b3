"""Each existing report gets version 1: its settings as they are when history begins.

Runs started from now on name the version they ran; without this first version, those
of reports nobody changes would name none. Kept as every version is: no webhook secret,
webhook URLs as scheme and host.
"""

from django.db import migrations

from reports.targets import redacted_webhooks

BATCH = 500
KEPT = (
    "id",
    "name",
    "slug",
    "description",
    "sql",
    "parameters",
    "data_source",
    "schedule",
    "timezone",
    "enabled",
    "timeout_seconds",
    "max_rows",
    "max_retries",
    "retention_days",
    "notify_emails",
    "notify_webhooks",
    "notify_when",
    "alert_condition",
    "alert_threshold",
    "output_format",
    "escape_formulas",
    "csv_bom",
)


def record_first_versions(apps, schema_editor):
    Report = apps.get_model("reports", "Report")
    HistoricalReport = apps.get_model("reports", "HistoricalReport")
    versioned = HistoricalReport.objects.values("id")
    versions = []
    for report in Report.objects.exclude(id__in=versioned).order_by("id").iterator(chunk_size=BATCH):
        values = {name: getattr(report, name) for name in KEPT}
        values["notify_webhooks"] = redacted_webhooks(report.notify_webhooks)
        versions.append(
            HistoricalReport(
                **values,
                history_version=1,
                history_changes=[],
                history_date=report.updated_at,
                history_type="~",
                history_change_reason="history began",
            )
        )
        if len(versions) == BATCH:
            HistoricalReport.objects.bulk_create(versions)
            versions = []
    HistoricalReport.objects.bulk_create(versions)


class Migration(migrations.Migration):
    dependencies = [("reports", "0008_report_history")]

    operations = [migrations.RunPython(record_first_versions, migrations.RunPython.noop)]
