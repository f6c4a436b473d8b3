"""Scheduling moved to the reports table (next_run_at): drop the per-report jobs.

The job store held one APScheduler job per report (id ``report-<id>``) whose trigger
class no longer exists, and a housekeeping job on the old executor; the next leader
adds the jobs it needs.
"""

from django.db import migrations


def drop_old_jobs(apps, schema_editor):
    DjangoJob = apps.get_model("django_apscheduler", "DjangoJob")
    DjangoJob.objects.filter(id__startswith="report-").delete()
    DjangoJob.objects.filter(id="housekeeping").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0005_run_interval"),
        ("django_apscheduler", "0009_djangojobexecution_unique_job_executions"),
    ]

    operations = [migrations.RunPython(drop_old_jobs, migrations.RunPython.noop)]
