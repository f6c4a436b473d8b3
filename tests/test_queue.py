"""Fires, claims, retries, lost runs and retention, in-process on both databases."""

import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connections
from django.utils import timezone

from reports.models import Report
from runs.models import Run, RunStatus, RunTrigger
from runs.services.domain.queue import claim_runs
from runs.services.domain.transitions import transition_run
from runs.services.runtime.housekeeping import purge_expired_runs
from runs.services.runtime.recovery import fail_lost_runs
from runs.services.runtime.runner import perform_run, run_report_now
from tests.conftest import (
    ON_POSTGRES,
    enqueue_run,
    execute_run,
    needs_commits,
    record_scheduled_fire,
    wait_for,
)

pytestmark = pytest.mark.django_db(databases="__all__")

FIRE = timezone.now().replace(second=0, microsecond=0)
SLOW_SQL = (
    "SELECT 1 AS done FROM pg_sleep(2.5)"
    if ON_POSTGRES
    else "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 8000000) "
    "SELECT count(*) > 0 AS done FROM n"
)


@pytest.fixture
def report():
    return Report.objects.create(
        name="Hourly", slug="hourly", sql="SELECT 1 AS n", schedule="0 * * * *"
    )


def make_report(slug, **fields):
    return Report.objects.create(name=slug, slug=slug, sql="SELECT 1 AS n", **fields)


def test_a_fire_is_recorded_once(report):
    first = record_scheduled_fire(report.pk, FIRE)
    second = record_scheduled_fire(report.pk, FIRE)
    assert first.status == RunStatus.QUEUED
    assert first.trigger == RunTrigger.SCHEDULE
    assert first.scheduled_for == FIRE
    assert second is None
    assert Run.objects.count() == 1


def test_a_fire_while_the_previous_run_is_running_is_skipped(report):
    previous = record_scheduled_fire(report.pk, FIRE)
    assert claim_runs(1, "test:1") == [previous]
    skipped = record_scheduled_fire(report.pk, FIRE + timedelta(hours=1))
    assert skipped.status == RunStatus.SKIPPED
    assert skipped.error == (
        f"Skipped: the previous run ({previous.pk}) was still running at this fire time."
    )
    assert skipped.finished_at is not None


def test_fires_of_disabled_or_unscheduled_reports_record_nothing(report):
    report.enabled = False
    report.save()
    assert record_scheduled_fire(report.pk, FIRE) is None
    manual = make_report("manual")
    assert record_scheduled_fire(manual.pk, FIRE) is None
    assert Run.objects.count() == 0


def test_claims_take_the_oldest_runs_up_to_the_limit():
    runs = [enqueue_run(make_report(f"r{i}"), RunTrigger.MANUAL) for i in range(3)]
    claimed = claim_runs(2, "test:1")
    assert [run.pk for run in claimed] == [runs[0].pk, runs[1].pk]
    for run in claimed:
        run.refresh_from_db()
        assert run.status == RunStatus.RUNNING
        assert run.worker == "test:1"
        assert run.sql == "SELECT 1 AS n"
    assert claim_runs(5, "test:2") == [runs[2]]
    assert claim_runs(5, "test:2") == []


def test_a_report_runs_one_run_at_a_time(report):
    first = enqueue_run(report, RunTrigger.MANUAL)
    second = enqueue_run(report, RunTrigger.API)
    claimed = claim_runs(2, "test:1")
    assert claimed == [first]
    assert claim_runs(2, "test:1") == []  # still running
    perform_run(claimed[0])
    assert claim_runs(2, "test:1") == [second]


def test_a_retry_waits_for_its_time(report):
    retry = Run.objects.create(
        report=report,
        trigger=RunTrigger.SCHEDULE,
        not_before=timezone.now() + timedelta(minutes=5),
    )
    assert claim_runs(1, "test:1") == []
    Run.objects.filter(pk=retry.pk).update(not_before=timezone.now() - timedelta(seconds=1))
    assert claim_runs(1, "test:1") == [retry]


def test_failed_scheduled_runs_are_retried_with_growing_backoff(settings):
    settings.RETRY_BACKOFF_SECONDS = 60
    flaky = make_report("flaky", schedule="0 * * * *", max_retries=2)
    flaky.sql = "SELECT * FROM missing_table"
    flaky.save()
    first = record_scheduled_fire(flaky.pk, FIRE)
    execute_run(first)
    second = Run.objects.get(retry_of=first)
    assert (second.attempt, second.status, second.trigger) == (2, RunStatus.QUEUED, "schedule")
    # A retry covers the data interval of the fire it retries.
    assert first.interval_end == FIRE and first.interval_start is not None
    assert (second.interval_start, second.interval_end) == (first.interval_start, FIRE)
    assert (second.not_before - timezone.now()).total_seconds() == pytest.approx(60, abs=5)
    execute_run(second)
    third = Run.objects.get(retry_of=first, attempt=3)
    assert (third.not_before - timezone.now()).total_seconds() == pytest.approx(120, abs=5)
    execute_run(third)
    assert Run.objects.filter(report=flaky).count() == 3  # max_retries=2: no fourth attempt
    assert set(Run.objects.values_list("status", flat=True)) == {RunStatus.FAILED}


def test_manual_runs_are_not_retried():
    broken = make_report("broken", max_retries=3)
    broken.sql = "SELECT * FROM missing_table"
    broken.save()
    run_report_now(broken, trigger=RunTrigger.MANUAL)
    assert Run.objects.count() == 1


def test_a_run_without_heartbeat_is_failed_as_lost_and_its_temp_file_removed(report, outputs_dir):
    lost, alive = enqueue_run(report, "manual"), enqueue_run(make_report("other"), "manual")
    claim_runs(2, "gone-host:4242")
    old = timezone.now() - timedelta(seconds=120)
    Run.objects.filter(pk=lost.pk).update(heartbeat_at=old)
    partial = outputs_dir / "hourly" / f".partial-run{lost.pk}-abc.csv"
    partial.parent.mkdir(parents=True)
    partial.write_text("id\n1\n")

    assert [run.pk for run in fail_lost_runs(60)] == [lost.pk]
    lost.refresh_from_db()
    alive.refresh_from_db()
    assert lost.status == RunStatus.FAILED
    assert lost.error.startswith("Worker lost: gone-host:4242 stopped sending heartbeats")
    assert not partial.exists()
    assert alive.status == RunStatus.RUNNING


def test_runs_the_caller_executes_itself_are_never_called_lost(report):
    own, other = enqueue_run(report, "manual"), enqueue_run(make_report("other"), "manual")
    claim_runs(2, "this-host:1")
    Run.objects.update(heartbeat_at=timezone.now() - timedelta(seconds=120))
    assert [run.pk for run in fail_lost_runs(60, exclude_ids=[own.pk])] == [other.pk]
    assert Run.objects.get(pk=own.pk).status == RunStatus.RUNNING


@needs_commits
def test_retention_deletes_old_finished_runs_and_their_files(settings, report):
    settings.RUN_RETENTION_DAYS = 30
    short = make_report("short", retention_days=7)
    old_run = run_report_now(report)
    short_run = run_report_now(short)
    active = enqueue_run(report, "manual")
    recent = run_report_now(short)
    ten_days_ago, forty_days_ago = (
        timezone.now() - timedelta(days=10),
        timezone.now() - timedelta(days=40),
    )
    Run.objects.filter(pk__in=[old_run.pk, active.pk]).update(queued_at=forty_days_ago)
    Run.objects.filter(pk=short_run.pk).update(queued_at=ten_days_ago)
    old_file, short_file = Path(old_run.output.path), Path(short_run.output.path)

    assert purge_expired_runs() == 2
    assert set(Run.objects.values_list("pk", flat=True)) == {active.pk, recent.pk}
    assert not old_file.exists() and not short_file.exists()
    assert Path(recent.output.path).exists()


def test_only_allowed_status_changes_happen(report):
    run = enqueue_run(report, "manual")
    assert transition_run(run, RunStatus.SUCCEEDED) is False  # queued -> succeeded: no
    assert transition_run(run, RunStatus.RUNNING) is True
    assert transition_run(run, RunStatus.SKIPPED) is False  # running -> skipped: no
    assert transition_run(run, RunStatus.FAILED, error="x") is True
    assert transition_run(run, RunStatus.RUNNING) is False  # finished stays finished
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED


@needs_commits
def test_deleting_a_report_deletes_its_run_files(report):
    run = run_report_now(report)
    path = Path(run.output.path)
    assert path.exists()
    report.delete()
    assert not path.exists()


def test_a_fire_skipped_is_never_claimable(report):
    previous = enqueue_run(report, "manual")
    skipped = record_scheduled_fire(report.pk, FIRE)
    assert skipped.status == RunStatus.SKIPPED  # born skipped, never queued
    assert claim_runs(5, "test:1") == [previous]


@pytest.mark.long_running
@needs_commits
def test_runreport_keeps_its_run_alive_while_it_works(settings):
    import threading

    settings.WORKER_HEARTBEAT_SECONDS = 0.1
    slow = make_report("slow")
    slow.sql = SLOW_SQL
    slow.save()

    def run_in_thread():
        try:
            run_report_now(slow)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run_in_thread)
    thread.start()
    try:
        wait_for(lambda: Run.objects.filter(report=slow, status=RunStatus.RUNNING).exists())
        time.sleep(1.0)
        assert fail_lost_runs(0.5) == []  # a worker's recovery pass finds it alive
        assert Run.objects.get(report=slow).status == RunStatus.RUNNING  # still working
    finally:
        thread.join()
    assert Run.objects.get(report=slow).status == RunStatus.SUCCEEDED


def test_a_claim_costs_one_statement_per_run_and_one_for_their_reports(
    django_assert_num_queries,
):
    runs = [enqueue_run(make_report(f"lean{i}"), "manual") for i in range(2)]
    with django_assert_num_queries(3):
        claimed = claim_runs(2, "test:1")
    assert claimed == runs
    assert [run.report.slug for run in claimed] == ["lean0", "lean1"]
    with django_assert_num_queries(1):
        assert claim_runs(2, "test:1") == []


@needs_commits
def test_a_worker_slot_runs_queued_runs_back_to_back_without_the_main_loop():
    from runs.services.runtime.worker import Worker

    runs = [enqueue_run(make_report(f"slot{i}"), "manual") for i in range(3)]
    worker = Worker(concurrency=1)
    try:
        assert worker._dispatch() == 1  # the main loop claims once, for its one slot
        wait_for(lambda: Run.objects.filter(status=RunStatus.SUCCEEDED).count() == 3, timeout=20)
    finally:
        worker.request_stop()
        worker._pool.shutdown(wait=True)
        worker._notifier.close(timeout=10)
    assert {run.worker for run in Run.objects.all()} == {worker.name}
    started = [Run.objects.get(pk=run.pk).started_at for run in runs]
    assert started == sorted(started)  # oldest first
    assert worker._busy_slots == 0
