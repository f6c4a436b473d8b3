"""Deliveries belong to a report (freshness alerts have no run), and may be suppressed;
AlertState keeps what a report's notifications last said."""

import django.db.models.deletion
from django.db import migrations, models
from django.db.models import OuterRef, Subquery


def fill_delivery_reports(apps, schema_editor):
    Delivery = apps.get_model("runs", "Delivery")
    Run = apps.get_model("runs", "Run")
    Delivery.objects.filter(report__isnull=True).update(
        report=Subquery(Run.objects.filter(pk=OuterRef("run_id")).values("report_id")[:1])
    )
    if schema_editor.connection.vendor == "postgresql":
        # The foreign key's deferred checks now, or making the column NOT NULL in this
        # transaction fails ("pending trigger events").
        schema_editor.execute("SET CONSTRAINTS ALL IMMEDIATE")


class Migration(migrations.Migration):

    dependencies = [
        ('reports', '0011_notify_state_changes'),
        ('runs', '0013_run_cancelled'),
    ]

    operations = [
        migrations.CreateModel(
            name='AlertState',
            fields=[
                ('report', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name='alert_state', serialize=False, to='reports.report')),
                ('version', models.PositiveBigIntegerField(default=0)),
                ('failing_since', models.DateTimeField(blank=True, help_text='When the first failure of the streak finished.', null=True)),
                ('failures', models.PositiveIntegerField(default=0, help_text='Failed runs in the streak.')),
                ('notified_at', models.DateTimeField(blank=True, help_text="When the streak's last failure notice or reminder went.", null=True)),
                ('stale_since', models.DateTimeField(blank=True, help_text='When the stale alert went; None while fresh.', null=True)),
            ],
        ),
        migrations.AddField(
            model_name='delivery',
            name='note',
            field=models.CharField(blank=True, help_text='Why it was suppressed, or what it said.', max_length=500),
        ),
        migrations.AddField(
            model_name='delivery',
            name='report',
            field=models.ForeignKey(null=True, on_delete=django.db.models.deletion.CASCADE, related_name='deliveries', to='reports.report'),
        ),
        migrations.RunPython(fill_delivery_reports, migrations.RunPython.noop),
        migrations.AlterField(
            model_name='delivery',
            name='report',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='deliveries', to='reports.report'),
        ),
        migrations.AlterField(
            model_name='delivery',
            name='reason',
            field=models.CharField(help_text='failed, reminder, recovered, finished, alert (about a run); stale, fresh (about the report).', max_length=32),
        ),
        migrations.AlterField(
            model_name='delivery',
            name='run',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='deliveries', to='runs.run'),
        ),
        migrations.AlterField(
            model_name='delivery',
            name='status',
            field=models.CharField(choices=[('sent', 'Sent'), ('failed', 'Failed'), ('suppressed', 'Suppressed')], max_length=16),
        ),
    ]
