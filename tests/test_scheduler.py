"""Scheduling in-process: next_run_at is the schedule; the leader's passes fire and repair.

The fire pass and the repair pass run here as functions with a chosen ``now``; the
APScheduler that drives them runs for real in the last tests.
"""

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone
from django_apscheduler.models import DjangoJob, DjangoJobExecution

from reports.models import Report
from reports.services.schedules import save_report
from runs.models import Run, RunStatus, RunTrigger, SchedulerLease
from runs.services.domain.queue import claim_runs
from runs.services.runtime import scheduler as scheduler_module
from runs.services.runtime.fires import fire_due_reports, repair_next_runs
from runs.services.runtime.leadership import LeaseKeeper, acquire_lease
from runs.services.runtime.scheduler import (
    FIRE_JOB,
    HOUSEKEEPING_JOB,
    REPAIR_JOB,
    RETIRED_JOBS,
    ReportScheduler,
)
from tests.conftest import enqueue_run, needs_commits, postgres_only, wait_for

pytestmark = pytest.mark.django_db(databases="__all__")

NOW = datetime(2026, 11, 26, 12, 0, 20, tzinfo=UTC)  # a Thursday
MINUTE = timedelta(minutes=1)


def make_report(slug, schedule, **fields):
    return save_report(Report(name=slug, slug=slug, sql="SELECT 1", schedule=schedule, **fields))


def stored_next_run(report):
    report.refresh_from_db()
    return report.next_run_at


def test_saving_a_report_sets_its_next_fire_time():
    daily = make_report("daily", "0 6 * * *", timezone="Europe/Berlin")
    manual = make_report("manual", "")
    paused = make_report("paused", "0 7 * * *", enabled=False)
    assert stored_next_run(daily) > timezone.now()
    assert stored_next_run(daily).astimezone(daily_zone(daily)).hour == 6
    assert stored_next_run(manual) is None
    assert stored_next_run(paused) is None

    save_report(daily, {"schedule": "30 8 * * *"})
    assert stored_next_run(daily).astimezone(daily_zone(daily)).strftime("%H:%M") == "08:30"
    save_report(paused, {"enabled": True})
    assert stored_next_run(paused) is not None
    save_report(daily, {"enabled": False})
    assert stored_next_run(daily) is None


def daily_zone(report):
    from zoneinfo import ZoneInfo

    return ZoneInfo(report.timezone)


def test_an_edit_that_keeps_the_schedule_keeps_the_stored_next_run():
    """The leader may have moved next_run_at on since the editor read the report."""
    report = make_report("hourly", "0 * * * *")
    stale = Report.objects.get(pk=report.pk)
    moved_on = stored_next_run(report) + timedelta(hours=1)
    Report.objects.filter(pk=report.pk).update(next_run_at=moved_on)
    save_report(stale, {"description": "edited"})
    assert stored_next_run(report) == moved_on
    assert Report.objects.get(pk=report.pk).description == "edited"


def test_a_due_report_becomes_one_run_with_its_interval_and_moves_on(lease):
    report = make_report("every-five", "*/5 * * * *")
    Report.objects.filter(pk=report.pk).update(next_run_at=NOW.replace(second=0))
    assert fire_due_reports(lease, now=NOW) == 1
    run = Run.objects.get(report=report)
    assert (run.status, run.trigger) == (RunStatus.QUEUED, RunTrigger.SCHEDULE)
    assert run.scheduled_for == run.interval_end == datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    assert run.interval_start == datetime(2026, 11, 26, 11, 55, tzinfo=UTC)
    assert stored_next_run(report) == datetime(2026, 11, 26, 12, 5, tzinfo=UTC)
    # The same moment again: nothing is due any more.
    assert fire_due_reports(lease, now=NOW) == 0
    assert Run.objects.count() == 1


def test_the_interval_follows_the_schedule_across_a_clock_change(lease):
    report = make_report("nightly", "30 2 * * *", timezone="Europe/Berlin")
    spring_forward = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # 03:00 CEST, for 02:30
    Report.objects.filter(pk=report.pk).update(next_run_at=spring_forward)
    fire_due_reports(lease, now=spring_forward + timedelta(seconds=1))
    run = Run.objects.get(report=report)
    assert run.interval_start == datetime(2026, 3, 28, 1, 30, tzinfo=UTC)  # 02:30 CET
    assert run.interval_end == spring_forward
    assert stored_next_run(report) == datetime(2026, 3, 30, 0, 30, tzinfo=UTC)  # 02:30 CEST


def test_missed_fires_coalesce_into_the_newest_within_the_grace(settings, lease):
    settings.SCHEDULE_MISFIRE_GRACE_SECONDS = 300
    report = make_report("every-minute", "* * * * *")
    # Down for ten minutes: ten fires missed, the newest within the grace period.
    Report.objects.filter(pk=report.pk).update(next_run_at=NOW.replace(second=0) - 10 * MINUTE)
    assert fire_due_reports(lease, now=NOW) == 1
    run = Run.objects.get(report=report)
    assert run.scheduled_for == NOW.replace(second=0)
    assert run.interval_start == NOW.replace(second=0) - MINUTE
    assert stored_next_run(report) == NOW.replace(second=0) + MINUTE


def test_a_missed_fire_older_than_the_grace_is_dropped(settings, lease):
    settings.SCHEDULE_MISFIRE_GRACE_SECONDS = 300
    yearly = make_report("yearly", "0 0 1 1 *")
    Report.objects.filter(pk=yearly.pk).update(next_run_at=datetime(2026, 1, 1, tzinfo=UTC))
    assert fire_due_reports(lease, now=NOW) == 0
    assert Run.objects.count() == 0
    assert stored_next_run(yearly) == datetime(2027, 1, 1, tzinfo=UTC)


def test_a_fire_exactly_at_the_end_of_the_grace_still_runs(settings, lease):
    settings.SCHEDULE_MISFIRE_GRACE_SECONDS = 20
    report = make_report("every-minute", "* * * * *")
    Report.objects.filter(pk=report.pk).update(next_run_at=NOW.replace(second=0))
    assert fire_due_reports(lease, now=NOW) == 1  # 20 s late, grace 20 s
    Report.objects.filter(pk=report.pk).update(next_run_at=NOW.replace(second=0) + MINUTE)
    assert fire_due_reports(lease, now=NOW + MINUTE + timedelta(microseconds=1)) == 0


def test_a_fire_while_the_report_runs_is_born_skipped(lease):
    report = make_report("hourly", "0 * * * *")
    running = enqueue_run(report, RunTrigger.MANUAL)
    assert claim_runs(1, "test:1") == [running]
    Report.objects.filter(pk=report.pk).update(next_run_at=NOW.replace(second=0))
    fire_due_reports(lease, now=NOW)
    skipped = Run.objects.get(report=report, trigger=RunTrigger.SCHEDULE)
    assert skipped.status == RunStatus.SKIPPED
    assert skipped.error == (
        f"Skipped: the previous run ({running.pk}) was still running at this fire time."
    )
    assert skipped.interval_end == NOW.replace(second=0)


def test_a_fire_recorded_already_is_not_recorded_twice(lease):
    report = make_report("hourly", "0 * * * *")
    fire = NOW.replace(minute=0, second=0)
    Report.objects.filter(pk=report.pk).update(next_run_at=fire)
    fire_due_reports(lease, now=NOW)
    # A stale save wrote the old next_run_at back: the fire is due again, once only.
    Report.objects.filter(pk=report.pk).update(next_run_at=fire)
    fire_due_reports(lease, now=NOW)
    assert Run.objects.filter(report=report).count() == 1
    assert stored_next_run(report) == fire + timedelta(hours=1)


def test_only_enabled_scheduled_reports_fire(lease):
    report = make_report("hourly", "0 * * * *")
    Report.objects.filter(pk=report.pk).update(enabled=False, next_run_at=NOW - MINUTE)
    manual = make_report("manual", "")
    Report.objects.filter(pk=manual.pk).update(next_run_at=NOW - MINUTE)
    assert fire_due_reports(lease, now=NOW) == 0
    assert Run.objects.count() == 0


def test_thousands_of_due_reports_fire_in_batches(monkeypatch, lease):
    monkeypatch.setattr("runs.services.runtime.fires.FIRE_BATCH", 40)
    Report.objects.bulk_create(
        Report(name=f"r{i}", slug=f"r{i}", sql="SELECT 1", schedule="* * * * *") for i in range(100)
    )
    Report.objects.update(next_run_at=NOW.replace(second=0))
    assert fire_due_reports(lease, now=NOW) == 100
    assert Run.objects.filter(scheduled_for=NOW.replace(second=0)).count() == 100
    assert set(Report.objects.values_list("next_run_at", flat=True)) == {
        NOW.replace(second=0) + MINUTE
    }


def test_a_pass_with_a_spent_time_budget_leaves_the_rest_to_the_next(monkeypatch, lease):
    monkeypatch.setattr("runs.services.runtime.fires.FIRE_BATCH", 10)
    Report.objects.bulk_create(
        Report(name=f"r{i}", slug=f"r{i}", sql="SELECT 1", schedule="* * * * *") for i in range(25)
    )
    Report.objects.update(next_run_at=NOW.replace(second=0))
    assert fire_due_reports(lease, now=NOW, time_budget=0) == 0
    assert fire_due_reports(lease, now=NOW, time_budget=60) == 25


@needs_commits
@postgres_only
def test_reports_another_pass_holds_are_skipped_not_waited_for(lease):
    due = [make_report(f"r{i}", "* * * * *") for i in range(3)]
    Report.objects.update(next_run_at=NOW.replace(second=0))
    held = threading.Event()
    release = threading.Event()

    def hold_first_report():
        with transaction.atomic():
            list(Report.objects.select_for_update().filter(pk=due[0].pk))
            held.set()
            release.wait(10)
        connection.close()

    holder = threading.Thread(target=hold_first_report)
    holder.start()
    try:
        assert held.wait(10)
        started = time.monotonic()
        assert fire_due_reports(lease, now=NOW) == 2
        assert time.monotonic() - started < 2
    finally:
        release.set()
        holder.join()
    assert fire_due_reports(lease, now=NOW) == 1
    assert Run.objects.count() == 3


def test_repair_follows_reports_changed_without_save_report(caplog, lease):
    daily = make_report("daily", "0 6 * * *")
    # Changed the way a shell or a bulk update would: next_run_at untouched.
    Report.objects.filter(pk=daily.pk).update(schedule="45 7 * * *")
    bulk = Report.objects.create(name="bulk", slug="bulk", sql="SELECT 1", schedule="0 * * * *")
    gone = make_report("gone", "0 9 * * *")
    Report.objects.filter(pk=gone.pk).update(enabled=False)
    bad = Report.objects.create(name="bad", slug="bad", sql="SELECT 1", schedule="0 25 * * *")
    assert stored_next_run(bulk) is None

    assert repair_next_runs(lease) == 3
    assert stored_next_run(daily).strftime("%H:%M") == "07:45"
    assert stored_next_run(bulk).minute == 0
    assert stored_next_run(gone) is None
    assert stored_next_run(bad) is None
    assert f"report {bad.pk} not scheduled" in caplog.text
    assert repair_next_runs(lease) == 0  # in agreement now


def test_repair_leaves_due_reports_to_the_fire_pass(lease):
    report = make_report("hourly", "0 * * * *")
    due = timezone.now() - MINUTE
    Report.objects.filter(pk=report.pk).update(next_run_at=due)
    assert repair_next_runs(lease) == 0
    assert stored_next_run(report) == due


# --- the APScheduler that runs the passes ---------------------------------------------


@pytest.fixture
def keeper():
    """This test process holds the scheduler lease, as the leading worker does."""
    keeper = LeaseKeeper("test:scheduler")
    keeper.start()
    wait_for(keeper.current, timeout=5)
    yield keeper
    keeper.stop()


@pytest.fixture
def schedulers(keeper):
    started = []

    def start():
        scheduler = ReportScheduler(keeper)
        scheduler.start()
        started.append(scheduler)
        return scheduler

    yield start
    for scheduler in started:
        scheduler.stop()


@needs_commits
def test_the_leader_keeps_its_jobs_in_the_job_store_and_fires_due_reports(schedulers):
    report = make_report("every-minute", "* * * * *")
    # The pass must run within the minute of `fire`: once the next minute has begun, that
    # minute's fire is the one due (a missed fire is not run twice).
    now = timezone.now()
    if now.second >= 50:
        time.sleep(60.05 - now.second - now.microsecond / 1e6)
    fire = timezone.now().replace(second=0, microsecond=0)
    Report.objects.filter(pk=report.pk).update(next_run_at=fire)
    retired = DjangoJob.objects.create(id=RETIRED_JOBS[0], job_state=b"", next_run_time=None)
    scheduler = schedulers()
    run = wait_for(lambda: Run.objects.filter(report=report).first(), timeout=5)
    assert run.scheduled_for == fire
    assert {job.id for job in DjangoJob.objects.all()} == {FIRE_JOB, REPAIR_JOB, HOUSEKEEPING_JOB}
    assert not DjangoJob.objects.filter(pk=retired.pk).exists()
    wait_for(
        lambda: DjangoJobExecution.objects.filter(
            job_id=FIRE_JOB, status=DjangoJobExecution.SUCCESS
        ).exists(),
        timeout=5,
    )
    assert SchedulerLease.objects.get().fire_pass_at is not None
    assert scheduler.is_alive()
    scheduler.stop()
    assert not scheduler.is_alive()
    # The next leader adds the jobs again, however they were left (paused, here).
    DjangoJob.objects.filter(id=FIRE_JOB).update(next_run_time=None)
    schedulers()
    wait_for(lambda: DjangoJob.objects.get(id=FIRE_JOB).next_run_time is not None, timeout=5)


@needs_commits
def test_a_scheduler_that_lost_the_lease_records_nothing(schedulers, keeper, caplog):
    scheduler = schedulers()
    wait_for(lambda: DjangoJob.objects.filter(id=FIRE_JOB).exists(), timeout=5)
    # Another worker took over: this process has not heard yet (it renews in 5 s).
    SchedulerLease.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert acquire_lease("other:2", 60).epoch == keeper.current().epoch + 1
    report = make_report("every-minute", "* * * * *")
    Report.objects.filter(pk=report.pk).update(next_run_at=timezone.now() - MINUTE)
    wait_for(lambda: "fire pass refused: test:scheduler no longer holds" in caplog.text)
    scheduler.stop()
    assert not Run.objects.exists()


@needs_commits
def test_a_new_leader_keeps_the_housekeeping_time(schedulers):
    schedulers().stop()
    due = timezone.now() + timedelta(minutes=30)
    DjangoJob.objects.filter(id=HOUSEKEEPING_JOB).update(next_run_time=due)
    schedulers()
    time.sleep(0.5)
    assert DjangoJob.objects.get(id=HOUSEKEEPING_JOB).next_run_time == due


@needs_commits
def test_a_failing_pass_is_recorded_and_the_next_one_runs(schedulers, monkeypatch):
    calls = []

    def flaky(lease, **kwargs):
        calls.append(kwargs)
        if len(calls) == 1:
            raise RuntimeError("database went away")
        return 0

    monkeypatch.setattr(scheduler_module, "fire_due_reports", flaky)
    scheduler = schedulers()
    wait_for(lambda: len(calls) >= 2, timeout=5)
    assert scheduler.is_alive()
    failed = DjangoJobExecution.objects.get(job_id=FIRE_JOB, status=DjangoJobExecution.ERROR)
    assert "database went away" in failed.exception


@needs_commits
def test_stopping_right_after_starting_leaves_no_scheduler_running(keeper):
    scheduler = ReportScheduler(keeper)
    scheduler.start()
    scheduler.stop()
    assert not scheduler.is_alive()
    assert not scheduler.scheduler.running


def test_housekeeping_keeps_an_hour_of_the_passes_history_and_a_week_of_the_rest():
    from runs.services.runtime.housekeeping import purge_scheduler_history

    for job_id in (FIRE_JOB, HOUSEKEEPING_JOB):
        DjangoJob.objects.create(id=job_id, job_state=b"")
    now = timezone.now()
    for job_id, age in [
        (FIRE_JOB, timedelta(hours=2)),
        (FIRE_JOB, timedelta(minutes=10)),
        (HOUSEKEEPING_JOB, timedelta(hours=2)),
        (HOUSEKEEPING_JOB, timedelta(days=8)),
    ]:
        DjangoJobExecution.objects.create(
            job_id=job_id, status=DjangoJobExecution.SUCCESS, run_time=now - age
        )
    purge_scheduler_history(brief_history_jobs=(FIRE_JOB,), now=now)
    kept = sorted(
        (job_id, round((now - run_time).total_seconds() / 60))
        for job_id, run_time in DjangoJobExecution.objects.values_list("job_id", "run_time")
    )
    assert kept == [(FIRE_JOB, 10), (HOUSEKEEPING_JOB, 120)]
