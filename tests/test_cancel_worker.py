"""Cancelling a run a real worker process is executing: its statement stops on the
database server within seconds, whether through the API or the admin; a shutdown
stops what is left the same way, but the run fails and may be retried."""

import time

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from reports.models import Report
from runs.models import Run, RunStatus, RunTally
from tests.api_helpers import client_for, make_user
from tests.conftest import ON_POSTGRES, enqueue_run, files_under, wait_for
from tests.test_cancel import slow_sql
from tests.test_worker_process import start_worker, status_of, wait_for_heartbeat  # noqa: F401

pytestmark = [
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.long_running,
]

# 60 s of pg_sleep on PostgreSQL; on SQLite a statement of about two minutes.
STATEMENT = {"postgresql": "SELECT 1 AS done FROM pg_sleep(60)"}


def long_statement():
    return STATEMENT.get(connection.vendor) or slow_sql(60)


def executing_on_the_server():
    """Sessions of this database running the long statement now (PostgreSQL)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND state <> 'idle' AND query LIKE '%%pg_sleep(60)%%' AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


def running_on_the_server(report, worker):
    run = enqueue_run(report, "manual")
    wait_for(lambda: status_of(run) == RunStatus.RUNNING, timeout=15)
    if ON_POSTGRES:
        wait_for(lambda: executing_on_the_server() == 1, timeout=10)
    else:
        time.sleep(1)  # into its statement
    return run


def assert_stopped_within_five_seconds(run, asked_at, user, outputs_dir):
    wait_for(lambda: status_of(run) == RunStatus.CANCELLED, timeout=5)
    if ON_POSTGRES:
        wait_for(lambda: executing_on_the_server() == 0, timeout=5 - (time.monotonic() - asked_at))
    assert time.monotonic() - asked_at < 5
    run.refresh_from_db()
    assert run.cancelled_by == user and run.cancelled_at is not None
    assert run.finished_at >= run.cancelled_at
    assert run.error.startswith(f"Cancelled by {user.username} at ")
    assert files_under(outputs_dir) == []  # the partial file went with its scratch directory
    assert Run.objects.filter(report=run.report).count() == 1  # no retry
    tallies = dict(RunTally.objects.filter(report=run.report).values_list("status", "count"))
    assert tallies == {"cancelled": 1}


def test_a_running_statement_cancelled_through_the_api_stops_on_the_server(
    start_worker,  # noqa: F811
    outputs_dir,
):
    worker = start_worker()
    wait_for_heartbeat(worker)
    report = Report.objects.create(
        name="Runaway", slug="runaway", sql=long_statement(), max_retries=3
    )
    run = running_on_the_server(report, worker)
    user = make_user("runner", "run")
    asked_at = time.monotonic()
    response = client_for(user).post(f"/api/runs/{run.pk}/cancel/")
    assert response.status_code == 202
    assert response.json()["status"] in ("running", "cancelled")
    assert_stopped_within_five_seconds(run, asked_at, user, outputs_dir)
    assert f"run {run.pk}: cancelled; stopping its statement" in worker.log()
    # The worker goes on with the next run.
    following = enqueue_run(
        Report.objects.create(name="Next", slug="next", sql="SELECT 1 AS n"), "manual"
    )
    wait_for(lambda: status_of(following) == RunStatus.SUCCEEDED, timeout=10)
    assert worker.stop() == 0


def test_a_running_statement_cancelled_in_the_admin_stops_on_the_server(
    start_worker,  # noqa: F811
    outputs_dir,
):
    worker = start_worker()
    wait_for_heartbeat(worker)
    report = Report.objects.create(name="Runaway", slug="runaway", sql=long_statement())
    run = running_on_the_server(report, worker)
    user = make_user("ops", staff=True)
    user.is_superuser = True
    user.save()
    browser = Client()
    browser.force_login(user)
    page = browser.get(f"/admin/runs/run/{run.pk}/change/").content.decode()
    assert 'id="cancel-run"' in page
    asked_at = time.monotonic()
    response = browser.post(f"/admin/runs/run/{run.pk}/cancel/", follow=True)
    assert f"Stopping run {run.pk} on the database server" in response.content.decode()
    assert_stopped_within_five_seconds(run, asked_at, user, outputs_dir)
    assert worker.stop() == 0


def test_a_shutdown_cancels_what_is_left_on_the_server_and_the_run_fails_for_a_retry(
    start_worker,  # noqa: F811
    outputs_dir,
):
    worker = start_worker(WORKER_SHUTDOWN_GRACE_SECONDS=1)
    wait_for_heartbeat(worker)
    report = Report.objects.create(
        name="Runaway", slug="runaway", sql=long_statement(), max_retries=1
    )
    run = enqueue_run(report, "schedule", scheduled_for=timezone.now())
    wait_for(lambda: status_of(run) == RunStatus.RUNNING, timeout=15)
    if ON_POSTGRES:
        wait_for(lambda: executing_on_the_server() == 1, timeout=10)
    stopping = time.monotonic()
    assert worker.stop() == 0
    assert time.monotonic() - stopping < 1 + 5
    if ON_POSTGRES:
        assert executing_on_the_server() == 0  # never left running there
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED  # cancelled is for people's and clients' acts
    assert "stopped by shutdown" in run.error
    assert "its statement was cancelled on the database server" in run.error
    assert run.cancelled_at is None
    retry = Run.objects.get(retry_of=run)
    assert retry.status == RunStatus.QUEUED and retry.attempt == 2
    assert files_under(outputs_dir) == []
