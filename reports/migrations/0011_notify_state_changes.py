"""notify_when=failure now means state changes (first failure, reminders, recovered);
every_failure is what failure meant before.

Reports that notify someone on failure move to every_failure: they keep exactly what
they did (receivers, machines above all, may count on one message per failure), and
their owners choose the quieter failure when they want it (docs/alerting.md). Reports
without targets sent nothing either way: they keep failure, the new default, so
targets added later get the quiet behaviour. Each moved report gets a version saying so.
"""

from django.db import migrations, models
from django.db.models import Max, Q
from django.utils import timezone

import reports.validators

MOVED_VIA = "notify when 'failure' became 'every_failure' (upgrade)"


def keep_every_failure(apps, schema_editor):
    Report = apps.get_model("reports", "Report")
    HistoricalReport = apps.get_model("reports", "HistoricalReport")
    notifying = Report.objects.filter(notify_when="failure").filter(
        ~Q(notify_emails="") | ~Q(notify_webhooks="")
    )
    now = timezone.now()
    for report in notifying.order_by("id").iterator(chunk_size=500):
        Report.objects.filter(pk=report.pk).update(notify_when="every_failure")
        versions = HistoricalReport.objects.filter(id=report.pk)
        newest = versions.order_by("-history_version").first()
        if newest is None:
            continue  # no history to add to (every report has one since history began)
        number = versions.aggregate(number=Max("history_version"))["number"]
        newest.pk = None
        newest.notify_when = "every_failure"
        newest.history_version = number + 1
        newest.history_changes = ["notify_when"]
        newest.history_date = now
        newest.history_type = "~"
        newest.history_user = None
        newest.history_change_reason = MOVED_VIA
        newest.save()


def back_to_failure(apps, schema_editor):
    Report = apps.get_model("reports", "Report")
    Report.objects.filter(notify_when="every_failure").update(notify_when="failure")


class Migration(migrations.Migration):

    dependencies = [
        ('reports', '0010_report_expect_success_within'),
    ]

    operations = [
        migrations.AddField(
            model_name='historicalreport',
            name='notify_repeat_after',
            field=models.DurationField(blank=True, help_text='While the report keeps failing, a reminder at most this often, e.g. 01:00:00 for an hour, or ISO 8601 (PT1H). Blank: NOTIFY_REPEAT_AFTER.', null=True, validators=[reports.validators.validate_notify_repeat_after], verbose_name='remind every'),
        ),
        migrations.AddField(
            model_name='report',
            name='notify_repeat_after',
            field=models.DurationField(blank=True, help_text='While the report keeps failing, a reminder at most this often, e.g. 01:00:00 for an hour, or ISO 8601 (PT1H). Blank: NOTIFY_REPEAT_AFTER.', null=True, validators=[reports.validators.validate_notify_repeat_after], verbose_name='remind every'),
        ),
        migrations.AlterField(
            model_name='historicalreport',
            name='notify_when',
            field=models.CharField(choices=[('failure', 'When it starts failing, and when it recovers'), ('every_failure', 'After every failed run'), ('always', 'After every run'), ('never', 'Never')], default='failure', help_text="Which finished runs notify. 'When it starts failing': the first failure after a success, a reminder while it keeps failing, and 'recovered' at the next success. The alert condition and the freshness expectation notify on their own.", max_length=16),
        ),
        migrations.AlterField(
            model_name='report',
            name='notify_when',
            field=models.CharField(choices=[('failure', 'When it starts failing, and when it recovers'), ('every_failure', 'After every failed run'), ('always', 'After every run'), ('never', 'Never')], default='failure', help_text="Which finished runs notify. 'When it starts failing': the first failure after a success, a reminder while it keeps failing, and 'recovered' at the next success. The alert condition and the freshness expectation notify on their own.", max_length=16),
        ),
        migrations.RunPython(keep_every_failure, back_to_failure),
    ]
