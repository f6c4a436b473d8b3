"""Leadership becomes a lease row; heartbeat rows stop saying who leads.

``is_leader`` leaves the model but stays in the table, with a database default, until
a later release: workers of the previous version, still running while this one
migrates, go on writing it.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0008_run_parameters_reruns_backfills"),
    ]

    operations = [
        migrations.CreateModel(
            name="SchedulerLease",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("holder", models.CharField(blank=True, help_text="host:pid", max_length=255)),
                (
                    "epoch",
                    models.PositiveBigIntegerField(
                        default=0,
                        help_text="Counts the holders: a former holder's epoch is refused.",
                    ),
                ),
                ("acquired_at", models.DateTimeField(blank=True, null=True)),
                ("expires_at", models.DateTimeField(blank=True, null=True)),
                (
                    "fire_pass_at",
                    models.DateTimeField(
                        blank=True, help_text="The holder's last fire pass.", null=True
                    ),
                ),
            ],
        ),
        migrations.AlterField(
            model_name="workerheartbeat",
            name="is_leader",
            field=models.BooleanField(db_default=False, default=False),
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.RemoveField(model_name="workerheartbeat", name="is_leader")]
        ),
    ]
