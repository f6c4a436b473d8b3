"""Migrations: an empty database migrates to the latest, and so does one of the release
before, with the scheduler job it stored under its function's old import path.

Migrations import code (report formats, notification channels), and APScheduler's job
store keeps each job's function as import-path text: moving a module must keep both
loading.
"""

import pickle
from datetime import UTC, datetime

import pytest
from apscheduler.job import Job
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django_apscheduler.jobstores import DjangoJobStore
from django_apscheduler.models import DjangoJob

from runs.services.runtime import scheduler as scheduler_module
from tests.conftest import needs_commits
from tests.test_access import clean_environment, manage, scratch_database

# The last release: its newest migrations of the two apps (every other app's newest is
# today's), and where its scheduler module was.
LAST_RELEASE = {"reports": "0012_report_targets", "runs": "0015_delivery_channels"}
OLD_HOUSEKEEPING = "runs.services.scheduler:housekeeping_job"
NEW_HOUSEKEEPING = "runs.services.runtime.scheduler:housekeeping_job"


@pytest.mark.long_running
def test_an_empty_database_migrates_to_the_latest(tmp_path):
    """In a fresh process and database: this one's migrations cannot all run backwards
    (django-apscheduler's own cannot), and its data migrations use the default one."""
    with scratch_database(tmp_path) as url:
        environment = clean_environment(DATABASE_URL=url, REPORTSVC_VAR_DIR=str(tmp_path))
        output = manage(environment, "migrate", "--noinput").stdout
        for migration in (
            "reports.0005_report_output_format",  # imports the output formats
            "reports.0008_report_history",  # and again
            "runs.0015_delivery_channels",  # imports the notification channels
            "runs.0016_scheduler_jobs_follow_their_module",
        ):
            assert f"Applying {migration}... OK" in output
        manage(environment, "migrate", "--check")  # nothing left unapplied


def last_release_nodes(executor):
    nodes = dict(executor.loader.graph.leaf_nodes())
    assert set(LAST_RELEASE) <= set(nodes)
    return sorted({**nodes, **LAST_RELEASE}.items())


def stored_housekeeping_job(func_ref):
    """The housekeeping job's row as the release before's leader stored it: the job's
    pickled state, naming its function by ``func_ref``."""
    job = Job(
        BackgroundScheduler(timezone=UTC),
        id=scheduler_module.HOUSEKEEPING_JOB,
        func=scheduler_module.housekeeping_job,
        trigger=IntervalTrigger(seconds=3600, timezone=UTC),
        executor="housekeeping",
        args=(),
        kwargs={},
        name="housekeeping_job",
        misfire_grace_time=None,
        coalesce=True,
        max_instances=1,
        next_run_time=datetime(2026, 12, 1, 3, tzinfo=UTC),
    )
    state = job.__getstate__()
    state["func"] = func_ref
    return DjangoJob(
        id=job.id,
        next_run_time=job.next_run_time,
        job_state=pickle.dumps(state, pickle.HIGHEST_PROTOCOL),
    )


def stored_func(job_id):
    return pickle.loads(bytes(DjangoJob.objects.get(id=job_id).job_state))["func"]


@needs_commits
def test_the_last_release_s_database_migrates_and_its_housekeeping_job_loads():
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes()
    before = last_release_nodes(executor)
    executor.migrate(before)
    try:
        stored_housekeeping_job(OLD_HOUSEKEEPING).save()
        # Left as it is, the scheduler could not load it (and would drop it).
        with pytest.raises(LookupError):
            DjangoJobStore().lookup_job(scheduler_module.HOUSEKEEPING_JOB)

        executor = MigrationExecutor(connection)
        executor.migrate(latest)
        assert stored_func(scheduler_module.HOUSEKEEPING_JOB) == NEW_HOUSEKEEPING
        store = DjangoJobStore()
        job = store.lookup_job(scheduler_module.HOUSEKEEPING_JOB)
        assert job.func is scheduler_module.housekeeping_job
        assert (job.executor, job.trigger.interval.total_seconds()) == ("housekeeping", 3600)
        assert job.next_run_time == datetime(2026, 12, 1, 3, tzinfo=UTC)  # not postponed
        assert [found.id for found in store.get_all_jobs()] == [job.id]  # none dropped
        job.func()  # a housekeeping pass, through the name the store gave back

        # Back to the release before: its code finds the job where it looks.
        executor = MigrationExecutor(connection)
        executor.migrate(before)
        assert stored_func(scheduler_module.HOUSEKEEPING_JOB) == OLD_HOUSEKEEPING
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(latest)
