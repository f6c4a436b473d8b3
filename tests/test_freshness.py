"""Freshness alerts: one "stale" when no run succeeded within expect_success_within, one
"fresh again" when one does; sent once even when two checks race."""

import json
import threading
from datetime import timedelta

import pytest
from django.core import mail
from django.db import connections
from django.utils import timezone

from reports.models import Report
from runs.models import AlertState, Delivery, RunStatus, RunTally, SchedulerLease
from runs.services.notifications.lanes import NotificationLanes
from runs.services.notifications.notifier import notify_report_event
from runs.services.runtime.freshness import check_freshness
from runs.services.runtime.leadership import LeaseLost, acquire_lease
from runs.services.runtime.runner import run_report_now
from tests.conftest import needs_commits
from tests.receivers import Receiver

pytestmark = pytest.mark.django_db(databases="__all__")

HOUR = timedelta(hours=1)


@pytest.fixture(autouse=True)
def fast_notifications(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.NOTIFY_WEBHOOK_TIMEOUT_SECONDS = 1
    settings.NOTIFY_WEBHOOK_RETRIES = 0
    settings.PUBLIC_BASE_URL = "https://reports.example.com"
    settings.NOTIFY_WEBHOOK_BLOCKED_NETWORKS = ["169.254.0.0/16"]


@pytest.fixture
def lease():
    return acquire_lease("leader-a:1", 60)


def expecting_report(age=2 * HOUR, **fields):
    """A report expecting a success within an hour, created ``age`` ago, never run."""
    fields.setdefault("notify_emails", "ops@example.com")
    report = Report.objects.create(
        name="Daily", slug="daily", sql="SELECT 1 AS n", expect_success_within=HOUR, **fields
    )
    Report.objects.filter(pk=report.pk).update(created_at=timezone.now() - age)
    return report


def send(events):
    for event in events:
        notify_report_event(event)
    return [event.notice.kind for event in events]


def test_a_stale_report_alerts_once_then_fresh_again_once(lease):
    report = expecting_report()
    assert send(check_freshness(lease)) == ["stale"]
    assert send(check_freshness(lease)) == []
    [message] = mail.outbox
    assert message.subject == "[reportsvc] Daily: STALE"
    assert "Stale: no run has succeeded since the report was created" in message.body
    assert "one was expected within 1:00:00" in message.body
    assert f"https://reports.example.com/admin/reports/report/{report.pk}/change/" in message.body
    run = run_report_now(report)
    assert run.status == RunStatus.SUCCEEDED
    assert send(check_freshness(lease)) == ["fresh"]
    assert send(check_freshness(lease)) == []
    assert mail.outbox[1].subject == "[reportsvc] Daily: FRESH AGAIN"
    assert f"a run succeeded at {run.finished_at:%Y-%m-%d %H:%M:%S UTC}" in mail.outbox[1].body
    deliveries = Delivery.objects.order_by("id")
    assert [(d.reason, d.status, d.run_id, d.report_id) for d in deliveries] == [
        ("stale", "sent", None, report.pk),
        ("fresh", "sent", None, report.pk),
    ]


def test_staleness_counts_from_the_last_success(lease):
    report = expecting_report(age=timedelta(days=3))
    run_report_now(report)
    assert check_freshness(lease) == []  # just succeeded
    # Time travel: that success was 90 minutes ago.
    RunTally.objects.filter(report=report, status=RunStatus.SUCCEEDED).update(
        last_finished_at=timezone.now() - timedelta(minutes=90)
    )
    [event] = check_freshness(lease)
    assert event.notice.note.startswith("Stale: no run has succeeded for 1:30:00 (the last at ")


def test_reports_that_are_fresh_disabled_or_expect_nothing_alert_nobody(lease):
    expecting_report(age=timedelta(minutes=30))  # within its hour
    Report.objects.create(name="Any", slug="any", sql="SELECT 1", notify_emails="a@x.example")
    off = Report.objects.create(
        name="Off", slug="off", sql="SELECT 1", expect_success_within=HOUR, enabled=False
    )
    Report.objects.filter(pk=off.pk).update(created_at=timezone.now() - 2 * HOUR)
    assert check_freshness(lease) == []


def test_an_expectation_removed_while_stale_is_forgotten_quietly(lease):
    report = expecting_report()
    assert send(check_freshness(lease)) == ["stale"]
    Report.objects.filter(pk=report.pk).update(expect_success_within=None)
    assert check_freshness(lease) == []
    assert AlertState.objects.get(pk=report.pk).stale_since is None
    assert len(mail.outbox) == 1


def test_a_webhook_hears_of_it_as_the_report_with_no_run(lease):
    receiver = Receiver()
    try:
        expecting_report(notify_emails="", notify_webhooks=receiver.url)
        send(check_freshness(lease))
        [(headers, body)] = receiver.requests
    finally:
        receiver.close()
    payload = json.loads(body)
    assert payload["event"] == "stale" and payload["run"] is None
    assert payload["report"]["slug"] == "daily"
    assert payload["freshness"] == {"expect_success_within_s": 3600.0, "last_success_at": None}
    assert headers["X-Reportsvc-Signature"].startswith("sha256=")
    assert Delivery.objects.get().target.endswith("/…")  # redacted as run deliveries are


def test_a_former_leader_is_refused(lease):
    expecting_report()
    SchedulerLease.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    successor = acquire_lease("leader-b:2", 60)
    with pytest.raises(LeaseLost):
        check_freshness(lease)
    assert [e.notice.kind for e in check_freshness(successor)] == ["stale"]


@needs_commits
def test_the_worker_sends_them_on_the_report_lane(lease):
    expecting_report()
    lanes = NotificationLanes()
    for event in check_freshness(lease):
        lanes.submit(event)
    assert lanes.close(10) == []
    assert Delivery.objects.get().reason == "stale"


def _race(lease, checks=2):
    """``checks`` freshness checks at once; the kinds of the events they found."""
    barrier, found, errors = threading.Barrier(checks), [], []

    def check():
        try:
            barrier.wait(5)
            found.extend(event.notice.kind for event in check_freshness(lease))
        except Exception as error:  # reported below
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=check) for _ in range(checks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    return found


@needs_commits
def test_racing_checks_alert_once_each_way(lease):
    report = expecting_report()
    assert _race(lease, 3) == ["stale"]
    run_report_now(report)
    assert _race(lease, 3) == ["fresh"]
    assert _race(lease, 3) == []


def test_the_api_says_stale_and_when_a_run_last_succeeded():
    from tests.api_helpers import client_for, make_user

    report = expecting_report()
    Report.objects.create(name="Any", slug="any", sql="SELECT 1")
    api = client_for(make_user("viewer", "view"))
    listed = {r["slug"]: r for r in api.get("/api/reports/").json()}
    assert (listed["daily"]["stale"], listed["daily"]["last_success_at"]) == (True, None)
    assert (listed["any"]["stale"], listed["any"]["last_success_at"]) == (False, None)
    run = run_report_now(report)
    one = api.get("/api/reports/daily/").json()
    assert one["stale"] is False
    assert one["last_success_at"] == run.finished_at.isoformat().replace("+00:00", "Z")


class HeldLease:
    """Stands in for a worker's LeaseKeeper holding ``lease`` (or none)."""

    def __init__(self, lease):
        self.lease = lease

    def current(self):
        return self.lease


@needs_commits
def test_the_leading_worker_checks_and_sends_a_follower_does_not(lease):
    import time

    from runs.services.runtime.worker import Worker

    expecting_report()
    follower, leader = Worker(concurrency=1), Worker(concurrency=1)
    follower._lease, leader._lease = HeldLease(None), HeldLease(lease)
    follower._check_freshness(time.monotonic())
    assert not AlertState.objects.exists()
    leader._check_freshness(time.monotonic())
    leader._check_freshness(time.monotonic())  # not due again for FRESHNESS_CHECK_SECONDS
    assert leader._notifier.close(10) == [] and follower._notifier.close(1) == []
    assert list(Delivery.objects.values_list("reason", "status")) == [("stale", "sent")]
