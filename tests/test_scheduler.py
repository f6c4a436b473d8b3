"""The leader's scheduler, in-process: jobs follow reports, missed fires coalesce."""

import pickle
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from reports.models import Report
from runs.models import Run, RunTrigger
from runs.services.scheduler import ReportScheduler, job_id_for
from runs.services.triggers import CrontabTrigger
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


@pytest.fixture
def schedulers():
    started = []

    def start():
        scheduler = ReportScheduler()
        scheduler.start()
        started.append(scheduler)
        return scheduler

    yield start
    for scheduler in started:
        scheduler.stop()


def make_report(slug, schedule, **fields):
    return Report.objects.create(name=slug, slug=slug, sql="SELECT 1", schedule=schedule, **fields)


def test_trigger_survives_pickling_and_uses_cron_weekdays():
    trigger = pickle.loads(pickle.dumps(CrontabTrigger("0 6 * * 0", "Europe/Berlin")))
    now = datetime(2026, 11, 26, 12, tzinfo=UTC)  # a Thursday
    assert trigger.get_next_fire_time(None, now) == datetime(2026, 11, 29, 5, tzinfo=UTC)  # Sunday
    assert str(trigger) == "crontab[0 6 * * 0 Europe/Berlin]"


def test_trigger_counts_a_fire_at_now_and_moves_past_the_previous_one():
    trigger = CrontabTrigger("*/5 * * * *", "UTC")
    now = datetime(2026, 11, 26, 12, 5, tzinfo=UTC)
    assert trigger.get_next_fire_time(None, now) == now
    assert trigger.get_next_fire_time(now, now + timedelta(seconds=1)) == now + timedelta(minutes=5)


def test_jobs_follow_report_edits(schedulers):
    daily = make_report("daily", "0 6 * * *", timezone="Europe/Berlin")
    make_report("manual", "")
    paused = make_report("paused", "0 7 * * *", enabled=False)
    scheduler = schedulers()
    assert {job.id for job in scheduler.scheduler.get_jobs()} == {
        job_id_for(daily.pk),
        "housekeeping",
    }
    daily.refresh_from_db()
    assert daily.next_run_at is not None
    assert daily.next_run_at.astimezone(timezone.get_fixed_timezone(0)).hour in (4, 5)

    daily.schedule = "30 8 * * *"
    daily.save()
    paused.enabled = True
    paused.save()
    scheduler.sync()
    daily.refresh_from_db()
    assert daily.next_run_at.minute == 30
    paused.refresh_from_db()
    assert paused.next_run_at is not None

    daily.enabled = False
    daily.save()
    paused.delete()
    scheduler.sync()
    daily.refresh_from_db()
    assert daily.next_run_at is None
    assert {job.id for job in scheduler.scheduler.get_jobs()} == {"housekeeping"}


def persist_next_run_time(report, next_run_time):
    """Leave the job store as a scheduler that stopped before ``next_run_time`` would."""
    scheduler = ReportScheduler()
    scheduler.scheduler.start(paused=True)
    scheduler.sync()
    scheduler.scheduler.modify_job(job_id_for(report.pk), next_run_time=next_run_time)
    scheduler.stop()


def test_missed_fires_run_once_on_start_when_recent(schedulers, settings):
    settings.SCHEDULE_MISFIRE_GRACE_SECONDS = 300
    every_minute = make_report("every-minute", "* * * * *")
    # Down for ten minutes: ten fires missed, the newest within the grace period.
    persist_next_run_time(every_minute, timezone.now() - timedelta(minutes=10))
    started = timezone.now()
    schedulers()
    run = wait_for(lambda: Run.objects.filter(report=every_minute).first(), timeout=10)
    time.sleep(1.0)
    # Fires missed before the start: one run. (A slow machine may reach the next minute,
    # whose fire is a new one, not a catch-up.)
    assert Run.objects.filter(report=every_minute, scheduled_for__lte=started).count() == 1
    assert run.trigger == RunTrigger.SCHEDULE
    newest_missed = timezone.now().replace(second=0, microsecond=0)
    assert newest_missed - timedelta(minutes=1) <= run.scheduled_for <= newest_missed


def test_a_missed_fire_older_than_the_grace_period_is_dropped(schedulers, settings):
    settings.SCHEDULE_MISFIRE_GRACE_SECONDS = 300
    yearly = make_report("yearly", "0 0 1 1 *")
    persist_next_run_time(yearly, timezone.now() - timedelta(days=1))
    scheduler = schedulers()
    wait_for(
        lambda: scheduler.scheduler.get_job(job_id_for(yearly.pk)).next_run_time > timezone.now(),
        timeout=10,
    )
    time.sleep(0.5)
    assert Run.objects.count() == 0
    yearly.refresh_from_db()
    assert yearly.next_run_at is not None


def test_trigger_never_returns_the_previous_fire_again():
    trigger = CrontabTrigger("*/5 * * * *", "UTC")
    now = datetime(2026, 11, 26, 12, 5, tzinfo=UTC)
    assert trigger.get_next_fire_time(now, now) == now + timedelta(minutes=5)


def test_a_report_with_an_invalid_schedule_is_skipped_not_fatal(schedulers, caplog):
    good = make_report("good", "0 6 * * *")
    bad = Report.objects.create(name="bad", slug="bad", sql="SELECT 1", schedule="0 25 * * *")
    scheduler = schedulers()
    ids = {job.id for job in scheduler.scheduler.get_jobs()}
    assert job_id_for(good.pk) in ids and job_id_for(bad.pk) not in ids
    assert f"report {bad.pk} not scheduled" in caplog.text
    assert scheduler.is_alive()


def test_a_failing_scheduler_pass_is_retried_not_fatal(monkeypatch):
    from apscheduler.schedulers.background import BackgroundScheduler

    from runs.services.scheduler import PASS_RETRY_SECONDS, _BackgroundScheduler

    def broken(self):
        raise RuntimeError("database went away")

    monkeypatch.setattr(BackgroundScheduler, "_process_jobs", broken)
    scheduler = _BackgroundScheduler()
    scheduler.state = 1  # running
    assert scheduler._process_jobs() == PASS_RETRY_SECONDS
