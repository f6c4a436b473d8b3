"""The scheduler's module moved (runs.services.scheduler is now
runs.services.runtime.scheduler): the stored jobs name their function by its old path.

APScheduler keeps each job pickled in django-apscheduler's job store, its function as
``module:name`` text, and drops (with an error) a job whose function it cannot import
when it loads it. The housekeeping job is added only when missing (re-adding it would
postpone it at every new leader), so its row must follow the move; the passes' rows
are replaced at every start, and follow too for whatever reads the store before.
"""

import pickle

from django.db import migrations

OLD_MODULE = "runs.services.scheduler"
NEW_MODULE = "runs.services.runtime.scheduler"


def _point_jobs(apps, from_module, to_module):
    DjangoJob = apps.get_model("django_apscheduler", "DjangoJob")
    for job in DjangoJob.objects.all():  # a handful of rows
        try:
            state = pickle.loads(bytes(job.job_state))
        except Exception:  # a row no version can load: the scheduler drops it as before
            continue
        module, colon, name = str(state.get("func", "")).partition(":")
        if module != from_module or not colon:
            continue
        state["func"] = f"{to_module}:{name}"
        job.job_state = pickle.dumps(state, pickle.HIGHEST_PROTOCOL)
        job.save(update_fields=["job_state"])


def forwards(apps, schema_editor):
    _point_jobs(apps, OLD_MODULE, NEW_MODULE)


def backwards(apps, schema_editor):
    _point_jobs(apps, NEW_MODULE, OLD_MODULE)


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0015_delivery_channels"),
        ("django_apscheduler", "0009_djangojobexecution_unique_job_executions"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
